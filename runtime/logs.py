"""Structured logging for every dbaas process (structlog, one JSON object per line).

Correlation ids travel in structlog's context variables: bind them with
``structlog.contextvars.bind_contextvars(correlation_id=...)`` around the work they belong to.
"""
from __future__ import annotations

import logging
import os
import sys

import structlog


def configure(process: str, level: str | None = None, stream=None) -> structlog.stdlib.BoundLogger:
    """Configure structlog and the stdlib root logger to write JSON lines; return a logger
    bound to ``process``. Safe to call more than once."""
    level_name = (level or os.environ.get("DBAAS_LOG_LEVEL", "INFO")).upper()
    numeric = getattr(logging, level_name, logging.INFO)
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream or sys.stderr),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        structlog.processors.JSONRenderer()],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # Client libraries log every request at INFO; their failures still surface as warnings.
    for noisy in ("httpx", "httpcore", "git"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    structlog.contextvars.bind_contextvars(process=process)  # lines of other modules name it too
    return structlog.get_logger().bind(process=process)
