"""A notification as the outbox stores it: JSON with every field, read back to an equal value.

Every field is kept, so the notification read back has the same ``key`` (the idempotency key's
base) and renders the same payload on every retry and after a restart. A NaN alert value is
stored as ``null``.
"""

from __future__ import annotations

import json
import math

from otel_audio.processors.alerting.model import Alert, AlertState, Notification


def notification_to_json(notification: Notification) -> str:
    """The notification as stored in the outbox (every field, so ``key`` is the same when read back)."""
    return json.dumps(
        {
            "receiver": notification.receiver,
            "group_key": notification.group_key,
            "group_labels": notification.group_labels,
            "status": notification.status,
            "created_at": notification.created_at,
            "truncated_alerts": notification.truncated_alerts,
            "extra": notification.extra,
            "alerts": [
                {
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "state": a.state.value,
                    "starts_at": a.starts_at,
                    "ends_at": a.ends_at,
                    "value": None if math.isnan(a.value) else a.value,
                    "generator_url": a.generator_url,
                }
                for a in notification.alerts
            ],
        },
        sort_keys=True,
        default=str,
    )


def notification_from_json(text: str) -> Notification:
    data = json.loads(text)
    alerts = tuple(
        Alert(
            labels=a["labels"],
            annotations=a["annotations"],
            state=AlertState(a["state"]),
            starts_at=a["starts_at"],
            ends_at=a["ends_at"],
            value=math.nan if a["value"] is None else a["value"],
            generator_url=a["generator_url"],
        )
        for a in data["alerts"]
    )
    return Notification(
        receiver=data["receiver"],
        group_key=data["group_key"],
        group_labels=data["group_labels"],
        alerts=alerts,
        status=data["status"],
        created_at=data["created_at"],
        truncated_alerts=data["truncated_alerts"],
        extra=data["extra"],
    )
