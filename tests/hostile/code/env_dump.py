"""Hostile test: print the whole environment and copy it to a file outside the worktree."""

import json
import os
import sys

from _junit import write_report

for name, value in sorted(os.environ.items()):
    print(f"{name}={value}")
with open(sys.argv[1], "w") as out:
    json.dump(dict(os.environ), out)
write_report()
