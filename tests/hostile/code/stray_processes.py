"""Hostile test: leave a grandchild `sleep 10000` and 50 forked sleepers behind; optionally hang."""

import os
import subprocess
import sys
import time
from pathlib import Path

from _junit import write_report

pids = [subprocess.Popen(["sleep", "10000"]).pid]
for _ in range(50):
    pid = os.fork()
    if pid == 0:
        os.closerange(3, 1024)
        time.sleep(10000)
        os._exit(0)
    pids.append(pid)
pidfile = Path(sys.argv[1])  # appended to, whole or not at all: a reader never sees half a list
earlier = pidfile.read_text() if pidfile.exists() else ""
Path(f"{pidfile}.tmp").write_text(earlier + "".join(f"{pid}\n" for pid in pids))
os.replace(f"{pidfile}.tmp", pidfile)
write_report()
if "--hang" in sys.argv:
    time.sleep(10000)
