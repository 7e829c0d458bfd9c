"""OTLP attribute values as JSON, with the caches that make repeated attribute sets cheap.

Attribute values (OTLP AnyValue) become JSON values: strings, booleans, integers, doubles
(NaN and infinities as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``, as in proto3
JSON), arrays, key-value lists as objects, bytes as base64 strings, an empty value as null.
Attribute sets become canonical JSON objects (``processors.base.canonical_json``).
"""

from __future__ import annotations

import base64
import json
import math
import threading
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import KeyValue

CACHE_SIZE = 1 << 17  # entries per cache (attribute JSON; series ids)

# processors.base.canonical_json with its encoder built once: json.dumps builds a new encoder on
# every call with non-default options, which costs more than encoding a small attribute set.
# tests/test_decode.py checks the two agree.
canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def _nonfinite(value: float) -> str:
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def any_value(value: Any) -> Any:
    """An OTLP AnyValue as a JSON-able Python value (see the module docstring)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "int_value":
        return value.int_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "double_value":
        number = value.double_value
        return number if math.isfinite(number) else _nonfinite(number)
    if kind == "array_value":
        return [any_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode("ascii")
    return None


def attributes_dict(attributes: Any) -> dict[str, Any]:
    """A repeated KeyValue as a dict (a repeated key: the last one wins)."""
    return {kv.key: any_value(kv.value) for kv in attributes}


def attributes_json(attributes: Any) -> str:
    """A repeated KeyValue as canonical JSON."""
    return canonical({kv.key: any_value(kv.value) for kv in attributes}) if attributes else "{}"


# Point attribute sets repeat from request to request (one point per series per export), so their
# JSON and series ids are cached by the serialized attribute bytes. When full, the older half of
# a cache is dropped (dicts keep insertion order): a bound with no bookkeeping per hit.
_attr_json_cache: dict[bytes, str] = {}
_serialize = KeyValue.SerializeToString
_evicting = threading.Lock()


def attribute_key(attributes: Any) -> bytes:
    """The cache key of an attribute list: each serialized KeyValue behind its length.

    Plain concatenation is ambiguous: ``[{a: true}, {}]`` and ``[{a}, {"": true}]`` serialize to
    the same bytes, and the second list would be given the first one's JSON (found by fuzzing).
    """
    if not attributes:
        return b""
    return b"".join(len(b).to_bytes(4, "little") + b for b in map(_serialize, attributes))


def store_bounded(cache: dict, key: Any, value: Any) -> None:
    if len(cache) >= CACHE_SIZE:
        with _evicting:  # decode runs on several transport threads at once
            for old in list(cache)[: len(cache) - CACHE_SIZE // 2]:
                cache.pop(old, None)
    cache[key] = value


def cached_attributes_json(attributes: Any, key: bytes | None = None) -> str:
    if not attributes:
        return "{}"
    if key is None:
        key = attribute_key(attributes)
    text = _attr_json_cache.get(key)
    if text is None:
        text = attributes_json(attributes)
        store_bounded(_attr_json_cache, key, text)
    return text


def scope_identity(scope: Any) -> str:
    """The scope part of a series id: canonical JSON of {name, version, attributes}."""
    return canonical(
        {"name": scope.name, "version": scope.version, "attributes": attributes_dict(scope.attributes)}
    )


def resource_identity(resource: Any) -> tuple[str, str]:
    """(canonical JSON of the resource attributes, service.name or "unknown_service")."""
    attrs = attributes_dict(resource.attributes)
    service = attrs.get("service.name")
    return canonical(attrs), service if isinstance(service, str) and service else "unknown_service"
