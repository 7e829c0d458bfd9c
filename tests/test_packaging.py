"""The distribution ships every package in the tree, under the names the docs promise."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_directory_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    mapping = config["package-dir"]
    found = set()
    for name, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((name, *relative)))
    assert found - listed == set(), "add these to [tool.setuptools] packages"


def test_samplers_and_processors_install_under_otel_audio():
    import otel_audio.processors.base
    import otel_audio.samplers

    assert Path(otel_audio.samplers.__file__).parent == ROOT / "samplers"
    assert Path(otel_audio.processors.base.__file__).parent == ROOT / "processors"


def test_sdk_side_does_not_import_the_receiver_side():
    import subprocess
    import sys

    code = (
        "import sys, otel_audio, otel_audio.samplers;"
        "bad = [m for m in sys.modules if m.startswith(('otel_audio.receiver', 'otel_audio.store',"
        " 'otel_audio.api', 'otel_audio.processors', 'duckdb', 'pyarrow', 'fastapi'))];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
