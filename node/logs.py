"""Structured logs: one line per event, naming the node, through the standard `logging` module.

A text line reads

    2026-11-25T22:53:50.123Z INFO ministry block.committed height=12 txs=3 hash=9f2c...

(time in UTC, level, node name, event, then `key=value` fields); with `json_lines=True` the
same record is one JSON object per line, for log shippers:

    {"time": "...", "level": "info", "node": "ministry", "event": "block.committed", "height": 12}

Code logs an event with `log_event(logger, "block.committed", height=12, txs=3)`; plain
`logger.info("text %s", x)` calls from anywhere (libraries included) still come out as one line,
their message being the event. Field values are written as they are when they are simple
(`a-z0-9._:/-`), else quoted JSON strings, so a value never breaks the line apart; bytes are
shown in hex. Log time is the wall clock: it is for people, nothing in the state depends on it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_PLAIN = re.compile(r"[A-Za-z0-9._:/@+-]+")
_HANDLER_MARK = "_khazana_handler"


def log_event(
    logger: logging.Logger, event: str, *, level: int = logging.INFO, **fields: Any
) -> None:
    """Log `event` with `fields` (rendered as key=value in the given order)."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"fields": fields})


def _value_text(value: object) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex() or '""'
    text = value if isinstance(value, str) else str(value)
    return text if _PLAIN.fullmatch(text) else json.dumps(text)


def _json_value(value: object) -> object:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if value is None or isinstance(value, bool | int | str):
        return value
    return str(value)


def _utc_time(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class EventFormatter(logging.Formatter):
    """Renders a record as one text line or one JSON object (never a multi-line entry)."""

    def __init__(self, node: str, *, json_lines: bool = False) -> None:
        super().__init__()
        self.node = node
        self.json_lines = json_lines

    def format(self, record: logging.LogRecord) -> str:
        event = record.getMessage()
        fields: dict[str, object] = {}
        extra = getattr(record, "fields", None)
        if isinstance(extra, Mapping):
            fields.update(extra)
        if record.name and not record.name.startswith("root"):
            fields.setdefault("logger", record.name)
        if record.exc_info:
            fields["error"] = self.formatException(record.exc_info)
        level = record.levelname.lower()
        if self.json_lines:
            document = {"time": _utc_time(record.created), "level": level, "node": self.node}
            document["event"] = event
            for key, value in fields.items():
                document.setdefault(key, _json_value(value))
            return json.dumps(document, separators=(",", ":"))
        parts = [_utc_time(record.created), record.levelname, self.node, _value_text(event)]
        parts.extend(f"{key}={_value_text(value)}" for key, value in fields.items())
        return " ".join(parts)


def configure_logging(
    name: str, level: str = "info", *, json_lines: bool = False, stream: TextIO | None = None
) -> logging.Handler:
    """Send every log record of this process to `stream` (stderr) as structured lines.

    Replaces a handler installed by an earlier call, so calling it twice does not double lines.
    Returns the handler (tests read what it wrote).
    """
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {list(LEVELS)}, got {level!r}")
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(EventFormatter(name, json_lines=json_lines))
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    return handler
