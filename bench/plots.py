"""Charts of the key figures in bench.json, as PNG files beside bench.md.

Usage: ``python bench/plots.py [--json PATH] [--out DIR]`` (defaults:
``bench/results/bench.json``, and the folder that file is in). ``run.py`` calls it after
writing its reports, so ``nox -s bench`` redraws the charts; run alone, it redraws them
from the results already there, without running a benchmark.

Each chart shows, per launcher, the median of the raw samples with min-max whiskers, and
its caption says what each clock includes. A launcher that gave no result (a time limit
ran out, its job did not complete, or it was left out) is drawn as a labelled gap (a
join burst: a hollow triangle at the limit, a lower bound), never as 0. A chart none of
whose figures is in the JSON (a bench.json of ``run.py --only``, or of an older
``run.py``) is skipped with a message; one with some of them draws the panels it has.

Each PNG carries two text chunks: the SHA-256 of the figures it was drawn from and of
this file. Pixels change with the matplotlib version and its fonts, these do not: they
tell whether a committed chart is the one the committed bench.json and this code give.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DPI = 100
DATA_KEY = "pliant-bench-figures-sha256"  # PNG text chunk: the figures drawn from
CODE_KEY = "pliant-bench-plots-sha256"  # PNG text chunk: this file

# One colour per launcher or backend, the same in every chart.
COLORS = {
    "torchrun": "#8c8c8c",
    "pliant": "#1f6fb4",
    "pliant, --preload ''": "#9cc3e6",
    "no launcher": "#e0e0e0",
    "pliant-etcd": "#2a9d8f",
    "pliant-c10d": "#1f6fb4",
    "torch-etcd-v2": "#8c8c8c",
}
VARIANT_ORDER = ("torchrun", "pliant", "pliant, --preload ''")


# -- what a chart shows: values, and why one is missing ---------------------------------------


@dataclass(frozen=True)
class Spread:
    """The median of one launcher's raw samples, with their min and max."""

    median: float
    low: float
    high: float
    runs: int


@dataclass(frozen=True)
class NoResult:
    """A launcher without a value, and why; ``at_least`` is a time limit that ran out, and
    ``note`` what the chart writes beside its marker."""

    why: str
    at_least: float | None = None
    note: str = ""


Value = Spread | NoResult


def spread(part: dict[str, Any] | None, why_missing: str) -> Value:
    """A :class:`Spread` from ``{"samples": [...]}``, or ``NoResult(why_missing)``."""
    samples = (part or {}).get("samples")
    if not samples:
        return NoResult(why_missing)
    return Spread(statistics.median(samples), min(samples), max(samples), len(samples))


@dataclass(frozen=True)
class BarPanel:
    """One set of bars side by side: one measure, one bar per launcher."""

    key: str  # the figure in bench.json
    title: str
    clock: str  # what the clock includes, for the caption
    bars: dict[str, Value]


@dataclass(frozen=True)
class CurvePanel:
    """Seconds by node count N, one line per launcher, both axes logarithmic."""

    key: str
    title: str
    clock: str
    series: dict[str, dict[int, Value]]
    limit_s: float


Panel = BarPanel | CurvePanel


@dataclass(frozen=True)
class Chart:
    """One PNG: panels built from some figures of bench.json, in a row."""

    file: str
    title: str
    parts: tuple[tuple[str, Callable[[dict[str, Any]], list[Panel]]], ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(key for key, _ in self.parts)

    def panels(self, figures: dict[str, Any]) -> list[Panel]:
        return [panel for key, build in self.parts if key in figures
                for panel in build(figures[key])]


# -- the panels, one builder per figure of bench.json -----------------------------------------


def pair(measure: dict[str, Any]) -> dict[str, Value]:
    """torchrun and pliant of a row shaped like (a)-(c)'s."""
    return {name: spread(measure[name], "no samples") for name in ("torchrun", "pliant")}


def variants(result: dict[str, Any], part: str) -> dict[str, Value]:
    """Each variant of a (p)/(q) set-up for one measure; one left out says why."""
    names = [n for n in VARIANT_ORDER if n in result["variants"] or n in result["skipped"]]
    names += [n for n in result["variants"] if n not in names]
    return {name: (spread(result["parts"][part].get(name), "no samples")
                   if name in result["variants"]
                   else NoResult(f"left out: {result['skipped'][name]}"))
            for name in names}


def launch_a(a: dict[str, Any]) -> list[Panel]:
    return [BarPanel("a", "(a) standalone, 2 workers:\nlaunch -> exit",
                     "(a) the whole command, from just before it is started to its exit; each "
                     "worker only writes a marker file.", pair(a))]


def launch_e(e: dict[str, Any]) -> list[Panel]:
    return [BarPanel("e", "(e) 2 agents on c10d:\nlaunch -> every worker started",
                     "(e) from starting both agents (c10d on loopback, the store in the first) "
                     "to both workers started: the agents' own start, the rendezvous, "
                     "spawning the workers.", pair(e["rows"][0]))]


def launch_q(q: dict[str, Any]) -> list[Panel]:
    bars = variants(q["c10d"], "launch_step")
    if q.get("by_hand"):
        bars["no launcher"] = spread(q["by_hand"], "no samples")
    return [BarPanel("q", "(q) 2 agents on c10d:\nlaunch -> every rank's first DDP step",
                     "(q) from starting both agents to every rank's first completed step of a "
                     "gloo DDP training: the agents' start, the rendezvous, starting the "
                     "workers, and in them interpreter start, import torch, the process "
                     "group, building DDP and the step; 'no launcher' starts the same two "
                     "workers directly, the floor for any launcher.", bars)]


def recovery_b(b: dict[str, Any]) -> list[Panel]:
    return [BarPanel("b", "(b) standalone, 2 workers:\ncrash -> every worker running",
                     "(b) from rank 1's os._exit(1) to the last worker of the next attempt "
                     "running its first line: noticing the exit, stopping the group, the "
                     "re-rendezvous, spawning, interpreter start (time.time() written by the "
                     "workers).", pair(b))]


def recovery_e(e: dict[str, Any]) -> list[Panel]:
    return [BarPanel("e", "(e) 2 agents on c10d, 1 worker each:\ncrash -> every worker "
                     "running", "(e) the same across two agents: from the crash to both "
                     "workers of the next group started.", pair(e["rows"][1]))]


def resume_p(p: dict[str, Any]) -> list[Panel]:
    titles = {"standalone": "(p) standalone, 2 workers:\ncrash -> every rank stepped again",
              "c10d": "(p) 2 agents on c10d, 1 worker each:\ncrash -> every rank stepped again"}
    settle = next(iter(p["setups"].values()))["settle_s"]
    clock = (f"(p) a 2-rank gloo DDP training that checkpoints every step; from rank 1's crash "
             f"(os._exit(1), once both ranks stepped for {settle:g} s) to the last rank's first "
             f"completed step of the next attempt: noticing the exit, stopping, the "
             f"re-rendezvous, starting the new workers (or handing a warm standby its rank), "
             f"interpreter start, import torch, the gloo process group, loading the "
             f"checkpoint, building DDP and the step. 'pliant' as run by default (warm "
             f"standby workers); --preload '' turns them off.")
    shown = [(setup, title) for setup, title in titles.items() if setup in p["setups"]]
    return [BarPanel("p", title, "" if i else clock,
                     variants(p["setups"][setup], "recovery_step"))
            for i, (setup, title) in enumerate(shown)]


def membership_r(r: dict[str, Any]) -> list[Panel]:
    titles = {"scale_up": "(r) scale-up: third agent launched\n-> every rank stepped at "
                          "WORLD_SIZE=3",
              "node_loss": "(r) node loss: an agent and its worker killed\n-> both survivors "
                           "stepped at WORLD_SIZE=2"}
    clocks = {"scale_up": "(r) --nnodes 2:3, one gloo DDP worker per agent, c10d on loopback. "
                          "Scale-up: from starting the third agent (its start included, "
                          "last_call_timeout=2) to the last rank's first step at WORLD_SIZE=3: "
                          "noticing the new node, stopping, the re-rendezvous, the restart "
                          "(import torch, process group, checkpoint, DDP, step).",
              "node_loss": "Node loss: from the SIGKILL of one agent and its worker to the "
                           "last survivor's first step at WORLD_SIZE=2: the all-reduce "
                           "failing, noticing the lost node (keep-alive 1 s x 3), the "
                           "re-rendezvous and the restart as above."}
    panels: list[Panel] = []
    for scenario, title in titles.items():
        if scenario not in r:
            continue
        result = r[scenario]
        bars: dict[str, Value] = {}
        for name in [n for n in VARIANT_ORDER if n in result["launchers"]
                     or n in result["skipped"]]:
            if name in result["skipped"]:
                bars[name] = NoResult(f"left out: {result['skipped'][name]}")
            elif name in result["failed"]:
                bars[name] = NoResult(f"did not step at the new size: "
                                      f"{result['failed'][name]['problem']}")
            else:
                bars[name] = spread(result["launchers"][name],
                                    f"no result in {result['limit_s']:g} s")
        panels.append(BarPanel("r", title, clocks[scenario], bars))
    return panels


def burst_series(fig: dict[str, Any], names: tuple[str, ...]) -> dict[str, dict[int, Value]]:
    """Per launcher, per N: a spread, or why there is none (a time-out: at least the limit)."""
    series: dict[str, dict[int, Value]] = {name: {} for name in names}
    for row in fig["rows"]:
        n = row["nodes"]
        for name in names:
            late = row["timed_out"].get(name)
            if late is not None and row["median"][name] is None:
                series[name][n] = NoResult(f"no result in {late['limit_s']:g} s ("
                                           f"{late['finished']} of {n} done)",
                                           at_least=late["limit_s"],
                                           note=f"{late['finished']} of {n}\ndone")
            else:
                why = fig.get("failed", {}).get(name, "no samples")
                series[name][n] = spread(row["seconds"].get(name), f"did not run: {why}")
    return series


def burst_d(d: dict[str, Any]) -> list[Panel]:
    return [CurvePanel("d", "(d) c10d: N nodes join one TCPStore at once",
                       "(d) N nodes as threads of one process on one TCPStore, from releasing "
                       "the threads to the last one holding its rank (each node's store "
                       "connection opened before the clock; a handler's own keep-alive "
                       "connection inside it).", burst_series(d, ("torchrun", "pliant")),
                       d["limit_s"])]


def burst_i(i: dict[str, Any]) -> list[Panel]:
    return [CurvePanel("i", "(i) N nodes join at once on one etcd server",
                       "(i) the same on one etcd server (fsync on): pliant-etcd, pliant-c10d "
                       "on a TCPStore as in (d), torch's etcd-v2 backend (python-etcd).",
                       burst_series(i, ("pliant-etcd", "pliant-c10d", "torch-etcd-v2")),
                       i["limit_s"])]


CHARTS = (
    Chart("launch.png", "Launch: from starting the launcher until the job runs",
          (("a", launch_a), ("e", launch_e), ("q", launch_q))),
    Chart("recovery.png", "Recovery: a worker crashes -> every worker running again",
          (("b", recovery_b), ("e", recovery_e))),
    Chart("resume.png", "Resume: a worker crashes -> every rank completed a training step again",
          (("p", resume_p),)),
    Chart("membership.png", "Membership change on --nnodes 2:3: until every rank steps at the "
          "new world size", (("r", membership_r),)),
    Chart("join_burst.png", "Join burst: N nodes join one rendezvous at once (log scales)",
          (("d", burst_d), ("i", burst_i))),
)


# -- drawing ----------------------------------------------------------------------------------


def color(name: str) -> str:
    return COLORS.get(name, "#bcbd22")


def draw_bars(ax: Axes, panel: BarPanel) -> None:
    """Bars at the medians, min-max whiskers, the median written above; a gap says why."""
    top = max((v.high for v in panel.bars.values() if isinstance(v, Spread)), default=1.0)
    for x, (name, value) in enumerate(panel.bars.items()):
        if isinstance(value, Spread):
            ax.bar(x, value.median, width=0.7, color=color(name), edgecolor="#404040",
                   hatch="//" if name == "no launcher" else None)
            ax.errorbar(x, value.median, yerr=[[value.median - value.low],
                                               [value.high - value.median]],
                        fmt="none", ecolor="black", capsize=4, linewidth=1)
            ax.text(x, value.high + top * 0.02, f"{value.median:.3f} s", ha="center",
                    va="bottom", fontsize=8)
        else:
            ax.text(x, top * 0.55, "\n".join(["no result", *textwrap.wrap(value.why, 36)[:3]]),
                    rotation=90, ha="center", va="center", fontsize=8, style="italic",
                    color="#a00000")
    ax.set_xticks(range(len(panel.bars)),
                  [name.replace(", ", ",\n") for name in panel.bars], fontsize=8)
    ax.set_xlim(-0.6, len(panel.bars) - 0.4)
    ax.set_ylim(0, top * 1.18)
    ax.set_ylabel("seconds")


def draw_curves(ax: Axes, panel: CurvePanel) -> None:
    """Medians by N with min-max whiskers; a time-out a hollow triangle at the limit."""
    marked = False
    notes: list[str] = []  # launchers without a value that is not a time-out, and why
    for name, by_n in panel.series.items():
        done = sorted((n, v) for n, v in by_n.items() if isinstance(v, Spread))
        if done:
            ns = [n for n, _ in done]
            med = [v.median for _, v in done]
            ax.errorbar(ns, med, yerr=[[v.median - v.low for _, v in done],
                                       [v.high - v.median for _, v in done]],
                        color=color(name), marker="o", markersize=4, capsize=3,
                        linewidth=1.5, label=name)
        late = sorted((n, v.at_least, v.note) for n, v in by_n.items()
                      if isinstance(v, NoResult) and v.at_least is not None)
        for n, at_least, note in late:
            ax.plot([n], [at_least], marker="^", markersize=9, markerfacecolor="white",
                    markeredgecolor=color(name), markeredgewidth=1.5, linestyle="none",
                    label=None if marked else f"no result within {panel.limit_s:g} s "
                                              f"(the dotted line)")
            marked = True
            ax.annotate(note, (n, at_least), xytext=(0, -9), textcoords="offset points",
                        ha="center", va="top", fontsize=7, style="italic", color="#a00000")
        absent: dict[str, list[str]] = {
            v.why: [] for v in by_n.values() if isinstance(v, NoResult) and v.at_least is None}
        for n, v in sorted(by_n.items()):
            if isinstance(v, NoResult) and v.at_least is None:
                absent[v.why].append(str(n))
        notes += [f"{name}, N={', '.join(ns)}: {why}" for why, ns in absent.items()]
    if notes:  # in one corner, once per launcher and reason, not at every N
        ax.text(0.98, 0.97, "\n".join(line for note in notes
                                      for line in textwrap.wrap(note, 42)),
                transform=ax.transAxes, ha="right", va="top", fontsize=7, style="italic",
                color="#a00000")
    ax.axhline(panel.limit_s, color="#a00000", linestyle=":", linewidth=1)
    ns = sorted({n for by_n in panel.series.values() for n in by_n})
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(ns, [str(n) for n in ns])
    ax.minorticks_off()
    ax.set_xlim(ns[0] / 1.6, ns[-1] * 1.6)
    ax.set_ylim(top=panel.limit_s * 200)  # room for the legend above the lines
    ax.set_xlabel("nodes N")
    ax.set_ylabel("seconds until every node has its rank")
    ax.grid(True, which="major", axis="y", color="#e8e8e8")
    ax.legend(fontsize=8, loc="upper left")


def footer(panels: list[Panel], figures: dict[str, Any]) -> str:
    """What the numbers are, and where they came from: the run of each figure drawn."""
    keys = sorted({p.key for p in panels})
    runs = "; ".join(f"({k}) {figures[k]['run']['date'][:10]} at "
                     f"{figures[k]['run']['git_commit'][:10]}, {figures[k]['run']['repeat']} "
                     f"runs per launcher" for k in keys if "run" in figures[k])
    return ("Bars and points: medians of the raw samples; whiskers: their min and max. "
            "bench/results/bench.json: " + runs + ".")


def build(chart: Chart, figures: dict[str, Any]) -> Figure | None:
    """The chart as a matplotlib figure, or None when none of its figures is there."""
    from matplotlib.figure import Figure

    panels = chart.panels(figures)
    if not panels:
        return None
    width = 4.6 * len(panels) if isinstance(panels[0], BarPanel) else 6.0 * len(panels)
    caption = [line for text in [*(p.clock for p in panels), footer(panels, figures)]
               if text for line in textwrap.wrap(text, int(width * 19))]
    plot_h, line_h = 4.2, 0.16
    height = plot_h + line_h * len(caption) + 0.7
    fig = Figure(figsize=(width, height), dpi=DPI)
    fig.subplots_adjust(left=0.5 / width * 1.6, right=1 - 0.2 / width, wspace=0.35,
                        top=1 - 0.85 / height, bottom=(line_h * len(caption) + 0.75) / height)
    fig.suptitle(chart.title, fontsize=11, fontweight="bold")
    for ax, panel in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels, strict=True):
        ax.set_title(panel.title, fontsize=9)
        if isinstance(panel, BarPanel):
            draw_bars(ax, panel)
        else:
            draw_curves(ax, panel)
    fig.text(0.01, 0.012, "\n".join(caption), fontsize=7.5, va="bottom", ha="left",
             color="#303030", linespacing=1.35)
    return fig


def data_digest(chart: Chart, figures: dict[str, Any]) -> str:
    drawn = {key: figures[key] for key in chart.keys if key in figures}
    return hashlib.sha256(json.dumps(drawn, sort_keys=True).encode()).hexdigest()


def code_digest() -> str:
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def write(chart: Chart, figures: dict[str, Any], out: Path) -> Path | None:
    """Draw ``chart`` into ``out``; None (and nothing written) when it has no figures."""
    fig = build(chart, figures)
    if fig is None:
        return None
    path = out / chart.file
    fig.savefig(path, format="png", metadata={
        "Software": None, "Title": chart.title, DATA_KEY: data_digest(chart, figures),
        CODE_KEY: code_digest()})
    return path


def markdown_links(figures: dict[str, Any]) -> list[str]:
    """Image lines for bench.md (relative: it lies beside the charts), charts drawn only."""
    return [f"![{chart.title}]({chart.file})" for chart in CHARTS
            if any(key in figures for key in chart.keys)]


# -- entry point ------------------------------------------------------------------------------


class BadInput(Exception):
    """A bench.json that cannot be read; the message says which and how to fix it."""


def load_figures(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"{path}: no such file (write it with python bench/run.py, or name "
                       f"another with --json)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read it: {exc}") from None
    except json.JSONDecodeError as exc:
        raise BadInput(f"{path}: not valid JSON ({exc}); bench/run.py writes it") from None
    if not isinstance(data, dict) or not isinstance(data.get("figures"), dict):
        raise BadInput(f"{path}: no \"figures\" object at the top level; is it a bench.json "
                       f"written by bench/run.py?")
    figures: dict[str, Any] = data["figures"]
    return figures


def render(json_path: Path, out: Path) -> list[str]:
    """Draw every chart from ``json_path`` into ``out``; one line per chart, what was done."""
    import matplotlib

    matplotlib.use("Agg")
    figures = load_figures(json_path)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for chart in CHARTS:
        shown = ", ".join(f"({k})" for k in chart.keys if k in figures)
        try:
            path = write(chart, figures, out)
        except (KeyError, TypeError, IndexError) as exc:
            lines.append(f"skipped {chart.file}: figure {shown} in {json_path} lacks "
                         f"{exc!r} (written by an older bench/run.py?)")
            continue
        if path is None:
            wanted = ", ".join(f"({k})" for k in chart.keys)
            lines.append(f"skipped {chart.file}: {json_path} has none of figures {wanted}")
        else:
            lines.append(f"wrote {path} from figure {shown}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Draw bench.json's key figures as PNG charts.")
    parser.add_argument("--json", type=Path, default=RESULTS / "bench.json", metavar="PATH",
                        help="the results to draw (default: bench/results/bench.json)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="where the PNG files go (default: the folder of --json)")
    ns = parser.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("plots: matplotlib is not installed (pip install -r bench/requirements.txt)",
              file=sys.stderr)
        return 2
    try:
        lines = render(ns.json, ns.out or ns.json.parent)
    except BadInput as exc:
        print(f"plots: {exc}", file=sys.stderr)
        return 2
    print("\n".join(f"plots: {line}" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
