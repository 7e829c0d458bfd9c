"""Alerting routes: rules, alerts and their history, silences, incidents, notifications, channel tests.

Everything here talks to the receiver's ``alerting`` processor; without one in the chain each
route answers 404 saying so. Errors are JSON ``{"error": ...}``: 400 for an invalid rule,
silence or condition (the message names the field, and for conditions the line and column),
404 for unknown names and ids, 403 for rules that come from the config file, 409 for a rule
name already taken, 502 when a channel test cannot deliver.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import JSONResponse, Response

from otel_audio.api import params
from otel_audio.processors.alerting.incidents import rfc3339
from otel_audio.processors.alerting.model import Alert, AlertState, Notification, parse_matcher
from otel_audio.processors.units import duration_ns

router = APIRouter(prefix="/api/v1", tags=["alerting"])
_SILENCE_FIELDS = {"id", "matchers", "startsAt", "endsAt", "duration", "createdBy", "comment"}


class _Missing(Exception):
    pass


def _alerting(request: Request) -> Any:
    alerting = request.app.state.receiver.alerting
    if alerting is None:
        raise _Missing
    return alerting


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status)


def _guard(request: Request, action) -> Any:
    """Run ``action(alerting)``, mapping the engine's exceptions to HTTP answers."""
    try:
        return action(_alerting(request))
    except _Missing:
        return _error(404, "alerting is not configured: add the alerting processor to the receiver config")
    except PermissionError as exc:
        return _error(403, str(exc))
    except KeyError as exc:
        return _error(404, str(exc.args[0]) if exc.args else "not found")
    except ValueError as exc:
        status = 409 if "already exists" in str(exc) else 400
        return _error(status, str(exc))


def _now() -> int:
    return time.time_ns()


def alert_dict(alert: Alert, **extra: Any) -> dict[str, Any]:
    """An alert as the API shows it: labels, annotations, state, times, value."""
    out = {
        "fingerprint": alert.fingerprint,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "state": alert.state.value,
        "startsAt": rfc3339(alert.starts_at),
        "endsAt": rfc3339(alert.ends_at) if alert.ends_at else None,
        "value": None if alert.value != alert.value else alert.value,
        "generatorURL": alert.generator_url,
    }
    out.update(extra)
    return out


# -- rules ---------------------------------------------------------------------------------------


@router.get("/rules", summary="Every alert rule, from the config and from the API")
def list_rules(request: Request) -> Any:
    return _guard(request, lambda a: {"rules": [r.to_dict() for r in a.rules()]})


@router.post("/rules", status_code=201, summary="Create a rule (validated before it takes effect)")
def create_rule(request: Request, rule: Annotated[dict[str, Any], Body()]) -> Any:
    return _guard(request, lambda a: a.put_rule(rule, create=True).to_dict())


@router.put("/rules/{name}", summary="Replace a rule made through the API")
def replace_rule(request: Request, name: str, rule: Annotated[dict[str, Any], Body()]) -> Any:
    if rule.get("name", name) != name:
        return _error(400, f"rule.name: the body names {rule.get('name')!r}, the path {name!r}")
    return _guard(request, lambda a: a.put_rule({**rule, "name": name}, create=False).to_dict())


@router.delete(
    "/rules/{name}", status_code=204, response_model=None, summary="Delete a rule made through the API"
)
def delete_rule(request: Request, name: str) -> Any:
    result = _guard(request, lambda a: a.delete_rule(name))
    return result if isinstance(result, Response) else Response(status_code=204)


@router.post("/rules/test", summary="Evaluate a condition now, without creating a rule")
def test_condition(
    request: Request,
    condition: Annotated[str, Body(embed=True)],
    at: Annotated[str | None, Body(embed=True)] = None,
) -> Any:
    at_ns = params.time_ns(at, "at", _now())
    return _guard(
        request,
        lambda a: {
            "condition": condition,
            "at": rfc3339(at_ns),
            "samples": [{"labels": s.labels, "value": s.value} for s in a.test_condition(condition, at_ns)],
        },
    )


# -- alerts --------------------------------------------------------------------------------------


@router.get("/alerts", summary="Pending and firing alerts, with the silences and alerts muting them")
def list_alerts(request: Request) -> Any:
    def view(a: Any) -> dict[str, Any]:
        now = _now()
        muted = {v.alert.fingerprint: v for v in a.dispatcher.alerts(now)}
        out = []
        for alert in a.active_alerts():
            v = muted.get(alert.fingerprint)
            out.append(
                alert_dict(
                    alert,
                    receivers=list(v.receivers) if v else [],
                    silencedBy=list(v.silenced_by) if v else [],
                    inhibitedBy=list(v.inhibited_by) if v else [],
                )
            )
        return {"alerts": out}

    return _guard(request, view)


@router.get("/alerts/history", summary="Alert transitions, newest first")
def alert_history(
    request: Request,
    since: str | None = None,
    rule: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Any:
    since_ns = params.time_ns(since, "since", 0)
    return _guard(request, lambda a: {"transitions": a.history.transitions(since_ns, rule, limit)})


@router.get("/alerts/groups", summary="Notification groups and when each flushes next")
def alert_groups(request: Request) -> Any:
    def view(a: Any) -> dict[str, Any]:
        return {
            "groups": [
                {
                    "groupKey": g.group_key,
                    "receiver": g.receiver,
                    "labels": dict(g.group_labels),
                    "alerts": [alert_dict(x) for x in g.alerts],
                    "nextFlush": rfc3339(g.next_flush_ns),
                }
                for g in a.dispatcher.groups()
            ]
        }

    return _guard(request, view)


# -- silences ------------------------------------------------------------------------------------


def _silence_dict(silence: Any, now: int) -> dict[str, Any]:
    return {
        "id": silence.id,
        "matchers": [f'{m.name}{m.op}"{m.value}"' for m in silence.matchers],
        "startsAt": rfc3339(silence.starts_at),
        "endsAt": rfc3339(silence.ends_at),
        "createdBy": silence.created_by,
        "comment": silence.comment,
        "status": silence.state(now).value,
    }


@router.get("/silences", summary="Silences, pending, active and expired")
def list_silences(request: Request) -> Any:
    now = _now()
    return _guard(request, lambda a: {"silences": [_silence_dict(s, now) for s in a.silences.list(now)]})


@router.post("/silences", status_code=201, summary="Create (or, with id, update) a silence")
def create_silence(request: Request, body: Annotated[dict[str, Any], Body()]) -> Any:
    now = _now()

    def add(a: Any) -> dict[str, Any]:
        unknown = sorted(set(body) - _SILENCE_FIELDS)
        if unknown:
            raise ValueError(f"silence.{unknown[0]}: unknown field")
        matchers = body.get("matchers")
        if not isinstance(matchers, list) or not matchers:
            raise ValueError('silence.matchers: expected a non-empty list like ["service=\\"enh\\""]')
        parsed = [parse_matcher(m) if isinstance(m, str) else _matcher(m) for m in matchers]
        starts = params.time_ns(body.get("startsAt"), "startsAt", now, now)
        if body.get("endsAt"):
            ends = params.time_ns(body["endsAt"], "endsAt", None, now)
        elif body.get("duration"):
            ends = starts + duration_ns(str(body["duration"]), "silence.duration")
        else:
            raise ValueError("silence: give endsAt or duration (e.g. 2h)")
        silence = a.silences.add(parsed, starts, ends, str(body.get("createdBy", "")),
                                 str(body.get("comment", "")), now, id=body.get("id"))  # fmt: skip
        return _silence_dict(silence, now)

    return _guard(request, add)


def _matcher(item: Any):
    if not isinstance(item, dict) or set(item) - {"name", "value", "isRegex", "isEqual"}:
        raise ValueError('silence.matchers: each is a string name="value" or {name, value, isRegex, isEqual}')
    regex, equal = bool(item.get("isRegex")), item.get("isEqual", True)
    op = {(False, True): "=", (True, True): "=~", (False, False): "!=", (True, False): "!~"}[
        (regex, bool(equal))
    ]
    return parse_matcher(f'{item["name"]}{op}"{item["value"]}"')


@router.delete("/silences/{silence_id}", summary="Expire a silence now")
def expire_silence(request: Request, silence_id: str) -> Any:
    now = _now()
    return _guard(request, lambda a: _silence_dict(a.silences.expire(silence_id, now), now))


# -- incidents -----------------------------------------------------------------------------------


@router.get("/incidents", summary="Incidents, newest first")
def list_incidents(
    request: Request, status: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> Any:
    return _guard(
        request, lambda a: {"incidents": [i.to_dict() for i in a.incidents.list(status=status, limit=limit)]}
    )


@router.get("/incidents/{incident_id}", summary="One incident with its timeline and escalation")
def get_incident(request: Request, incident_id: str) -> Any:
    def view(a: Any) -> dict[str, Any]:
        incident = a.incidents.get(incident_id)
        escalation = a.escalator.status(incident.id)
        return {
            **incident.to_dict(),
            "timeline": [e.to_dict() for e in a.incidents.timeline(incident.id)],
            "escalation": escalation.to_dict() if escalation else None,
        }

    return _guard(request, view)


@router.post("/incidents/{incident_id}/ack", summary="Acknowledge an incident: escalation stops")
def acknowledge(request: Request, incident_id: str, by: Annotated[str, Body(embed=True)]) -> Any:
    return _guard(request, lambda a: a.incidents.acknowledge(incident_id, by, _now()).to_dict())


@router.post("/incidents/{incident_id}/notes", status_code=201, summary="Add a note to the timeline")
def add_note(
    request: Request,
    incident_id: str,
    by: Annotated[str, Body(embed=True)],
    text: Annotated[str, Body(embed=True)],
) -> Any:
    return _guard(request, lambda a: a.incidents.add_note(incident_id, by, text, _now()).to_dict())


# -- notifications and channels ------------------------------------------------------------------


@router.get("/notifications", summary="Deliveries in the outbox: pending, delivered, failed")
def notifications(request: Request, limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> Any:
    def view(a: Any) -> dict[str, Any]:
        rows = [{**dataclasses.asdict(d), "state": d.state} for d in a.outbox.history(limit)]
        return {"deliveries": rows, "stats": a.outbox.stats()}

    return _guard(request, view)


@router.post("/channels/{name}/test", summary="Send a test notification through one channel now")
def test_channel(request: Request, name: str) -> Any:
    def send(a: Any) -> Any:
        channel = a.channels.get(name)
        if channel is None:
            raise KeyError(f"channel {name!r} not found; configured: {', '.join(a.channels) or 'none'}")
        now = _now()
        alert = Alert(
            {"alertname": "OtelAudioTest", "severity": "info"},
            {"summary": "A test notification from otel-audio"},
            AlertState.FIRING,
            now,
        )
        note = Notification(name, f"test:{now}", {"alertname": "OtelAudioTest"}, (alert,), "firing", now)
        try:
            channel.send(note)
        except Exception as exc:  # DeliveryError and whatever the transport raised
            return _error(502, f"channel {name!r} did not accept the test notification: {exc}")
        return {"channel": name, "delivered": True}

    return _guard(request, send)
