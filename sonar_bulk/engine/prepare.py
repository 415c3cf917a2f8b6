"""Decide every row's fate before anything is sent (:func:`prepare`): the call it makes, or
why not (invalid, done before, sent before, hidden, over the limit, quiet hours...)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sonar_bulk import normalize as nz
from sonar_bulk.connection import Connection
from sonar_bulk.engine import talk
from sonar_bulk.engine.guard import (
    RESYNC,
    leave_out_applied,
    look_up_journal,
    look_up_ledger,
    look_up_results_file,
    look_up_unsubscribed,
    thing_of,
)
from sonar_bulk.engine.hidden import hidden_mask
from sonar_bulk.engine.journal import (
    Journal,
    row_key,
)
from sonar_bulk.engine.ledger import (
    Identity,
    applied_key,
    digest,
    identity_of,
    ledger_key,
)
from sonar_bulk.engine.options import (
    BulkOptions,
)
from sonar_bulk.engine.prepared import (
    ABSENT,
    DUPLICATE,
    GUARDED,
    HIDDEN,
    INVALID,
    KEPT_CALLS,
    LIMITED,
    NO_CONSENT,
    PAST,
    RUN,
    SENT_BEFORE,
    Prepared,
)
from sonar_bulk.engine.quiet import (
    apply_quiet_hours,
)
from sonar_bulk.engine.talk import Ui
from sonar_bulk.errors import InvalidRows, UnsendableRows, UsageError
from sonar_bulk.plan import Call, Operation, row_values
from sonar_bulk.results import (
    check_results_paths,
    results_paths,
)
from sonar_bulk.run_files import journal_path_for, run_file
from sonar_bulk.validation import Validation


def prepare(
    operation: Operation,
    validation: Validation,
    connection: Connection,
    options: BulkOptions,
    ui: Ui,
) -> Prepared:
    """Decide each row's fate (see the module docstring). UsageError when the run can't
    start: invalid rows without --skip-invalid, a journal of another operation."""
    source = validation.sheet.path
    out_dir = _out_dir(options)
    journal_path: Path | None = options.journal
    if journal_path is None:
        found = journal_path_for(source, operation.command, out_dir)
        if not options.dry_run or found.exists():
            journal_path = found
    if options.resume and (journal_path is None or not journal_path.exists()):
        raise UsageError(f"--resume {journal_path}: no such journal")
    if options.existing_only and operation.command != "properties set":
        raise UsageError(f"--existing-only applies to properties set, not {operation.command}")
    if options.retry_unknown and not options.resume:
        raise UsageError("--retry-unknown goes with --resume JOURNAL (the run it continues)")
    results_at, failed = results_paths(source, operation.short, options.results, out_dir)
    failed_at: Path | None = failed
    if options.dry_run and options.results is None:
        results_at, failed_at = run_file(source, operation.short, "plan", out_dir), None
    kept: list[tuple[str, Path, Path]] = []
    if options.results is None:
        what = "plan" if options.dry_run else "results"
        results_at = _not_over_theirs(what, results_at, source, kept)
    if failed_at is not None:
        failed_at = _not_over_theirs("failed rows", failed_at, source, kept)
    # before any file is made: a run that can't write its results does not start
    check_output_paths(results_at, failed_at, validation, options)
    # The journal is held from here to the run's end: two runs of one sheet never both check
    # who was sent to, and a second one waiting at a prompt can't start sending.
    journal: Journal | None = None
    if journal_path is not None and (journal_path.exists() or not options.dry_run):
        journal = Journal(journal_path)
        try:
            if not options.dry_run:
                journal.lock()
            if out_dir is not None and options.journal is None:
                _not_another_sheets(journal, source)
            if journal.legacy and operation.sends:
                raise UsageError(
                    f"journal {journal_path}: written by an older sonar-bulk, which knew a "
                    "send by its exact request; to be sure nobody is texted twice, check Sonar "
                    "and start a new journal (--journal NEW.sqlite)"
                )
        except BaseException:
            journal.close()
            raise
    try:
        prepared = _prepare(operation, validation, connection, options, ui, journal)
        prepared.results_path, prepared.failed_path = results_at, failed_at
        prepared.kept = kept
    except BaseException:
        if journal is not None:
            journal.close()
        raise
    prepared.journal_path = journal_path
    return prepared


def _not_over_theirs(
    what: str, path: Path, source: Path, kept: list[tuple[str, Path, Path]]
) -> Path:
    """``path``, or the next free name (``x.upsert.failed-2.csv``...) when a file there is
    not sonar-bulk's own as it wrote it (a failed rows file the user fixed in place, an
    edited results file, a file of theirs): that one is never written over nor removed."""
    from sonar_bulk.owned import Written
    from sonar_bulk.run_files import free_name

    written = Written()

    def ours(candidate: Path) -> bool:
        if source.exists() and candidate.samefile(source):
            return False  # the sheet being read, whatever wrote it
        return written.ours(candidate)

    chosen = free_name(path, ours)
    if chosen != path:
        kept.append((what, path, chosen))
    return chosen


def _out_dir(options: BulkOptions) -> Path | None:
    """``--out-dir``, made when missing; UsageError when it can't be a folder."""
    folder = options.out_dir
    if folder is None:
        return None
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out-dir {folder}: is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out-dir {folder}: {exc.strerror or exc}") from None
    return folder


def _not_another_sheets(journal: Journal, source: Path) -> None:
    """UsageError when a journal in --out-dir is another sheet's of the same name (``a/x.csv``
    and ``b/x.csv`` into one folder): the two would share a journal and write over each
    other's results. A sheet moved since (its old path gone) is taken as this one, and so is
    one an older sonar-bulk named relatively (its folder is not known)."""
    inputs = {r.input for r in journal.runs()}
    if not inputs:
        return
    others = []
    for name in sorted(inputs):
        earlier = Path(name)
        if not earlier.is_absolute():
            return
        try:
            if earlier.exists() and earlier.samefile(source):
                return
        except OSError:
            continue
        if earlier.exists():
            others.append(name)
    if others and len(others) == len(inputs):
        raise UsageError(
            f"{journal.path} is the journal of another sheet of the same name ({others[0]}); "
            "give this one another --out-dir (or --journal and --results)"
        )


def _past_only(operation: Operation, validation: Validation) -> np.ndarray:
    """Rows whose only errors say their send_at has passed (a campaign resumed late)."""
    mask = np.zeros(validation.rows, dtype=bool)
    if not operation.sends or "send_at" not in validation.normalized or not validation.errors:
        return mask
    cols = validation.issues.columns
    rows = np.asarray(cols["row"])
    errors = np.asarray(cols["severity"].to_numpy(zero_copy_only=False) == "error")
    past = np.asarray(cols["code"].to_numpy(zero_copy_only=False) == "datetime.past")
    only_past = np.setdiff1d(rows[errors & past], rows[errors & ~past])
    mask[np.isin(validation.sheet.row_numbers, only_past)] = True
    return mask


def _keep_stops(
    validation: Validation, connection: Connection, disposition: np.ndarray, ui: Ui
) -> None:
    """A customers upsert's subscribed=yes for people who replied STOP (the send ledger knows
    it): left out of their rows (the rest is sent), so an export older than the STOP does not
    subscribe them again; --resubscribe sends it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from sonar_bulk.engine.ledger import Ledger

    consent = validation.normalized.get("subscribed")
    phones = validation.normalized.get("phone_number")
    if consent is None or phones is None:
        return
    yes = np.asarray(pc.fill_null(pc.equal(consent, "true"), False), dtype=bool)
    rows = np.flatnonzero(yes & (disposition == RUN))
    if not rows.size:
        return
    wanted = pc.take(phones, pa.array(rows)).to_pylist()
    ledger = Ledger()
    try:
        stopped = ledger.unsubscribed(connection.target, sorted(set(wanted)))
    finally:
        ledger.close()
    if not stopped:
        return
    kept = np.array([i for i, phone in zip(rows.tolist(), wanted, strict=True) if phone in stopped])
    mask = np.zeros(validation.rows, dtype=bool)
    mask[kept] = True
    validation.normalized["subscribed"] = pc.if_else(
        pa.array(mask), pa.scalar("", consent.type), consent
    )
    shown = sorted({p for p in wanted if p in stopped})
    ui.tell(talk.StopsKept(int(mask.sum()), tuple(shown[:3])))


def _unsent(validation: Validation, disposition: np.ndarray, reasons: dict[int, str]) -> None:
    """A messages send results file read as tags: the rows the send did not send have no
    message to tag; skipped, with the send's status."""
    if validation.unsent is None:
        return
    for i, status in enumerate(validation.unsent):
        if status and disposition[i] == RUN:
            disposition[i] = ABSENT
            reasons[i] = f"no message to tag: the messages send did not send this row ({status})"


def _no_consent(
    validation: Validation, disposition: np.ndarray, reasons: dict[int, str], phone: str
) -> None:
    """A send sheet's SMS-consent column (an export's "Accepts SMS Marketing", "SMS Marketing
    Consent"...) saying no: never texted, whatever else the run is told; nor by another row
    of the sheet to the same number (a recipient listed twice who said no once)."""
    consent = validation.normalized.get("subscribed")
    if consent is None:
        return
    import pyarrow.compute as pc

    said_no = np.asarray(pc.fill_null(pc.equal(consent, "false"), False), dtype=bool)
    to = validation.normalized.get(phone)
    also = np.zeros(len(said_no), dtype=bool)
    first_no: dict[str, int] = {}  # a number -> the first row that says no for it
    if to is not None and said_no.any():
        numbers = np.asarray(to.to_pylist(), dtype=object)
        for i in np.flatnonzero(said_no).tolist():
            if numbers[i]:
                first_no.setdefault(str(numbers[i]), i)
        also = np.isin(numbers, list(first_no)) & ~said_no
    rows = np.flatnonzero((said_no | also) & np.isin(disposition, (RUN, PAST)))
    if not rows.size:
        return
    from sonar_bulk.validation import consent_header

    disposition[rows] = NO_CONSENT
    row_numbers = validation.sheet.row_numbers
    for i in rows.tolist():
        header = consent_header(validation, i)
        if also[i]:
            j = first_no[str(numbers[i])]
            reasons[i] = (
                f"not sent: no consent to SMS ({header!r} of row {int(row_numbers[j])} says no "
                f"for {numbers[i]})"
            )
        else:
            reasons[i] = f"not sent: no consent to SMS ({header!r} says no)"


def _prepare(
    operation: Operation,
    validation: Validation,
    connection: Connection,
    options: BulkOptions,
    ui: Ui,
    journal: Journal | None,
) -> Prepared:
    n = validation.rows
    disposition = np.full(n, RUN, dtype=np.int8)
    invalid = np.asarray(validation.invalid, dtype=bool)
    past = np.zeros(n, dtype=bool)
    if journal is not None and any(r.operation == operation.command for r in journal.runs()):
        past = _past_only(operation, validation)  # a campaign resumed after its send_at
    disposition[invalid & ~past] = INVALID
    disposition[invalid & past] = PAST
    hidden = hidden_mask(validation, options.include_hidden)
    if hidden is not None:
        disposition[hidden] = HIDDEN
    if _blocking(validation, options, past):
        raise InvalidRows(validation)
    reasons: dict[int, str] = {}
    if operation.command == "customers upsert" and options.ledger and not options.resubscribe:
        _keep_stops(validation, connection, disposition, ui)
    if operation.sends:
        _no_consent(validation, disposition, reasons, operation.phone_column)
    _unsent(validation, disposition, reasons)
    keys: list[str] = [""] * n
    sends = operation.sends
    resync = operation.command in RESYNC and options.ledger
    applied: list[str] = [""] * n if resync else []
    requests: list[str] = [""] * n if resync else []
    who: list[Identity | None] = [None] * n if sends else []
    ledger_keys: list[str] = [""] * n if sends else []
    target = connection.target
    seen: dict[str, int] = {}
    numbers = validation.sheet.row_numbers
    calls: list[Call | None] = [None] * n if n <= KEPT_CALLS else []
    for index, row, props in row_values(validation):
        if disposition[index] in (INVALID, NO_CONSENT):
            continue
        hidden_row = disposition[index] == HIDDEN
        built = operation.call(row, props)
        if isinstance(built, str):
            if not hidden_row:
                disposition[index] = INVALID
                reasons[index] = built
            continue
        if calls:
            calls[index] = built
        ident = identity_of(built.endpoint, built.params) if sends else None
        fp = digest(ident.recipient, ident.content) if ident else built.fingerprint()
        occurrence = 0
        if ident is not None:
            # one message to one person once: a second row of the same send is not sent
            if not hidden_row:
                first = seen.get(fp)
                if first is not None:
                    disposition[index] = DUPLICATE
                    reasons[index] = (
                        f"not sent: row {int(numbers[first])} sends the same {ident.kind} "
                        f"to {ident.recipient}"
                    )
                    continue
                seen[fp] = index
        else:
            occurrence = seen.get(fp, 0)
            seen[fp] = occurrence + 1
        keys[index] = row_key(operation.command, target, fp, occurrence)
        if resync:
            applied[index] = applied_key(target, thing_of(operation.command, built))
            requests[index] = fp
        if ident is not None:
            who[index] = ident
            ledger_keys[index] = ledger_key(target, operation.command, ident, occurrence)
    del seen
    unsendable = [i for i in reasons if disposition[i] == INVALID]
    if unsendable and not options.skip_invalid:
        first = min(unsendable)
        raise UnsendableRows(
            f"{nz.plural(len(unsendable), 'row')} can't be sent by {operation.command} (row "
            f"{int(validation.sheet.row_numbers[first])}: {reasons[first]}); nothing was sent. "
            "Pass --skip-invalid to send the other rows and report these as invalid",
        )
    prepared = Prepared(operation, validation, connection, options, disposition, keys, reasons)
    prepared.calls = calls
    prepared.journal = journal
    prepared.who, prepared.ledger_keys = who, ledger_keys
    prepared.applied_keys, prepared.requests = applied, requests
    if options.include_hidden:  # the rows this sheet, or another, hides: asked for
        prepared.unhidden.update(np.flatnonzero(disposition == RUN).tolist())
    if journal is not None:
        look_up_journal(prepared, ui, journal)
    if sends and options.ledger:
        look_up_ledger(prepared, journal.lineage if journal is not None else "")
    if sends:
        look_up_results_file(prepared)
    if sends and options.ledger:
        look_up_unsubscribed(prepared)
    if options.changed_only:
        leave_out_applied(prepared, journal)
    for i in np.flatnonzero(disposition == PAST).tolist():
        reasons[i] = "not sent: its send_at has passed"
    if options.resend is True:
        prepared.allow(SENT_BEFORE)
        prepared.allow(GUARDED)
    limit_and_quiet(prepared)
    return prepared


def limit_and_quiet(p: Prepared) -> None:
    """--limit (the first N rows to run, in sheet order), then quiet hours, over the rows to
    run: after prepare, and again when the user lets more rows through at a question ("Send
    them again?", a send_at passed), so that those obey both as well."""
    if p.options.limit is not None:
        runnable = np.flatnonzero(p.disposition == RUN)
        p.disposition[runnable[p.options.limit :]] = LIMITED
    if p.options.quiet_hours is not None and p.operation.sends:
        apply_quiet_hours(p)


def blocking_errors(operation: Operation, validation: Validation, options: BulkOptions) -> bool:
    """Whether errors keep the run from starting (no --skip-invalid). Errors on rows the run
    skips don't: rows hidden in the sheet (without --include-hidden), and campaign rows whose
    only error is a send_at now past when a journal may show them sent (:func:`prepare`
    decides: kept as sent, or asked about). Errors of the header always do."""
    past = np.zeros(validation.rows, dtype=bool)
    journal = options.journal or journal_path_for(
        validation.sheet.path, operation.command, options.out_dir
    )
    if operation.sends and journal.exists():
        past = _past_only(operation, validation)
    return _blocking(validation, options, past)


def _blocking(validation: Validation, options: BulkOptions, excused: np.ndarray) -> bool:
    if not validation.errors or options.skip_invalid:
        return False
    hidden = hidden_mask(validation, options.include_hidden)
    if hidden is not None:
        excused = excused | hidden
    if not excused.any():
        return True
    issues = validation.issues.columns
    rows = np.asarray(issues["row"])
    is_error = np.asarray(issues["severity"].to_numpy(zero_copy_only=False) == "error")
    skipped = np.isin(rows, validation.sheet.row_numbers[excused])
    return bool((is_error & ~skipped).any())


def check_output_paths(
    results: Path | None, failed: Path | None, v: Validation, options: BulkOptions
) -> None:
    """UsageError when an output can't be written, or can't hold the rows (an .xlsx sheet
    has 1,048,576 rows)."""
    from sonar_bulk.outputs import XLSX_MAX_ROWS

    paths = [x for x in (results, failed) if x is not None]
    for path in paths:
        if path.suffix.lower() == ".xlsx" and v.rows + 1 > XLSX_MAX_ROWS:
            raise UsageError(
                f"{path}: {v.rows:,} rows do not fit in an .xlsx sheet "
                f"({XLSX_MAX_ROWS - 1:,} at most); pass --results NAME.csv"
            )
    check_results_paths(paths, options.force, [v.sheet.path])
