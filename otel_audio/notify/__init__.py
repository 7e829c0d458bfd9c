"""Notification delivery: a durable outbox and the channels it delivers through.

Alerting produces :class:`~otel_audio.processors.alerting.model.Notification` values; this package
makes sure each reaches every channel it is routed to, across outages and restarts::

    from otel_audio.notify import Outbox, channel_from_config

    channels = {name: channel_from_config(name, cfg) for name, cfg in config["channels"].items()}
    outbox = Outbox(data_dir / "outbox.sqlite", channels)
    outbox.start()
    outbox.put(notification, ["oncall"])   # stored (fsync'd) now, delivered by a worker thread

``outbox`` holds the durability and retry semantics, ``backoff`` the retry timing, ``channels``
the payload each receiver documents. ``docs/notifications.md`` is the user's reference.
"""

from otel_audio.notify.backoff import Backoff
from otel_audio.notify.channels import Channel, DeliveryError, channel_from_config
from otel_audio.notify.outbox import Outbox
from otel_audio.notify.rows import Attempt, Delivery

__all__ = ["Attempt", "Backoff", "Channel", "Delivery", "DeliveryError", "Outbox", "channel_from_config"]
