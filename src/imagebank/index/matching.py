"""Conditions of ``domain.matching`` as SQL on the index's columns (SQLite and PostgreSQL).

Wildcard matching is case-sensitive on both databases (SQLite's LIKE is made so by the
engine's ``case_sensitive_like`` pragma); a case-insensitive condition (fuzzy person names)
compares lower-cased text. Dates are YYYYMMDD text, so their ranges compare as text exactly;
times compare as text too, which is exact for values written to the same precision.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, and_, func

from imagebank.domain.matching import Condition, MatchKind, like_pattern


def _typed(column: Any, value: str) -> Any:
    python_type = getattr(column.type, "python_type", str)
    if python_type is int:
        return int(value)
    if python_type is float:
        return float(value)
    return value


def condition_clause(condition: Condition, column: Any) -> ColumnElement[bool]:
    """The WHERE clause of ``condition`` on ``column`` (the condition's indexed column)."""
    target = func.lower(column) if condition.case_insensitive else column

    def text(value: str) -> str:
        return value.lower() if condition.case_insensitive else value

    if condition.kind is MatchKind.SINGLE:
        value = condition.values[0]
        return target == (text(value) if condition.case_insensitive else _typed(column, value))
    if condition.kind is MatchKind.LIST:
        clause: ColumnElement[bool] = column.in_([_typed(column, v) for v in condition.values])
        return clause
    if condition.kind is MatchKind.WILDCARD:
        return target.like(like_pattern(text(condition.values[0])), escape="\\")
    low, high = condition.values
    parts = []
    if low:
        parts.append(column >= low)
    if high:
        parts.append(column <= high)
    return and_(*parts)
