"""Subprocess helper for test_router: print routing and audit decisions as JSON lines.

Usage: python _route_child.py SALT TRAFFIC_PCT AUDIT_RATE N
"""

from __future__ import annotations

import json
import sys

from shadowlab.router import CanaryRouter


class _Const:
    def __init__(self, name: str) -> None:
        self.name = name

    def score(self, x: object) -> float:
        return 0.5


def main() -> None:
    salt, pct, rate, n = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    router = CanaryRouter(_Const("a:1"), _Const("b:2"), pct, log=None, salt=salt, audit_rate=rate)
    ids = [f"req-{i}" for i in range(n)]
    json.dump(
        {
            "route": [router.route(r) for r in ids],
            "route_batch": router.route_batch(ids).tolist(),
            "audit": [router.is_audit(r) for r in ids],
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
