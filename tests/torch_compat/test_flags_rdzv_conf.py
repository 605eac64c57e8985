"""``--rdzv-conf`` as torchrun takes it: a key the backend does not know is a warning (it may
be meant for another backend or tool), shell quotes around the whole value are dropped (torch's
own launcher test passes ``"'join_timeout=5,timeout=5'"``), a bad value for a known key is an
error."""

from __future__ import annotations

from pathlib import Path

import pytest
from flags_compat import launch, write_script


def _c10d(port: int) -> list[str]:
    return ["--nnodes", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}"]


@pytest.mark.parametrize("launcher", ["torchrun", "pliant"])
def test_quoted_conf_and_a_key_for_someone_else_still_run(launcher: str, free_port: int,
                                                          tmp_path: Path) -> None:
    script = write_script(tmp_path / "w.py", "print('ran')\n")
    result = launch(launcher, *_c10d(free_port), "--rdzv-conf",
                    "'join_timeout=5,timeout=5,join_timout=7,foo=bar'", str(script))
    assert result.returncode == 0, result.stderr
    assert "ran" in result.stdout
    if launcher == "pliant":
        # Each key it ignores is named, with the close match when there is one; the quotes
        # did not make 'join_timeout or bar' keys or values.
        assert ("rdzv_conf key 'join_timout' (from flag --rdzv-conf) is not a setting of "
                "rendezvous backend 'c10d'; ignored (did you mean 'join_timeout'?)"
                ) in result.stderr
        assert "rdzv_conf key 'foo' " in result.stderr
        assert "'join_timeout" not in result.stderr.replace("'join_timeout'", "")
        assert "bar'" not in result.stderr


@pytest.mark.parametrize("launcher", ["torchrun", "pliant"])
def test_a_bad_value_for_a_known_key_is_an_error(launcher: str, free_port: int,
                                                 tmp_path: Path) -> None:
    script = write_script(tmp_path / "w.py", "print('ran')\n")
    result = launch(launcher, *_c10d(free_port), "--rdzv-conf", "join_timeout=soon",
                    str(script))
    assert result.returncode != 0
    assert "ran" not in result.stdout
    if launcher == "pliant":
        assert result.returncode == 2
        assert "invalid join_timeout 'soon' (from flag --rdzv-conf" in result.stderr


def test_env_conf_key_unknown_is_a_warning_naming_the_variable(free_port: int,
                                                               tmp_path: Path) -> None:
    script = write_script(tmp_path / "w.py", "print('ran')\n")
    result = launch("pliant", *_c10d(free_port), str(script),
                    env={"PET_RDZV_CONF": "read_timout=30"})
    assert result.returncode == 0, result.stderr
    assert ("rdzv_conf key 'read_timout' (from env PET_RDZV_CONF) is not a setting of "
            "rendezvous backend 'c10d'; ignored (did you mean 'read_timeout'?)") in result.stderr
