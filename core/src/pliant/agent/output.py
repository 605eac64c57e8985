"""Worker output: to the console with a ``[node:rank]`` prefix, to per-attempt files, or both.

torchrun's ``--redirects`` sends a stream to its file only, ``--tee`` to both,
``--local-ranks-filter`` limits what reaches the console. A stream that goes
only to a file is handed to the worker as that file; one that reaches the
console goes through a pipe the agent reads, so every line gets its prefix
(``TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE`` replaces pliant's, as in torchrun).
A stream that only goes to a console that is a terminal, with no prefix template, is
handed to the worker as it is, as torchrun does: the worker's ``isatty()`` is true,
so progress bars and colours work. ``--duplicate-std*-filters`` copy the tee'd lines
that contain one of their strings to one file per attempt.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from string import Template
from typing import IO, BinaryIO

__all__ = ["PREFIX_TEMPLATE_ENV", "StreamRoute", "line_prefix", "route_stream"]

#: torch's: the console prefix of a worker's lines, with ${role_name}, ${rank}, ${local_rank}.
PREFIX_TEMPLATE_ENV = "TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE"

STDOUT, STDERR = 1, 2
_LINE_END = re.compile(rb"(\r\n|\r|\n)")


class StreamRoute:
    """Where one worker stream goes; ``child`` is what the worker's fd becomes."""

    def __init__(self, console: BinaryIO | None, file: IO[bytes] | None, prefix: bytes,
                 inherit: bool = False,
                 duplicate: tuple[IO[bytes], Sequence[str]] | None = None) -> None:
        self.console = console
        self.file = file
        self.prefix = prefix
        self._partial = b""
        self.pipe_fd: int | None = None
        self._duplicate = None if duplicate is None else (
            duplicate[0], tuple(f.encode() for f in duplicate[1]))
        self.child: int | IO[bytes]
        if console is not None and inherit and file is None:
            self.child = console.fileno()  # the worker writes to the terminal itself
            self.console = None
        elif console is not None:
            self.child = subprocess.PIPE
        elif file is not None:
            self.child = file
        else:
            self.child = subprocess.DEVNULL

    def attach(self, pipe: IO[bytes] | None) -> None:
        """Take the read end of the worker's pipe (when the route needed one)."""
        if pipe is not None:
            self.pipe_fd = pipe.fileno()
            os.set_blocking(self.pipe_fd, False)
            self._pipe = pipe

    def _read(self) -> bytes | None:
        """The pipe's next chunk; b"" at end of stream, None when it is empty for now."""
        assert self.pipe_fd is not None
        try:
            return os.read(self.pipe_fd, 1 << 16)
        except BlockingIOError:
            return None

    def pump(self) -> bool:
        """Move what the pipe holds; False at end of stream."""
        data = self._read()
        if data is None:
            return True
        if not data:
            self._flush_partial()
            return False
        self._write(data)
        return True

    def drain(self) -> None:
        """Move what is left without waiting (the worker's children may keep the pipe open)."""
        while self.pipe_fd is not None and (data := self._read()):
            self._write(data)
        self._flush_partial()

    def _write(self, data: bytes) -> None:
        if self.file is not None:
            self.file.write(data)
            self.file.flush()
        if self.console is not None:
            # A line ends at \n, and also at a lone \r, so that progress bars (tqdm) redraw
            # in place with their prefix instead of waiting for the end of the epoch.
            text = self._partial + data
            hold = text.endswith(b"\r")  # may be the first half of \r\n
            pieces = _LINE_END.split(text[:-1] if hold else text)
            self._partial = pieces.pop() + (b"\r" if hold else b"")
            lines = [(pieces[i], pieces[i + 1]) for i in range(0, len(pieces), 2)
                     if pieces[i] or pieces[i + 1] != b"\r"]
            if lines:
                self._show(b"".join(self.prefix + line + end for line, end in lines))
                self._duplicate_lines(lines)

    def _flush_partial(self) -> None:
        if self._partial and self.console is not None:
            self._show(self.prefix + self._partial + b"\n")
            self._duplicate_lines([(self._partial, b"\n")])
        self._partial = b""

    def _duplicate_lines(self, lines: list[tuple[bytes, bytes]]) -> None:
        if self._duplicate is None:
            return
        file, needles = self._duplicate
        chosen = [self.prefix + line + end for line, end in lines
                  if any(needle in line for needle in needles)]
        if chosen:
            file.write(b"".join(chosen))
            file.flush()

    def _show(self, text: bytes) -> None:
        assert self.console is not None
        try:
            self.console.write(text)
            self.console.flush()
        except (OSError, ValueError):  # the console went away (`| head`): keep training
            self.console = None

    def close(self) -> None:
        if self.pipe_fd is not None:
            self._pipe.close()
            self.pipe_fd = None
        if self.file is not None:
            self.file.close()


def line_prefix(node_rank: int, role: str, rank: int, local_rank: int) -> tuple[bytes, bool]:
    """The console prefix of a worker's lines, and whether it came from torch's template
    (:data:`PREFIX_TEMPLATE_ENV`, which also keeps the lines from a terminal's worker)."""
    template = os.environ.get(PREFIX_TEMPLATE_ENV)
    if template:
        text = Template(template).safe_substitute(role_name=role, rank=rank,
                                                  local_rank=local_rank)
        return text.encode(), True
    return f"[{node_rank}:{rank}] ".encode(), False


def _is_terminal(console: BinaryIO) -> bool:
    try:
        return os.isatty(console.fileno())
    except (AttributeError, OSError, ValueError):  # not a real file (a test's BytesIO)
        return False


def route_stream(stream: int, redirects: int, tee: int, show_on_console: bool,
                 console: BinaryIO, log_path: str | None, prefix: bytes,
                 templated: bool = False, duplicate: tuple[IO[bytes], Sequence[str]] | None = None,
                 ) -> StreamRoute:
    """Decide where ``stream`` (STDOUT or STDERR) of one worker goes. ``duplicate``: the
    attempt's filtered file and its filters, for a stream that is tee'd to the console."""
    to_file = bool((redirects | tee) & stream) and log_path is not None
    to_console = show_on_console and (not (redirects & stream) or bool(tee & stream))
    file = open(log_path, "wb") if to_file and log_path else None  # noqa: SIM115
    inherit = to_console and not to_file and not templated and _is_terminal(console)
    dup = duplicate if duplicate and duplicate[1] and to_console and tee & stream else None
    return StreamRoute(console if to_console else None, file, prefix, inherit, dup)
