"""Plugin discovery, failure isolation and selection, with real throwaway distributions.

Each test installs one or more tiny plugins into a folder on PYTHONPATH (see
``make_dist`` in conftest.py) and runs the real ``pliant`` CLI in a subprocess.
"""

from __future__ import annotations

import importlib.metadata
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from cli_assertions import assert_user_error
from pliant.errors import PluginError
from pliant.plugins import KINDS, PluginManager

# A complete third-party plugin: a metric handler "good" with two settings. Its
# factory writes the settings it received to the file named by ``marker``, and
# the handler appends every metric it is sent to that file.
GOOD = """
    import json

    from pliant import MetricBackend, Setting, hookimpl
    from pliant.metrics import MetricHandler
    from pliant.settings import parse_int, parse_str


    class Recorder(MetricHandler):
        def __init__(self, path):
            self.path = path

        def emit(self, metric_data):
            with open(self.path, "a") as f:
                f.write(metric_data.name + "\\n")


    def create(settings):
        with open(settings["marker"], "w") as f:
            f.write(json.dumps(settings) + "\\n")
        return Recorder(settings["marker"])


    @hookimpl
    def pliant_metric_handlers():
        return [MetricBackend("good", create, settings=(
            Setting("marker", parse_str, "", "File the factory writes."),
            Setting("level", parse_int(minimum=0), 1, "A number."),
        ))]
"""

BROKEN = """
    import pliant_missing_dependency
"""


def metric_plugin(name: str, body: str = "pass") -> str:
    """A plugin providing the metric handler ``name`` whose factory runs ``body``."""
    return f"""
        from pliant import MetricBackend, hookimpl
        from pliant.metrics import NullMetricHandler

        def create(settings):
            {body}
            return NullMetricHandler()

        @hookimpl
        def pliant_metric_handlers():
            return [MetricBackend({name!r}, create)]
    """


def listed(result: Any) -> dict[str, dict[str, Any]]:
    """``pliant plugins --json`` output, by plugin name."""
    assert result.returncode == 0, result
    return {info["name"]: info for info in json.loads(result.stdout)}


def assert_ran(result: Any) -> None:
    assert result.returncode == 0, result
    assert "hello from rank 0" in result.stdout, result


# -- a good plugin ------------------------------------------------------------------------


def test_good_plugin_is_listed_with_its_hooks_distribution_and_version(make_dist, pliant):
    make_dist("pliant-good", "1.2.3", GOOD)

    plugins = listed(pliant("plugins", "--json"))

    assert plugins["good"] == {
        "name": "good",
        "distribution": "pliant-good",
        "version": "1.2.3",
        "module": "pliant_good",
        "hooks": ["pliant_metric_handlers"],
        "status": "loaded",
        "error": None,
        "backends": [{"kind": "metrics", "flag": "--metrics", "name": "good", "default": False,
                      "default_when": None, "description": ""}],
    }
    assert plugins["null"]["status"] == "loaded"
    assert plugins["builtin"]["distribution"] == "pliant-core"
    assert plugins["builtin"]["hooks"] == ["pliant_event_handlers", "pliant_metric_handlers",
                                           "pliant_rendezvous_backends", "pliant_timer_backends"]


def test_plugins_table_shows_one_row_per_plugin(make_dist, pliant):
    make_dist("pliant-good", "1.2.3", GOOD)

    result = pliant("plugins")

    assert result.returncode == 0, result
    rows = [line.split() for line in result.stdout.splitlines()]
    assert ["good", "pliant-good", "1.2.3", "loaded", "pliant_metric_handlers"] in rows
    assert ["NAME", "DISTRIBUTION", "VERSION", "STATUS", "HOOKS"] in rows
    # Above the plugins, the names a user selects, with the plugin that provides each.
    assert rows[0] == ["FLAG", "NAME", "PROVIDED", "BY", "DEFAULT"]
    assert ["--metrics", "good", "good", "(pliant-good", "1.2.3)"] in rows


def test_selected_plugin_gets_its_parsed_settings_and_receives_metrics(
        make_dist, pliant, script, tmp_path):
    make_dist("pliant-good", "1.2.3", GOOD)
    marker = tmp_path / "marker.txt"

    result = pliant("run", "--metrics", "good",
                    "--metrics-conf", f"good.marker={marker},good.level=3", str(script))

    assert_ran(result)
    settings, *metrics = marker.read_text().splitlines()
    assert json.loads(settings) == {"marker": str(marker), "level": 3}
    assert "rendezvous.duration.ms" in metrics


def test_plugin_settings_can_come_from_the_config_file(make_dist, pliant, script, tmp_path):
    make_dist("pliant-good", "1.2.3", GOOD)
    marker = tmp_path / "marker.txt"
    (tmp_path / "pliant.toml").write_text(
        f'metrics = ["good"]\n[metrics_conf.good]\nmarker = "{marker}"\nlevel = 7\n')

    assert_ran(pliant("run", str(script)))
    assert json.loads(marker.read_text().splitlines()[0]) == {"marker": str(marker), "level": 7}


def test_pliant_config_shows_the_selected_plugins_settings(make_dist, pliant):
    make_dist("pliant-good", "1.2.3", GOOD)

    result = pliant("config", "--metrics", "good", "--metrics-conf", "good.level=5")

    assert result.returncode == 0, result
    assert "# metric handler 'good', from plugin good (pliant-good 1.2.3)" in result.stdout
    assert "metrics_conf.good.level = 5  # flag --metrics-conf" in result.stdout
    assert "metrics_conf.good.marker = (none)  # default" in result.stdout


def test_invalid_plugin_setting_value_names_the_key_and_the_handler(
        make_dist, pliant, script, tmp_path):
    make_dist("pliant-good", "1.2.3", GOOD)
    marker = tmp_path / "marker.txt"

    result = pliant("run", "--metrics", "good",
                    "--metrics-conf", f"good.marker={marker},good.level=lots", str(script))

    assert_user_error(result, "invalid level 'lots'", "metric handler 'good'",
                      "flag --metrics-conf", "expected an integer")
    assert not marker.exists(), "the factory must not run with invalid settings"


def test_misspelled_plugin_setting_key_suggests_the_close_match(make_dist, pliant, script):
    make_dist("pliant-good", "1.2.3", GOOD)

    result = pliant("run", "--metrics", "good", "--metrics-conf", "good.levle=3", str(script))

    assert_user_error(result, "unknown setting 'levle' for metric handler 'good'",
                      "flag --metrics-conf", "did you mean 'level'?")


def test_settings_for_a_handler_that_is_not_selected_are_refused(make_dist, pliant, script):
    make_dist("pliant-good", "1.2.3", GOOD)

    result = pliant("run", "--metrics-conf", "good.level=3", str(script))

    assert_user_error(result, "metrics_conf key 'good.level'", "selected: none")


def test_factory_that_raises_is_reported_with_the_plugin_name(make_dist, pliant, script):
    make_dist("pliant-crashy", "0.9", metric_plugin(
        "crashy", "raise OSError('cannot reach the metrics service')"))

    result = pliant("run", "--metrics", "crashy", str(script))

    assert_user_error(result, "metric handler 'crashy'", "pliant-crashy 0.9",
                      "failed to start", "OSError: cannot reach the metrics service")


# -- a plugin that fails to import --------------------------------------------------------


def test_plugin_that_fails_to_import_is_listed_as_failed_with_the_reason(make_dist, pliant):
    make_dist("pliant-broken", "0.3", BROKEN)
    make_dist("pliant-good", "1.2.3", GOOD)

    plugins = listed(pliant("plugins", "--json"))

    assert plugins["broken"]["status"] == "failed"
    assert plugins["broken"]["error"] == (
        "import failed: ModuleNotFoundError: No module named 'pliant_missing_dependency'")
    assert plugins["broken"]["distribution"] == "pliant-broken"
    assert {plugins[name]["status"] for name in ("builtin", "null", "good")} == {"loaded"}


def test_plugin_written_for_another_plugin_api_is_failed_with_a_clear_reason(
        make_dist, pliant, script):
    make_dist("pliant-future", "2.0", textwrap.dedent(metric_plugin("future")) + "PLUGIN_API = 2\n")
    make_dist("pliant-good", "1.2.3", textwrap.dedent(GOOD) + "PLUGIN_API = 1\n")

    plugins = listed(pliant("plugins", "--json"))

    assert plugins["future"]["status"] == "failed"
    assert plugins["future"]["error"] == (
        "written for plugin API 2 (its PLUGIN_API), but pliant-core 0.1.0 speaks plugin API 1; "
        "install a release of pliant-future made for pliant-core 0.1, or the pliant-core it was "
        "made for")
    assert plugins["good"]["status"] == "loaded"
    result = pliant("run", "--metrics", "future", str(script))
    assert_user_error(result, "metric handler 'future'", "written for plugin API 2")
    table = pliant("plugins")
    assert "future: failed: written for plugin API 2" in table.stdout


@pytest.mark.parametrize("statement, reason", [
    ("raise RuntimeError('needs CUDA 13')", "RuntimeError: needs CUDA 13"),
    ("raise SystemExit(3)", "SystemExit: 3"),
    ("1 +", "SyntaxError"),
], ids=["runtime-error", "system-exit", "syntax-error"])
def test_any_import_error_is_caught_and_reported(make_dist, pliant, script, statement, reason):
    make_dist("pliant-broken", "0.3", statement)

    plugins = listed(pliant("plugins", "--json"))

    assert plugins["broken"]["status"] == "failed"
    assert reason in plugins["broken"]["error"]
    assert_ran(pliant("run", str(script)))


def test_run_works_when_the_broken_plugin_is_not_selected(make_dist, pliant, script, tmp_path):
    make_dist("pliant-broken", "0.3", BROKEN)
    make_dist("pliant-good", "1.2.3", GOOD)
    marker = tmp_path / "marker.txt"

    assert_ran(pliant("run", str(script)))
    assert_ran(pliant("run", "--metrics", "good", "--metrics-conf", f"good.marker={marker}",
                      str(script)))
    assert marker.exists()


def test_selecting_the_broken_plugin_shows_its_own_import_error(make_dist, pliant, script):
    make_dist("pliant-broken", "0.3", BROKEN)

    result = pliant("run", "--metrics", "broken", str(script))

    assert_user_error(result, "unknown metric handler 'broken' (from flag --metrics)",
                      "broken (pliant-broken 0.3)",
                      "No module named 'pliant_missing_dependency'")
    assert "pip install" not in result.stderr


def test_broken_backend_package_is_named_instead_of_asking_to_install_it(make_dist, pliant,
                                                                         script):
    make_dist("pliant-c10d", "0.1.0", "raise ImportError('torch.distributed is unavailable')")

    result = pliant("run", "--nnodes", "2", "--rdzv-backend", "c10d", str(script))

    assert_user_error(result, "unknown rendezvous backend 'c10d' (from flag --rdzv-backend)",
                      "c10d (pliant-c10d 0.1.0)",
                      "ImportError: torch.distributed is unavailable")
    assert "pip install" not in result.stderr


# -- two providers of one name ------------------------------------------------------------


def test_two_providers_of_one_name_are_refused_naming_both(make_dist, pliant, script):
    make_dist("pliant-dup-a", "1.0", metric_plugin("dup"))
    make_dist("pliant-dup-b", "2.5", metric_plugin("dup"))

    result = pliant("run", "--metrics", "dup", str(script))

    assert_user_error(result, "metric handler 'dup' (from flag --metrics) is provided twice",
                      "pliant-dup-a 1.0 (plugin 'dup-a')", "pliant-dup-b 2.5 (plugin 'dup-b')")


def test_disabling_one_of_two_providers_resolves_the_conflict(make_dist, pliant, script,
                                                              tmp_path):
    marker = tmp_path / "b-ran"
    make_dist("pliant-dup-a", "1.0", metric_plugin("dup"))
    make_dist("pliant-dup-b", "2.5", metric_plugin("dup", f"open({str(marker)!r}, 'w')"))

    assert_ran(pliant("run", "--metrics", "dup", "--disable-plugins", "dup-a", str(script)))
    assert marker.exists()


def test_a_conflict_on_a_name_not_selected_does_not_matter(make_dist, pliant, script):
    make_dist("pliant-dup-a", "1.0", metric_plugin("dup"))
    make_dist("pliant-dup-b", "2.5", metric_plugin("dup"))

    assert_ran(pliant("run", str(script)))


def test_two_distributions_with_one_entry_point_name(make_dist, pliant, script):
    make_dist("pliant-fork-a", "1.0", metric_plugin("same"), entry_points={"fork": "pliant_fork_a"})
    make_dist("pliant-fork-b", "2.0", metric_plugin("same"), entry_points={"fork": "pliant_fork_b"})

    # Neither hides the other: both load, under names that tell them apart ...
    infos = json.loads(pliant("plugins", "--json").stdout)
    forks = {i["distribution"]: i for i in infos if i["name"].startswith("fork")}
    assert {d: i["status"] for d, i in forks.items()} == {"pliant-fork-a": "loaded",
                                                          "pliant-fork-b": "loaded"}
    assert {i["name"] for i in forks.values()} == {"fork", "fork (pliant-fork-b)"} or \
        {i["name"] for i in forks.values()} == {"fork", "fork (pliant-fork-a)"}
    # ... so the name they both provide is refused, naming both distributions.
    result = pliant("run", "--metrics", "same", str(script))
    assert result.returncode == 2
    assert "pliant-fork-a 1.0" in result.stderr and "pliant-fork-b 2.0" in result.stderr
    # Disabling one by its distribution name settles it.
    result = pliant("run", "--metrics", "same", "--disable-plugins", "pliant-fork-b", str(script))
    assert result.returncode == 0, result.stderr


# -- disabling plugins --------------------------------------------------------------------

# Importing this plugin leaves a file behind, so a test can tell it was not imported.
NOISY = """
    import os
    open(os.environ["NOISY_MARKER"], "w").close()
"""


@pytest.mark.parametrize("args, env, source", [
    (["--disable-plugins", "noisy"], {}, "flag --disable-plugins"),
    ([], {"PLIANT_DISABLE_PLUGINS": "noisy"}, "env PLIANT_DISABLE_PLUGINS"),
], ids=["flag", "env"])
def test_disabled_plugin_is_listed_as_disabled_and_not_imported(
        make_dist, pliant, tmp_path, args, env, source):
    make_dist("pliant-noisy", "1.0", NOISY)
    marker = tmp_path / "imported"

    plugins = listed(pliant("plugins", "--json", *args, env={"NOISY_MARKER": str(marker),
                                                            **env}))

    assert plugins["noisy"]["status"] == "disabled"
    assert plugins["noisy"]["error"] == f"disabled by {source}"
    assert plugins["null"]["status"] == "loaded"
    assert not marker.exists()


def test_plugin_is_imported_when_not_disabled(make_dist, pliant, tmp_path):
    make_dist("pliant-noisy", "1.0", NOISY)
    marker = tmp_path / "imported"

    assert listed(pliant("plugins", "--json", env={"NOISY_MARKER": str(marker)}))
    assert marker.exists()


@pytest.mark.parametrize("args, env, source", [
    (["--no-plugins"], {}, "flag --no-plugins"),
    ([], {"PLIANT_NO_PLUGINS": "1"}, "env PLIANT_NO_PLUGINS"),
], ids=["flag", "env"])
def test_no_plugins_disables_every_entry_point_but_keeps_the_builtins(
        make_dist, pliant, args, env, source):
    make_dist("pliant-good", "1.2.3", GOOD)

    plugins = listed(pliant("plugins", "--json", *args, env=env))

    assert plugins["builtin"]["status"] == "loaded"
    for name in ("null", "good"):
        assert plugins[name]["status"] == "disabled"
        assert plugins[name]["error"] == f"disabled by {source}"


def test_run_with_no_plugins_needs_only_the_builtins(pliant, script):
    assert_ran(pliant("run", "--no-plugins", str(script)))


def test_asking_for_a_handler_of_a_disabled_plugin_says_so(pliant, script):
    result = pliant("run", "--no-plugins", "--metrics", "null", str(script))

    assert_user_error(result, "unknown metric handler 'null' (from flag --metrics)",
                      "null (pliant-null 0.1.0), which is disabled by flag --no-plugins")
    assert "install" not in result.stderr


def test_disable_plugins_from_the_config_file(make_dist, pliant, tmp_path):
    make_dist("pliant-good", "1.2.3", GOOD)
    (tmp_path / "pliant.toml").write_text('disable_plugins = ["good"]\n')

    plugins = listed(pliant("plugins", "--json"))

    assert plugins["good"]["status"] == "disabled"
    assert plugins["good"]["error"] == (
        f"disabled by {tmp_path / 'pliant.toml'} key 'disable_plugins'")


def test_selecting_a_disabled_plugin_says_it_is_disabled_not_missing(make_dist, pliant,
                                                                     script):
    make_dist("pliant-good", "1.2.3", GOOD)

    result = pliant("run", "--metrics", "good", "--disable-plugins", "good", str(script))

    assert_user_error(result, "unknown metric handler 'good'",
                      "good (pliant-good 1.2.3)", "flag --disable-plugins")
    assert "install" not in result.stderr


# -- plugins that implement the hooks wrongly ---------------------------------------------


@pytest.mark.parametrize("source, error", [
    ("""
     from pliant import hookimpl

     @hookimpl
     def pliant_metric_handler():
         return []
     """, "implements unknown hook(s) pliant_metric_handler; known hooks: "
          "pliant_rendezvous_backends, pliant_metric_handlers"),
    ("""
     from pliant import hookimpl

     @hookimpl
     def pliant_metric_handlers(config):
         return []
     """, "invalid hooks: PluginValidationError"),
], ids=["misspelled-hook", "wrong-signature"])
def test_invalid_hook_implementation_is_reported_failed(make_dist, pliant, script, source,
                                                        error):
    make_dist("pliant-sloppy", "0.1", source)

    plugins = listed(pliant("plugins", "--json"))

    assert plugins["sloppy"]["status"] == "failed"
    assert error in plugins["sloppy"]["error"]
    assert plugins["sloppy"]["hooks"] == []
    assert_ran(pliant("run", str(script)))


@pytest.mark.parametrize("returns, error", [
    ("raise RuntimeError('metrics service unreachable')",
     "pliant_metric_handlers raised RuntimeError: metrics service unreachable"),
    ("raise SystemExit(3)", "pliant_metric_handlers raised SystemExit: 3"),
    ("return [{'name': 'sloppy'}]",
     "pliant_metric_handlers raised TypeError: pliant_metric_handlers returned "
     "{'name': 'sloppy'}, not a pliant.MetricBackend"),
    ("return [EventBackend('sloppy', lambda s: None)]",
     "not a pliant.MetricBackend"),
    ("return MetricBackend('sloppy', lambda s: None)",
     "pliant_metric_handlers raised TypeError: 'MetricBackend' object is not iterable"),
    ("return [MetricBackend('Sloppy Handler', lambda s: None)]",
     "ValueError: metric handler name 'Sloppy Handler' must be lowercase"),
], ids=["raises", "exits", "dict", "wrong-kind", "not-a-list", "bad-name"])
def test_hook_that_raises_or_returns_the_wrong_type_is_failed_not_fatal(
        make_dist, pliant, script, returns, error):
    make_dist("pliant-sloppy", "0.1", f"""
        from pliant import EventBackend, MetricBackend, hookimpl

        @hookimpl
        def pliant_metric_handlers():
            {returns}
    """)

    plugins = listed(pliant("plugins", "--json"))

    assert plugins["sloppy"]["status"] == "failed"
    assert error in plugins["sloppy"]["error"]
    assert plugins["null"]["status"] == "loaded"
    assert_ran(pliant("run", str(script)))


# -- unknown names ------------------------------------------------------------------------


@pytest.mark.parametrize("args, fragments", [
    (["--rdzv-backend", "zookeeper"],
     ["unknown rendezvous backend 'zookeeper' (from flag --rdzv-backend)", "available: ",
      "embedded", "etcd-v2, static.",
      "install a plugin that provides rendezvous backend 'zookeeper'"]),
    (["--nnodes", "2", "--rdzv-backend", "static-tcp"],
     ["unknown rendezvous backend 'static-tcp'", "available: "]),
    (["--metrics", "statsd"],
     ["unknown metric handler 'statsd' (from flag --metrics)",
      "available: cloudwatch, console, good, null, prometheus.",
      "install a plugin that provides metric handler 'statsd'"]),
    (["--events", "nope"],
     ["unknown event handler 'nope' (from flag --events)", "available: cloudwatch, jsonl, null.",
      "install a plugin that provides event handler 'nope'"]),
    (["--timer", "nope"], ["unknown timer backend 'nope' (from flag --timer)"]),
], ids=["rdzv-zookeeper", "rdzv-static-tcp", "metrics-statsd", "events-nope", "timer-nope"])
def test_unknown_backend_lists_the_names_and_the_package_to_install(
        make_dist, pliant, script, args, fragments):
    make_dist("pliant-good", "1.2.3", GOOD)

    assert_user_error(pliant("run", *args, str(script)), *fragments)


def test_unknown_backend_from_the_environment_names_the_variable(pliant, script):
    result = pliant("run", str(script), env={"PLIANT_RDZV_BACKEND": "zookeeper"})

    assert_user_error(result, "'zookeeper' (from env PLIANT_RDZV_BACKEND)")


# -- PluginManager in process -------------------------------------------------------------


@pytest.fixture
def entry_points(import_site: Path, make_dist):
    """``entry_points(name, version, source, ...)``: a dist's entry points, importable here."""

    def make(*args: Any, **kwargs: Any) -> list[importlib.metadata.EntryPoint]:
        info = make_dist(*args, **kwargs)
        return list(importlib.metadata.PathDistribution(info).entry_points)

    return make


def test_manager_with_no_entry_points_has_only_the_builtins():
    pm = PluginManager(entry_points=[])

    assert [(i.name, i.status) for i in pm.plugins()] == [("builtin", "loaded")]
    assert set(pm.registrations(KINDS["rendezvous"])) == {"embedded", "static"}
    assert pm.select("rendezvous", "embedded", "test").plugin.distribution == "pliant-core"
    with pytest.raises(PluginError, match="pip install pliant-null"):
        pm.select("metrics", "null", "test")


def test_manager_selects_and_builds_with_validated_settings(entry_points, tmp_path):
    marker = tmp_path / "marker.txt"
    pm = PluginManager(entry_points=entry_points("pliant-good", "1.2.3", GOOD))

    selected = pm.select("metrics", "good", "test", {"marker": str(marker), "level": "4"},
                         "test conf")
    assert selected.settings == {"marker": str(marker), "level": 4}
    assert selected.plugin.label == "good (pliant-good 1.2.3)"
    selected.create()
    assert json.loads(marker.read_text()) == {"marker": str(marker), "level": 4}


def test_manager_disables_by_name_and_says_by_whom(entry_points):
    eps = entry_points("pliant-good", "1.2.3", GOOD)
    pm = PluginManager(disabled=["good"], disabled_by="flag --disable-plugins", entry_points=eps)

    good = next(i for i in pm.plugins() if i.name == "good")
    assert (good.status, good.error) == ("disabled", "disabled by flag --disable-plugins")
    with pytest.raises(PluginError, match=r"good \(pliant-good 1\.2\.3\), which is disabled"):
        pm.select("metrics", "good", "test")


def test_manager_records_a_broken_plugin_and_keeps_the_rest(entry_points):
    eps = [*entry_points("pliant-broken", "0.3", BROKEN),
           *entry_points("pliant-good", "1.2.3", GOOD)]
    pm = PluginManager(entry_points=eps)

    status = {i.name: i.status for i in pm.plugins()}
    assert status == {"builtin": "loaded", "broken": "failed", "good": "loaded"}
    with pytest.raises(PluginError, match="No module named 'pliant_missing_dependency'"):
        pm.select("metrics", "broken", "test")


# -- pliant-core's own names --------------------------------------------------------------

IMPOSTOR = """
    import os
    from pliant import RendezvousBackend, hookimpl

    open(os.environ["NOISY_MARKER"], "w").close()

    @hookimpl
    def pliant_rendezvous_backends():
        return [RendezvousBackend("embedded", lambda params: 1 / 0)]
"""


def test_a_one_node_run_loads_no_plugin(make_dist, pliant, tmp_path, script):
    make_dist("pliant-noisy", "1.0", IMPOSTOR)
    marker = tmp_path / "imported"

    assert_ran(pliant("run", str(script), env={"NOISY_MARKER": str(marker)}))
    assert not marker.exists()


def test_a_plugin_cannot_take_a_core_name(make_dist, pliant, tmp_path, script):
    make_dist("pliant-noisy", "1.0", IMPOSTOR)
    env = {"NOISY_MARKER": str(tmp_path / "imported")}

    plugins = listed(pliant("plugins", "--json", env=env))
    assert plugins["noisy"]["status"] == "loaded"
    assert plugins["noisy"]["error"] == ("its rendezvous backend 'embedded' is ignored: "
                                         "pliant-core reserves that name")
    # Even once every plugin is loaded (a plugin metric handler is selected), 'embedded'
    # is pliant-core's.
    assert_ran(pliant("run", "--metrics", "null", str(script), env=env))


# -- the backends `pliant plugins` lists ----------------------------------------------------


def backend_rows(listing: str) -> list[list[str]]:
    """The rows of the backends table (the first section), split on runs of 2+ spaces."""
    import re

    rows = [re.split(r"\s{2,}", line) for line in listing.split("\n\n")[0].splitlines()]
    return [row for row in rows if len(row) > 2]  # not the notes below the table


def test_listing_names_every_selectable_backend_its_plugin_and_the_defaults(entry_points):
    from pliant.cli import plugins_listing

    pm = PluginManager(entry_points=entry_points("pliant-good", "1.2.3", GOOD))
    listing = plugins_listing(pm)

    rows = backend_rows(listing)
    assert rows[0] == ["FLAG", "NAME", "PROVIDED BY", "DEFAULT"]
    assert rows[1:] == [
        ["--rdzv-backend", "c10d", "(not available)", "yes, with --rdzv-endpoint"],
        ["--rdzv-backend", "embedded", "builtin (pliant-core 0.1.0)",
         "yes, on one node without --rdzv-endpoint, or with --standalone"],
        ["--rdzv-backend", "static", "builtin (pliant-core 0.1.0)",
         "yes, on several nodes without --rdzv-endpoint, or with --node-rank"],
        ["--metrics", "console", "builtin (pliant-core 0.1.0)"],
        ["--metrics", "good", "good (pliant-good 1.2.3)"],
        ["--events", "jsonl", "builtin (pliant-core 0.1.0)"],
        ["--timer", "local", "builtin (pliant-core 0.1.0)", "yes"],
    ]
    # The default that is missing says where to get it, from a checkout and once released.
    assert ("--rdzv-backend c10d: not installed; from a checkout of pliant, pip install "
            "./plugins/c10d (once released: pip install pliant-c10d)") in listing.splitlines()
    assert "--metrics and --events: none unless given" in listing.splitlines()


def test_listing_says_why_a_default_is_missing_and_which_names_clash(entry_points):
    from pliant.cli import plugins_listing

    # Its entry point names a module of its own: the real pliant_c10d may be imported here.
    eps = [*entry_points("pliant-c10d", "0.1.0", "", entry_points={"c10d": "c10d_not_here"}),
           *entry_points("pliant-dup-a", "1.0", metric_plugin("dup")),
           *entry_points("pliant-dup-b", "2.5", metric_plugin("dup"))]
    listing = plugins_listing(PluginManager(entry_points=eps)).splitlines()

    assert ("--rdzv-backend c10d: it would come from plugin c10d (pliant-c10d 0.1.0), which "
            "failed to load: import failed: ModuleNotFoundError: No module named "
            "'c10d_not_here'") in listing
    rows = backend_rows("\n".join(listing))
    assert ["--metrics", "dup", "dup-a (pliant-dup-a 1.0)"] in rows
    assert ["--metrics", "dup", "dup-b (pliant-dup-b 2.5)"] in rows
    assert ("--metrics dup: provided twice; selecting it fails until one plugin is disabled "
            "(--disable-plugins NAME)") in listing


def test_plugins_json_gives_each_plugin_its_backends_and_the_defaults(pliant):
    plugins = listed(pliant("plugins", "--json", "--disable-plugins", "pliant-c10d"))

    builtin = {(b["kind"], b["name"]): b for b in plugins["builtin"]["backends"]}
    assert set(builtin) == {("rendezvous", "embedded"), ("rendezvous", "static"),
                            ("metrics", "console"), ("events", "jsonl"), ("timer", "local")}
    assert builtin["timer", "local"]["default"] is True
    assert builtin["timer", "local"]["default_when"] is None
    assert builtin["rendezvous", "embedded"]["default_when"] == (
        "on one node without --rdzv-endpoint, or with --standalone")
    assert builtin["metrics", "console"]["default"] is False
    assert {b["flag"] for b in builtin.values()} == {"--rdzv-backend", "--metrics", "--events",
                                                     "--timer"}
    assert plugins["c10d"]["status"] == "disabled" and plugins["c10d"]["backends"] == []
    assert [(b["name"], b["flag"]) for b in plugins["null"]["backends"]] == [
        ("null", "--metrics"), ("null", "--events"), ("null", "--timer")]
