"""The first code a worker runs: ``python -u -c "from pliant._bootstrap import main; main()"
MODE TARGET ARGS...``.

It makes the worker look exactly as if started with ``python -u script.py``
(or ``python -m module``): same ``sys.argv``, ``sys.path[0]`` and ``__main__``.
Its only addition is an excepthook that writes an uncaught exception to the
error file, so the agent can report the root cause even when the script does
not use ``@record``. Modes: ``script``, ``module`` and ``function`` (a pickled
callable, for function entrypoints; its return value is pickled back).

:func:`standby` is the other way in: a warm standby (see :mod:`pliant.agent.standby`)
imports its preload list, tells the agent it is ready, then waits for its assignment: the
worker's whole environment, argv, cwd and its stdout and stderr (file descriptors, passed
over a Unix socket). It puts them in place and runs :func:`main` as a cold worker would.

Start-up time is restart time, so this module imports nearly nothing (not
runpy, which pulls in typing): a script is compiled and run in a fresh
``__main__`` module, as the interpreter itself does.
"""

from __future__ import annotations

import os
import sys

#: The launcher's command-line prefix; the agent appends MODE TARGET ARGS...
COMMAND = ("-u", "-c", "from pliant._bootstrap import main; main()")
#: A standby's command line (after the interpreter); its socket's fd is in STANDBY_FD_ENV.
STANDBY_COMMAND = ("-u", "-c", "from pliant._bootstrap import standby; standby()")
STANDBY_FD_ENV = "PLIANT_STANDBY_FD"
#: What the standby imports: a comma list, or "auto" (see pliant.defaults.PRELOAD_AUTO).
STANDBY_PRELOAD_ENV = "PLIANT_STANDBY_PRELOAD"
#: A standby's messages to the agent: ready, or a preload that failed (then a text).
READY, FAILED = b"R", b"F"

_OWN_FILES = {__file__, "<string>", "<frozen runpy>"}


def _excepthook(kind: type[BaseException], exc: BaseException, tb: object) -> None:
    # Hide this module's frames: the user's traceback starts in their code.
    while tb is not None and tb.tb_frame.f_code.co_filename in _OWN_FILES:  # type: ignore[attr-defined]
        tb = tb.tb_next  # type: ignore[attr-defined]
    from pliant.errorfile import write_error_file

    exc.__traceback__ = tb  # type: ignore[assignment]
    write_error_file(exc, tb)
    sys.__excepthook__(kind, exc, exc.__traceback__)


def _die_with_agent() -> None:
    """Ask the kernel to kill this worker when its agent dies (no orphans).

    Done here rather than in the agent between fork and exec, which would
    force the slow fork path of subprocess for every worker.
    """
    agent = os.environ.get("PLIANT_AGENT_PID")
    if not agent or not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    if os.getppid() != int(agent):  # the agent died before prctl took effect
        os._exit(1)


def _run_script(path: str) -> None:
    from importlib.machinery import SourceFileLoader

    main = type(sys)("__main__")
    main.__dict__.update(
        __file__=os.path.abspath(path),
        __builtins__=sys.modules["builtins"],
        __cached__=None,
        __spec__=None,
        __package__=None,
        __loader__=SourceFileLoader("__main__", path),
    )
    sys.modules["__main__"] = main
    with open(path, "rb") as f:
        code = compile(f.read(), path, "exec")
    exec(code, main.__dict__)


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
    _die_with_agent()
    mode, target, *args = sys.argv[1:]
    sys.excepthook = _excepthook
    if mode == "script":
        sys.argv = [target, *args]
        sys.path[0] = os.path.dirname(os.path.abspath(target))
        _run_script(target)
    elif mode == "module":
        import runpy

        _OWN_FILES.add(runpy.__file__)
        sys.argv = [target, *args]
        sys.path[0] = os.getcwd()
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    elif mode == "function":
        sys.argv = [sys.argv[0]]
        _run_function(target)
    else:
        raise SystemExit(f"pliant._bootstrap: unknown mode {mode!r}")


def _preload_list(value: str) -> list[str]:
    if value != "auto":
        return [name for name in value.split(",") if name]
    from importlib.util import find_spec

    from pliant.defaults import PRELOAD_AUTO

    return list(PRELOAD_AUTO) if find_spec("torch") is not None else []


def _receive(sock: object) -> tuple[dict[str, object], list[int]]:
    """The assignment: an 8-byte length with the two fds, then a marshalled dict."""
    import marshal
    import socket

    assert isinstance(sock, socket.socket)
    head, fds, _, _ = socket.recv_fds(sock, 8, 2)
    if len(head) < 8:  # the agent closed the socket: it no longer wants this standby
        os._exit(0)
    size, chunks = int.from_bytes(head, "big"), []
    while size > 0:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            os._exit(0)
        chunks.append(chunk)
        size -= len(chunk)
    return marshal.loads(b"".join(chunks)), fds


def standby() -> None:
    """A warm standby's life: preload, say ready, wait, become the worker."""
    import socket

    _die_with_agent()
    sock = socket.socket(fileno=int(os.environ[STANDBY_FD_ENV]))
    for name in _preload_list(os.environ.get(STANDBY_PRELOAD_ENV, "")):
        try:
            __import__(name)
        except BaseException as exc:  # any failure, SystemExit too, means: start cold
            sock.sendall(FAILED + f"{name!r}: {type(exc).__name__}: {exc}".encode()[:4000])
            os._exit(0)
    sock.sendall(READY)
    assignment, fds = _receive(sock)
    sock.close()
    # The worker's streams become fds 1 and 2; sys.stdout and sys.stderr write to those.
    for fd, target in zip(fds, (1, 2), strict=True):
        os.dup2(fd, target)
        os.close(fd)
    # Exactly the worker's environment: what the preload set or the standby had is dropped.
    environ = assignment["env"]
    assert isinstance(environ, dict)
    os.environ.clear()
    os.environ.update(environ)
    cwd = assignment["cwd"]
    assert isinstance(cwd, str)
    os.chdir(cwd)
    argv = assignment["argv"]
    assert isinstance(argv, list)
    sys.argv = ["-c", *argv]
    main()
