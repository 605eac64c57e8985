"""Bad input to ``pliant run`` is refused at once, with a short message and no traceback.

Each case runs the real CLI in a subprocess and checks what the user sees: a
non-zero exit code, within a second or two, one short message on stderr that
names the offending value and where it came from, and no traceback unless
``--debug`` or ``PLIANT_DEBUG=1`` asks for one.
"""

from __future__ import annotations

import pytest
from cli_assertions import assert_user_error

# Bad input must be rejected "within a second or two": each run here takes ~0.2 s, and
# the runner's timeout turns a hang into a failure; timings themselves belong in bench/.


BAD_FLAGS = [
    (["--nnodes", "3:2"], ["invalid nnodes '3:2' (from flag --nnodes)", "MIN <= MAX"]),
    (["--nnodes", "two"], ["invalid nnodes 'two' (from flag --nnodes)"]),
    (["--nproc-per-node", "0"],
     ["invalid nproc_per_node '0' (from flag --nproc-per-node)", "positive integer"]),
    (["--nproc-per-node", "abc"], ["invalid nproc_per_node 'abc' (from flag --nproc-per-node)"]),
    (["--nproc_per_node", "-2"], ["invalid nproc_per_node '-2' (from flag --nproc-per-node)"]),
    (["--max-restarts", "-1"],
     ["invalid max_restarts '-1' (from flag --max-restarts)", "expected an integer >= 0"]),
    (["--rdzv-backend", "zookeeper"],
     ["unknown rendezvous backend 'zookeeper' (from flag --rdzv-backend)", "embedded",
      "install a plugin that provides rendezvous backend 'zookeeper'"]),
    (["--master-port", "70000"], ["invalid master_port '70000' (from flag --master-port)"]),
    (["--start-method", "thread"], ["invalid start_method 'thread'", "spawn, fork, forkserver"]),
    (["--redirects", "4"], ["invalid redirects '4' (from flag --redirects)"]),
    (["--signals-to-handle", "SIGFOO"], ["'SIGFOO' is not one"]),
]


@pytest.mark.parametrize("args, fragments", BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flag_value(pliant, script, args, fragments):
    assert_user_error(pliant("run", *args, str(script)), *fragments)


@pytest.mark.parametrize("var, value, fragment", [
    ("PLIANT_NPROC_PER_NODE", "0", "invalid nproc_per_node '0' (from env PLIANT_NPROC_PER_NODE)"),
    ("PET_NNODES", "3:2", "invalid nnodes '3:2' (from env PET_NNODES)"),
    ("PLIANT_MAX_RESTARTS", "-1", "invalid max_restarts '-1' (from env PLIANT_MAX_RESTARTS)"),
], ids=["PLIANT_NPROC_PER_NODE", "PET_NNODES", "PLIANT_MAX_RESTARTS"])
def test_bad_env_value(pliant, script, var, value, fragment):
    assert_user_error(pliant("run", str(script), env={var: value}), fragment)


def test_missing_script(pliant, tmp_path):
    assert_user_error(pliant("run", "trian.py"),
                    "training script 'trian.py' (from the command line) does not exist",
                    str(tmp_path))


def test_missing_program_with_no_python(pliant):
    assert_user_error(pliant("run", "--no-python", "no-such-program-xyz"),
                    "program 'no-such-program-xyz'", "not found on PATH")


def test_unknown_flag(pliant, script):
    assert_user_error(pliant("run", "--nprocs-per-node", "2", str(script)),
                    "unrecognized arguments: --nprocs-per-node", "pliant run --help")


def test_missing_script_argument(pliant):
    assert_user_error(pliant("run", "--nproc-per-node", "2"),
                      "pliant run needs the script to launch")


def test_flags_after_the_script_belong_to_the_script(pliant, tmp_path):
    script = tmp_path / "args.py"
    script.write_text("import sys\nprint('args', sys.argv[1:])\n")

    result = pliant("run", str(script), "--nproc-per-node", "0", "--bogus")

    assert result.returncode == 0, result
    assert "args ['--nproc-per-node', '0', '--bogus']" in result.stdout


def test_missing_config_file(pliant, script, tmp_path):
    missing = tmp_path / "nope.toml"

    assert_user_error(pliant("run", "--config", str(missing), str(script)),
                    f"cannot read config file '{missing}' (from flag --config)")


def test_unreadable_config_file(pliant, script, tmp_path):
    unreadable = tmp_path / "conf.d"
    unreadable.mkdir()

    assert_user_error(pliant("run", str(script), env={"PLIANT_CONFIG": str(unreadable)}),
                    f"cannot read config file '{unreadable}' (from env PLIANT_CONFIG)")


def test_config_file_that_is_not_text(pliant, script, tmp_path):
    binary = tmp_path / "model.pt"
    binary.write_bytes(b"PK\x03\x04\xff\xfe\x00")

    assert_user_error(pliant("run", "--config", str(binary), str(script)),
                    f"config file '{binary}' (from flag --config) is not UTF-8 text")


def test_malformed_config_file(pliant, script, tmp_path):
    (tmp_path / "pliant.toml").write_text("nnodes = 1:2\n")

    assert_user_error(pliant("run", str(script)),
                    f"config file '{tmp_path / 'pliant.toml'}' (found in the working directory) "
                    "is not valid TOML", "line 1")


def test_misspelled_config_key(pliant, script, tmp_path):
    (tmp_path / "pliant.toml").write_text("nproc-per-nod = 2\n")

    assert_user_error(pliant("run", str(script)),
                    f"unknown key 'nproc-per-nod' in {tmp_path / 'pliant.toml'}",
                    "did you mean 'nproc_per_node'?")


def test_bad_value_in_config_file(pliant, script, tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.pliant]\nmax_restarts = -1\n")

    assert_user_error(pliant("run", str(script)),
                    f"invalid max_restarts -1 (from {tmp_path / 'pyproject.toml'} [tool.pliant] "
                    "key 'max_restarts')")


BROKEN = "raise ImportError('libcloudwatch.so.3: cannot open shared object file')\n"


def test_selecting_a_plugin_that_failed_to_import(make_dist, pliant, script):
    make_dist("pliant-cloudwatch", "0.2.0", BROKEN)

    assert_user_error(pliant("run", "--metrics", "cloudwatch", str(script)),
                    "unknown metric handler 'cloudwatch' (from flag --metrics)",
                    "cloudwatch (pliant-cloudwatch 0.2.0)",
                    "libcloudwatch.so.3: cannot open shared object file")
    result = pliant("run", str(script))
    assert result.returncode == 0, result
    assert "hello from rank 0" in result.stdout


# -- --debug shows the traceback ------------------------------------------------------------


@pytest.mark.parametrize("args, env", [
    (["--debug", "--nnodes", "3:2"], {}),
    (["--nnodes", "3:2", "--debug"], {}),
    (["--nnodes", "3:2"], {"PLIANT_DEBUG": "1"}),
    (["--debug", "--bogus"], {}),
], ids=["flag", "flag-after-a-value", "PLIANT_DEBUG", "flag-with-unknown-flag"])
def test_debug_shows_the_traceback(pliant, script, args, env):
    result = pliant("run", *args, str(script), env=env)

    assert result.returncode != 0, result
    assert "Traceback (most recent call last)" in result.stderr, result
    assert "pliant.errors." in result.stderr, result


def test_debug_after_the_script_is_the_scripts_argument(pliant):
    result = pliant("run", "missing.py", "--debug")

    assert_user_error(result, "training script 'missing.py'")


def test_main_names_the_subcommand_of_the_argv_it_was_given(monkeypatch, capsys):
    from pliant.cli import main

    monkeypatch.setattr("sys.argv", ["some-launcher", "plugins"])  # not what main() parses

    assert main(["run", "--no-such-flag", "train.py"]) == 2

    err = capsys.readouterr().err
    assert "--no-such-flag" in err
    assert "See 'pliant run --help'" in err
