"""`vmddpm-deploy train ...` with a pause inside one checkpoint write, for tests/training/test_loop.py's
kill -9 test: the Nth ``os.fsync`` (every atomic write calls it once, after the data is in the
temporary file and before the rename) writes the file named by $PAUSE_MARKER and sleeps, so the
test can SIGKILL the process while that write is in flight.

Usage: python tests/train_kill_runner.py N MARKER train --data ... (the CLI's arguments); N = 0 never pauses.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path


def main() -> None:
    pause_at, marker, args = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    real_fsync, calls = os.fsync, [0]

    def fsync(fd: int) -> None:
        calls[0] += 1
        if calls[0] == pause_at:
            marker.write_text(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else "")
            time.sleep(600)  # killed here
        real_fsync(fd)

    os.fsync = fsync
    from vmddpm_deploy.cli import app

    app(args, prog_name="vmddpm-deploy")


if __name__ == "__main__":
    main()
