"""A run told to scripts and shells: its JSON summary and the command that resumes it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sonar_bulk.engine.execute import Report


def resume_command(command_line: str, journal: Path) -> str:
    import shlex

    resume = f"--resume {shlex.quote(str(journal))}"
    return f"{command_line} {resume}" if command_line else resume


def command_line(argv: Sequence[str]) -> str:
    """The command as typed, without any token (``--token X``, ``--token=X``) and without an
    earlier ``--resume``, quoted for a shell."""
    import shlex

    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--token", "--resume", "--publishable-key"):
            skip = True
            continue
        if arg.startswith(("--token=", "--resume=", "--publishable-key=")):
            continue
        out.append(arg)
    return " ".join(shlex.quote(a) for a in ["sonar-bulk", *out])


def json_summary(report: Report) -> str:
    data = report.summary.as_dict()
    data["exit_code"] = report.exit_code
    if report.stopped:
        data["stopped"] = report.stopped
    if report.resume_command:
        data["resume"] = report.resume_command
    return json.dumps(data, ensure_ascii=False)
