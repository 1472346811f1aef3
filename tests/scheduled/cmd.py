"""The command the ``lockapi run`` tests wrap (``python -m tests.scheduled.cmd ...``).

It appends "<pid> <$LOCKAPI_LOCK_TOKEN>" to --log, touches --ready, then waits for --go to exist (if
given), records every signal it is sent in --signals, and exits with --exit. ``--ignore-term`` makes
it survive SIGTERM (so only SIGKILL ends it); ``--term-exit N`` exits N on SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--log")
    parser.add_argument("--ready")
    parser.add_argument("--go")
    parser.add_argument("--signals")
    parser.add_argument("--exit", type=int, default=0)
    parser.add_argument("--term-exit", type=int, default=None)
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--forever", action="store_true", help="never exit on its own")
    args = parser.parse_args()

    def record(signum: int, frame: Any) -> None:
        if args.signals:
            with open(args.signals, "a") as f:
                f.write(f"{signal.Signals(signum).name}\n")
        if signum == signal.SIGTERM and not args.ignore_term:
            sys.exit(args.term_exit if args.term_exit is not None else 128 + signum)

    for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, record)
    if args.log:
        with open(args.log, "a") as f:
            f.write(f"{os.getpid()} {os.environ.get('LOCKAPI_LOCK_TOKEN', '-')}\n")
    if args.ready:
        Path(args.ready).write_text(str(os.getpid()))
    while args.forever or (args.go and not Path(args.go).exists()):
        time.sleep(0.01)
    return args.exit


if __name__ == "__main__":
    sys.exit(main())
