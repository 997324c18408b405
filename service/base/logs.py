"""Logs: one JSON object a line on stderr (or plain text with `LOG_FORMAT=text`), each line
carrying the request id of the request it belongs to.

Every line of the process, ours and the libraries', goes through one handler that buffers
stderr. The request log line (one per request, `RequestLog`) skips the `logging` machinery
altogether: it is encoded from a struct straight to bytes.
"""

from __future__ import annotations

import contextvars
import io
import logging
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Literal

import msgspec

from service.base.background import every

LogFormat = Literal["json", "text"]

request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)

_second: list[Any] = [-1, ""]
_MILLISECONDS = tuple(f".{millisecond:03d}+00:00" for millisecond in range(1000))


def timestamp(created: float) -> str:
    """`2026-11-30T17:51:21.802+00:00`; the part up to the second made once a second, the
    rest looked up (a formatted f-string cost a fifth of the request log line)."""
    whole = int(created)
    if whole != _second[0]:
        _second[:] = [whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))]
    text: str = _second[1]
    return text + _MILLISECONDS[int((created - whole) * 1000)]


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id, extra fields."""

    _encoder = msgspec.json.Encoder()

    def format(self, record: logging.LogRecord) -> str:
        exception = self.formatException(record.exc_info) if record.exc_info else None
        entry: dict[str, Any] = {
            "time": timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (current := request_id.get()) is not None:
            entry["request_id"] = current
        if fields := getattr(record, "fields", None):
            entry.update(fields)
        if exception:
            entry["exception"] = exception
        return self._encoder.encode(entry).decode()


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if fields := getattr(record, "fields", None):
            line += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        if (current := request_id.get()) is not None:
            line += f" request_id={current}"
        return line


class _BufferedStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr through a 64 KiB buffer instead of one write(2) per line.

    A request log line costs a system call otherwise, a good part of a request's time.
    The buffer is written when full, at once for WARNING and above, every
    `LOG_FLUSH_SECONDS` by the app (`flushing_logs`), and when logging shuts down at exit.
    Text goes through to the byte buffer at once (`write_through`), so that lines written
    as bytes (`RequestLog`) and as text keep their order.
    """

    def __init__(self) -> None:
        raw = io.FileIO(os.dup(sys.stderr.fileno()), "w")
        self.binary = io.BufferedWriter(raw, 65536)
        text = io.TextIOWrapper(self.binary, encoding="utf-8", write_through=True)
        super().__init__(text)

    def flush(self) -> None:
        """No-op: StreamHandler calls it after every record; `write_out` flushes."""

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)
        if record.levelno >= logging.WARNING:
            self.write_out()

    def write_out(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self.stream.flush()

    def close(self) -> None:
        self.write_out()
        super().close()


LOG_FLUSH_SECONDS = 0.5


def write_out_logs() -> None:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, _BufferedStderr):
            handler.write_out()


@asynccontextmanager
async def flushing_logs() -> AsyncIterator[None]:
    """Write buffered log lines out every half second while the app runs, and at its end."""

    async def write_out() -> None:
        write_out_logs()

    async with every(LOG_FLUSH_SECONDS, write_out):
        yield
    write_out_logs()


def configure_logging(
    level: str, log_format: LogFormat = "json", stream: io.TextIOBase | None = None
) -> None:
    """Every log line of the process, ours and the libraries', through one handler (on
    buffered stderr, or on `stream`, which tests pass)."""
    handler = _BufferedStderr() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(_JsonFormatter() if log_format == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    REQUEST_LOG.configure(handler if root.isEnabledFor(logging.INFO) else None, log_format)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # RequestObserver writes the one line per request; uvicorn's access lines would repeat it.
    logging.getLogger("uvicorn.access").disabled = True


class RequestLine(msgspec.Struct, omit_defaults=True):
    """The request log line, in the key order of every other line."""

    time: str
    level: str
    logger: str
    message: str
    request_id: str
    method: str
    route: str
    status: int
    duration_ms: float
    remote: str | None
    caller: str | None
    trace_id: str | None = None
    span_id: str | None = None


class RequestLog:
    """The one line per request, written straight to the log handler's stream.

    Same format, same stream as every other line, but without a LogRecord (that machinery
    cost about 35 µs a request) and, for JSON on the service's own stderr handler, encoded
    from a struct straight into the byte buffer. Off until `configure_logging` (so at
    `LOG_LEVEL` WARNING and above).
    """

    _encoder = msgspec.json.Encoder()

    def __init__(self) -> None:
        self.handler: logging.Handler | None = None
        self._binary: io.BufferedWriter[io.FileIO] | None = None
        self._text = False

    def configure(self, handler: logging.Handler | None, log_format: LogFormat) -> None:
        self.handler = handler
        self._binary = handler.binary if isinstance(handler, _BufferedStderr) else None
        self._text = log_format == "text"

    def write(self, line: RequestLine, created: float) -> None:
        handler = self.handler
        if handler is None:
            return
        if self._text:  # a developer's terminal: through the handler, as any other line
            fields = {
                field: value
                for field in RequestLine.__struct_fields__[5:]
                if (value := getattr(line, field)) is not None or field in ("remote", "caller")
            }
            handler.handle(
                logging.makeLogRecord(
                    {
                        "name": line.logger,
                        "levelname": line.level,
                        "levelno": logging.INFO,
                        "msg": line.message,
                        "created": created,
                        "msecs": (created % 1) * 1000,
                        "fields": fields,
                    }
                )
            )
            return
        if self._binary is not None:
            # One write of the whole line: the buffered writer has a lock of its own, so
            # lines of other threads cannot come between its parts (no handler lock).
            self._binary.write(self._encoder.encode(line) + b"\n")
            return
        with handler.lock:  # type: ignore[union-attr]
            handler.stream.write(self._encoder.encode(line).decode() + "\n")  # type: ignore[attr-defined]


REQUEST_LOG = RequestLog()
