"""torch's ``ChildFailedError`` and ``ProcessFailure.timestamp`` (multiprocessing.errors)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pliant
import pytest
from api_compat import python_spec
from pliant.agent import ChildFailedError, LocalElasticAgent, ProcessFailure
from torch.distributed.elastic.multiprocessing import errors as torch_errors

# A worker that writes its error file as torch's ErrorHandler does, then fails.
RECORDED = """
from torch.distributed.elastic.multiprocessing.errors import record
import os
@record
def main():
    if os.environ["RANK"] == "1":
        raise ValueError("rank one broke")
main()
"""

# An error file whose message is a string, dated by its top-level timestamp.
STRING_MESSAGE = """
import json, os, sys
with open(os.environ["TORCHELASTIC_ERROR_FILE"], "w") as f:
    json.dump({"message": "plain message", "timestamp": 1234567890}, f)
sys.exit(3)
"""


def run_failing(code: str, nproc: int) -> dict[int, ProcessFailure]:
    result = LocalElasticAgent(python_spec(code, nproc)).run()
    assert result.is_failed()
    return result.failures


def torch_failure(failure: ProcessFailure) -> torch_errors.ProcessFailure:
    """torch's reading of the same worker: its ProcessFailure built on the same error file."""
    return torch_errors.ProcessFailure(local_rank=failure.local_rank, pid=failure.pid,
                                       exitcode=failure.exitcode, error_file=failure.error_file)


def test_timestamp_comes_from_the_error_file_as_torch_reads_it() -> None:
    failures = run_failing(RECORDED, nproc=2)
    failure = failures[1]
    with open(failure.error_file) as f:
        written = int(json.load(f)["message"]["extraInfo"]["timestamp"])
    assert failure.timestamp == written == torch_failure(failure).timestamp


def test_timestamp_of_a_string_message_is_the_top_level_one() -> None:
    failure = run_failing(STRING_MESSAGE, nproc=1)[0]
    assert failure.timestamp == 1234567890 == torch_failure(failure).timestamp
    assert failure.message == "plain message"


def test_child_failed_error_formats_as_torchs() -> None:
    failure = run_failing(RECORDED, nproc=2)[1]
    ours = ChildFailedError("trainer", {1: failure})
    theirs = torch_errors.ChildFailedError("trainer", {1: torch_failure(failure)})
    assert str(ours) == str(theirs) == ours.format_msg()
    assert ours.format_msg("#", "~") == theirs.format_msg("#", "~")
    assert "ValueError: rank one broke" in str(ours)
    assert ours.get_first_failure() == (1, failure)
    # It takes torch's own failures too, as a launcher script may hold them.
    assert str(ChildFailedError("trainer", {1: torch_failure(failure)})) == str(theirs)


def test_child_failed_error_without_error_file_or_by_signal_formats_as_torchs() -> None:
    failures = run_failing("import os, signal, sys\n"
                           "if os.environ['RANK'] == '0': os.kill(os.getpid(), signal.SIGKILL)\n"
                           "sys.exit(7)", nproc=2)
    theirs = {rank: torch_failure(f) for rank, f in failures.items()}
    for rank, failure in failures.items():
        failure.timestamp = theirs[rank].timestamp  # torch dates these by when it looked
    assert (str(ChildFailedError("trainer", failures))
            == str(torch_errors.ChildFailedError("trainer", theirs)))
    assert "SIGKILL" in str(ChildFailedError("trainer", failures))


def test_child_failed_error_needs_a_failure_and_is_importable_from_pliant() -> None:
    assert pliant.ChildFailedError is ChildFailedError
    with pytest.raises(ValueError, match="at least one failure"):
        ChildFailedError("trainer", {})


def test_record_of_a_child_failed_error_copies_the_root_cause_as_torchs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """torch's ``@record`` around code that raises ChildFailedError (a launcher, torch's
    ``run_agent``) copies the root-cause worker's error file to its own
    TORCHELASTIC_ERROR_FILE, the worker's exit code as ``errorCode``; pliant's does the same
    (its own or torch's ChildFailedError), also over a file already there."""
    child = tmp_path / "child.json"
    child.write_text(json.dumps({"message": {
        "message": "RuntimeError: sad", "extraInfo": {"py_callstack": "...",
                                                       "timestamp": "1700000000"}}}))
    failure = ProcessFailure(local_rank=0, global_rank=3, pid=1, exitcode=7, hostname="h",
                             error_file=str(child))
    theirs = torch_errors.ProcessFailure(local_rank=0, pid=1, exitcode=7,
                                         error_file=str(child))
    written = {}
    for name, raise_it in (
            ("torch", lambda: torch_errors.record(_raiser(
                torch_errors.ChildFailedError("agent", {3: theirs})))()),
            ("pliant", lambda: pliant.record(_raiser(ChildFailedError("agent", {3: failure})))()),
            ("pliant-torchs", lambda: pliant.record(_raiser(
                torch_errors.ChildFailedError("agent", {3: theirs})))())):
        parent = tmp_path / f"{name}.json"
        parent.write_text("{}")  # replaced, as torch replaces it
        monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(parent))
        with pytest.raises(Exception, match="agent"):
            raise_it()
        written[name] = json.loads(parent.read_text())
    assert written["torch"]["message"]["errorCode"] == 7
    assert written["pliant"] == written["pliant-torchs"] == written["torch"]


def _raiser(exc: Exception) -> Callable[[], None]:
    def fail() -> None:
        raise exc
    return fail
