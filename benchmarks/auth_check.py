"""What checking a bearer token costs, and that the work does not depend on which token matched.

:meth:`otel_audio.receiver.auth.TokenAuth.decide` hashes the presented header once and compares
the digest with every configured token's digest through ``hmac.compare_digest``. This times one
call for ``--tokens`` configured tokens (1, 3, 10 and 100 by default) when the header holds the
first token, the last token, a wrong token of the same length and no header at all: the figures
for one count should be alike (the comparison never stops at a match), and grow with the count.
Each figure is the median over ``--repeats`` runs of ``--calls`` calls, in nanoseconds per call.

Usage::

    python benchmarks/auth_check.py [--tokens 1,3,10,100] [--calls 20000] [--repeats 5]

Prints one JSON line: ``{"ns_per_call": {"<count>": {"first": ..., "last": ..., "wrong": ...,
"missing": ...}}, ...}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from otel_audio.receiver.auth import Scope, Token, TokenAuth


def _time(auth: TokenAuth, header: str | None, calls: int, repeats: int) -> float:
    runs = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(calls):
            auth.decide(header, Scope.READ)
        runs.append((time.perf_counter_ns() - start) / calls)
    return round(statistics.median(runs), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", default="1,3,10,100", help="token counts, comma-separated")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    figures = {}
    for count in (int(n) for n in args.tokens.split(",")):
        tokens = [Token(f"token-{i:04d}-{'x' * 24}", Scope.READ) for i in range(count)]
        auth = TokenAuth(tokens)
        headers = {
            "first": f"Bearer {tokens[0].token}",
            "last": f"Bearer {tokens[-1].token}",
            "wrong": f"Bearer {'y' * len(tokens[0].token)}",
            "missing": None,
        }
        figures[str(count)] = {name: _time(auth, h, args.calls, args.repeats) for name, h in headers.items()}
    print(json.dumps({"benchmark": "auth_check", "ns_per_call": figures, "calls": args.calls}))


if __name__ == "__main__":
    main()
