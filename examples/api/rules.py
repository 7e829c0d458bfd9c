"""Alert rules over a running receiver's HTTP API: add one, list them, dry-run a condition, delete it.

The receiver needs the ``alerting`` processor in its chain (docs/alerting.md); rules made through
the API are validated before they take effect and persist across restarts. Run from the
repository root, with the receiver's API address::

    python examples/api/rules.py --api http://127.0.0.1:8080 [--token T]

The dry run (``POST /api/v1/rules/test``) evaluates the condition now against the store and
prints every label set it holds for, so a rule can be tried before it pages anyone.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import requests

RULE = {
    "name": "ExampleSlowStage",
    # The rule language is parsed, never evaluated as Python (docs/alerting-rules.md).
    "condition": "p95(audio.stage.duration, 5m) > 0.5",
    "for": "1m",
    "severity": "warning",
    "annotations": {"summary": "p95 {{ humanize $value }}s on {{ $labels.service }}"},
}
SHOWN = ("service", "audio.pipeline", "audio.stage")


class API:
    """The few calls this example makes; every error answer is raised with the receiver's message."""

    def __init__(self, base: str, token: str | None) -> None:
        self.base = base.rstrip("/")
        self.session = requests.Session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, body: Any = None) -> Any:
        reply = self.session.request(method, f"{self.base}{path}", json=body, timeout=30)
        if reply.status_code >= 400:
            raise SystemExit(f"{method} {path}: HTTP {reply.status_code}: {reply.text}")
        return reply.json() if reply.content else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--api", required=True, help="the receiver's API, e.g. http://127.0.0.1:8080")
    parser.add_argument("--token", help="bearer token, when the receiver requires one")
    parser.add_argument("--condition", default=RULE["condition"], help="the condition to add and dry-run")
    args = parser.parse_args(argv)
    api = API(args.api, args.token)
    rule = {**RULE, "condition": args.condition}

    created = api.call("POST", "/api/v1/rules", rule)
    when = f"for {created.get('for')}, {created['severity']}"
    print(f"added {created['name']}: {created['condition']} ({when})")

    names = [r["name"] for r in api.call("GET", "/api/v1/rules")["rules"]]
    print(f"rules: {', '.join(names)}")

    tried = api.call("POST", "/api/v1/rules/test", {"condition": rule["condition"]})
    print(f"dry run at {tried['at']}: holds for {len(tried['samples'])} series")
    for sample in tried["samples"]:
        # Resource attributes (host, SDK, instance) travel along; show the ones a reader cares for.
        labels = ", ".join(f"{k}={sample['labels'][k]}" for k in SHOWN if k in sample["labels"])
        print(f"  {{{labels}}} = {sample['value']:.6g}")

    # A condition with a typo is refused with its line and column, and nothing is created.
    typo = {"condition": "p95(audio.stage.duration, 5m) >"}
    bad = api.session.post(f"{api.base}/api/v1/rules/test", json=typo, timeout=30)
    print(f"invalid condition: HTTP {bad.status_code}: {bad.json()['error']}")

    api.call("DELETE", f"/api/v1/rules/{rule['name']}")
    left = [r["name"] for r in api.call("GET", "/api/v1/rules")["rules"]]
    print(f"deleted {rule['name']}; rules left: {len(left)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
