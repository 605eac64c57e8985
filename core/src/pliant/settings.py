"""Typed settings: the one schema that core options and plugin options share.

A :class:`Setting` says how to read a value from any source (a string from a
flag or an environment variable, or a TOML value from a config file) and what
it means. Parsers raise :class:`ValueError` with a short "expected ..." text;
:mod:`pliant.config` adds the value's source and turns that into a
:class:`~pliant.errors.ConfigError`.
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "Setting",
    "parse_bool",
    "parse_choice",
    "parse_float",
    "parse_int",
    "parse_kv",
    "parse_list",
    "parse_nnodes",
    "parse_nproc",
    "parse_port",
    "parse_signals",
    "parse_std",
    "parse_str",
]

Parser = Callable[[Any], Any]


@dataclass(frozen=True)
class Setting:
    """One option: its name, how to parse it, its default and its help text.

    ``name`` is the snake_case key used in config files; flags and environment
    variables are derived from it (``nproc_per_node`` is ``--nproc-per-node``
    and ``PLIANT_NPROC_PER_NODE``). ``default`` is already parsed.
    """

    name: str
    parse: Parser
    default: Any
    help: str
    metavar: str = "VALUE"
    short: tuple[str, ...] = ()
    is_flag: bool = False
    secret: bool = False
    env_aliases: tuple[str, ...] = field(default=())

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def parse_str(value: Any) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError("expected a string")
    return str(value)


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false (also 1/0, yes/no, on/off)")


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected an integer")
    if isinstance(value, int):
        return value
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError("expected an integer") from None


def parse_int(minimum: int | None = None, maximum: int | None = None) -> Parser:
    """An integer parser with optional bounds, e.g. ``parse_int(minimum=0)``."""

    def parse(value: Any) -> int:
        number = _int(value)
        if minimum is not None and number < minimum:
            raise ValueError(f"expected an integer >= {minimum}")
        if maximum is not None and number > maximum:
            raise ValueError(f"expected an integer <= {maximum}")
        return number

    return parse


def parse_float(minimum: float | None = None) -> Parser:
    def parse(value: Any) -> float:
        if isinstance(value, bool):
            raise ValueError("expected a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError("expected a number") from None
        if minimum is not None and number < minimum:
            raise ValueError(f"expected a number >= {minimum}")
        return number

    return parse


def parse_port(value: Any) -> int:
    return int(parse_int(minimum=0, maximum=65535)(value))


def parse_choice(*choices: str) -> Parser:
    def parse(value: Any) -> str:
        text = parse_str(value)
        if text not in choices:
            raise ValueError("expected one of " + ", ".join(choices))
        return text

    return parse


def parse_list(value: Any) -> tuple[str, ...]:
    """A comma-separated string, or a TOML list of strings."""
    if isinstance(value, list | tuple):
        items = [parse_str(item) for item in value]
    else:
        items = parse_str(value).split(",")
    return tuple(item.strip() for item in items if item.strip())


def parse_kv(value: Any) -> dict[str, str]:
    """``key=value,key2=value2`` or a TOML table (nested tables join with dots); quotes
    around the whole string are dropped."""
    if isinstance(value, Mapping):
        return _flatten(value)
    text = parse_str(value).strip()
    if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1]  # shell quotes kept by the caller, as torch's own tests pass them
    result: dict[str, str] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected key=value pairs separated by commas, got {item.strip()!r}")
        result[key.strip()] = val.strip()
    return result


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, val in table.items():
        if isinstance(val, Mapping):
            flat.update(_flatten(val, f"{prefix}{key}."))
        elif isinstance(val, bool):
            flat[prefix + key] = "true" if val else "false"
        else:
            flat[prefix + key] = str(val)
    return flat


def parse_nnodes(value: Any) -> tuple[int, int]:
    """``N`` or ``MIN:MAX`` with 1 <= MIN <= MAX."""
    text = parse_str(value).strip()
    low, sep, high = text.partition(":")
    try:
        min_nodes = int(low)
        max_nodes = int(high) if sep else min_nodes
    except ValueError:
        raise ValueError("expected N or MIN:MAX with integers, e.g. 2 or 1:4") from None
    if min_nodes < 1:
        raise ValueError("expected at least 1 node")
    if min_nodes > max_nodes:
        raise ValueError(f"expected MIN <= MAX, but {min_nodes} > {max_nodes}")
    return min_nodes, max_nodes


def parse_nproc(value: Any) -> int | str:
    """A positive integer, or ``cpu``, ``gpu`` or ``auto`` (resolved at launch)."""
    text = parse_str(value).strip().lower()
    if text in ("cpu", "gpu", "auto"):
        return text
    try:
        number = int(text)
    except ValueError:
        raise ValueError("expected a positive integer, or cpu, gpu or auto") from None
    if number < 1:
        raise ValueError("expected a positive integer, or cpu, gpu or auto")
    return number


def parse_std(value: Any) -> dict[int, int] | int:
    """torchrun's ``--redirects``/``--tee``: ``0``-``3`` for every rank, or ``rank:N,...``.

    0 is nothing, 1 stdout, 2 stderr, 3 both.
    """
    text = parse_str(value).strip()

    def level(item: str) -> int:
        if item not in ("0", "1", "2", "3"):
            raise ValueError("expected 0 (none), 1 (stdout), 2 (stderr) or 3 (both), "
                             "or local_rank:level pairs such as 0:3,1:2")
        return int(item)

    if ":" not in text:
        return level(text)
    result: dict[int, int] = {}
    for pair in text.split(","):
        rank, _, lvl = pair.partition(":")
        try:
            result[int(rank)] = level(lvl.strip())
        except ValueError:
            raise ValueError(f"expected local_rank:level pairs such as 0:3,1:2, got {pair!r}")  \
                from None
    return result


def parse_signals(value: Any) -> tuple[signal.Signals, ...]:
    names = parse_list(value)
    result = []
    for name in names:
        try:
            result.append(signal.Signals[name.upper()])
        except KeyError:
            raise ValueError(f"expected signal names such as SIGTERM,SIGINT; {name!r} is not one") \
                from None
    return tuple(result)
