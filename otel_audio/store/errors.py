"""The error every query raises for a request it cannot answer; the API turns it into a 400."""

from __future__ import annotations


class QueryError(ValueError):
    """A query the store cannot answer as asked; the message says why and what is accepted."""
