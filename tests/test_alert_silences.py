"""Silences mute matching alerts while active, follow Alertmanager's rules and survive a restart."""

from __future__ import annotations

import pytest

from otel_audio.processors.alerting.model import LabelMatcher
from otel_audio.processors.alerting.silences import Silences, SilenceState

S = 10**9
H = 3600 * S
T0 = 1_700_000_000 * S

ENHANCER_WARNING = {"alertname": "SlowStage", "service": "enhancer", "severity": "warning"}


@pytest.fixture
def silences():
    store = Silences(":memory:")
    yield store
    store.close()


def add(store: Silences, matchers, start=T0, end=T0 + H, now=T0, **kw):
    return store.add(matchers, start, end, created_by="ana", comment="deploy", now_ns=now, **kw)


def test_active_silence_mutes_alerts_matching_all_its_matchers(silences):
    s = add(silences, ['service="enhancer"', 'severity=~"warning|info"'])
    assert silences.is_silenced(ENHANCER_WARNING, T0) == [s.id]
    assert silences.is_silenced({**ENHANCER_WARNING, "severity": "critical"}, T0) == []
    assert silences.is_silenced({**ENHANCER_WARNING, "service": "denoiser"}, T0) == []


def test_negative_matcher_treats_a_missing_label_as_empty(silences):
    s = add(silences, ['service="enhancer"', 'env!="prod"'])
    assert silences.is_silenced({"service": "enhancer"}, T0) == [s.id]
    assert silences.is_silenced({"service": "enhancer", "env": "prod"}, T0) == []


def test_empty_value_matcher_matches_alerts_without_that_label(silences):
    s = add(silences, ['env=""', 'service=~"enh.*"'])
    assert silences.is_silenced({"service": "enhancer"}, T0) == [s.id]
    assert silences.is_silenced({"service": "enhancer", "env": "prod"}, T0) == []


def test_silence_added_after_a_lookup_is_seen_by_the_next_one(silences):
    assert silences.is_silenced(ENHANCER_WARNING, T0) == []
    s = add(silences, ['service="enhancer"'])
    assert silences.is_silenced(ENHANCER_WARNING, T0) == [s.id]
    silences.expire(s.id, now_ns=T0 + S)
    assert silences.is_silenced(ENHANCER_WARNING, T0 + S) == []


def test_every_matching_silence_is_reported(silences):
    a = add(silences, ['service="enhancer"'])
    b = add(silences, [LabelMatcher("severity", "=", "warning")])
    add(silences, ['service="denoiser"'])
    assert silences.is_silenced(ENHANCER_WARNING, T0) == [a.id, b.id]


def test_silence_is_active_from_its_start_until_just_before_its_end(silences):
    s = add(silences, ['service="enhancer"'], start=T0 + H, end=T0 + 2 * H)
    assert s.state(T0 + H - 1) is SilenceState.PENDING
    assert silences.is_silenced(ENHANCER_WARNING, T0 + H - 1) == []
    assert s.state(T0 + H) is SilenceState.ACTIVE
    assert silences.is_silenced(ENHANCER_WARNING, T0 + H) == [s.id]
    assert silences.is_silenced(ENHANCER_WARNING, T0 + 2 * H - 1) == [s.id]
    assert s.state(T0 + 2 * H) is SilenceState.EXPIRED
    assert silences.is_silenced(ENHANCER_WARNING, T0 + 2 * H) == []


def test_start_in_the_past_is_moved_to_now(silences):
    s = add(silences, ['service="enhancer"'], start=T0 - H, now=T0)
    assert s.starts_at == T0
    assert s.updated_at == T0


def test_expiring_an_active_silence_ends_it_now(silences):
    s = add(silences, ['service="enhancer"'])
    expired = silences.expire(s.id, now_ns=T0 + 10 * S)
    assert (expired.starts_at, expired.ends_at) == (T0, T0 + 10 * S)
    assert silences.get(s.id).state(T0 + 10 * S) is SilenceState.EXPIRED
    assert silences.is_silenced(ENHANCER_WARNING, T0 + 10 * S) == []
    assert silences.is_silenced(ENHANCER_WARNING, T0 + 5 * S) == [s.id]  # history stays true


def test_expiring_a_pending_silence_moves_start_and_end_to_now(silences):
    s = add(silences, ['service="enhancer"'], start=T0 + H, end=T0 + 2 * H)
    expired = silences.expire(s.id, now_ns=T0 + 60 * S)
    assert (expired.starts_at, expired.ends_at) == (T0 + 60 * S, T0 + 60 * S)
    assert silences.is_silenced(ENHANCER_WARNING, T0 + H) == []


def test_expiring_twice_or_an_unknown_id_is_an_error(silences):
    s = add(silences, ['service="enhancer"'])
    silences.expire(s.id, now_ns=T0 + S)
    with pytest.raises(ValueError, match="already expired"):
        silences.expire(s.id, now_ns=T0 + 2 * S)
    with pytest.raises(KeyError, match="nope"):
        silences.expire("nope", now_ns=T0)
    with pytest.raises(KeyError):
        silences.get("nope")


def test_list_filters_by_state_at_a_moment(silences):
    active = add(silences, ['service="a"'])
    pending = add(silences, ['service="b"'], start=T0 + H, end=T0 + 2 * H)
    ended = add(silences, ['service="c"'], end=T0 + S)
    assert [s.id for s in silences.list()] == [active.id, pending.id, ended.id]
    at = T0 + 2 * S
    assert silences.list(at, SilenceState.ACTIVE) == [active]
    assert silences.list(at, SilenceState.PENDING) == [pending]
    assert silences.list(at, SilenceState.EXPIRED) == [ended]


def test_silences_survive_a_restart(tmp_path):
    path = tmp_path / "silences.db"
    store = Silences(path)
    kept = add(store, ['service="enhancer"', 'severity=~"warning|info"'], end=T0 + 2 * H)
    ended = add(store, ['service="denoiser"'])
    store.expire(ended.id, now_ns=T0 + 5 * S)
    store.close()

    reopened = Silences(path)
    assert reopened.list() == [kept, reopened.get(ended.id)]
    assert reopened.get(kept.id) == kept
    assert reopened.get(ended.id).ends_at == T0 + 5 * S
    assert reopened.is_silenced(ENHANCER_WARNING, T0 + H) == [kept.id]
    assert reopened.is_silenced({"service": "denoiser"}, T0 + H) == []
    reopened.close()


def test_update_with_same_matchers_changes_the_silence_in_place(silences):
    s = add(silences, ['service="enhancer"'])
    longer = add(silences, ['service="enhancer"'], end=T0 + 3 * H, now=T0 + S, id=s.id)
    assert longer.id == s.id
    assert silences.get(s.id).ends_at == T0 + 3 * H
    assert len(silences.list()) == 1


def test_update_with_other_matchers_expires_the_old_silence_and_makes_a_new_one(silences):
    s = add(silences, ['service="enhancer"'])
    other = add(silences, ['service="denoiser"'], now=T0 + S, id=s.id)
    assert other.id != s.id
    assert silences.get(s.id).ends_at == T0 + S
    assert silences.is_silenced({"service": "enhancer"}, T0 + S) == []
    assert silences.is_silenced({"service": "denoiser"}, T0 + S) == [other.id]


def test_update_of_an_unknown_id_is_an_error(silences):
    with pytest.raises(KeyError, match="missing"):
        add(silences, ['service="enhancer"'], id="missing")


def test_gc_forgets_silences_expired_longer_than_the_retention(tmp_path):
    store = Silences(tmp_path / "s.db")
    old = add(store, ['service="a"'], end=T0 + S)
    recent = add(store, ['service="b"'], end=T0 + 10 * H)
    assert store.gc(now_ns=T0 + S + 120 * H) == 1
    assert [s.id for s in store.list()] == [recent.id]
    store.close()
    reopened = Silences(tmp_path / "s.db")
    assert [s.id for s in reopened.list()] == [recent.id]
    with pytest.raises(KeyError):
        reopened.get(old.id)
    reopened.close()


@pytest.mark.parametrize(
    ("matchers", "start", "end", "message"),
    [
        ([], T0, T0 + H, "at least one matcher is required"),
        (['service=~".*"'], T0, T0 + H, "at least one matcher must not match the empty string"),
        (['service=""', 'env!="prod"'], T0, T0 + H, "must not match the empty string"),
        (['service="a"', "bad matcher"], T0, T0 + H, "matchers[1]: matcher 'bad matcher'"),
        (['service=~"("'], T0, T0 + H, "matchers[0]: matcher service=~'(': bad regex"),
        (['service="a"'], T0 + H, T0, "ends_at: must be after starts_at"),
        (['service="a"'], T0, T0, "ends_at: must be after starts_at"),
        (['service="a"'], T0 - 2 * H, T0 - H, "ends_at: must not be in the past"),
    ],
)
def test_invalid_silences_are_rejected_with_the_reason(silences, matchers, start, end, message):
    with pytest.raises(ValueError) as err:
        add(silences, matchers, start=start, end=end)
    assert message in str(err.value)
    assert silences.list() == []


def test_creator_and_comment_are_required(silences):
    with pytest.raises(ValueError, match="created_by: required"):
        silences.add(['service="a"'], T0, T0 + H, created_by="", comment="x", now_ns=T0)
    with pytest.raises(ValueError, match="comment: required"):
        silences.add(['service="a"'], T0, T0 + H, created_by="ana", comment="  ", now_ns=T0)
