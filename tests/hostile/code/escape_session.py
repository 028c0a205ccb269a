"""Hostile test: leave the suite's session twice, then optionally hang.

``setsid sleep MARKER1 &`` and a double fork inside a new session (``setsid sh -c
'(sleep MARKER2 &) &'``): neither sleeper is in the suite's session or process group, and
both lose their parent at once. Writes the report only once both run in sessions of their
own; ``--ready FILE`` is then created, for a caller that waits for the escape.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

from _junit import write_report

marker = sys.argv[1]
subprocess.run(["sh", "-c", f"setsid sleep {marker}1 & setsid sh -c '(sleep {marker}2 &) &'"], check=True)


def escaped() -> int:
    count = 0
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if argv[0].endswith(b"sleep") and argv[1].startswith(marker.encode()):
                count += os.getsid(int(entry.name)) != os.getsid(0)
        except (OSError, IndexError):
            continue
    return count


deadline = time.monotonic() + 60
while escaped() < 2:
    if time.monotonic() > deadline:
        sys.exit("the sleepers never left the session")
    time.sleep(0.01)
write_report()
if "--ready" in sys.argv:
    Path(sys.argv[sys.argv.index("--ready") + 1]).touch()
if "--hang" in sys.argv:
    time.sleep(10000)
