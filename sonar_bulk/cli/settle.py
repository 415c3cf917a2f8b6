"""``settle``: after the fact, a results sheet's unknown sends settled with Sonar's
``outbound_message`` events (see :mod:`sonar_bulk.events.settle`), into a new results file;
the run's journal learns them, so ``--retry-unknown`` never sends them again."""

from __future__ import annotations

import datetime as dt
import re
import sys
import time
from pathlib import Path
from typing import Any

import click

from sonar_bulk.cli.common import (
    EXIT_INVALID,
    EXIT_OK,
    cli,
    guard,
    input_options,
    json_option,
    print_json,
)
from sonar_bulk.errors import UsageError
from sonar_bulk.run_files import events_paths, run_stem
from sonar_bulk.words import plural

#: Sends whose results can be settled, by the kind of sheet they read.
SEND_COMMANDS = {"messages": "messages send", "campaign_recipients": "campaigns send"}
#: Ids Sonar made are written as they are (see results.ID_COLUMNS).
_SONAR_ID = re.compile(r"-[A-Za-z0-9_-]*={0,2}")


def default_output(results: Path) -> Path:
    """``<stem>.<op>.settled.<ext>`` beside the results (``x.send.results.csv`` ->
    ``x.send.settled.csv``)."""
    return results.with_name(f"{run_stem(results)}.settled{results.suffix}")


def _summary(path: Path) -> dict[str, str]:
    """The Summary sheet of an XLSX results file (item -> value); {} for a CSV."""
    if path.suffix.lower() != ".xlsx":
        return {}
    from python_calamine import CalamineWorkbook

    try:
        book = CalamineWorkbook.from_path(str(path))
        if "Summary" not in book.sheet_names:
            return {}
        rows = book.get_sheet_by_name("Summary").to_python()
    except Exception:  # noqa: BLE001 - no readable Summary: as a CSV
        return {}
    return {str(r[0]): str(r[1]) for r in rows[1:] if len(r) >= 2}


def _header_row(path: Path) -> int | None:
    """The row (as Excel numbers it) holding ``sonar__status``, when rows sit above it."""
    from sonar_bulk.outputs import head_rows

    try:
        rows = head_rows(path, 40)
    except Exception:  # noqa: BLE001 - read_sheet says what is wrong
        return None
    for number, row in enumerate(rows, start=1):
        if "sonar__status" in row:
            return number if number > 1 else None
    return None


def _find_journal(given: Path | None, summary: dict[str, str], results: Path) -> Path | None:
    if given is not None:
        if not given.is_file():
            raise UsageError(f"--journal {given}: no such file")
        return given
    named = summary.get("journal")
    candidates = [Path(named), results.with_name(Path(named).name)] if named else []
    candidates.append(results.with_name(f"{run_stem(results)}.journal.sqlite"))
    return next((c for c in candidates if c.is_file()), None)


def _find_store(given: Path | None, results: Path) -> Path:
    from sonar_bulk.cli.webhooks import default_store

    if given is not None:
        if not given.is_file():
            raise UsageError(f"--store {given}: no such file")
        return given
    beside = events_paths(results)[1]
    for candidate in (beside, default_store()):
        if candidate.is_file():
            return candidate
    raise UsageError(
        f"no event store: neither {beside} (events collected with the run) nor "
        f"{default_store()} (sonar-bulk webhooks collect) exists; pass --store PATH"
    )


def _epoch_local(text: str) -> float | None:
    try:
        return dt.datetime.strptime(text, "%Y-%m-%d %H:%M:%S").timestamp()
    except ValueError:
        return None


def _epoch_utc(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@cli.command("settle")
@click.argument("results", type=click.Path(path_type=Path))
@click.option("--text", "text_template", metavar="TEMPLATE", help="The send's --text, if any.")
@click.option("--campaign-id", metavar="ID", help="The send's --campaign-id, if any.")
@click.option(
    "--since",
    metavar="TIME",
    help="When the run started, for results that don't say (a CSV without its journal).",
)
@input_options
@click.option(
    "--store",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The event store (default: the run's <stem>.<op>.events.sqlite beside RESULTS, else "
    "the one sonar-bulk webhooks collect keeps in the user data folder).",
)
@click.option(
    "--journal",
    "journal_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The run's journal (default: the one the Summary sheet names, else "
    "<stem>.<op>.journal.sqlite beside RESULTS).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The settled results (default: <stem>.<op>.settled.<ext> beside RESULTS).",
)
@click.option("--force", is_flag=True, help="Replace -o even when sonar-bulk did not write it.")
@json_option
def settle_cmd(
    results: Path,
    store: Path | None,
    output: Path | None,
    journal_path: Path | None,
    since: str | None,
    text_template: str | None,
    campaign_id: str | None,
    force: bool,
    as_json: bool,
    **kw: Any,
) -> None:
    """Settle a send's unknown rows with Sonar's outbound_message events.

    RESULTS is a results sheet of messages send or campaigns send. A row whose send is
    unknown becomes queued when an outbound_message event proves it went out: the same
    external id, or the same phone and text (the same campaign) received after the run
    started; sonar__settled_by names the event. A row is never settled without one. Writes
    a new results file (RESULTS is never changed) and updates the run's journal, so
    --resume ... --retry-unknown sends only the rows still unknown. Pass the same input
    options (--default-region, --map, --text) as the send.

    Exit code: 0 when no unknown send remains, 1 when some do, 2 for unusable input.

    \b
    Example:
      sonar-bulk settle messages.send.results.csv
      sonar-bulk settle messages.send.results.xlsx --store ~/.local/share/sonar-bulk/events.sqlite
    """

    def run() -> int:
        from sonar_bulk.events import settle as st
        from sonar_bulk.events.store import EventStore
        from sonar_bulk.events.times import parse_time
        from sonar_bulk.schema import KINDS, guess_kind, parse_map_option
        from sonar_bulk.sheets import read_sheet
        from sonar_bulk.validation import ValidateOptions, validate_sheet

        if not results.exists():
            raise UsageError(f"{results}: no such file")
        if not results.is_file():
            raise UsageError(f"{results}: not a file")
        out = output or default_output(results)
        _check_output(out, results, force)
        sheet = read_sheet(
            results,
            sheet=kw["sheet"],
            encoding=kw["encoding"],
            delimiter=kw["delimiter"],
            header_row=kw["header_row"] or _header_row(results),
        )
        headers = list(sheet.header_cells or sheet.headers)
        where = {h.strip().casefold(): i for i, h in enumerate(headers)}
        if "sonar__status" not in where or "sonar__row" not in where:
            raise UsageError(
                f"{results}: not a results sheet (no sonar__status column); pass the "
                "<stem>.<op>.results file a bulk send wrote"
            )
        summary = _summary(results)
        journal = _find_journal(journal_path, summary, results)
        command = summary.get("command", "").removeprefix("sonar-bulk ").strip()
        if not command:
            command = _journal_command(journal) or SEND_COMMANDS.get(guess_kind(sheet.headers), "")
        if command not in SEND_COMMANDS.values():
            raise UsageError(
                f"{results}: results of {command or 'an unknown command'}; only sends "
                "(messages send, campaigns send) have unknown rows to settle"
            )
        from sonar_bulk.plan import OPERATIONS, STATUSES

        op = OPERATIONS[command]
        statuses = [str(v or "") for v in sheet.column(where["sonar__status"]).to_pylist()]
        strange = sorted({s for s in statuses if s not in STATUSES})
        if strange:
            raise UsageError(
                f"{results}: not a results sheet (sonar__status {strange[0]!r} is not one of "
                "the statuses sonar-bulk writes)"
            )
        unknown = [i for i, s in enumerate(statuses) if s == "unknown"]
        store_path = _find_store(store, results)
        try:
            mapping = parse_map_option(kw["mappings"])
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        extra: dict[str, Any] = {"text": text_template} if op.kind == "messages" else {}
        if op.kind == "campaign_recipients":
            extra["campaign_id"] = campaign_id
        validation = validate_sheet(
            sheet,
            KINDS[op.kind],
            ValidateOptions(default_region=kw["default_region"].upper(), mapping=mapping, **extra),
        )
        if op.kind == "messages" and "text" not in validation.normalized:
            raise UsageError(f"{results}: no text column; pass the send's --text TEMPLATE")
        finished = _column(sheet, where, "sonar__finished_at")
        ids_all = _column(sheet, where, "sonar__external_message_id")
        ids = {i: v for i, v in enumerate(ids_all) if v}
        entries = _journal_entries(journal, unknown, finished)
        started = _epoch_local(summary.get("started", ""))
        fallback = parse_time(since, time.time(), "--since") if since else started
        if fallback is None:  # a CSV: the first run in its journal
            fallback = _first_start(journal, command)
        rows = []
        for unk in st.unknown_rows(validation, unknown, ids, 0.0):
            entry = entries.get(unk.index)
            window = entry[1] if entry is not None and not since else fallback
            if window is None:
                raise UsageError(
                    f"{results}: when the run started is not known (a CSV has no Summary "
                    "sheet, and no journal of the run was found): pass --since TIME or "
                    "--journal PATH"
                )
            rows.append(
                st.Unknown(unk.index, unk.phone, unk.text, unk.campaign, unk.external_id, window)
            )
        answered = [v for i, v in ids.items() if statuses[i] != "unknown"]
        events = EventStore(store_path, create=False)
        try:
            since_all = min((r.since for r in rows), default=None)
            found = st.match(rows, list(st.outbound_events(events, since_all)), None, answered)
        finally:
            events.close()
        settled = [found[i] for i in sorted(found)]
        learned = _update_journal(journal, entries, settled) if settled else 0
        _write(sheet, headers, where, statuses, settled, summary, out, store_path)
        left = len(unknown) - len(settled)
        click.echo(
            f"settled {len(settled):,} of {len(unknown):,} unknown sends with "
            f"outbound_message events from {store_path}; {left:,} unknown "
            f"{'send remains' if left == 1 else 'sends remain'}",
            err=True,
        )
        click.echo(f"  results: {out}", err=True)
        if settled and journal is not None:
            click.echo(f"  journal: {journal} ({plural(learned, 'row')} now queued)", err=True)
        elif settled:
            click.echo(
                "sonar-bulk: warning: no journal of the run was found (pass --journal): "
                "--retry-unknown would not know these were sent",
                err=True,
            )
        if left:
            click.echo(
                "  the rest may have gone out too: check them in Sonar, then --resume "
                "JOURNAL --retry-unknown sends them again",
                err=True,
            )
        code = EXIT_INVALID if left else EXIT_OK
        if as_json:
            print_json(
                {
                    "command": "settle",
                    "input": str(results),
                    "output": str(out),
                    "journal": None if journal is None else str(journal),
                    "store": str(store_path),
                    "rows": len(statuses),
                    "settled": len(settled),
                    "unknown": left,
                    "exit_code": code,
                }
            )
        return code

    sys.exit(guard(run, as_json))


def _check_output(out: Path, results: Path, force: bool) -> None:
    from sonar_bulk.results import check_results_paths

    if out.suffix.lower() != results.suffix.lower():
        raise UsageError(f"-o {out}: use the results' own extension ({results.suffix})")
    if out.exists() and out.samefile(results):
        raise UsageError(
            f"{out} would be written over the results being settled ({results}); pass -o "
            "with another name"
        )
    check_results_paths([out], force, [results])


def _column(sheet: Any, where: dict[str, int], name: str) -> list[str]:
    index = where.get(name)
    if index is None:
        return [""] * len(sheet)
    return [str(v or "") for v in sheet.column(index).to_pylist()]


def _journal_command(journal: Path | None) -> str:
    if journal is None:
        return ""
    from sonar_bulk.engine.journal import Journal

    j = Journal(journal)
    try:
        runs = j.runs()
    finally:
        j.close()
    return runs[-1].operation if runs else ""


def _first_start(journal: Path | None, command: str) -> float | None:
    if journal is None:
        return None
    from sonar_bulk.engine.journal import Journal

    j = Journal(journal)
    try:
        starts = [_epoch_utc(r.started_at) for r in j.runs() if r.operation == command]
    finally:
        j.close()
    return min((s for s in starts if s is not None), default=None)


def _journal_entries(
    journal: Path | None, unknown: list[int], finished: list[str]
) -> dict[int, tuple[int, float | None]]:
    """Per unknown row, the run whose journal entry it is (still unknown, finished when the
    results say) and when that run started."""
    if journal is None or not unknown:
        return {}
    from sonar_bulk.engine.journal import Journal

    j = Journal(journal)
    try:
        starts = {r.id: _epoch_utc(r.started_at) for r in j.runs()}
        out: dict[int, tuple[int, float | None]] = {}
        for index in unknown:
            for run, stamp in j.db.execute(
                "SELECT run, finished_at FROM rows WHERE row = ? AND state = 'done' "
                "AND status = 'unknown' ORDER BY run DESC",
                (index,),
            ):
                if not finished[index] or stamp == finished[index]:
                    out[index] = (int(run), starts.get(int(run)))
                    break
    finally:
        j.close()
    return out


def _update_journal(
    journal: Path | None, entries: dict[int, tuple[int, float | None]], settled: list[Any]
) -> int:
    if journal is None:
        return 0
    from sonar_bulk.engine.journal import Journal
    from sonar_bulk.events.settle import PROOF_PREFIX, SETTLED_STATUS

    by_run: dict[int, dict[int, tuple[str, str]]] = {}
    for item in settled:
        entry = entries.get(item.index)
        if entry is not None:
            by_run.setdefault(entry[0], {})[item.index] = (
                SETTLED_STATUS,
                PROOF_PREFIX + item.proof,
            )
    j = Journal(journal)
    try:
        j.lock()
        return sum(j.settle(run, rows) for run, rows in by_run.items())
    finally:
        j.close()


def _write(
    sheet: Any,
    headers: list[str],
    where: dict[str, int],
    statuses: list[str],
    settled: list[Any],
    summary: dict[str, str],
    out: Path,
    store: Path,
) -> None:
    """The results again, every cell as read, settled rows ``queued`` with their proof in
    ``sonar__settled_by`` (added at the end when new); an XLSX keeps its Summary, with the
    counts brought up to date."""
    import dataclasses
    from collections import Counter

    from sonar_bulk.events.settle import SETTLED_STATUS
    from sonar_bulk.outputs import CsvFormat, neutralize, write_table
    from sonar_bulk.plan import STATUSES
    from sonar_bulk.results import NUMBER_COLUMNS
    from sonar_bulk.workbook import typed_for

    proofs = {s.index: s.proof for s in settled}
    names = list(headers)
    by = where.get("sonar__settled_by")
    if by is None:
        names.append("sonar__settled_by")
    status_at = where["sonar__status"]
    id_at = where.get("sonar__external_message_id")
    as_csv = out.suffix.lower() != ".xlsx"

    def safe(row: list[str]) -> list[str]:
        return [
            v if n == id_at and _SONAR_ID.fullmatch(v) else neutralize(v) for n, v in enumerate(row)
        ]

    def rows() -> Any:
        for index, cells in enumerate(sheet.iter_rows()):
            row = [str(c or "") for c in cells]
            row += [""] * (len(headers) - len(row))
            if by is None:
                row.append("")
            if index in proofs:
                row[status_at] = SETTLED_STATUS
                row[by if by is not None else len(headers)] = proofs[index]
            yield safe(row) if as_csv else row

    new = Counter(SETTLED_STATUS if i in proofs else s for i, s in enumerate(statuses))
    items: list[list[str]] = [
        [k, v] for k, v in summary.items() if not k.startswith("rows ") and k != "settled"
    ]
    items += [[f"rows {s}", str(new[s])] for s in STATUSES if new.get(s)]
    before = int(summary.get("settled", "0") or 0) if summary.get("settled", "").isdigit() else 0
    items += [["settled", str(before + len(settled))], ["events", str(store)]]
    fmt = None
    if as_csv and sheet.format == "csv":
        fmt = CsvFormat(sheet.delimiter or ",", sheet.encoding or "utf-8", sheet.bom, sheet.newline)
    typed = None
    if not as_csv and sheet.workbook is not None:  # the workbook's cells, the settled rows' own
        edited = {(i, status_at) for i in proofs}
        if by is not None:
            edited |= {(i, by) for i in proofs}
        source = dataclasses.replace(sheet.workbook, edited=frozenset(edited))
        typed = typed_for(
            dataclasses.replace(sheet, workbook=source), None, range(len(headers)), NUMBER_COLUMNS
        )
    write_table(
        out,
        safe(names) if as_csv else names,
        rows(),
        "Results",
        csv_format=fmt,
        as_typed=as_csv,
        preamble=[[neutralize(v) for v in line] for line in sheet.preamble]
        if as_csv
        else sheet.preamble,
        more_sheets=(("Summary", ["item", "value"], items),) if summary else (),
        typed=typed,
    )
    from sonar_bulk.owned import Written

    Written().note(out)
