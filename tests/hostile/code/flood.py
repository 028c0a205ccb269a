"""Hostile test: once the phase's file exists, print 1 GiB to stdout."""

import sys
from pathlib import Path

from _junit import write_report

write_report()
if Path("out/a.txt").exists():
    chunk = b"x" * 1023 + b"\n"
    block = chunk * 1024
    out = sys.stdout.buffer
    for _ in range(1024):
        out.write(block)
    out.flush()
