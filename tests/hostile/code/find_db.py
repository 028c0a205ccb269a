"""Hostile test: look for autopack's database from the working directory and the environment."""

import json
import os
import sys
from pathlib import Path

from _junit import write_report

cwd = Path.cwd()
found = [str(p) for p in cwd.rglob("autopack.db")]
ancestors = [str(d / name) for d in cwd.parents for name in ("autopack.db", ".autopack/autopack.db")
             if (d / name).exists()]
report = {"cwd": str(cwd), "in_cwd": found, "in_ancestors": ancestors,
          "autopack_env": sorted(k for k in os.environ if k.startswith("AUTOPACK_") and k != "AUTOPACK_JUNIT_FILE")}
Path(sys.argv[1]).write_text(json.dumps(report))
write_report()
