"""The first code a worker runs: ``python -u -m pliant._bootstrap MODE TARGET ARGS...``.

It makes the worker look exactly as if started with ``python -u script.py``
(or ``python -m module``): same ``sys.argv``, ``sys.path[0]`` and ``__main__``.
Its only addition is an excepthook that writes an uncaught exception to the
error file, so the agent can report the root cause even when the script does
not use ``@record``. Modes: ``script``, ``module`` and ``function`` (a pickled
callable, for function entrypoints; its return value is pickled back).
"""

from __future__ import annotations

import os
import runpy
import sys
from types import TracebackType

_OWN_FILES = (__file__, runpy.__file__, "<frozen runpy>")


def _excepthook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    # Hide this module's and runpy's frames: the user's traceback starts in their code.
    while tb is not None and tb.tb_frame.f_code.co_filename in _OWN_FILES:
        tb = tb.tb_next
    from pliant.errorfile import write_error_file

    write_error_file(exc, tb)
    sys.__excepthook__(kind, exc, tb)


def _run_function(path: str) -> None:
    import multiprocessing.spawn
    import pickle

    with open(path, "rb") as f:
        preparation = pickle.load(f)
        multiprocessing.spawn.prepare(preparation)  # sys.path and __main__, as spawn does
        fn, args = pickle.load(f)
    result = fn(*args)
    with open(os.environ["PLIANT_RETURN_FILE"], "wb") as f:
        pickle.dump(result, f)


def main() -> None:
    mode, target, *args = sys.argv[1:]
    sys.excepthook = _excepthook
    if mode == "script":
        sys.argv = [target, *args]
        sys.path[0] = os.path.dirname(os.path.abspath(target))
        runpy.run_path(target, run_name="__main__")
    elif mode == "module":
        sys.argv = [target, *args]
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    elif mode == "function":
        _run_function(target)
    else:
        raise SystemExit(f"pliant._bootstrap: unknown mode {mode!r}")


if __name__ == "__main__":
    main()
