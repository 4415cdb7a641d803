"""``python -m benchmarks [scan ...]``: run the named benchmarks (default: all)."""

from __future__ import annotations

import sys

from benchmarks import api, jobs, scan

SUITES = {"scan": scan.main, "jobs": jobs.main, "api": api.main}


def main(argv: list[str]) -> None:
    names = argv or list(SUITES)
    unknown = set(names) - set(SUITES)
    if unknown:
        raise SystemExit(
            f"unknown benchmark {', '.join(sorted(unknown))}; choose from {', '.join(SUITES)}"
        )
    for name in names:
        SUITES[name]()


if __name__ == "__main__":
    main(sys.argv[1:])
