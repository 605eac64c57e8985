"""Worker error files: how a worker's exception reaches the agent's report.

The format is torch's, so ``torch.distributed.elastic.multiprocessing.errors.record``
and :func:`pliant.record` are interchangeable: both write JSON to the path in
``TORCHELASTIC_ERROR_FILE``, and the agent reads either.
"""

from __future__ import annotations

import functools
import json
import os
import time
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["ERROR_FILE_ENV", "error_timestamp", "read_error_file", "record", "write_error_file"]

ERROR_FILE_ENV = "TORCHELASTIC_ERROR_FILE"

F = TypeVar("F", bound=Callable[..., Any])


def write_error_file(exc: BaseException, tb: Any = None, path: str | None = None) -> None:
    """Write ``exc`` to the error file, unless one was written already (first error wins)."""
    path = path or os.environ.get(ERROR_FILE_ENV)
    if not path or os.path.exists(path):
        return
    stack = "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))
    data = {
        "message": {
            "message": f"{type(exc).__name__}: {exc}",
            "extraInfo": {"py_callstack": stack, "timestamp": str(int(time.time()))},
        }
    }
    try:
        # 0600: a traceback can hold what only the user should read.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with open(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
    except OSError:
        pass  # reporting must never turn one error into two


def read_error_file(path: str) -> dict[str, Any] | None:
    """The parsed error file, or None when the worker wrote none (or garbage)."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def error_timestamp(data: dict[str, Any] | None) -> float | None:
    """When the worker wrote its error, as torch reads it: ``message.extraInfo.timestamp``,
    or the top-level ``timestamp`` when ``message`` is a string; None when there is none."""
    if not data:
        return None
    message = data.get("message")
    if isinstance(message, dict):
        extra = message.get("extraInfo")
        value = extra.get("timestamp") if isinstance(extra, dict) else None
    else:
        value = data.get("timestamp")
    try:
        return float(int(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def record(fn: F) -> F:
    """Decorate a worker's entrypoint so its exception reaches the agent's report.

    Like torch's ``@record``: the exception is written to
    ``TORCHELASTIC_ERROR_FILE`` and raised again.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except SystemExit as exc:
            if exc.code not in (None, 0):
                write_error_file(exc)
            raise
        except BaseException as exc:
            write_error_file(exc)
            raise

    return wrapper  # type: ignore[return-value]
