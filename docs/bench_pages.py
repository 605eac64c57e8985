"""mkdocs hook: bench/results/bench.md and its charts become the site's Benchmarks page.

They are written beside the bench that produces them (``bench/run.py``, ``bench/plots.py``),
where GitHub shows them; mkdocs serves only ``docs/``. Rather than keep a second copy in
``docs/``, this hook adds the committed files to the site under ``benchmarks/``, so the
page's relative image links (``launch.png``) work in both places.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"
SITE_DIR = "benchmarks"


def on_files(files: Files, config: MkDocsConfig) -> Files:
    files.append(File.generated(config, f"{SITE_DIR}/index.md",
                                abs_src_path=str(RESULTS / "bench.md")))
    for chart in sorted(RESULTS.glob("*.png")):
        files.append(File.generated(config, f"{SITE_DIR}/{chart.name}",
                                    abs_src_path=str(chart)))
    return files
