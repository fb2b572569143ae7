"""Payload filters: a hook's boolean CEL expression over an event, evaluated at intake.

CEL (the Common Expression Language) through the CEL project's own runtime
(``cel-expr-python``): a filter is compiled once per expression text and cached; it sees
two variables, ``event`` (the event name) and ``data`` (the object the publisher sent).

Cost is bounded three ways: an expression is at most ``MAX_FILTER_LENGTH`` characters; the
list-building macros ``map`` and ``filter`` are left out of the language (they are
quadratic in this runtime and a yes/no filter does not need them: ``exists``, ``all``,
``exists_one``, ``in`` and ``size()`` remain); and the runtime's iteration budget cuts off
any comprehension that runs too long, which fails the evaluation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cel_expr_python import cel

MAX_FILTER_LENGTH = 1000

_CONFIG = """
name: crohooks-hook-filter
stdlib:
  exclude_macros: [map, filter]
variables:
  - name: event
    type_name: string
  - name: data
    type_name: dyn
"""
_ENV = cel.NewEnv(config=cel.NewEnvConfigFromYaml(_CONFIG))
_POSITION = re.compile(r"<input>:(\d+):(\d+): (.*)")
_LIST_MACRO = re.compile(r"\.\s*(map|filter)\s*\(")


class FilterInvalid(ValueError):
    """A filter expression that can't be used: its message names the line and column."""

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None):
        self.line = line
        self.column = column
        where = f"line {line}, column {column}: " if line is not None else ""
        super().__init__(where + message)


class FilterFailed(Exception):
    """A filter that could not be evaluated for one event (the event is delivered)."""


@dataclass(frozen=True, slots=True)
class Filter:
    source: str
    _expression: Any

    def matches(self, event: EventView) -> bool:
        """Whether the hook wants the event; ``FilterFailed`` if the filter can't tell."""
        try:
            value = self._expression.eval(event.activation())
        except RuntimeError as error:  # e.g. the iteration budget ran out
            raise FilterFailed(_first_line(str(error))) from None
        result = value.value()
        if isinstance(result, bool):
            return result
        raise FilterFailed(_first_line(f"the filter gave {value.type().name()}: {result}"))


class EventView:
    """One event as filters see it, converted for the runtime once, whatever the number of
    hooks whose filters read it."""

    __slots__ = ("_activation", "data", "event")

    def __init__(self, event: str, data: dict[str, Any]) -> None:
        self.event = event
        self.data = data
        self._activation: Any = None

    def activation(self) -> Any:
        if self._activation is None:
            self._activation = _ENV.Activation({"event": self.event, "data": self.data})
        return self._activation


def compile_filter(source: str) -> Filter:
    """The filter of an expression, or ``FilterInvalid`` saying where it is wrong."""
    if not source.strip():
        raise FilterInvalid("the filter is empty")
    if len(source) > MAX_FILTER_LENGTH:
        raise FilterInvalid(f"the filter is longer than {MAX_FILTER_LENGTH} characters")
    return _compiled(source)


@lru_cache(maxsize=4096)
def _compiled(source: str) -> Filter:
    try:
        expression = _ENV.compile(source)
    except RuntimeError as error:
        raise _invalid(source, str(error)) from None
    returned = expression.return_type()
    if returned != cel.Type.BOOL and returned != cel.Type.DYN:
        raise FilterInvalid(
            f"the filter must give true or false, not a value of type {returned.name().lower()}"
        )
    return Filter(source, expression)


def _invalid(source: str, message: str) -> FilterInvalid:
    found = _POSITION.search(message)
    if found is None:
        return FilterInvalid(_first_line(message))
    line, column, reason = int(found[1]), int(found[2]), found[3]  # both counted from 1
    if _LIST_MACRO.search(source) and "undeclared reference" in reason:
        reason = (
            "map and filter are not available in hook filters; use exists, all, "
            "exists_one, in or size()"
        )
    return FilterInvalid(_first_line(reason), line=line, column=column)


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0][:300] if message.strip() else "unknown error"
