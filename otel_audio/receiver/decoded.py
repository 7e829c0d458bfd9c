"""What every decoder returns: the accepted batch, the refusal count and the messages why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

import pyarrow as pa

from otel_audio.processors.base import LogBatch, MetricBatch, SpanBatch

BatchT = TypeVar("BatchT", MetricBatch, SpanBatch, LogBatch)

MAX_ERRORS = 16  # distinct messages kept per request; the rest are summarised in one line
MAX_ERROR_MESSAGE = 2048  # characters of Decoded.error_message

I64_MAX = 2**63 - 1  # OTLP times are uint64; the store's are int64 nanoseconds


@dataclass(frozen=True)
class Decoded(Generic[BatchT]):
    """One decoded request: the batch of accepted items, the count refused, and why.

    ``rejected`` goes into ``partial_success.rejected_data_points`` / ``rejected_spans`` /
    ``rejected_log_records``; :attr:`error_message` into ``partial_success.error_message``.
    ``errors`` holds at most ``MAX_ERRORS + 1`` lines.
    """

    batch: BatchT
    rejected: int
    errors: list[str]
    rejected_over_budget: int = 0  # the part of ``rejected`` refused by the series budget

    @property
    def error_message(self) -> str:
        """The errors joined with "; ", cut to ``MAX_ERROR_MESSAGE`` characters."""
        text = "; ".join(self.errors)
        return text if len(text) <= MAX_ERROR_MESSAGE else text[: MAX_ERROR_MESSAGE - 3] + "..."


class Errors:
    """Refusal counter and the first few messages of one request."""

    def __init__(self) -> None:
        self.rejected = 0
        self.over_budget = 0
        self.messages: list[str] = []
        self.problems = 0

    def add(self, message: str, items: int = 1) -> None:
        self.rejected += items
        self.problems += 1
        if len(self.messages) < MAX_ERRORS:
            self.messages.append(message)

    def lines(self) -> list[str]:
        extra = self.problems - len(self.messages)
        return [*self.messages, f"and {extra} more problems"] if extra else list(self.messages)


def rows_table(rows: list[tuple], schema: pa.Schema) -> pa.Table:
    """Row tuples (in schema order) as one Arrow table, built column by column."""
    if not rows:
        return schema.empty_table()
    columns = zip(*rows, strict=True)
    return pa.Table.from_arrays(
        [pa.array(list(c), type=f.type) for c, f in zip(columns, schema, strict=True)], schema=schema
    )
