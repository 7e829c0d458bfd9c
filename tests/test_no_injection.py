"""No user text reaches ``eval``, ``exec``, a shell, a pickle, or a SQL string.

An AST walk over every module of ``otel_audio/``, ``processors/``, ``samplers/`` and
``monitoring/``:

- ``eval``, ``exec``, ``os.system``, ``os.popen``, ``subprocess`` with ``shell=True``,
  ``pickle``/``marshal`` loads and ``yaml.load`` (not ``safe_load``) are refused outright;
- the SQL handed to ``execute``/``executemany``/``executescript`` (sqlite) and ``sql``/``query``
  (DuckDB) must be a string literal, a module constant, or be built only from literals and
  expressions listed in :data:`INTERNAL` with the reason each one is internal. A local variable
  holding SQL is followed to every assignment in its function, so building a statement in two
  steps does not hide what went into it.

Then hostile inputs go through a real receiver's API: SQL metacharacters and ``__import__`` are
answered as data (or refused with 400), and names used in paths never leave the data directory.
"""

from __future__ import annotations

import ast
import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from otel_audio.receiver.config import load_config
from otel_audio.receiver.service import Receiver
from tests.receiver_helpers import api, gauge, grpc_export_metrics, metrics_request

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("otel_audio", "processors", "samplers", "monitoring")
SQL_METHODS = {"execute", "executemany", "executescript", "sql", "query"}

# (module path, expression source) -> why the value is internal and safe to put into SQL text.
INTERNAL: dict[tuple[str, str], str] = {
    ("otel_audio/store/query.py", "', '.join(cols)"): "column names from a fixed table keyed by metric kind",
    ("otel_audio/store/query.py", "where"): "clauses with $-parameters, from _span_where/_time_where",
    ("otel_audio/store/query.py", "_limit(q.limit)"): "an int, range-checked by _limit",
    ("otel_audio/store/query.py", "' AND '.join(where) or 'true'"): "clauses with $-parameters only",
    ("otel_audio/store/query.py", "_with_blocks('spans', 'head', files, params)"): "files bound as $files",
    ("otel_audio/store/query.py", "_with_blocks('logs', 'head', files, params)"): "files bound as $files",
    ("otel_audio/store/query.py", "sql"): "_over_spans's statement, built by its callers from the above",
    ("otel_audio/api/jaeger.py", "columns"): "every caller of _over_spans passes a literal column list",
    ("otel_audio/api/jaeger.py", "sql"): "every caller of _over_spans passes a literal statement",
    ("otel_audio/store/trace_blocks.py", "' AND '.join(where) or 'true'"): "literal clauses, $-parameters",
    ("otel_audio/notify/outbox.py", "tail"): "both callers of _select pass literal text; values go as ?",
    (
        "otel_audio/store/state.py",
        "_statements(sql)",
    ): "migrate()'s script: callers pass literal schema scripts",
}
_USED: set[tuple[str, str]] = set()


def _modules() -> list[Path]:
    found = []
    for package in PACKAGES:
        base = ROOT / package
        if base.is_dir():
            found.extend(p for p in base.rglob("*.py") if "__pycache__" not in p.parts)
    return sorted(found)


def _relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _dotted(node: ast.AST) -> str:
    try:
        return ast.unparse(node)
    except Exception:  # pragma: no cover - every node the checks look at unparses
        return "<node>"


def _forbidden_call(node: ast.Call) -> str | None:
    """Why ``node`` is a forbidden call, or None."""
    name = _dotted(node.func)
    if name in ("eval", "exec", "builtins.eval", "builtins.exec", "os.system", "os.popen"):
        return name
    if name in ("pickle.loads", "pickle.load", "marshal.loads", "marshal.load", "dill.loads"):
        return name
    if name == "yaml.load" and not any(
        k.arg == "Loader" and "Safe" in _dotted(k.value) for k in node.keywords
    ):
        return "yaml.load without SafeLoader"
    if name.startswith("subprocess.") or name.startswith("asyncio.create_subprocess_shell"):
        for keyword in node.keywords:
            if keyword.arg == "shell" and not (
                isinstance(keyword.value, ast.Constant) and keyword.value.value is False
            ):
                return f"{name}(shell=...)"
        if name.endswith("create_subprocess_shell"):
            return name
    return None


def test_no_module_calls_eval_exec_a_shell_or_unpickles():
    found = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                why = _forbidden_call(node)
                if why:
                    found.append(f"{_relative(path)}:{node.lineno}: {why}")
    assert found == []


class _SqlChecker:
    """Finds SQL arguments built from anything but literals, constants and :data:`INTERNAL`."""

    def __init__(self, path: Path) -> None:
        self.module = _relative(path)
        self.tree = ast.parse(path.read_text(), str(path))
        self.constants = {  # UPPER_CASE module constants, and those imported from our packages
            target.id
            for node in self.tree.body
            if isinstance(node, ast.Assign | ast.AnnAssign)
            for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
            if isinstance(target, ast.Name) and target.id.lstrip("_").isupper()
        } | {
            alias.asname or alias.name
            for node in self.tree.body
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PACKAGES
            for alias in node.names
            if alias.name.lstrip("_").isupper()
        }
        self.problems: list[str] = []

    def run(self) -> list[str]:
        for function in ast.walk(self.tree):
            if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef | ast.Module):
                for node in ast.walk(function):
                    if self._is_sql_call(node):
                        self._check(node.args[0], function, node.lineno, set())
        return sorted(set(self.problems))

    @staticmethod
    def _is_sql_call(node: ast.AST) -> bool:
        return (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in SQL_METHODS
            and bool(node.args)
        )

    def _internal(self, node: ast.AST) -> bool:
        key = (self.module, _dotted(node))
        if key in INTERNAL:
            _USED.add(key)
            return True
        return False

    def _safe_call(self, node: ast.AST) -> bool:
        """``int(...)`` (a number cannot carry SQL) or ``'<sep>'.join(CONSTANT)``."""
        if not isinstance(node, ast.Call):
            return False
        if isinstance(node.func, ast.Name) and node.func.id == "int":
            return True
        return (
            isinstance(node.func, ast.Attribute)
            and node.func.attr == "join"
            and isinstance(node.func.value, ast.Constant)
            and len(node.args) == 1
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id in self.constants
        )

    def _check(self, node: ast.AST, function: ast.AST, line: int, seen: set[str]) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str | int):
            return
        if isinstance(node, ast.JoinedStr):
            for part in node.values:
                if isinstance(part, ast.FormattedValue):
                    self._check(part.value, function, line, seen)
            return
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            self._check(node.left, function, line, seen)
            self._check(node.right, function, line, seen)
            return
        if isinstance(node, ast.IfExp):  # the test picks a branch; only the branches become SQL
            self._check(node.body, function, line, seen)
            self._check(node.orelse, function, line, seen)
            return
        if self._safe_call(node):
            return
        if isinstance(node, ast.Name):
            if node.id in self.constants or node.id in seen:
                return
            seen.add(node.id)
            sources = self._assignments(function, node.id)
            if sources:  # a local: whatever was assigned to it (or iterated into it) must pass
                for value in sources:
                    self._check(value, function, line, seen)
                return
            if self._internal(node):  # a parameter: its callers are named in INTERNAL's reason
                return
        elif self._internal(node):
            return
        self.problems.append(f"{self.module}:{line}: SQL built from {_dotted(node)!r}")

    @staticmethod
    def _assignments(function: ast.AST, name: str) -> list[ast.AST]:
        """Every value assigned to local ``name`` in ``function`` (``=``, ``+=``, and the
        sequence a ``for`` loop takes it from)."""
        values = []
        for node in ast.walk(function):
            if isinstance(node, ast.For) and isinstance(node.target, ast.Name) and node.target.id == name:
                values.append(node.iter)
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == name for t in node.targets
            ):
                values.append(node.value)
            elif isinstance(node, ast.AugAssign) and isinstance(node.target, ast.Name):
                if node.target.id == name:
                    values.append(node.value)
        return values


def test_sql_is_built_only_from_literals_and_listed_internal_names():
    problems = [problem for path in _modules() for problem in _SqlChecker(path).run()]
    assert problems == []
    assert sorted(set(INTERNAL) - _USED) == []  # no stale entry that could excuse new code later


def test_the_sql_checker_catches_user_text_in_a_statement(tmp_path):
    module = tmp_path / "bad.py"
    module.write_text(
        "def find(con, name):\n"
        "    con.execute(f\"SELECT * FROM t WHERE name = '{name}'\")\n"
        "    sql = 'SELECT * FROM t WHERE a = ' + name\n"
        "    con.sql(sql)\n"
    )
    checker = _SqlChecker.__new__(_SqlChecker)
    checker.module = "bad.py"
    checker.tree = ast.parse(module.read_text())
    checker.constants = set()
    checker.problems = []
    assert checker.run() == ["bad.py:2: SQL built from 'name'", "bad.py:4: SQL built from 'name'"]


def test_the_forbidden_call_check_catches_each_kind():
    sources = [
        "eval(text)",
        "exec(text)",
        "os.system(cmd)",
        "subprocess.run(cmd, shell=True)",
        "pickle.loads(body)",
        "yaml.load(text)",
    ]
    for source in sources:
        assert _forbidden_call(ast.parse(source).body[0].value), source
    assert _forbidden_call(ast.parse("subprocess.run(['ls'], check=True)").body[0].value) is None
    assert _forbidden_call(ast.parse("yaml.load(t, Loader=yaml.SafeLoader)").body[0].value) is None


# -- hostile input through the API -----------------------------------------------------------------

HOSTILE = [
    "x' OR '1'='1",
    'x"; DROP TABLE points; --',
    "'; ATTACH '/tmp/evil.db' AS e; --",
    "__import__('os').system('touch /tmp/pwned')",
]


@pytest.fixture(scope="module")
def hostile_receiver(tmp_path_factory) -> Iterator[Receiver]:
    """One receiver with alerting and a stored metric, shared by the hostile-input tests."""
    config = load_config(
        None,
        storage__data_dir=str(tmp_path_factory.mktemp("hostile") / "data"),
        server__grpc_port=0,
        server__http_port=0,
        server__api_port=0,
        processors=["selfmon", {"alerting": {"rules": []}}, "store"],
    )
    receiver = Receiver(config)
    receiver.start()
    point = [(time.time_ns(), 1.0, {"stage": "enhance"})]
    grpc_export_metrics(receiver.grpc_port, metrics_request("svc", [gauge("level", point)]))
    yield receiver
    receiver.stop(grace_s=1)


def _post(receiver, path: str, body: dict) -> requests.Response:
    return requests.post(f"http://127.0.0.1:{receiver.api_port}{path}", json=body, timeout=10)


def test_sql_metacharacters_in_queries_are_data(hostile_receiver):
    receiver = hostile_receiver
    now = time.time()
    for text in HOSTILE:
        series = api(receiver, "/api/v1/series", metric=text)
        assert series.status_code in (200, 400, 404), series.text
        if series.status_code == 200:
            assert series.json().get("series") in ([], None)
        spans = api(receiver, "/api/v1/spans", service=text, operation=text, **{"attr": f"k={text}"})
        assert spans.status_code in (200, 400), spans.text
        if spans.status_code == 200:
            assert spans.json()["spans"] == []
        logs = api(receiver, "/api/v1/logs", text=text, service=text, start=str(now - 60), end=str(now))
        assert logs.status_code in (200, 400), logs.text
        jaeger = api(receiver, "/api/traces", service=text, operation=text, tags=f'{{"k": "{text}"}}')
        assert jaeger.status_code in (200, 400), jaeger.text
    # the data is still there, untouched by any of it
    listed = api(receiver, "/api/v1/metrics").json()["metrics"]
    assert "level" in {m["name"] for m in listed}
    assert not Path("/tmp/pwned").exists() and not Path("/tmp/evil.db").exists()


def test_python_in_a_rule_condition_is_a_parse_error_not_code(hostile_receiver, tmp_path):
    marker = tmp_path / "ran"
    conditions = [
        f"__import__('pathlib').Path('{marker}').touch()",
        f"level > 0 and __import__('pathlib').Path('{marker}').touch()",
        "().__class__.__bases__[0].__subclasses__()",
        "level > 0; import os",
    ]
    for condition in conditions:
        tested = _post(hostile_receiver, "/api/v1/rules/test", {"condition": condition})
        assert tested.status_code == 400, (condition, tested.text)
        created = _post(hostile_receiver, "/api/v1/rules", {"name": "Evil", "condition": condition})
        assert created.status_code == 400, (condition, created.text)
        assert "error" in created.json()
    assert not marker.exists()
    assert "Evil" not in str(api(hostile_receiver, "/api/v1/rules").json())


TRAVERSALS = ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "/etc/passwd", "..", "a/../../b", "%2e%2e"]


def test_view_names_never_leave_the_data_directory(hostile_receiver, tmp_path):
    receiver = hostile_receiver
    data = Path(receiver.config.storage.data_dir).resolve()
    view = {"title": "t", "panels": []}
    for name in TRAVERSALS:
        path = "/api/v1/views/" + (name if "%" in name else quote(name, safe=""))
        url = f"http://127.0.0.1:{receiver.api_port}{path}"
        put = requests.put(url, json=view, timeout=10)
        assert put.status_code in (400, 404, 405, 422), (name, put.status_code, put.text)
        got = requests.get(url, timeout=10)
        assert got.status_code in (400, 404, 405), (name, got.status_code)
        assert "root:" not in got.text
        deleted = requests.delete(url, timeout=10)
        assert deleted.status_code in (400, 404, 405), (name, deleted.status_code)
    outside = [p for p in data.parent.rglob("*") if p.is_file() and data not in p.parents]
    assert outside == []


def test_report_and_static_file_names_never_leave_their_directory(hostile_receiver):
    receiver = hostile_receiver
    for name in TRAVERSALS:
        for path in (f"/dashboard/{name}", f"/dashboard/{quote(name, safe='')}"):
            reply = requests.get(f"http://127.0.0.1:{receiver.api_port}{path}", timeout=10)
            assert "root:" not in reply.text, path
            assert reply.status_code in (404, 307, 200), (path, reply.status_code)
            if reply.status_code == 200:  # a normalised path landing on the page itself
                assert "<html" in reply.text.lower()
        report = api(receiver, "/api/v1/reports/sla", slo=name, month="2026-01", format=name)
        assert report.status_code in (400, 404), (name, report.status_code)
        assert "root:" not in report.text
    assert os.path.exists("/etc/passwd")  # the file the traversal aimed at was there to be read
