"""Structured logging: one line per event on stderr, ``key=value`` text for people or
JSON for machines. stdout is kept for command output (tables or ``--json``)."""

from __future__ import annotations

import logging
import sys

import structlog

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}


def configure_logging(level: str = "info", fmt: str = "text") -> None:
    numeric = LEVELS.get(level.lower())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r} (one of {', '.join(LEVELS)})")
    renderer: structlog.types.Processor
    extra: list[structlog.types.Processor] = []
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        extra = [structlog.processors.format_exc_info]  # tracebacks as one JSON field
    elif fmt == "text":
        # Plain tracebacks: the default (rich) formatter prints every frame's local
        # variables, which put the API token into the log (issue 7 §4).
        renderer = structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0,
                                                 exception_formatter=structlog.dev.plain_traceback)
    else:
        raise ValueError(f"unknown log format {fmt!r} (text or json)")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *extra,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Third-party libraries (libp2p, hypercorn) log through stdlib logging; keep
    # their chatter at warning unless the operator asked for debug.
    logging.basicConfig(stream=sys.stderr, level=max(numeric, logging.WARNING),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)
