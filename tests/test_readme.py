"""Every fenced block of README.md is exercised: run, loaded, or checked against what CI runs.

How each block is exercised is declared in :data:`EXERCISED`, keyed by the block's first line
(its fingerprint). ``test_every_readme_block_is_exercised_exactly_once`` fails when a block has no
entry, or more than one, and when an entry matches no block: a new block, or an edited first
line, needs its entry here.

Ports and paths. README blocks use the receiver's default ports (4317 OTLP/gRPC, 4318 OTLP/HTTP,
8080 API), the tutorial's webhook port 9000 and the data directory ``/var/lib/otel-audio``. Before
a block runs, :func:`substitute` replaces each of these, as a whole word, by a free loopback port
or a temporary directory, and nothing else: the commands run as written. Files a block reads
from the repository (``collector-config/otel-audio.yaml``) get the same substitution in the
test's working directory; ``examples/`` is linked there unchanged.

Commands that are not blocks: the benchmark commands of the performance table are checked to
name existing scripts and options they accept (running them is ``make bench``, not a test).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.external import free_port

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent  # the virtualenv's bin: python, otel-audio, opentelemetry-instrument
DEFAULT_PORTS = ("4317", "4318", "8080", "9000")
DATA_DIR = "/var/lib/otel-audio"


@dataclass(frozen=True)
class Block:
    """One fenced block of the README."""

    lang: str
    text: str
    line: int  # 1-based line of the opening fence

    @property
    def fingerprint(self) -> str:
        return next(line.strip() for line in self.text.splitlines() if line.strip())


@dataclass(frozen=True)
class Exercise:
    """How one block is exercised.

    ``kind``: ``ci`` (a command CI runs: checked against the Makefile and .ci/run), ``figure``
    (the data-flow diagram: the processors it names exist), ``python`` (run in a fresh
    interpreter, export off), ``serve`` and ``zero-code`` (run against a receiver the README's own
    command starts), or ``tutorial-file`` / ``tutorial-background`` / ``tutorial-run`` /
    ``tutorial-output`` (the five-minute tutorial, run in README order by ``test_the_tutorial``).
    ``expect``: a regex the command's output must match. ``ready``: for a background command,
    the URL path (on the API port) or the output line that says it is up.
    """

    kind: str
    expect: str = ""
    ready: str = ""


EXERCISED: dict[str, Exercise] = {
    "make demo   # creates .venv, installs, streams the example pipeline into a receiver with a fault every "
    "2 minutes; Ctrl-C stops": Exercise("ci"),
    "pipeline code ──@audio_stage──> SDK tracer ──AdaptiveSampler──> BatchSpanProcessor ──OTLP──┐": Exercise(
        "figure"
    ),
    "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[receiver]'": Exercise("ci"),
    "# tutorial.yaml": Exercise("tutorial-file"),
    "otel-audio serve --config tutorial.yaml": Exercise("tutorial-background", ready="/readyz"),
    "python examples/api/webhook_sink.py --port 9000": Exercise(
        "tutorial-background", ready="listening on http://127.0.0.1:9000/alerts"
    ),
    "# denoise_app.py": Exercise("tutorial-file"),
    "python denoise_app.py": Exercise("tutorial-run", expect=r"^processed 10 files$"),
    "curl -s 'http://127.0.0.1:8080/api/v1/query_range?metric=audio.stage.duration&agg=p95&start=now-5m"
    "&step=1m&group_by=audio.stage'": Exercise("tutorial-run", expect=r'"audio.stage":"enhancement"'),
    "curl -s -X POST http://127.0.0.1:8080/api/v1/rules -H 'Content-Type: application/json' -d '{": Exercise(
        "tutorial-run", expect=r'"name":"SlowEnhancement"'
    ),
    "python denoise_app.py 0.3": Exercise("tutorial-run", expect=r"^processed 10 files$"),
    "firing SlowEnhancement service=denoiser severity=critical: "
    "enhancement p95 300.3ms on denoiser": Exercise("tutorial-output"),
    "curl -s http://127.0.0.1:8080/api/v1/alerts": Exercise(
        "tutorial-run", expect=r'"alertname":"SlowEnhancement".*"state":"firing"'
    ),
    "import numpy as np": Exercise("python"),
    "opentelemetry-instrument python your_pipeline.py": Exercise("zero-code"),
    "otel-audio serve --config collector-config/otel-audio.yaml --data-dir /var/lib/otel-audio": Exercise(
        "serve", ready="/readyz"
    ),
}


def readme_blocks() -> list[Block]:
    text = README.read_text()
    blocks = []
    for match in re.finditer(r"^```(\w*)\n(.*?)^```\s*$", text, flags=re.DOTALL | re.MULTILINE):
        blocks.append(Block(match.group(1), match.group(2), text.count("\n", 0, match.start()) + 1))
    return blocks


def exercise_of(block: Block) -> Exercise:
    return EXERCISED[block.fingerprint]


def blocks_of(kind_prefix: str) -> list[Block]:
    return [b for b in readme_blocks() if exercise_of(b).kind.startswith(kind_prefix)]


def substitute(text: str, ports: dict[str, int], data_dir: Path | None = None) -> str:
    """The README's default ports (and data directory) replaced by the test's; nothing else."""
    for default, port in ports.items():
        text = re.sub(rf"(?<![\w.]){default}(?!\w)", str(port), text)
    if data_dir is not None:
        text = text.replace(DATA_DIR, str(data_dir))
    return text


def clean_env(**extra: str) -> dict[str, str]:
    """The environment a user's shell has: the virtualenv first on PATH, no stray OTEL_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(extra)
    return env


class Background:
    """A block run in the background (its own process group), its output collected line by line."""

    def __init__(self, command: str, cwd: Path, env: dict[str, str]) -> None:
        self.command = command
        self.process = subprocess.Popen(
            ["bash", "-c", command],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()

    def wait_for_line(self, pattern: str, timeout: float = 60) -> str:
        """The first output line matching ``pattern``; fails with the output when none comes."""
        found: list[str] = []

        def matched() -> bool:
            found[:] = [line for line in self.lines if re.fullmatch(pattern, line)]
            return bool(found) or self.process.poll() is not None

        with self.changed:
            self.changed.wait_for(matched, timeout)
        assert found, f"{self.command!r} printed no line matching {pattern!r}:\n" + "\n".join(self.lines)
        return found[0]

    def wait_until_ready(self, url: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"{self.command!r} exited:\n" + "\n".join(self.lines)
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        pytest.fail(f"{url} not ready after {timeout} s; output:\n" + "\n".join(self.lines))

    def stop(self) -> int:
        """SIGTERM to the whole process group (as Ctrl-C would), then its exit status."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            return self.process.wait(30)


def run_block(command: str, cwd: Path, env: dict[str, str], expect: str = "") -> str:
    done = subprocess.run(
        ["bash", "-ec", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{command!r} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    if expect:
        assert re.search(expect, done.stdout, re.MULTILINE), f"{command!r} printed:\n{done.stdout}"
    return done.stdout


def ready_check(block: Background, ready: str, ports: dict[str, int]) -> None:
    if ready.startswith("/"):
        block.wait_until_ready(f"http://127.0.0.1:{ports['8080']}{ready}")
    else:
        block.wait_for_line(re.escape(substitute(ready, ports)))


def output_pattern(expected: str) -> str:
    """The expected output line as a regex in which every number may differ."""
    parts = re.split(r"\d+(?:\.\d+)?", expected)
    return r"[\d.]+".join(re.escape(p) for p in parts)


# -- the table itself ----------------------------------------------------------------------------


def test_every_readme_block_is_exercised_exactly_once():
    blocks = readme_blocks()
    assert blocks, "the README has code blocks"
    counts: dict[str, int] = {}
    for block in blocks:
        assert block.fingerprint in EXERCISED, (
            f"README.md line {block.line}: no entry in tests/test_readme.py EXERCISED for a block "
            f"starting {block.fingerprint!r}: declare how it is exercised"
        )
        counts[block.fingerprint] = counts.get(block.fingerprint, 0) + 1
    assert {k: n for k, n in counts.items() if n > 1} == {}, "two blocks share a first line"
    assert set(EXERCISED) - set(counts) == set(), "entries that match no README block"


# -- commands CI runs ----------------------------------------------------------------------------


def test_the_two_commands_and_the_install_are_what_ci_and_the_makefile_run():
    makefile = (ROOT / "Makefile").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    for block in blocks_of("ci"):
        for command in [line.split("#")[0].strip() for line in block.text.splitlines()]:
            if command.startswith("make "):
                target = command.split()[1]
                assert re.search(rf"^{target}:", makefile, re.MULTILINE), f"no Makefile target {target}"
            elif command:
                # the install line: the Makefile creates the same virtualenv and installs the same
                # project with at least the extras the README names
                assert "-m venv $(VENV)" in makefile and "VENV ?= .venv" in makefile
                extras = re.search(r"pip install -e '\.\[([\w,]+)\]'", command)
                made = re.search(r"pip install --quiet -e '\.\[([\w,]+)\]'", makefile)
                assert extras and made, command
                assert set(extras.group(1).split(",")) <= set(made.group(1).split(","))
    assert re.search(r"^make test$", ci, re.MULTILINE), ".ci/run runs make test"


def test_the_data_flow_figure_names_processors_the_receiver_has():
    import otel_audio.receiver.service  # noqa: F401 - registers the processor factories
    from otel_audio.receiver.chain import REGISTRY

    (figure,) = blocks_of("figure")
    named = set(re.findall(r"^ {16}([a-z_]+) +\(", figure.text, re.MULTILINE))  # the chain's members
    named |= {"anomaly", "forecast"} if "anomaly, forecast" in figure.text else set()
    assert named, "the figure lists the processors"
    assert named <= set(REGISTRY), f"not receiver processors: {named - set(REGISTRY)}"


# -- python blocks -------------------------------------------------------------------------------


def test_the_instrumentation_example_runs_as_written():
    """In a fresh interpreter, with export switched off (no receiver needed to show the API)."""
    (block,) = blocks_of("python")
    env = clean_env(OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none")
    done = subprocess.run(
        [sys.executable, "-c", block.text], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr


# -- the receiver reference command and zero-code instrumentation ---------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """The README's ``otel-audio serve --config ... --data-dir ...``, run as written on free ports."""
    (block,) = blocks_of("serve")
    work = tmp_path_factory.mktemp("serve")
    ports = {p: free_port() for p in DEFAULT_PORTS}
    (work / "collector-config").mkdir()
    shipped = (ROOT / "collector-config" / "otel-audio.yaml").read_text()
    (work / "collector-config" / "otel-audio.yaml").write_text(substitute(shipped, ports))
    data_dir = work / "var-lib-otel-audio"
    server = Background(substitute(block.text, ports, data_dir), work, clean_env())
    try:
        ready_check(server, exercise_of(block).ready, ports)
        yield {"server": server, "ports": ports, "work": work, "data_dir": data_dir}
    finally:
        server.stop()


def test_the_receiver_command_serves_with_the_shipped_config_and_data_dir(served):
    api = f"http://127.0.0.1:{served['ports']['8080']}"
    assert requests.get(f"{api}/healthz", timeout=10).status_code == 200
    assert (served["data_dir"] / "wal").is_dir(), "the data directory of the command line is used"


YOUR_PIPELINE = """
import numpy as np
from otel_audio import audio_pipeline, audio_stage


@audio_stage("enhancement")
def enhance(audio, sample_rate):
    return audio * 0.5


for i in range(3):
    with audio_pipeline(audio_id=f"zero-code-{i}", name="speech_enhancement"):
        enhance(np.zeros(1600, dtype=np.float32), sample_rate=16_000)
"""


def test_zero_code_instrumentation_exports_the_stage_spans(served):
    """``opentelemetry-instrument python your_pipeline.py``: a pipeline that never calls configure()."""
    (block,) = blocks_of("zero-code")
    work, ports = served["work"], served["ports"]
    (work / "your_pipeline.py").write_text(YOUR_PIPELINE)
    env = clean_env(
        OTEL_SERVICE_NAME="zero-code-pipeline",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{ports['4317']}",
        OTEL_METRIC_EXPORT_INTERVAL="500",
    )
    run_block(block.text, work, env)
    spans = requests.get(
        f"http://127.0.0.1:{ports['8080']}/api/v1/spans",
        params={"service": "zero-code-pipeline", "limit": 100},
        timeout=10,
    ).json()["spans"]
    names = sorted(s["name"] for s in spans)
    assert names == ["enhancement"] * 3 + ["speech_enhancement"] * 3


# -- the tutorial --------------------------------------------------------------------------------


def test_the_tutorial(tmp_path):
    """Every tutorial block in README order: the alert it adds fires and reaches the webhook."""
    ports = {p: free_port() for p in DEFAULT_PORTS}
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = clean_env()
    running: list[Background] = []
    sink: Background | None = None
    try:
        for block in blocks_of("tutorial"):
            exercise, text = exercise_of(block), substitute(block.text, ports)
            if exercise.kind == "tutorial-file":
                name = block.fingerprint.removeprefix("# ")
                (tmp_path / name).write_text(text)
                if block.lang == "yaml":
                    from otel_audio.receiver.config import load_config

                    load_config(tmp_path / name)
            elif exercise.kind == "tutorial-background":
                running.append(Background(text, tmp_path, env))
                ready_check(running[-1], exercise.ready, ports)
                if "webhook_sink" in text:
                    sink = running[-1]
            elif exercise.kind == "tutorial-run":
                run_block(text, tmp_path, env, exercise.expect)
            elif exercise.kind == "tutorial-output":
                assert sink is not None, "the webhook sink starts before the output it prints"
                sink.wait_for_line(output_pattern(text.strip()), timeout=30)
            else:
                pytest.fail(f"unknown tutorial step {exercise.kind}")
        # "the overview has a denoiser row": the overview's columns read the span metrics
        assert "denoiser" in wait_for_series(ports, "traces.span.metrics.calls", "denoiser")
    finally:
        statuses = [(b.command, b.stop()) for b in reversed(running)]
    serve_status = next(status for command, status in statuses if "otel-audio serve" in command)
    assert serve_status == 0, "the receiver stops cleanly on SIGTERM"


def wait_for_series(ports: dict[str, int], metric: str, text: str, timeout: float = 30) -> str:
    """The receiver's series of ``metric`` once they mention ``text`` (span metrics flush on a tick)."""
    url = f"http://127.0.0.1:{ports['8080']}/api/v1/series"
    deadline = time.monotonic() + timeout
    while True:
        reply = requests.get(url, params={"metric": metric}, timeout=10)
        if (reply.status_code == 200 and text in reply.text) or time.monotonic() > deadline:
            return reply.text
        time.sleep(0.2)


# -- commands in the performance table -----------------------------------------------------------


def test_every_benchmark_command_names_a_script_and_options_it_accepts():
    text = README.read_text()
    commands = re.findall(r"`python (benchmarks/[\w/]+\.py)([^`]*)`", text)
    assert len(commands) >= 15, "the performance table gives the command behind each figure"
    for script, args in commands:
        source = (ROOT / script).read_text()
        for option in re.findall(r"--[\w-]+", args):
            assert f'"{option}"' in source, f"{script} has no option {option}"
    for test_file in re.findall(r"`pytest (tests/\w+\.py)`", text):
        assert (ROOT / test_file).is_file(), test_file


def test_every_inline_cli_command_names_a_subcommand_and_options_it_accepts():
    """``otel-audio ...`` in the README's text: the subcommand exists, and so does every option
    (in the CLI or in the module a subcommand delegates to)."""
    import argparse

    from otel_audio.cli import build_parser

    (subcommands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    sources = [ROOT / "otel_audio" / "cli.py", *ROOT.glob("processors/**/*cli*.py")]
    options_known = "\n".join(p.read_text() for p in sources)
    commands = re.findall(r"`otel-audio ([^`]+)`", README.read_text())
    assert len(commands) >= 5
    for command in commands:
        assert command.split()[0] in subcommands.choices, command
        for option in re.findall(r"--[\w-]+", command):
            assert f'"{option}"' in options_known, f"otel-audio {command}: no option {option}"


# -- links ---------------------------------------------------------------------------------------


def test_the_readme_links_every_doc():
    text = README.read_text()
    missing = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if f"](docs/{p.name})" not in text]
    assert missing == []


def test_the_readmes_links_inside_the_repository_resolve():
    text = README.read_text()
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    inside = [t for t in targets if not t.startswith(("http://", "https://", "../"))]
    assert inside, "the README links its docs"
    broken = [t for t in inside if not (ROOT / t).exists()]
    assert broken == []
