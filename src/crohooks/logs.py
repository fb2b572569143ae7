"""Structured logs on stderr: JSON lines by default, readable ones for a terminal.

crohooks' own loggers (structlog) and the standard-library loggers of its libraries
(uvicorn, SQLAlchemy, aiohttp) render through the same processors, so every line of a
process is one JSON object. Nothing logs tokens, secrets, bodies or query strings.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog

from crohooks.settings import Settings


def configure_logging(settings: Settings, *, stream: TextIO | None = None) -> None:
    """Render every log line to ``stream`` (standard error unless given)."""
    stream = stream if stream is not None else sys.stderr
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if settings.log_format == "json"
        # Plain tracebacks: rich's would print every frame's locals, tokens included.
        else structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    )
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.INFO))
    # Alembic narrates every migration step at INFO; crohooks reports the outcome instead.
    for noisy in ("uvicorn.access", "sqlalchemy.engine", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
