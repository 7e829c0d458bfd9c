"""Prints how many inputs each fuzz target tried, for the reliability table of the README."""

from __future__ import annotations

import json

from tests.fuzz import PROFILE, tried


def pytest_terminal_summary(terminalreporter) -> None:
    if tried:
        terminalreporter.write_line(
            f"fuzz inputs tried ({PROFILE} profile): {json.dumps(dict(sorted(tried.items())))}"
        )
