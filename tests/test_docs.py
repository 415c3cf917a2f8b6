"""The README and docs speak to this repository's users, and CI runs what the README says."""

from __future__ import annotations

import re

from sonar_bulk.api.endpoints import inferred_table

from .conftest import ROOT

DOCS = [ROOT / "README.md", ROOT / "samples" / "README.md", ROOT / "sonar_bulk/docs/sonar-api.md"]


def opening_commands() -> list[str]:
    """The ```sh blocks before the README's first paragraph."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
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


def test_docs_point_at_nothing_outside_the_repository() -> None:
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        assert "../shared" not in text and "shared/sonar-api" not in text, path
        assert "the 2-core machine" not in text, path
        assert ".ci/run" not in text, path
        for target in re.findall(r"\]\(([^)#]+)\)", text):
            if target.startswith(("http://", "https://")):
                continue
            resolved = (path.parent / target).resolve()
            assert resolved.exists(), (path, target)
            assert ROOT in resolved.parents, (path, target)


def test_api_page_lists_what_the_endpoint_table_infers() -> None:
    page = (ROOT / "sonar_bulk/docs/sonar-api.md").read_text(encoding="utf-8")
    assert inferred_table() in page
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert inferred_table() in readme
