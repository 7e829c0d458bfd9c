"""StateDB: durable settings, migrations applied once, transactions, many threads."""

from __future__ import annotations

import threading

import pytest

from otel_audio.store.state import StateDB


@pytest.fixture
def db(tmp_path):
    state = StateDB(tmp_path / "data")
    yield state
    state.close()


def test_database_file_is_state_sqlite_in_wal_mode(db):
    assert db.path.name == "state.sqlite"
    with db.connect() as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_connections_use_full_synchronous(db):
    with db.connect() as con:
        assert con.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_migration_applies_once(db):
    assert db.migrate(
        "0001_silences", "CREATE TABLE silences (id TEXT PRIMARY KEY); CREATE INDEX i ON silences(id)"
    )
    assert not db.migrate("0001_silences", "CREATE TABLE silences (id TEXT PRIMARY KEY)")


def test_migrations_survive_reopening(tmp_path):
    first = StateDB(tmp_path)
    first.migrate("0001", "CREATE TABLE t (x INTEGER)")
    first.close()
    again = StateDB(tmp_path)
    assert not again.migrate("0001", "CREATE TABLE t (x INTEGER)")
    again.close()


def test_failed_migration_leaves_nothing_behind(db):
    with pytest.raises(Exception, match="syntax error"):
        db.migrate("0002", "CREATE TABLE ok (x INTEGER); CREATE TABLE broken (")
    with db.connect() as con:
        assert con.execute("SELECT name FROM sqlite_master WHERE name = 'ok'").fetchall() == []
    assert db.migrate("0002", "CREATE TABLE ok (x INTEGER)")


def test_connect_commits_on_success(db):
    db.migrate("0001", "CREATE TABLE t (x INTEGER)")
    with db.connect() as con:
        con.execute("INSERT INTO t VALUES (1)")
    with db.connect() as con:
        assert con.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_connect_rolls_back_on_exception(db):
    db.migrate("0001", "CREATE TABLE t (x INTEGER)")
    with pytest.raises(RuntimeError), db.connect() as con:
        con.execute("INSERT INTO t VALUES (1)")
        raise RuntimeError("boom")
    with db.connect() as con:
        assert con.execute("SELECT count(*) FROM t").fetchone() == (0,)


def test_writes_from_many_threads_all_land(db):
    db.migrate("0001", "CREATE TABLE t (x INTEGER)")

    def write(base: int) -> None:
        for i in range(50):
            with db.connect() as con:
                con.execute("INSERT INTO t VALUES (?)", (base + i,))

    threads = [threading.Thread(target=write, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with db.connect() as con:
        assert con.execute("SELECT count(DISTINCT x) FROM t").fetchone() == (200,)
