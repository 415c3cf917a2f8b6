"""The README and docs speak to this repository's users, CI runs what the README says, and
every session they show is what the commands print."""

from __future__ import annotations

import glob
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from sonar_bulk.api.endpoints import inferred_table
from sonar_bulk.cli import cli

from .conftest import ROOT, SAMPLES

README = ROOT / "README.md"
MANUAL = sorted((ROOT / "sonar_bulk" / "docs").glob("*.md"))
DOCS = [README, ROOT / "samples" / "README.md", *MANUAL]


def opening_commands() -> list[str]:
    """The ```sh blocks before the README's first paragraph."""
    text = README.read_text(encoding="utf-8")
    head = text.split("\n\n", 3)
    blocks = re.findall(r"```sh\n(.*?)\n```", "\n\n".join(head[:3]), re.S)
    return [b.strip() for b in blocks]


def test_readme_opens_with_two_self_contained_commands() -> None:
    install_and_run, tests = opening_commands()
    for command in (install_and_run, tests):
        assert "\n" not in command
        # a venv inside the command: stock Debian/Ubuntu Python refuses system-wide installs
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install ")
    assert install_and_run.endswith(".venv/bin/sonar-bulk demo")
    assert tests.endswith(".venv/bin/python -m pytest")


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    _, tests = opening_commands()
    (line,) = [ln for ln in ci.splitlines() if ln.startswith(tests)]
    assert line in (tests, tests + " || exit $?")


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_point_at_nothing_outside_the_repository(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "../shared" not in text and "shared/sonar-api" not in text, path
    assert "the 2-core machine" not in text, path
    assert ".ci/run" not in text, path
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if target.startswith(("http://", "https://")):
            continue
        resolved = (path.parent / target).resolve()
        assert resolved.exists(), (path, target)
        assert ROOT in resolved.parents, (path, target)


def slug(heading: str) -> str:
    """The anchor GitHub makes of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_links_to_a_section_find_it() -> None:
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for target, anchor in re.findall(r"\]\(([^)#]*)#([^)]+)\)", text):
            if target.startswith(("http://", "https://")):
                continue
            page = (path.parent / target).resolve() if target else path
            headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), re.M)
            assert anchor in {slug(h) for h in headings}, (path, target, anchor)


def test_the_readme_is_a_readme() -> None:
    """About 200 lines: the commands, the tool, one session, the tables, the guarantees,
    configuration, exit codes and development; the manual is in sonar_bulk/docs/, every page
    of it linked from the README."""
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    assert "comes next" not in text  # no status line that goes stale
    for heading in (
        "A session",
        "Commands",
        "Safety guarantees",
        "Configuration",
        "Exit codes",
        "Python",
        "Development",
    ):
        assert f"\n## {heading}\n" in text, heading
    assert text.count("```console") == 1
    for page in MANUAL:
        assert f"](sonar_bulk/docs/{page.name})" in text, page.name


def test_the_manual_keeps_the_dependency_choices() -> None:
    page = (ROOT / "sonar_bulk" / "docs" / "dependencies.md").read_text(encoding="utf-8")
    packages = ("pyarrow", "phonenumbers", "pycountry", "httpx", "uvicorn", "sniffio", "xlsxwriter")
    for package in packages:
        assert f"| {package}" in page or f", {package}" in page, package
    assert "pandas is not a dependency" in page and "aiolimiter was dropped" in page
    assert "sniffio was dropped" in page


def test_api_page_lists_what_the_endpoint_table_infers() -> None:
    for name in ("sonar-api.md", "emulator.md"):
        page = (ROOT / "sonar_bulk" / "docs" / name).read_text(encoding="utf-8")
        assert inferred_table() in page, name


# -- every session shown is real ------------------------------------------------------------------


@dataclass
class Step:
    command: str
    shown: list[str]


@dataclass
class Session:
    where: str
    steps: list[Step]


def sessions() -> list[Session]:
    """Each ```console block of the README and the manual, as commands and what they show."""
    found = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for n, block in enumerate(re.findall(r"```console\n(.*?)```", text, re.S), start=1):
            steps: list[Step] = []
            for line in block.splitlines():
                if line.startswith("$ "):
                    steps.append(Step(line[2:], []))
                else:
                    assert steps, (path, block)
                    steps[-1].shown.append(line)
            found.append(Session(f"{path.relative_to(ROOT)} #{n}", steps))
    return found


def replayed(session: Session) -> bool:
    """A session with a Ctrl-C in it is shown as it was printed once, and the foreground
    emulator's banner is checked by tests/test_emulator_hardening.py; every other one runs."""
    shown = [line for step in session.steps for line in step.shown]
    commands = [step.command for step in session.steps]
    return "^C" not in shown and not any(c.startswith("sonar-bulk emulator ") for c in commands)


#: What changes from one run to the next: ports, timings, webhook ids, the user data folder.
VARYING = [
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:PORT"),
    (re.compile(r"in \d+(\.\d+)? s \(\d+(\.\d+)? rows/s"), "in T s (R rows/s"),
    (re.compile(r"\(webhook \d+\)"), "(webhook N)"),
    (re.compile(r"\(its state: [^;]+;"), "(its state: DATA;"),
]


def steady(line: str) -> str:
    for pattern, fixed in VARYING:
        line = pattern.sub(fixed, line)
    return line


def expected(shown: list[str]) -> tuple[list[str], bool]:
    """The lines a step shows, and whether they are only the first ones (a ``...`` line)."""
    for i, line in enumerate(shown):
        if line.strip() == "...":
            return shown[:i], True
    return shown, False


def run_session(session: Session, folder: Path) -> None:
    runner = CliRunner()
    code = 0
    for step in session.steps:
        want, partial = expected(step.shown)
        if step.command == "echo $?":
            assert [str(code)] == want, (session.where, step.command)
            continue
        words = shlex.split(step.command)
        if words[0] == "ls":
            listed = [p for w in words[1:] for p in sorted(glob.glob(w, root_dir=folder))]
            names = [n for line in want for n in line.split() if n != "..."]
            assert set(names) <= set(listed), (session.where, names, listed)
            continue
        assert words[0] == "sonar-bulk", (session.where, step.command)
        result = runner.invoke(cli, words[1:])
        code = result.exit_code
        got = [steady(line) for line in result.output.splitlines()]
        want = [steady(line) for line in want]
        if partial:
            got = got[: len(want)]
        assert got == want, (session.where, step.command, result.output)


SESSIONS = sessions()


@pytest.mark.parametrize("session", [s for s in SESSIONS if replayed(s)], ids=lambda s: s.where)
def test_every_session_shown_is_what_the_commands_print(
    session: Session, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each session runs in a fresh copy of samples/, with fresh user folders (and so a fresh
    emulated world), its commands in order; each prints what it shows, up to a ``...`` line."""
    shutil.copytree(SAMPLES, tmp_path / "samples")
    monkeypatch.chdir(tmp_path)
    run_session(session, tmp_path)


def test_the_sessions_cover_the_readme_and_the_manual() -> None:
    where = {s.where.split(" #")[0] for s in SESSIONS if replayed(s)}
    assert {"README.md", "sonar_bulk/docs/sheets.md", "sonar_bulk/docs/bulk-runs.md"} <= where
    skipped = [s.where for s in SESSIONS if not replayed(s)]
    assert skipped == ["sonar_bulk/docs/bulk-runs.md #1", "sonar_bulk/docs/emulator.md #1"]


def test_every_picture_shown_exists_and_the_page_s_come_from_the_browser_tests() -> None:
    """The README's and the manual's pictures of the page are taken by the browser tests
    (``picture(tab, request, NAME)`` writes ``sonar_bulk/docs/web-NAME.png`` under
    ``--update-golden``), so they show the page as it is."""
    taken = set(
        re.findall(
            r'picture\(tab, request, "([\w-]+)"\)',
            (ROOT / "tests" / "test_web_browser.py").read_text(encoding="utf-8"),
        )
    )
    shown = set()
    for path in DOCS:
        for target in re.findall(r"!\[[^\]]+\]\(([^)]+)\)", path.read_text(encoding="utf-8")):
            picture = (path.parent / target).resolve()
            assert picture.is_file(), (path.name, target)
            shown.add(picture.name)
    page = {name for name in shown if name.startswith("web-")}
    assert "web-review.png" in page and "web-results.png" in page
    assert page == {f"web-{name}.png" for name in taken}
    on_disk = {p.name for p in (ROOT / "sonar_bulk" / "docs").glob("web-*.png")}
    assert on_disk == page  # no stale picture left behind
