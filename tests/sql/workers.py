"""Child-process entry points for tests/sql: ``python -m tests.sql.workers COMMAND ARGS...`` (cwd = repo).

* ``create URL PREFIX NAME``: print "ready", wait for a line on stdin (the start signal), then build a
  backend (which creates the schema) and take lock NAME; print its token.
* ``release URL NAME HOLDER TOKEN [NAME HOLDER TOKEN ...]``: release each lease, in order, one
  transaction each; print the results.
"""

from __future__ import annotations

import sys

from tests.sql.conftest import backend_for


def main(argv: list[str]) -> int:
    command, url, *rest = argv
    if command == "create":
        prefix, name = rest
        print("ready", flush=True)
        sys.stdin.readline()
        backend = backend_for(url, table_prefix=prefix)
        try:
            attempt = backend.try_acquire(name, f"holder-{name}", 30)
        finally:
            backend.close()
        print(attempt.token, flush=True)
        return 0 if attempt.token is not None else 3
    if command == "release":
        backend = backend_for(url)
        try:
            results = [backend.release(rest[i], rest[i + 1], int(rest[i + 2])) for i in range(0, len(rest), 3)]
        finally:
            backend.close()
        print(results, flush=True)
        return 0 if all(results) else 3
    raise SystemExit(f"unknown command {command!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
