"""Structured logs for the runner, and the one place that keeps passwords out of them."""

from __future__ import annotations

import json
import logging
import re
import sys
import time

from psycopg.conninfo import conninfo_to_dict, make_conninfo

_URI_PASSWORD = re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)([^@\s]*)(@)")
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def redact_dsn(dsn: str | None) -> str:
    """The DSN with its password replaced by ``***`` (URI or key=value form)."""
    if not dsn:
        return ""
    try:
        params = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - unparsable: redact textually
        return redact_text(dsn)
    if "password" in params:
        params["password"] = "***"
    return make_conninfo(**params)


def redact_text(text: str, *secrets: str | None) -> str:
    """``text`` without DSN passwords, nor any of ``secrets``."""
    text = _URI_PASSWORD.sub(r"\1***\3", text)
    text = _KV_PASSWORD.sub(r"\1***", text)
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def password_of(dsn: str | None) -> str | None:
    try:
        return conninfo_to_dict(dsn or "").get("password")
    except Exception:  # noqa: BLE001
        return None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, and any ``extra=`` fields."""

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact_text(record.getMessage(), *self.secrets),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD_ATTRS and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            entry["exc"] = redact_text(self.formatException(record.exc_info), *self.secrets)
        return json.dumps(entry, default=str)


class RedactingFormatter(logging.Formatter):
    def __init__(self, fmt: str, secrets: tuple[str, ...] = ()) -> None:
        super().__init__(fmt)
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record), *self.secrets)


def configure_logging(level: str = "info", fmt: str = "json",
                      secrets: tuple[str | None, ...] = ()) -> None:
    """Send the ``reproq`` loggers to stderr, as JSON lines or as text."""
    kept = tuple(s for s in secrets if s)
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(kept))
    else:
        handler.setFormatter(RedactingFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s", kept))
    logger = logging.getLogger("reproq")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
