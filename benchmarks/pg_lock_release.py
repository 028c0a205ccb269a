"""How long PostgreSQL takes to free a run's advisory lock after its holder is SIGKILLed (figures only).

`python -m benchmarks.pg_lock_release [ROUNDS]`: starts a throwaway server (scripts/pg-server), then
each round a subprocess takes ``PgRunLock`` and is SIGKILLed; the time until the next ``acquire``
succeeds is measured by polling every millisecond.
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "pg-server"
HOLDER = ("import sys, time\nfrom autopack.lock import PgRunLock\nfrom autopack.store.location import PostgresUrl\n"
          "PgRunLock(PostgresUrl(sys.argv[1]), 'bench').acquire()\nprint('held', flush=True)\ntime.sleep(600)\n")


def release_after_kill_s(url: str) -> float:
    from autopack.errors import Busy
    from autopack.lock import PgRunLock
    from autopack.store.location import PostgresUrl

    holder = subprocess.Popen([sys.executable, "-c", HOLDER, url], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    lock = PgRunLock(PostgresUrl(url), "bench")
    holder.send_signal(signal.SIGKILL)
    killed = time.perf_counter()
    holder.wait()
    while True:
        try:
            lock.acquire()
        except Busy:
            time.sleep(0.001)
            continue
        elapsed = time.perf_counter() - killed
        lock.release()
        return elapsed


def main(rounds: int = 20) -> None:
    started = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, check=True)
    url = started.stdout.strip()
    try:
        times = [release_after_kill_s(url) for _ in range(rounds)]
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop", url.split("host=", 1)[1].split("&", 1)[0]], capture_output=True)
    ms = sorted(t * 1000 for t in times)
    print(f"advisory lock free after SIGKILL of its holder, {rounds} rounds: median {statistics.median(ms):.1f} ms, "
          f"min {ms[0]:.1f} ms, max {ms[-1]:.1f} ms (each includes one failed acquire's connect)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
