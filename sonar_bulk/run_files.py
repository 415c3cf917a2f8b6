"""The names of the files a bulk run writes, in one place (the command line, the web page, the
demo and the Python API all run through :func:`sonar_bulk.engine.run.run_sheet`).

Every file of a run is named by the sheet and the operation, so a later command never
replaces an earlier command's files, and a rerun of the same one finds its journal::

    <stem>.<op>.results.<ext>      every row, with what happened to it
    <stem>.<op>.failed.<ext>       the failed and invalid rows, to fix and run again
    <stem>.<op>.plan.<ext>         a dry run's plan
    <stem>.<op>.journal.sqlite     the run's journal (resume, the send guard)
    <stem>.<op>.events.<ext>       webhook events collected with the run (and .sqlite)

``<op>`` is the operation's short name (:data:`sonar_bulk.plan.OPERATIONS`, ``short``):
``upsert``, ``get``, ``close``, ``unassign``, ``properties-set``, ``properties-delete``,
``send``, ``tag``, ``campaign``. They go beside the input, or into ``--out-dir``. A workbook
gives ``.xlsx`` files; a delimited file keeps its extension.

A file sonar-bulk wrote there and the user edited since is theirs: the next run writes
``<stem>.<op>.failed-2.<ext>`` (``-3``... the first that is free or sonar-bulk's own) and
says so (:func:`free_name`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

_NUMBERED = re.compile(r"^(?P<base>.+?)-(?P<n>[2-9]|[1-9]\d+)$")


def output_ext(source: Path) -> str:
    """The extension of a run's sheets: ``.xlsx`` for a workbook, else the input's own."""
    from sonar_bulk.sheets import WORKBOOK_SUFFIXES

    return ".xlsx" if source.suffix.lower() in WORKBOOK_SUFFIXES else source.suffix


def folder_of(source: Path, out_dir: Path | None) -> Path:
    return out_dir if out_dir is not None else source.parent


def run_file(source: Path, short: str, role: str, out_dir: Path | None = None) -> Path:
    """``<stem>.<short>.<role><ext>`` beside ``source`` (or in ``out_dir``)."""
    return folder_of(source, out_dir) / f"{source.stem}.{short}.{role}{output_ext(source)}"


def journal_path_for(source: Path, command: str, out_dir: Path | None = None) -> Path:
    """The journal of ``command`` (``customers upsert``) on ``source``:
    ``<stem>.<op>.journal.sqlite`` in ``out_dir`` (or beside the input).

    An earlier run's journal is found where it was left: this operation's beside the input
    when ``out_dir`` has none, else ``<stem>.journal.sqlite`` (the one name sonar-bulk 0.x
    gave every operation's journal) when it holds runs of ``command``. So a resume, and the
    guard's rows in flight or of unknown outcome, are never lost to a new name."""
    from sonar_bulk.plan import OPERATIONS

    short = OPERATIONS[command].short
    name = f"{source.stem}.{short}.journal.sqlite"
    wanted = folder_of(source, out_dir) / name
    beside = source.with_name(name)
    legacy = source.with_name(f"{source.stem}.journal.sqlite")
    for candidate in (wanted, beside):
        if candidate.exists():
            return candidate
    if legacy.is_file():
        from sonar_bulk.engine.journal import has_runs_of

        if has_runs_of(legacy, command):
            return legacy
    return wanted


def run_stem(path: Path) -> str:
    """The sheet-and-operation part of a run's file name: ``x.upsert`` for
    ``x.upsert.results.csv``, ``x.upsert.results-2.csv`` or ``x.upsert.settled.csv`` (and
    ``x`` for an older ``x.results.csv``); the files of that run are named from it."""
    name = path.name[: -len(path.suffix)] if path.suffix else path.name
    stem, dot, last = name.rpartition(".")
    numbered = _NUMBERED.match(last)
    if numbered:
        last = numbered["base"]
    if dot and last in ("results", "settled", "plan", "failed"):
        return stem
    return name or path.stem


def events_paths(results: Path) -> tuple[Path, Path]:
    """The events sheet and store of the run whose results are ``results``:
    ``<stem>.<op>.events.<ext>`` and ``<stem>.<op>.events.sqlite`` beside them."""
    stem = run_stem(results)
    return (
        results.with_name(f"{stem}.events{results.suffix}"),
        results.with_name(f"{stem}.events.sqlite"),
    )


def numbered(path: Path, n: int) -> Path:
    """``x.upsert.failed.csv`` as its ``n``-th copy: ``x.upsert.failed-n.csv``."""
    if n <= 1:
        return path
    name = path.name[: -len(path.suffix)] if path.suffix else path.name
    return path.with_name(f"{name}-{n}{path.suffix}")


def free_name(path: Path, ours: Callable[[Path], bool], taken: set[Path] | None = None) -> Path:
    """``path``, or its first numbered copy (:func:`numbered`), that is absent or sonar-bulk's
    own (``ours``: written by it and unchanged since) and not in ``taken``: never a file the
    user made or edited."""
    n = 1
    while True:
        candidate = numbered(path, n)
        if (taken is None or candidate not in taken) and (
            not candidate.exists() or ours(candidate)
        ):
            return candidate
        n += 1
