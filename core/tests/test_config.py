"""Where each setting comes from: defaults < config file < environment < flags.

Checked twice: through ``pliant config`` (what a user reads: the value and its
source) in a subprocess, and through :func:`pliant.config.load` directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cli_assertions import assert_user_error
from pliant import config
from pliant.errors import ConfigError


def shown(result: Any) -> dict[str, tuple[str, str]]:
    """``pliant config`` output: setting -> (value, source)."""
    assert result.returncode == 0, result
    assert "Traceback" not in result.output, result
    settings = {}
    for line in result.stdout.splitlines():
        if not line.startswith("#"):
            name_value, _, source = line.rpartition("  # ")
            name, _, value = name_value.partition(" = ")
            settings[name] = (value, source)
    return settings


def config_file(result: Any) -> str:
    first = result.stdout.splitlines()[0]
    assert first.startswith("# config file: "), result
    return first.removeprefix("# config file: ")


# -- which file -----------------------------------------------------------------------------


def test_defaults_without_a_file(pliant):
    result = pliant("config")

    assert config_file(result) == "none"
    settings = shown(result)
    assert settings["max_restarts"] == ("0", "default")
    assert settings["nnodes"] == ("1:1", "default")
    assert settings["metrics"] == ("(none)", "default")


def test_pyproject_tool_pliant_table_is_read(pliant, tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "trainer"\n\n[tool.pliant]\nmax_restarts = 3\n')

    result = pliant("config")

    assert config_file(result) == str(pyproject)
    assert shown(result)["max_restarts"] == ("3", f"{pyproject} [tool.pliant] key 'max_restarts'")


def test_pyproject_with_pliant_as_a_dotted_key_is_read(pliant, tmp_path):
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[tool]\npliant.max_restarts = 3\n')

    assert shown(pliant("config"))["max_restarts"][0] == "3"


def test_pyproject_without_tool_pliant_is_ignored(pliant, tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "trainer"\n# see [tool.pliant]\n')

    result = pliant("config")

    assert config_file(result) == "none"
    assert shown(result)["max_restarts"] == ("0", "default")


def test_pliant_toml_wins_over_pyproject(pliant, tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.pliant]\nmax_restarts = 3\nrole = "ignored"\n')
    pliant_toml = tmp_path / "pliant.toml"
    pliant_toml.write_text("max_restarts = 5\n")

    result = pliant("config")

    assert config_file(result) == str(pliant_toml)
    settings = shown(result)
    assert settings["max_restarts"] == ("5", f"{pliant_toml} key 'max_restarts'")
    assert settings["role"] == ("default", "default")


@pytest.mark.parametrize("how", ["flag", "env"])
def test_explicit_config_file_replaces_discovery(pliant, tmp_path, how):
    (tmp_path / "pliant.toml").write_text("max_restarts = 5\n")
    other = tmp_path / "elsewhere" / "job.toml"
    other.parent.mkdir()
    other.write_text('role = "trainer"\n')
    args, env = (["--config", str(other)], {}) if how == "flag" else ([], {"PLIANT_CONFIG":
                                                                          str(other)})

    result = pliant("config", *args, env=env)

    assert config_file(result) == str(other)
    settings = shown(result)
    assert settings["role"] == ("trainer", f"{other} key 'role'")
    assert settings["max_restarts"] == ("0", "default")


def test_config_flag_wins_over_config_env(pliant, tmp_path):
    (tmp_path / "a.toml").write_text("max_restarts = 1\n")
    (tmp_path / "b.toml").write_text("max_restarts = 2\n")

    result = pliant("config", "--config", "b.toml", env={"PLIANT_CONFIG": "a.toml"})

    assert shown(result)["max_restarts"] == ("2", "b.toml key 'max_restarts'")


def test_explicit_pyproject_contributes_its_tool_pliant_table(pliant, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text('[tool.pliant]\nrole = "from-project"\n')

    result = pliant("config", "--config", str(project / "pyproject.toml"))

    assert shown(result)["role"][0] == "from-project"


def test_file_values_keep_their_toml_types(pliant, tmp_path):
    (tmp_path / "pliant.toml").write_text(
        'nproc-per-node = 4\nstandalone = true\nmetrics = ["null"]\nnnodes = "1:3"\n'
        "[rdzv_conf]\njoin_timeout = 5\n")

    settings = shown(pliant("config"))

    assert settings["nproc_per_node"][0] == "4"
    assert settings["standalone"][0] == "True"
    assert settings["nnodes"][0] == "1:3"
    assert settings["rdzv_conf.join_timeout"] == (
        "5.0", f"{tmp_path / 'pliant.toml'} key 'rdzv_conf'")


# -- file < env < flag ----------------------------------------------------------------------

LAYERS = {  # max_restarts at each layer
    "file": "1",
    "PET": "2",
    "PLIANT": "3",
    "flag": "4",
}


def layer_sources(tmp_path: Path) -> dict[str, str]:
    return {
        "default": "default",
        "file": f"{tmp_path / 'pliant.toml'} key 'max_restarts'",
        "PET": "env PET_MAX_RESTARTS",
        "PLIANT": "env PLIANT_MAX_RESTARTS",
        "flag": "flag --max-restarts",
    }


PRECEDENCE = [
    ((), "default"),
    (("file",), "file"),
    (("file", "PET"), "PET"),
    (("file", "PET", "PLIANT"), "PLIANT"),
    (("PET", "PLIANT"), "PLIANT"),
    (("file", "PLIANT"), "PLIANT"),
    (("file", "PET", "PLIANT", "flag"), "flag"),
    (("file", "flag"), "flag"),
    (("PLIANT", "flag"), "flag"),
]
PRECEDENCE_IDS = ["+".join(layers or ("default",)) for layers, _ in PRECEDENCE]


def set_layers(tmp_path: Path, layers: tuple[str, ...]) -> tuple[dict[str, str], dict[str, str]]:
    """Write the file layer; return (flags, env) for the others."""
    if "file" in layers:
        (tmp_path / "pliant.toml").write_text(f"max_restarts = {LAYERS['file']}\n")
    env = {f"{prefix}_MAX_RESTARTS": LAYERS[prefix] for prefix in ("PET", "PLIANT")
           if prefix in layers}
    flags = {"max_restarts": LAYERS["flag"]} if "flag" in layers else {}
    return flags, env


@pytest.mark.parametrize("layers, winner", PRECEDENCE, ids=PRECEDENCE_IDS)
def test_precedence_shown_by_pliant_config(pliant, tmp_path, layers, winner):
    flags, env = set_layers(tmp_path, layers)
    args = ["--max-restarts", flags["max_restarts"]] if flags else []

    settings = shown(pliant("config", *args, env=env))

    expected = LAYERS.get(winner, "0")
    assert settings["max_restarts"] == (expected, layer_sources(tmp_path)[winner])


@pytest.mark.parametrize("layers, winner", PRECEDENCE, ids=PRECEDENCE_IDS)
def test_precedence_of_config_load(tmp_path, layers, winner):
    flags, env = set_layers(tmp_path, layers)

    cfg = config.load(flags, env, tmp_path)

    assert cfg["max_restarts"] == int(LAYERS.get(winner, "0"))
    assert cfg.source("max_restarts") == layer_sources(tmp_path)[winner]
    assert cfg.is_set("max_restarts") == (winner != "default")


def test_torchrun_spelling_of_a_flag_is_accepted(pliant):
    settings = shown(pliant("config", "--nproc_per_node", "2"))

    assert settings["nproc_per_node"] == ("2", "flag --nproc-per-node")


def test_load_reads_an_explicit_file_wherever_the_working_directory_is(tmp_path):
    job = tmp_path / "job.toml"
    job.write_text('rdzv_backend = "c10d"\n')

    cfg = config.load({}, {}, tmp_path / "nowhere", (str(job), "flag --config"))

    assert cfg["rdzv_backend"] == "c10d"
    assert cfg.file == job


# -- bad files --------------------------------------------------------------------------------


def test_misspelled_key_names_the_file_and_suggests_the_close_match(pliant, tmp_path):
    (tmp_path / "pliant.toml").write_text("max_restart = 3\n")

    assert_user_error(pliant("config"), f"unknown key 'max_restart' in {tmp_path}/pliant.toml",
                        "did you mean 'max_restarts'?")


def test_misspelled_key_in_pyproject_names_the_table(pliant, tmp_path):
    (tmp_path / "pyproject.toml").write_text("[tool.pliant]\nnproc_per_nodes = 2\n")

    assert_user_error(pliant("config"), f"{tmp_path}/pyproject.toml [tool.pliant]",
                        "'nproc_per_nodes'", "did you mean 'nproc_per_node'?")


def test_unknown_key_without_a_close_match_lists_the_known_keys(tmp_path):
    (tmp_path / "pliant.toml").write_text("frobnicate = 1\n")

    with pytest.raises(ConfigError, match=r"unknown key 'frobnicate'.*known keys: debug, "):
        config.load({}, {}, tmp_path)


def test_invalid_value_in_a_file_names_the_file_and_key(pliant, tmp_path):
    (tmp_path / "pliant.toml").write_text('nnodes = "3:2"\n')

    assert_user_error(pliant("config"),
                        f"invalid nnodes '3:2' (from {tmp_path}/pliant.toml key 'nnodes')",
                        "MIN <= MAX")


def test_wrong_toml_type_in_a_file_is_refused(tmp_path):
    (tmp_path / "pliant.toml").write_text("max_restarts = true\n")

    with pytest.raises(ConfigError, match=r"invalid max_restarts True .*expected an integer"):
        config.load({}, {}, tmp_path)


@pytest.mark.parametrize("name", ["pliant.toml", "pyproject.toml"])
def test_malformed_toml_is_a_clear_error(pliant, tmp_path, name):
    path = tmp_path / name
    path.write_text("[tool.pliant]\nmax_restarts = = 3\n")

    assert_user_error(pliant("config"), f"config file '{path}'", "is not valid TOML",
                        "line 2")


def test_tool_pliant_that_is_not_a_table_is_a_clear_error(pliant, tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool]\npliant = "yes"\n')

    assert_user_error(pliant("config"), "[tool.pliant]", "must be a table")


@pytest.mark.parametrize("how", ["flag", "env"])
def test_missing_config_file_is_a_clear_error(pliant, tmp_path, how):
    missing = tmp_path / "missing.toml"
    args, env, source = ((["--config", str(missing)], {}, "from flag --config") if how == "flag"
                         else ([], {"PLIANT_CONFIG": str(missing)}, "from env PLIANT_CONFIG"))

    assert_user_error(pliant("config", *args, env=env),
                        f"cannot read config file '{missing}' ({source})",
                        "No such file or directory")


def test_unreadable_config_file_is_a_clear_error(pliant, tmp_path):
    # A directory cannot be read as a file even by root, unlike a chmod 000 file.
    unreadable = tmp_path / "conf.toml"
    unreadable.mkdir()

    assert_user_error(pliant("config", "--config", str(unreadable)),
                        f"cannot read config file '{unreadable}'", "Is a directory")


def test_invalid_env_value_names_the_variable(pliant):
    assert_user_error(pliant("config", env={"PET_NPROC_PER_NODE": "many"}),
                        "invalid nproc_per_node 'many' (from env PET_NPROC_PER_NODE)")


def test_preload_defaults_to_auto_and_empty_means_none(tmp_path):
    assert config.load({}, {}, tmp_path)["preload"] == ("auto",)
    assert config.load({}, {"PLIANT_PRELOAD": "torch, numpy"}, tmp_path)["preload"] == (
        "torch", "numpy")
    assert config.load({"preload": ""}, {"PLIANT_PRELOAD": "torch"}, tmp_path)["preload"] == ()


@pytest.mark.parametrize("value, fragment", [
    ("no such", "'no such' is not one"),
    ("torch,2d", "'2d' is not one"),
    ("auto,numpy", "'auto' alone"),
])
def test_preload_refuses_what_is_not_a_module_name(tmp_path, value, fragment):
    with pytest.raises(ConfigError, match=fragment) as caught:
        config.load({}, {"PLIANT_PRELOAD": value}, tmp_path)
    assert "env PLIANT_PRELOAD" in str(caught.value)
