"""The Python API: :func:`validate` a sheet, :func:`run` a bulk operation on it.

    import sonar_bulk as sb

    checked = sb.validate("customers.csv", kind="customers")
    print(checked.valid_rows, checked.invalid_rows, checked.issues[:3])

    report = sb.run("customers upsert", "customers.csv", emulate=True)
    print(report.counts, report.exit_code)
    report.results.to_pandas()        # pandas only when asked for (sonar-bulk[pandas])

A source is a file path, a pandas DataFrame or a list of dicts (one per row; the keys of the
first rows are the headers). Data that is not a file is written as a CSV sheet first, as typed
(``<name>.csv`` in ``folder``, by default the user data folder's ``python/``), so its journal,
results and send guard work exactly as for a file: running it again never texts anyone twice.

The same checks, guard, journal and results as the command line; the same errors too
(:mod:`sonar_bulk.errors`): a run that can't start raises, a run that started returns its
report, whatever happened to its rows.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sonar_bulk.errors import UsageError

if TYPE_CHECKING:
    import pyarrow as pa

    from sonar_bulk.connection import Connection
    from sonar_bulk.engine import talk
    from sonar_bulk.validation import Validation

#: Which operations exist: ``"customers upsert"``, ``"messages send"``… (one per bulk command).
OPERATION_NAMES = (
    "customers upsert",
    "customers get",
    "customers close",
    "customers unassign",
    "properties set",
    "properties delete",
    "messages send",
    "messages tag",
    "campaigns send",
)


@dataclass(frozen=True)
class Checked:
    """A validated sheet, as ``sonar-bulk validate --json`` says it: counts, and ``issues``
    (one dict per issue: row, column, value, code, severity, message)."""

    kind: str
    rows: int
    valid_rows: int
    invalid_rows: int
    errors: int
    warnings: int
    issues: list[dict[str, Any]]
    #: The whole ``--json`` summary (issues by code, consent, SMS segments…).
    summary: dict[str, Any]
    #: The validation itself (normalized values per field, the sheet as read).
    validation: Validation = field(repr=False)

    @property
    def ready(self) -> bool:
        """No row has an error."""
        return self.invalid_rows == 0 and self.errors == 0


@dataclass
class RunReport:
    """What :func:`run` did. ``results``: the results sheet as a table (every input column,
    then the ``sonar__`` ones), one row per input row, in order (also when the file could not
    be written: ``results_path`` is then None); made when first read."""

    operation: str
    exit_code: int
    counts: dict[str, int]
    #: Makes :attr:`results` (a script that never reads them holds no second copy of the
    #: sheet: a million rows of text).
    make_results: Callable[[], pa.Table] = field(repr=False)
    results_path: Path | None
    failed_path: Path | None
    #: Why the run stopped before its end, if it did (see :class:`sonar_bulk.engine.talk.Stop`).
    stop: talk.Stop | None
    #: The run's journal: ``sb.run(..., resume=report.journal)`` continues a stopped run.
    journal: Path | None
    #: The ``--json`` summary of the command line.
    summary: dict[str, Any]
    #: What the run told (:mod:`sonar_bulk.engine.talk` notices), in order.
    notices: list[talk.Notice] = field(default_factory=list, repr=False)

    @functools.cached_property
    def results(self) -> pa.Table:
        """The results sheet as a table (see the class)."""
        return self.make_results()

    @property
    def ok(self) -> bool:
        """Every row ok (exit code 0)."""
        return self.exit_code == 0


def validate(
    source: Any,
    kind: str,
    *,
    mapping: Mapping[str, str] | None = None,
    default_region: str = "US",
    sheet: str | None = None,
    encoding: str | None = None,
    name: str = "data",
    folder: str | Path | None = None,
    force: bool = False,
    **checks: Any,
) -> Checked:
    """Check every row of ``source`` against the ``kind`` of sheet (``customers``,
    ``properties``, ``messages``, ``campaign_recipients``, ``message_tags``,
    ``customer_keys``). ``mapping`` maps headers to fields (as ``--map``); ``checks``: the
    other validate options (``text``, ``campaign_id``, ``send_at``, ``timezone``,
    ``default_send_time``, ``extra_columns``, ``allow_blank_merge``)."""
    from sonar_bulk import report as rp
    from sonar_bulk.issues import ISSUE_COLUMNS
    from sonar_bulk.schema import KINDS
    from sonar_bulk.sheets import read_sheet
    from sonar_bulk.validation import validate_sheet

    if kind not in KINDS:
        raise UsageError(f"kind {kind!r}: one of {', '.join(KINDS)}")
    path = sheet_file(source, name, folder, force)
    read = read_sheet(path, sheet=sheet, encoding=encoding)
    options = _validate_options(mapping, default_region, checks)
    try:
        v = validate_sheet(read, KINDS[kind], options)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    issues = [dict(zip(ISSUE_COLUMNS, r, strict=True)) for r in v.issues.iter_rows()]
    return Checked(
        kind,
        v.rows,
        v.valid_rows,
        v.invalid_rows,
        v.errors,
        v.warnings,
        issues,
        rp.summary_dict(v),
        v,
    )


def run(
    operation: str,
    source: Any,
    *,
    emulate: bool = False,
    token: str | None = None,
    base_url: str | None = None,
    sandbox: bool = False,
    profile: str | None = None,
    rate: float | None = None,
    concurrency: int | None = None,
    dry_run: bool = False,
    yes: bool = False,
    skip_invalid: bool = False,
    include_hidden: bool = False,
    resend: bool = False,
    diff: bool = False,
    changed_only: bool = False,
    existing_only: bool = False,
    resubscribe: bool = False,
    limit: int | None = None,
    resume: str | Path | None = None,
    retry_unknown: bool = False,
    journal: str | Path | None = None,
    results: str | Path | None = None,
    out_dir: str | Path | None = None,
    force: bool = False,
    quiet_hours: str | None = None,
    quiet_hours_policy: str = "hold",
    timeout: float = 30.0,
    max_retries: int = 5,
    mapping: Mapping[str, str] | None = None,
    default_region: str = "US",
    sheet: str | None = None,
    encoding: str | None = None,
    name: str = "data",
    folder: str | Path | None = None,
    ui: talk.Ui | None = None,
    **checks: Any,
) -> RunReport:
    """Run ``operation`` (``"customers upsert"``, ``"messages send"``… see
    :data:`OPERATION_NAMES`) on every row of ``source``, as the command of that name does.

    ``emulate=True`` runs against the built-in emulator (nothing leaves the machine); else
    ``token`` / ``base_url`` / ``sandbox`` / ``profile`` as on the command line (or the
    environment and saved profiles). Sends are never made without ``yes=True`` (the command
    line asks; a script says so), nor ever made twice: rows sent before are skipped unless
    ``resend=True``. ``checks``: the sheet options (``text``, ``campaign_id``, ``send_at``,
    ``timezone``, ``default_send_time``, ``extra_columns``, ``allow_blank_merge``). ``ui``:
    your own :class:`~sonar_bulk.engine.talk.Ui` (default: one that keeps the notices in the
    report).
    """
    from sonar_bulk.engine import bulk
    from sonar_bulk.engine import talk as t
    from sonar_bulk.engine.run import ReadOptions, run_sheet
    from sonar_bulk.errors import Aborted

    if operation not in OPERATION_NAMES:
        raise UsageError(f"operation {operation!r}: one of {', '.join(OPERATION_NAMES)}")
    options = bulk.BulkOptions.from_flags(
        rate=_number("rate", bulk.DEFAULT_RATE if rate is None else rate, 0, 100_000),
        concurrency=int(
            _number(
                "concurrency",
                bulk.DEFAULT_CONCURRENCY if concurrency is None else concurrency,
                1,
                256,
            )
        ),
        max_retries=int(_number("max_retries", max_retries, 0, 100)),
        timeout=_number("timeout", timeout, 0.1, 3600),
        limit=limit,
        skip_invalid=skip_invalid,
        include_hidden=include_hidden,
        dry_run=dry_run,
        diff=diff,
        changed_only=changed_only,
        existing_only=existing_only,
        resubscribe=resubscribe,
        journal_path=Path(journal) if journal is not None else None,
        resume_path=Path(resume) if resume is not None else None,
        retry_unknown=retry_unknown,
        resend=resend,
        results_path=Path(results) if results is not None else None,
        out_dir=Path(out_dir) if out_dir is not None else None,
        force=force,
        quiet_hours=quiet_hours,
        quiet_hours_policy=quiet_hours_policy,
        command_line="",  # a resume is resume=<journal> (RunReport.journal), not a command
    )
    checked = _validate_options(mapping, default_region, checks)
    recorder = t.RecordingUi(
        yes=yes, answers={"ConfirmSend": yes, "ConfirmResend": resend, "SendPastNow": False}
    )
    face = ui or recorder

    @contextlib.contextmanager
    def connect() -> Iterator[Connection]:
        from sonar_bulk import connection as cn

        if emulate:
            with cn.emulated() as conn:
                yield conn
            return
        yield cn.resolve(token=token, base_url=base_url, sandbox=sandbox, profile=profile)

    def go() -> Any:
        with _sheet_held(source, name, folder, force) as path:
            return run_sheet(
                operation,
                path,
                connect,
                options,
                face,
                read=ReadOptions(sheet=sheet, encoding=encoding),
                checks=checked,
            )

    try:
        report = _off_the_loop(go)
    except Aborted:
        raise Aborted(f"{operation}: nothing was sent: pass yes=True to send") from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise UsageError(f"{where}{exc.strerror or exc}") from None
    if report.stop is not None and report.stop.kind is t.StopKind.INTERRUPTED:
        # Ctrl-C (or SIGTERM) stops the script too, as it would without sonar-bulk; the run's
        # journal and results are written, and resume=<its journal> continues it
        raise KeyboardInterrupt(
            f"{operation} stopped ({report.stop.detail}); results: {report.summary.results}; "
            f"resume=" + repr(report.summary.journal)
        )
    return _run_report(operation, report, recorder.notices)


@contextlib.contextmanager
def _sheet_held(source: Any, name: str, folder: str | Path | None, force: bool) -> Iterator[Path]:
    """The sheet file of ``source``; data written for it stays this call's alone until the run
    ends (a second call on the same name waits for nothing: it is refused)."""
    if isinstance(source, str | Path):
        yield Path(source)
        return
    from sonar_bulk.owned import hold

    table = _table_of(source)  # a source that is no table is told first
    target = _data_path(name, folder)
    lock = hold(
        target,
        f"{target}: another sonar_bulk.run is using this name; pass another name=",
    )
    try:
        yield _write_data(table, target, force)
    finally:
        lock.close()


def _off_the_loop(work: Callable[[], Any]) -> Any:
    """``work()``, in another thread when this one runs an event loop (a notebook, async
    code): a run makes its own loop."""
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return work()
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, thread_name_prefix="sonar-bulk-run") as pool:
        return pool.submit(work).result()


#: The keyword options of :func:`run` (for a typo's suggestion).
_RUN_OPTIONS = tuple(run.__kwdefaults__ or ())


def sheet_file(
    source: Any, name: str = "data", folder: str | Path | None = None, force: bool = False
) -> Path:
    """``source`` as a sheet file: a path as it is; a DataFrame or a list of dicts written as
    ``<folder>/<name>.csv`` (as typed: what a cell holds is what is read). A file there that
    sonar-bulk did not write is never replaced without ``force``."""
    if isinstance(source, str | Path):
        return Path(source)
    return _write_data(_table_of(source), _data_path(name, folder), force)


def _data_path(name: str, folder: str | Path | None) -> Path:
    """``<folder>/<name>.csv`` (default folder: the user data folder's ``python/``), its
    folder made."""
    _check_name(name)
    where = Path(folder) if folder is not None else _default_folder()
    where.mkdir(parents=True, exist_ok=True)
    return where / f"{name}.csv"


def _write_data(table: tuple[list[str], list[list[str]]], path: Path, force: bool) -> Path:
    from sonar_bulk.outputs import write_table
    from sonar_bulk.owned import Written

    headers, rows = table
    written = Written()
    if path.exists() and not force and not written.ours(path):
        raise UsageError(
            f"{path}: the file exists and sonar-bulk did not write it (or it was edited since); "
            "pass another name=, or force=True to replace it"
        )
    write_table(path, headers, rows, as_typed=True)
    written.note(path)
    return path


def _check_name(name: str) -> None:
    if not name or Path(name).name != name or name.startswith("."):
        raise UsageError(f"name {name!r}: a file name without folders, such as 'spring_promo'")


def _default_folder() -> Path:
    from sonar_bulk.connection import data_dir

    return data_dir() / "python"


def _table_of(source: Any) -> tuple[list[str], list[list[str]]]:
    """Headers and text cells of a DataFrame or a list of dicts."""
    if _is_dataframe(source):
        headers = [str(c) for c in source.columns]
        rows = [[_cell(v) for v in row] for row in source.itertuples(index=False, name=None)]
        return headers, rows
    if isinstance(source, Sequence) and all(isinstance(r, Mapping) for r in source):
        headers = []
        for record in source:
            headers += [str(k) for k in record if str(k) not in headers]
        rows = [[_cell(_get(r, h)) for h in headers] for r in source]
        return headers, rows
    raise UsageError(
        f"source: a file path, a pandas DataFrame or a list of dicts, not {type(source).__name__}"
    )


def _get(record: Mapping[Any, Any], header: str) -> Any:
    if header in record:
        return record[header]
    return next((v for k, v in record.items() if str(k) == header), None)


def _is_dataframe(source: Any) -> bool:
    return type(source).__module__.startswith("pandas") and hasattr(source, "itertuples")


def _cell(value: Any) -> str:
    """A value as the text a sheet cell would show: blank for None/NaN/NaT, a whole float as
    an integer (pandas makes a column of numbers with a blank float: 3105550101.0)."""
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer() and abs(value) < 1e16:
            return str(int(value))
        return repr(value)
    text = str(value)
    return "" if text in ("nan", "NaT", "<NA>") and not isinstance(value, str) else text


def _number(name: str, value: Any, low: float, high: float) -> float:
    """``value`` as a finite number from ``low`` to ``high``; UsageError otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not (math.isfinite(number) and low <= number <= high):
        raise UsageError(f"{name}={value!r}: a number from {low:g} to {high:g}")
    return number


def _validate_options(
    mapping: Mapping[str, str] | None, default_region: str, checks: Mapping[str, Any]
) -> Any:
    from sonar_bulk.validation import ValidateOptions

    known = set(ValidateOptions.__dataclass_fields__) - {"mapping", "default_region", "now"}
    unknown = sorted(set(checks) - known)
    if unknown:
        import difflib

        everything = known | set(_RUN_OPTIONS)
        close = difflib.get_close_matches(unknown[0], sorted(everything), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UsageError(
            f"unknown option {unknown[0]!r}; {hint}sheet options: {', '.join(sorted(known))}"
        )
    return ValidateOptions(
        default_region=default_region.upper(), mapping=dict(mapping or {}), **checks
    )


def _run_report(operation: str, report: Any, notices: list[Any]) -> RunReport:
    import json

    from sonar_bulk.engine.bulk import json_summary

    s = report.summary
    return RunReport(
        operation,
        report.exit_code,
        dict(s.counts),
        report.table,
        Path(s.results) if s.results else None,
        Path(s.failed) if s.failed else None,
        report.stop,
        Path(s.journal) if s.journal else None,
        json.loads(json_summary(report)),
        notices,
    )
