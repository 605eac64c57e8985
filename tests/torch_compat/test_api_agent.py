"""LocalElasticAgent's signature as torch's, and what its torch arguments do."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from api_compat import python_spec
from pliant.agent import LocalElasticAgent
from torch.distributed.elastic.agent.server import local_elastic_agent as torch_agent


def test_positional_order_is_torchs() -> None:
    ours = list(inspect.signature(LocalElasticAgent).parameters.values())
    theirs = list(inspect.signature(torch_agent.LocalElasticAgent).parameters.values())
    assert [p.name for p in ours[:len(theirs)]] == [p.name for p in theirs]
    assert all(p.kind == p.POSITIONAL_OR_KEYWORD for p in ours[:len(theirs)])
    defaults = {p.name: p.default for p in theirs[2:]}
    assert {p.name: p.default for p in ours[2:5]} == {
        k: defaults[k] for k in ("start_method", "exit_barrier_timeout",
                                 "log_line_prefix_template")}
    # pliant's own options are keywords only, so a torch call can never reach them.
    assert all(p.kind == p.KEYWORD_ONLY for p in ours[len(theirs):])


def test_start_method_in_the_second_place_is_refused_clearly() -> None:
    with pytest.raises(TypeError, match=r"second argument is logs_specs.*start_method="):
        LocalElasticAgent(python_spec("pass"), "spawn")  # type: ignore[arg-type]


def test_pliants_keywords_still_work() -> None:
    result = LocalElasticAgent(python_spec("pass", nproc=2), start_method="spawn",
                               exit_barrier_timeout=5.0, timers=[], preload=()).run()
    assert not result.is_failed()


def test_log_line_prefix_template_as_torchs(tmp_path: Path) -> None:
    console = (tmp_path / "out").open("w+b"), (tmp_path / "err").open("w+b")
    code = "import os\nprint('line of', os.environ['LOCAL_RANK'])"
    agent = LocalElasticAgent(python_spec(code, nproc=2), None,
                              log_line_prefix_template="[${role_name}-${rank}|${local_rank}]:",
                              console=console)
    assert not agent.run().is_failed()
    console[0].seek(0)
    lines = sorted(console[0].read().decode().splitlines())
    assert lines == ["[trainer-0|0]:line of 0", "[trainer-1|1]:line of 1"]


def test_shutdown_timeout_argument_sets_the_specs() -> None:
    spec = python_spec("pass")
    LocalElasticAgent(spec, None, shutdown_timeout=3)
    assert spec.shutdown_timeout == 3
