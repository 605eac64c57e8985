"""bench/plots.py: the charts of bench.json, drawn as a user runs them.

The script runs as a subprocess on the committed results, and on copies of them with
figures left out or a launcher without a result. Its PNG files are checked as files
(signature, every chunk's CRC, the size in IHDR) and decoded by matplotlib. The committed
charts must be the ones the committed bench.json and the current plots.py give: each PNG
records the SHA-256 of both (pixels vary with matplotlib's version and fonts).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

import matplotlib.image

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PLOTS = ROOT / "bench" / "plots.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def load_plots() -> ModuleType:
    """bench/ is scripts, not a package: load plots.py by its path."""
    spec = importlib.util.spec_from_file_location("pliant_bench_plots", PLOTS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


plots = load_plots()


def committed() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RESULTS / "bench.json").read_text())
    return data


def run_plots(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(PLOTS), *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def chart(file: str) -> Any:
    return next(c for c in plots.CHARTS if c.file == file)


def check_png(path: Path) -> dict[str, str]:
    """Assert ``path`` is a whole, non-blank PNG; return its text chunks."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} does not start with the PNG signature"
    chunks, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"{path}: chunk {kind!r} fails its CRC"
        chunks.append((kind, body))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND", [k for k, _ in chunks]
    width, height = struct.unpack(">II", chunks[0][1][:8])
    assert width >= 400 and height >= 300, (path, width, height)
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (height, width)
    assert pixels.std() > 0.05, f"{path} is (nearly) one colour"
    return dict(body.decode("latin-1").split("\0", 1) for kind, body in chunks
                if kind == b"tEXt")


def test_draws_every_chart_from_the_committed_results(tmp_path: Path) -> None:
    done = run_plots("--json", RESULTS / "bench.json", "--out", tmp_path)
    assert done.returncode == 0, done.stderr
    figures = committed()["figures"]
    for c in plots.CHARTS:
        path = tmp_path / c.file
        assert f"plots: wrote {path} from figure" in done.stdout, done.stdout
        assert check_png(path)[plots.DATA_KEY] == plots.data_digest(c, figures)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(c.file for c in plots.CHARTS)


def test_the_committed_charts_are_those_of_bench_json_and_plots_py() -> None:
    figures = committed()["figures"]
    for c in plots.CHARTS:
        path = RESULTS / c.file
        assert path.exists(), f"{path} is missing: run python bench/plots.py and commit it"
        text = check_png(path)
        assert text[plots.DATA_KEY] == plots.data_digest(c, figures), (
            f"{path} was drawn from other results than bench.json's: run python "
            f"bench/plots.py and commit the charts")
        assert text[plots.CODE_KEY] == plots.code_digest(), (
            f"{path} was drawn by another bench/plots.py: run it and commit the charts")
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", (RESULTS / "bench.md").read_text())
    assert links == [c.file for c in plots.CHARTS]


def test_figures_missing_from_the_results_are_skipped_with_a_message(tmp_path: Path) -> None:
    full = committed()
    partial = {"machine": full["machine"],
               "figures": {key: full["figures"][key] for key in ("a", "d")}}
    results = tmp_path / "bench.json"
    results.write_text(json.dumps(partial))
    out = tmp_path / "charts"
    done = run_plots("--json", results, "--out", out)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["join_burst.png", "launch.png"]
    assert f"plots: wrote {out / 'launch.png'} from figure (a)\n" in done.stdout
    assert f"plots: wrote {out / 'join_burst.png'} from figure (d)\n" in done.stdout
    for file, wanted in (("recovery.png", "(b), (e)"), ("resume.png", "(p)"),
                         ("membership.png", "(r)")):
        assert f"plots: skipped {file}: {results} has none of figures {wanted}" in done.stdout
    for file in ("launch.png", "join_burst.png"):
        text = check_png(out / file)
        assert text[plots.DATA_KEY] == plots.data_digest(chart(file), partial["figures"])
    # one panel each: (e) and (q) of the launch chart, (i) of the join burst are not there
    assert len(plots.build(chart("launch.png"), partial["figures"]).axes) == 1
    assert len(plots.build(chart("join_burst.png"), partial["figures"]).axes) == 1


def test_a_launcher_without_a_result_is_labelled_not_drawn_as_zero() -> None:
    figures = copy.deepcopy(committed()["figures"])
    last = figures["d"]["rows"][-1]  # torchrun times out at the largest N
    n = last["nodes"]
    last["seconds"]["torchrun"] = last["median"]["torchrun"] = None
    last["timed_out"]["torchrun"] = {"limit_s": 60.0, "finished": 3, "ops": {"round": {}}}
    scale_up = figures["r"]["scale_up"]  # torchrun's job never grows
    scale_up["launchers"]["torchrun"] = None
    scale_up["failed"]["torchrun"] = {"problem": "torchrun-node1 exited 1", "errors": {},
                                      "files": [], "after_tries": 1, "done": False}

    (d_axes, _) = plots.build(chart("join_burst.png"), figures).axes
    torchrun = next(bars.lines[0] for bars in d_axes.containers
                    if bars.get_label() == "torchrun")  # its errorbar's data line
    assert n not in list(torchrun.get_xdata())
    assert min(torchrun.get_ydata()) > 0
    marker = next(line for line in d_axes.get_lines()
                  if list(line.get_xdata()) == [n] and line.get_marker() == "^")
    assert list(marker.get_ydata()) == [60.0]  # at the limit: a lower bound
    assert f"3 of {n}\ndone" in [t.get_text() for t in d_axes.texts]

    figures["i"]["failed"] = {"torch-etcd-v2": "python-etcd is not installed"}
    for row in figures["i"]["rows"]:  # as run.py writes it without python-etcd
        row["seconds"]["torch-etcd-v2"] = row["median"]["torch-etcd-v2"] = None
        row["timed_out"] = {}
    (_, i_axes) = plots.build(chart("join_burst.png"), figures).axes
    assert "torch-etcd-v2" not in [bars.get_label() for bars in i_axes.containers]
    sizes = ", ".join(str(row["nodes"]) for row in figures["i"]["rows"])
    said = " ".join(t.get_text().replace("\n", " ") for t in i_axes.texts)
    assert f"torch-etcd-v2, N={sizes}: did not run: python-etcd is not installed" in said

    (r_axes, _) = plots.build(chart("membership.png"), figures).axes
    labels = [t.get_text() for t in r_axes.get_xticklabels()]
    slot = labels.index("torchrun")
    assert not [bar for bar in r_axes.patches
                if abs(bar.get_x() + bar.get_width() / 2 - slot) < 0.01]
    gap = [t.get_text() for t in r_axes.texts if "no result" in t.get_text()]
    assert len(gap) == 1 and "torchrun-node1 exited 1" in gap[0].replace("\n", " ")


def test_unreadable_results_are_refused_with_what_to_do(tmp_path: Path) -> None:
    missing = tmp_path / "none.json"
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    other = tmp_path / "other.json"
    other.write_text("[]")
    for path, says in ((missing, "no such file (write it with python bench/run.py"),
                       (broken, "not valid JSON"),
                       (other, 'no "figures" object at the top level')):
        done = run_plots("--json", path, "--out", tmp_path / "charts")
        assert done.returncode == 2
        assert done.stderr.startswith(f"plots: {path}: {says}"), done.stderr
        assert "Traceback" not in done.stderr
        assert not (tmp_path / "charts").exists()
