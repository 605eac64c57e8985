"""docs/migration.md's flag table is checked against the real ``torchrun --help``: every
flag torchrun has is in the table, and pliant accepts it unless the table says it does not."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from flags_compat import TORCHRUN
from pliant_e2e import run_pliant

MIGRATION = Path(__file__).parents[2] / "docs" / "migration.md"
_OPTION = re.compile(r"(?<![\w-])(--?[a-zA-Z][\w-]*)")


def _options_in_help(text: str) -> set[str]:
    """The option strings an argparse --help lists in its options section."""
    section = text.split("options:", 1)[1]
    found = set()
    for line in section.splitlines():
        # An option line starts with its names ("  -r REDIRECTS, --redirects REDIRECTS");
        # the help text after it is indented further and only mentions flags.
        if re.match(r"^  -", line):
            names = re.split(r"\s{2,}", line.strip())[0]
            found.update(_OPTION.findall(names))
    return found


def _table_rows() -> dict[str, str]:
    """The flag table's rows, by each torchrun flag named in their first column."""
    text = MIGRATION.read_text()
    table = text.split("## Flags", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in table.splitlines():
        if not line.startswith("| ") or line.startswith("| torchrun") or "---" in line[:6]:
            continue
        first, status = (cell.strip() for cell in line.strip("|").split(" | ")[:2])
        for flag in _OPTION.findall(re.sub(r"<[^>]+>", " ", first)):
            rows[flag] = status
    return rows


def _torchrun_help() -> str:
    result = subprocess.run([TORCHRUN, "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_every_torchrun_flag_is_in_the_table_and_accepted_by_pliant() -> None:
    torchrun = _options_in_help(_torchrun_help())
    assert {"--nproc-per-node", "--nproc_per_node", "-r", "--virtual-local-rank"} <= torchrun
    pliant_help = run_pliant("run", "--help")
    assert pliant_help.returncode == 0, pliant_help.stderr
    pliant = _options_in_help(pliant_help.stdout)
    rows = _table_rows()
    missing = sorted(f for f in torchrun if f.replace("_", "-") not in rows)
    assert not missing, f"torchrun flags missing from docs/migration.md's table: {missing}"
    refused = {f for f, status in rows.items() if status == "not accepted"}
    not_accepted = sorted(f for f in torchrun - pliant if f.replace("_", "-") not in refused)
    assert not not_accepted, f"torchrun flags that pliant run does not accept: {not_accepted}"
    # A row that says "not accepted" must be true too, or the table has drifted.
    wrongly_refused = sorted(f for f in refused if f in pliant)
    assert not wrongly_refused, f"accepted by pliant, but 'not accepted' in the table: " \
                                f"{wrongly_refused}"
    stale = sorted(f for f in rows if f not in torchrun)
    assert not stale, f"rows for flags torchrun does not have: {stale}"


def test_the_table_reader_sees_what_is_there() -> None:
    rows = _table_rows()
    assert rows["--nnodes"] == "same"
    assert rows["-m"] == rows["--module"] == "same"
    assert "--standalone" in rows and "--event-log-handler" in rows
