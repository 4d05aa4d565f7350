"""The docs claim only what a test shows: the README's catalog agrees with the proven verdicts,
and every performance figure names the committed raw bench output that contains it.

tests/e2e/test_postfix.py (tests/test_dns_postfix.py, test_dane_postfix.py and
test_mtasts_postfix.py for the DNS, DANE and MTA-STS profiles)
hold each profile to its ``[about.postfix]`` verdict through a real Postfix;
here the README's "what the relay sees" column is held to the same verdict, so
the two cannot drift apart again.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fakemx.model import Profile
from fakemx.profiles import catalog

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULTS = ROOT / "bench" / "results"
# The relay's name for fakemx in Postfix's log ({host}: 127.0.0.1[127.0.0.1]) and
# the client address in replies are written "fakemx" and "IP" in the docs.
HOST_WORD, IP_WORD = "fakemx", "IP"
# A performance figure: a number with a unit of time, size or rate.
FIGURE = re.compile(r"(?<![\w.])(\d[\d,]*(?:\.\d+)?) ?(ms|µs|kB|MB|msg/s)\b")
RAW_LINK = re.compile(r"bench/results/([\w.-]+)")


def readme_rows() -> dict[str, str]:
    """profile name -> its cell in the README catalog's "what the relay sees" column."""
    text = README.read_text()
    table = text.split("<!-- catalog:start -->", 1)[1].split("<!-- catalog:end -->", 1)[0]
    lines = [line for line in table.strip().splitlines() if line.startswith("|")]
    header = [cell.strip().lower() for cell in lines[0].strip("|").split(" | ")]
    column = next((i for i, name in enumerate(header) if "relay sees" in name or
                   name == "postfix"), None)
    assert column is not None, f"no 'what the relay sees' column in {header}"
    rows = {}
    for line in lines[2:]:
        cells = [cell.strip() for cell in re.split(r"(?<!\\) \| ", line.strip("| "))]
        rows[cells[1].strip("`")] = cells[column].replace("\\|", "|")
    return rows


def postfix_says(profile: Profile) -> tuple[str, str]:
    """What Postfix logs for ``profile``, as the docs write it: ("status dsn", reason)."""
    assert profile.about is not None
    verdict = profile.about.postfix
    assert verdict is not None
    reason = verdict.reason.replace("{host}", HOST_WORD).replace("127.0.0.1", IP_WORD)
    return f"{verdict.status} {verdict.dsn}", reason


def proven() -> list[Profile]:
    return [p for p in catalog() if p.about is not None and p.about.postfix is not None]


@pytest.mark.parametrize("profile", proven(), ids=lambda p: p.name)
def test_readme_says_what_postfix_logs(profile: Profile) -> None:
    cell = readme_rows()[profile.name]
    status, reason = postfix_says(profile)
    assert cell.startswith(f"{status}: "), (
        f"{profile.name}: the README says {cell!r}, but Postfix logs {status} (the verdict"
        " tests/e2e asserts): start relay_sees with it")
    assert reason in cell, (
        f"{profile.name}: the README says {cell!r}, but Postfix logs {reason!r}: quote it in"
        " relay_sees")


def test_every_catalog_profile_is_in_the_readme() -> None:
    assert set(readme_rows()) == {p.name for p in catalog()}


def test_only_the_stale_cache_profile_has_no_postfix_verdict() -> None:
    # A profile without a verdict has a README cell no relay proves; there is one,
    # and its cell says what fakemx's DNS journal shows instead of an error. The
    # MTA-STS profiles' verdicts are Postfix's with postfix-mta-sts-resolver as its
    # policy map (tests/test_mtasts_postfix.py).
    unproven = [p.name for p in catalog() if p not in proven()]
    assert unproven == ["4.4.312-mx-changed-stale-cache"]


def figures(line: str) -> list[str]:
    return [f"{number} {unit}" for number, unit in FIGURE.findall(line)]


def raw_quotes(paths: list[Path], raw_name: str = "") -> list[tuple[str, int, str]]:
    """(file, line number, line) for every line of ``paths`` that links a raw bench file
    (whose name contains ``raw_name``)."""
    return [(path.name, number, line) for path in paths
            for number, line in enumerate(path.read_text().splitlines(), 1)
            if any(raw_name in name for name in RAW_LINK.findall(line))]


DOCS = sorted((ROOT / "docs").glob("*.md"))
# Held to the letter: the README's figures, and the TLS start figure wherever it is
# quoted (it was 5.8 ms in one place and 8.4 ms in another, from the same bench: #16).
# Other docs quote raw files in ranges and rounded figures (docs/reliability.md).
EXACT = raw_quotes([README]) + raw_quotes(DOCS, "tls-start-")


def test_readme_figures_name_their_raw_bench_file() -> None:
    unsourced = [line for line in README.read_text().splitlines()
                 if figures(line) and not RAW_LINK.search(line)]
    assert not unsourced, f"README figures without a bench/results/ file: {unsourced}"


@pytest.mark.parametrize(("doc", "number", "line"), EXACT,
                         ids=[f"{doc}:{number}" for doc, number, _ in EXACT])
def test_quoted_figures_are_in_the_raw_file(doc: str, number: int, line: str) -> None:
    raw = "\n".join((RESULTS / name).read_text() for name in RAW_LINK.findall(line))
    quoted = figures(line)
    assert quoted, f"{doc}:{number} links a raw file but quotes no figure"
    missing = [figure for figure in quoted if figure.replace(" ", "") not in raw.replace(" ", "")]
    assert not missing, f"{doc}:{number} quotes {missing}, not in its raw file"


def test_the_tls_start_figure_is_quoted_from_its_raw_file() -> None:
    assert "tls.md" in {doc for doc, _, _ in raw_quotes(DOCS, "tls-start-")}
    # performance.md quotes it from the whole bench's run (bench/tls_start.py is a section)
    assert any("STARTTLS greeting" in line for doc, _, line in raw_quotes(DOCS, "run-")
               if doc == "performance.md")
