"""The web page's working state: one sheet at a time, walked through the same library calls as
the CLI (read, match headers, validate, prepare, dry run and diff, execute, results). Nothing
here decides what a row means: it keeps the page's choices (kind, mapping, edited cells) and
hands them to the library.

Files: each uploaded sheet lives in ``<data dir>/ui/<name>/`` with its journal, results and
events, so uploading the same file again after a stop or a crash finds its journal (Resume).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa

from sonar_bulk.advice import for_the_page
from sonar_bulk.connection import Connection, data_dir
from sonar_bulk.engine import talk
from sonar_bulk.errors import InvalidRows, SonarBulkError, UsageError
from sonar_bulk.fixes import fix_label, suggested_fix
from sonar_bulk.issues import CODES
from sonar_bulk.plan import OPERATIONS, STATUSES
from sonar_bulk.run_files import events_paths, journal_path_for, run_file
from sonar_bulk.schema import (
    COUNTRY_FIELD,
    KINDS,
    PROPERTY_TYPES,
    SKIP,
    ColumnRole,
    column_rank,
    column_roles,
    guess_kind,
    header_key,
    match_headers,
)
from sonar_bulk.sheets import Sheet, read_sheet
from sonar_bulk.validation import ValidateOptions, Validation, header_row_guess, validate_sheet

if TYPE_CHECKING:
    from sonar_bulk.engine.bulk import BulkOptions

#: What the page may upload.
SUFFIXES = (".csv", ".tsv", ".txt", ".xlsx", ".xlsm", ".xls", ".ods")
#: Largest upload (the page sends the file base64-encoded in JSON).
MAX_UPLOAD = 200 * 1024 * 1024
#: Cells one edit (a paste) may change at most.
MAX_CHANGES = 10_000
#: Bulk commands per kind: what "Run" does with a sheet of that kind.
COMMANDS = {
    "customers": "customers upsert",
    "properties": "properties set",
    "messages": "messages send",
    "campaign_recipients": "campaigns send",
    "message_tags": "messages tag",
    "customer_keys": "customers close",
}


#: Each kind as the page names it, and what its run does, in words rather than commands.
KIND_LABELS = {
    "customers": "Customers",
    "properties": "Customer properties",
    "messages": "Messages",
    "campaign_recipients": "Campaign recipients",
    "message_tags": "Message tags",
    "customer_keys": "Customers to close",
}
KIND_DOING = {
    "customers": "add or update each customer in Sonar",
    "properties": "set each customer's custom property in Sonar",
    "messages": "send each row's text message",
    "campaign_recipients": "send the campaign to each recipient",
    "message_tags": "tag each message in Sonar",
    "customer_keys": "close each customer's conversation in Sonar",
}


def page_words(text: str) -> str:
    """A message as the page shows it: the page's controls rather than flags
    (:func:`~sonar_bulk.advice.for_the_page`), and the page's own files by their names in its
    folder, not by where the server keeps them (``news/news.csv``)."""
    text = for_the_page(text)
    # one per issue of the sheet: the data folder is looked up only for a text with a path
    return text.replace(f"{ui_dir()}{os.sep}", "") if os.sep in text else text


def ui_dir() -> Path:
    return data_dir() / "ui"


def _safe_name(name: str) -> str:
    """A file name the page may use: the base name, letters (any script), digits and
    ``._- `` only, the extension kept, at most 100 characters before it."""
    base = Path(name.replace("\\", "/").replace("\x00", "")).name.strip()
    stem, dot, ext = base.rpartition(".")
    if not dot:
        stem, ext = base, ""
    suffix = f".{ext.lower()}" if ext else ""
    clean = re.sub(r"[^\w.\- ]", "_", stem).strip(" .")[:100] or "sheet"
    return clean + suffix


def headers_key(headers: list[str]) -> str:
    return hashlib.sha256(json.dumps([h.strip().lower() for h in headers]).encode()).hexdigest()


class Mappings:
    """The page's header choices, remembered per set of headers (``ui-mappings.json``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self, headers: list[str]) -> dict[str, Any] | None:
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        entry = saved.get(headers_key(headers)) if isinstance(saved, dict) else None
        return entry if isinstance(entry, dict) else None

    def save(self, headers: list[str], kind: str, mapping: dict[str, str]) -> None:
        try:
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(saved, dict):
                saved = {}
        except (OSError, ValueError):
            saved = {}
        saved[headers_key(headers)] = {"kind": kind, "mapping": mapping}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".partial")
        tmp.write_text(json.dumps(saved, indent=1), encoding="utf-8")
        tmp.replace(self.path)


def map_options(mapping: dict[str, str]) -> str:
    """The mapping as the CLI's ``--map`` options."""
    import shlex

    return " ".join(f"--map {shlex.quote(f'{h}={t}')}" for h, t in mapping.items())


#: The pseudo-choice of a Google label column: read with its value column (no ``--map``).
LABEL = "label"
#: How many sample values the Columns step shows per column.
SAMPLES = 3


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def _names(headers: list[str], indexes: tuple[int, ...] | list[int]) -> str:
    names = [repr(headers[i]) for i in indexes]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def role_choice(role: ColumnRole) -> str:
    """A column's role as the page's choice (and ``--map`` target): a field,
    ``property:<name>[:<type>]``, ``country``, ``label``, ``skip`` or '' (not imported)."""
    if role.role in ("field", "alternate", "conflict"):
        return role.target
    if role.role == "property":
        return f"property:{role.target}" + (f":{role.type}" if role.type else "")
    if role.role == "country":
        return COUNTRY_FIELD
    if role.role == "label":
        return LABEL
    if role.role == "skip":
        return SKIP
    return ""


def role_text(roles: list[ColumnRole], index: int, headers: list[str]) -> str:
    """What column ``index`` feeds, in words: exactly what validation reads from it."""
    role = roles[index]
    if role.role in ("field", "alternate"):
        group = [i for i, r in enumerate(roles) if r.role in ("field", "alternate")]
        group = [i for i in group if roles[i].target == role.target]
        if len(group) < 2:
            return role.target
        if any(roles[i].label is not None for i in group):
            return f"{role.target} (one of {len(group)} columns: a row takes its mobile first)"
        if not role.before:
            return f"{role.target} (1st choice)"
        verb = "is" if len(role.before) == 1 else "are"
        return (
            f"{role.target} ({_ordinal(len(role.before) + 1)} choice, where "
            f"{_names(headers, role.before)} {verb} blank)"
        )
    if role.role == "label":
        return f"the label of {headers[role.before[0]]!r}: which {role.target} a row takes"
    if role.role == "country":
        where = f" (where {_names(headers, role.before)} blank)" if role.before else ""
        return f"the region of the phones{where}"
    if role.role == "property":
        return f"custom property {role.target}" + (f" ({role.type})" if role.type else "")
    if role.role == "conflict":
        return f"{role.target}: a second column for it (every row is invalid)"
    if role.role == "skip":
        return "not imported (your choice)"
    if role.role == "tool":
        return "sonar-bulk's own column (not sent)"
    return "not imported"


@dataclasses.dataclass
class RunState:
    """One run in the background: its progress, and its report once done."""

    command: str
    stop: Any
    state: str = "running"  # running, stopping, done, failed
    total: int = 0
    stats: Any = None
    throttled: Callable[[], bool] = lambda: False
    started: float = dataclasses.field(default_factory=time.monotonic)
    report: Any = None
    error: str = ""
    messages: list[str] = dataclasses.field(default_factory=list)
    thread: threading.Thread | None = None
    mode: str = "run"  # run, or plan (a dry run)
    facts: dict[str, Any] | None = None
    #: The sheet the run read (the page may be edited afterwards).
    sheet: Sheet | None = None
    #: Webhook events: collected for ``collect`` seconds after the run (0: not at all),
    #: delivered to ``public_url`` (None: this machine, for the emulator).
    collect: float = 0.0
    public_url: str | None = None
    events: Any = None
    phase: str = ""
    #: A dry run's report: its rows as planned, and the plan file it wrote.
    plan: Any = None
    #: What the run was planned as (:meth:`Session._plan_key`).
    key: tuple[Any, ...] = ()


class WebUi:
    """The engine's Ui for a run started from the page: no terminal (the page asked before
    it started the run), progress and the plan kept for the page to read, notices worth
    showing kept as messages in the page's words."""

    def __init__(self, run: RunState, describe: Callable[[dict[str, Any]], None]) -> None:
        self.run = run
        #: Adds the page's own facts to a plan's.
        self.describe = describe

    def tell(self, notice: talk.Notice) -> None:
        run = self.run
        if isinstance(notice, talk.Starting):
            run.sheet = notice.prepared.validation.sheet
            run.total = notice.prepared.to_run
        elif isinstance(notice, talk.Planned):
            facts = dict(notice.facts)
            self.describe(facts)
            run.facts = facts
        else:
            text = _web_text(notice)
            if text:
                run.messages.append(text)

    def ask(self, question: talk.Question) -> bool:
        # the page asked before the run; it never resends (resend=False) nor sends a
        # passed campaign now
        return isinstance(question, talk.ConfirmSend)

    @contextlib.contextmanager
    def progress(self, total: int, stats: Any, throttled: Callable[[], bool]) -> Iterator[None]:
        self.run.total, self.run.stats, self.run.throttled = total, stats, throttled
        yield

    def wait_for_events(self, window: talk.EventsWindow) -> None:
        """The events window after a run: its length, or until Stop (events kept)."""
        run = self.run
        run.report = window.report
        run.phase = "events"
        deadline = time.monotonic() + run.collect
        while time.monotonic() < deadline and not run.stop.requested:
            time.sleep(0.1)


def _web_text(notice: talk.Notice) -> str:
    """A notice in the page's words ('' for those the page shows otherwise)."""
    if isinstance(notice, talk.Stopping):
        return (
            f"stopping: no new request starts; those in flight get {notice.grace:g} s to "
            "finish, then the results are written"
        )
    if isinstance(notice, talk.ResultsMoved):
        if notice.where is not None:
            return f"the results could not be written to {notice.asked}: they are in {notice.where}"
        return (
            f"the results could not be written ({notice.why}); every outcome is in the "
            f"journal {notice.journal}: free some space, then Resume to write them"
        )
    if isinstance(notice, talk.OutputKept):
        instead = f"; this run's {notice.what}: {notice.written.name}" if notice.written else ""
        return f"{notice.kept.name} was changed since sonar-bulk wrote it: kept as it is{instead}"
    if isinstance(notice, talk.StopsKept):
        return (
            f"{notice.count:,} rows say subscribed=yes for people who replied STOP "
            f"({', '.join(notice.examples)}): subscribed is left out for them"
        )
    if isinstance(notice, talk.LedgerNotRecorded):
        return (
            f"the send ledger could not record this run's sends ({notice.error}); the "
            "sheet's journal still has them"
        )
    if isinstance(notice, talk.SheetChanged):
        return (
            f"the sheet changed since the last run: {notice.guarded:,} changed rows of "
            "recipients already sent to are not sent again"
        )
    if isinstance(notice, talk.EventsNote):
        return notice.text
    if isinstance(notice, talk.EventsNotJoined):
        return f"events were not joined to the results: {notice.error}"
    return ""


class Session:
    """The sheet the page works on, and its run."""

    def __init__(self, connection: Callable[[], contextlib.AbstractContextManager[Connection]]):
        self.connection = connection
        self.lock = threading.RLock()
        self.mappings = Mappings(data_dir() / "ui-mappings.json")
        self.sheet: Sheet | None = None
        self.original: Sheet | None = None
        self.kind = "customers"
        self.mapping: dict[str, str] = {}
        #: The page's settings that advice names: the header row (None: the first non-empty
        #: row), extra columns as properties, the default region of phones.
        self.header_row: int | None = None
        self.extra_columns = "warn"
        self.default_region = "US"
        self.validation: Validation | None = None
        self.edited: set[tuple[int, int]] = set()
        #: Rows deleted in Review: left out of the fixed sheet, so of the plan and the run.
        self.deleted = 0
        self.run: RunState | None = None
        self.closing = False
        #: The last run on this sheet stopped before its end (Resume carries on).
        self.resumable = False
        #: the header row the page found below a title line (None: the first row, or set)
        self.header_row_auto: int | None = None
        #: bumped whenever the sheet, its mapping or its settings change: a plan is of one
        self.version = 0
        #: what the last plan was of (the version and the run's choices); a run must match it
        self.planned: tuple[Any, ...] | None = None
        self._issue_index: dict[int, list[dict[str, Any]]] = {}
        self._issues: list[dict[str, Any]] = []
        self._rendered: dict[int, dict[str, Any]] = {}
        self._columns: dict[str, int] = {}

    # -- the sheet -------------------------------------------------------------------------------

    def upload(self, name: str, data_b64: str, sheet_name: str | None = None) -> dict[str, Any]:
        """Keep the file in its folder, read it, guess its kind and map its headers."""
        if Path(name).suffix.lower() not in SUFFIXES:
            raise UsageError(f"{name}: use a .csv, .xlsx, .xls or .ods file")
        try:
            data = base64.b64decode(data_b64, validate=True)
        except (binascii.Error, ValueError):
            raise UsageError(f"{name}: the upload is not base64") from None
        if len(data) > MAX_UPLOAD:
            raise UsageError(f"{name}: larger than {MAX_UPLOAD // 2**20} MiB")
        self._not_running()
        safe = _safe_name(name)
        folder = ui_dir() / Path(safe).stem
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / safe
        tmp = path.with_name(f".{safe}.partial")
        tmp.write_bytes(data)
        tmp.replace(path)
        try:
            return self.open(path, sheet_name)
        except SonarBulkError as exc:
            # nothing half-loaded: the earlier sheet is gone from the page too, so it can't
            # be run by mistake under this file's name
            self.sheet = self.original = self.validation = None
            self.run = None
            path.unlink(missing_ok=True)
            raise UsageError(str(exc).replace(str(path), Path(name).name)) from None

    def open(
        self, path: Path, sheet_name: str | None = None, header_row: int | None = None
    ) -> dict[str, Any]:
        with self.lock:
            self._not_running()
            sheet = read_sheet(path, sheet=sheet_name or None, header_row=header_row)
            self.header_row_auto = None
            if header_row is None:
                # a title line on top of an export: the row below that holds a kind's
                # headers is the header row, as if "Header row" had been set (it shows)
                guess = header_row_guess(sheet, KINDS.values())
                if guess is not None:
                    header_row = self.header_row_auto = guess
                    sheet = read_sheet(path, sheet=sheet_name or None, header_row=header_row)
            self.sheet, self.original = sheet, sheet
            self.header_row = header_row
            self.edited = set()
            self.deleted = 0
            self.run = None
            self.resumable = self._upload_journal_exists()
            remembered = self.mappings.load(sheet.headers)
            if remembered is not None and remembered.get("kind") in KINDS:
                self.kind = str(remembered["kind"])
                self.mapping = {str(k): str(v) for k, v in remembered["mapping"].items()}
            else:
                self.kind = guess_kind(sheet.headers)
                self.mapping = {}
            self._validate()
            return {
                **self.describe(),
                "remembered": remembered is not None,
                "resumable": self.resumable,
            }

    def _not_running(self) -> None:
        if self.run is not None and self.run.state in ("running", "stopping"):
            what = "a dry run" if self.run.mode == "plan" else "a run"
            raise UsageError(f"{what} is in progress: wait for it to end, or Stop it")

    def describe(self) -> dict[str, Any]:
        """The sheet as read, the kind, and each header's choice."""
        sheet = self._sheet()
        kind = KINDS[self.kind]
        return {
            "file": sheet.path.name,
            "format": sheet.format,
            "encoding": sheet.encoding,
            "delimiter": sheet.delimiter,
            "sheet": sheet.sheet_name,
            "sheets": _sheet_names(sheet),
            "rows": len(sheet),
            # what reading the file noticed (a guessed encoding...), named by its file name
            "read_notes": [
                page_words(w.replace(str(sheet.path), sheet.path.name)) for w in sheet.warnings
            ],
            "headers": sheet.headers,
            "kind": self.kind,
            "kinds": list(KINDS),
            "fields": [
                {"name": c.name, "required": c.required, "type": c.type} for c in kind.columns
            ],
            "properties": kind.allows_properties,
            "choices": self.choices(),
            "columns": self.columns(),
            "property_types": list(PROPERTY_TYPES),
            "country_choice": any(c.type == "phone" for c in kind.columns),
            # rows above the headers (a title line): Review shows the "Header row" control
            "title_line": bool(sheet.preamble) or self.header_row is not None,
            "header_row_auto": self.header_row_auto,
            "settings": {
                "header_row": self.header_row,
                "extra_columns": self.extra_columns == "properties",
                "default_region": self.default_region,
            },
            "command_line": self.command_line(),
            "command": COMMANDS[self.kind],
            "doing": KIND_DOING[self.kind],
            "kind_labels": KIND_LABELS,
            "sends": COMMANDS[self.kind] in ("messages send", "campaigns send"),
            "events": COMMANDS[self.kind] in EVENT_COMMANDS,
        }

    def _roles(self) -> list[ColumnRole]:
        """Each column's role in the header map the last validation used."""
        return column_roles(self._current().headers, len(self._sheet().headers))

    def _automatic(self) -> list[str]:
        """Each column's choice without the page's mapping (the aliases alone)."""
        headers = self._sheet().headers
        hmap = match_headers(KINDS[self.kind], headers, extra_columns=self.extra_columns)
        return [role_choice(r) for r in column_roles(hmap, len(headers))]

    def choices(self) -> list[str]:
        """Per header: the field it feeds, ``property:...``, ``country``, ``label``,
        ``skip``, or '' (not imported), as validation read it."""
        return [role_choice(r) for r in self._roles()]

    def columns(self) -> list[dict[str, Any]]:
        """The Columns step: per source column its header, sample values, what it feeds (as
        validation read it), its header-level issues, and a one-click fix of a conflict."""
        sheet = self._sheet()
        headers = sheet.headers
        roles = self._roles()
        automatic = self._automatic()
        issues: dict[int, list[dict[str, Any]]] = {}
        for issue in self._issue_index.get(-1, []):
            issues.setdefault(issue["column"], []).append(issue)
        notes, replaced = self._replaced(roles, automatic)
        out = []
        for index, header in enumerate(headers):
            role = roles[index]
            out.append(
                {
                    "index": index,
                    "letter": _letter(index),
                    "header": header,
                    "samples": _samples(sheet, index),
                    "choice": role_choice(role),
                    "off": SKIP if automatic[index] not in ("", SKIP) else "",
                    "role": role.role,
                    "target": role_text(roles, index, headers),
                    # a column another one's choice replaced is not an unknown column: its
                    # note says what happened (found by a new-user trial)
                    "issues": [
                        i
                        for i in issues.get(index, [])
                        if not (index in notes and i["code"] == "column.unknown")
                    ],
                    "fix": self._fix(roles, automatic, index) or replaced.get(index),
                    "note": notes.get(index, ""),
                }
            )
        return out

    def _fix(
        self, roles: list[ColumnRole], automatic: list[str], index: int
    ) -> dict[str, Any] | None:
        """The one-click fix of two columns for one field (the page's choices to post): for
        a phone, the mobile first (by the rank of the several-phones rule) is kept; else
        the first. The others are not imported."""
        role = roles[index]
        target = role.target
        group = [i for i, r in enumerate(roles) if r.role == "conflict" and r.target == target]
        if not group or role.role not in ("field", "conflict"):
            return None
        headers = self._sheet().headers
        if target.startswith("property:"):
            first = [i for i, r in enumerate(roles) if role_choice(r).startswith(target)]
            keep = min(first, default=index)
            group = sorted(set(group) | {keep})
        else:
            group = sorted(
                set(group)
                | {i for i, r in enumerate(roles) if r.role == "field" and r.target == target}
            )
            phone = KINDS[self.kind].column(target).type == "phone"
            keep = min(group, key=lambda i: (column_rank(headers[i], phone) if phone else 0, i))
        off = {i: SKIP if automatic[i] not in ("", SKIP) else "" for i in group}
        choices = {headers[i]: (role_choice(roles[i]) if i == keep else off[i]) for i in group}
        rule = (
            " (mobile first)"
            if not target.startswith("property:")
            and KINDS[self.kind].column(target).type == "phone"
            else ""
        )
        return {
            "label": f"Keep {headers[keep]!r}{rule}; don't import "
            + _names(headers, [i for i in group if i != keep]),
            "choices": choices,
        }

    def _replaced(
        self, roles: list[ColumnRole], automatic: list[str]
    ) -> tuple[dict[int, str], dict[int, dict[str, Any]]]:
        """Columns the aliases would read for a field that the page's choice gave another
        column (a chosen column wins; the others are not imported): a note on each, and the
        one-click fix that gives the field back to the aliases (for a phone, the several
        phones rule: the mobile first)."""
        headers = self._sheet().headers
        chosen = {header_key(h) for h in self.mapping}
        notes: dict[int, str] = {}
        fixes: dict[int, dict[str, Any]] = {}
        fields = {c.name for c in KINDS[self.kind].columns}
        for target in sorted({a for a in automatic if a in fields}):
            lost = [
                i for i, r in enumerate(roles) if r.role == "unknown" and automatic[i] == target
            ]
            given = [
                i
                for i, r in enumerate(roles)
                if r.role in ("field", "alternate")
                and r.target == target
                and header_key(headers[i]) in chosen
                and automatic[i] != target
            ]
            if not lost or not given:
                continue
            own = [i for i, a in enumerate(automatic) if a == target]
            phone = KINDS[self.kind].column(target).type == "phone"
            rule = " (mobile first)" if phone and len(own) > 1 else ""
            off = {i: SKIP if automatic[i] not in ("", SKIP) else "" for i in given}
            fix = {
                "label": f"Use {_names(headers, own)} for {target}{rule}; don't import "
                + _names(headers, given),
                "choices": {
                    **{headers[i]: target for i in own},
                    **{headers[i]: off[i] for i in given},
                },
            }
            for i in lost:
                notes[i] = f"not imported: your choice of {_names(headers, given)} gives {target}"
                fixes[i] = fix
            for i in given:
                notes[i] = f"replaces {_names(headers, lost)} for {target}"
                fixes[i] = fix
        return notes, fixes

    def command_line(self) -> str:
        """The page's choices as one command line (the "same on the command line" box); the
        page adds ``--skip-invalid`` when its box is ticked."""
        import shlex

        parts = [f"sonar-bulk {COMMANDS[self.kind]}", shlex.quote(self._upload_path().name)]
        sheet = self._sheet()
        if sheet.sheet_name and sheet.format != "csv":
            parts.append(f"--sheet {shlex.quote(sheet.sheet_name)}")
        if self.header_row is not None:
            parts.append(f"--header-row {self.header_row}")
        if self.mapping:
            parts.append(map_options(self.mapping))
        if self.extra_columns == "properties":
            parts.append("--extra-columns properties")
        if self.default_region != "US":
            parts.append(f"--default-region {self.default_region}")
        return " ".join(parts)

    def set_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        """The page's controls for what advice names: ``header_row`` (a number, or null for
        the first non-empty row), ``extra_columns`` (import them as properties: true/false)
        and ``default_region`` (two letters)."""
        from sonar_bulk.phonemeta import region_country_code

        with self.lock:
            self._not_running()
            sheet = self._sheet()
            previous = (self.extra_columns, self.default_region)
            if "default_region" in settings:
                region = str(settings["default_region"] or "US").strip().upper()
                try:
                    region_country_code(region)
                except ValueError:
                    raise UsageError(
                        f"default region {region!r}: two letters of a country, such as US or GB"
                    ) from None
                self.default_region = region
            if "extra_columns" in settings:
                self.extra_columns = "properties" if settings["extra_columns"] else "warn"
            if "header_row" in settings and settings["header_row"] != self.header_row:
                raw = settings["header_row"]
                try:
                    row = None if raw in (None, "", 0) else int(raw)
                except (TypeError, ValueError):
                    raise UsageError(f"header row {raw!r}: a row number, 1 or more") from None
                if row is not None and row < 1:
                    raise UsageError(f"header row {row}: a row number, 1 or more")
                if self.edited or self.deleted:
                    self.extra_columns, self.default_region = previous
                    raise UsageError(
                        "the header row can't change once cells are edited: download the "
                        "fixed sheet and upload it again"
                    )
                kind, mapping = self.kind, self.mapping
                try:
                    self.open(self._upload_path(), sheet.sheet_name, row)
                except SonarBulkError:
                    self.extra_columns, self.default_region = previous
                    raise
                if self.kind != kind and self.mappings.load(self._sheet().headers) is None:
                    self.kind, self.mapping = kind, mapping
                    self._validate()
                return {**self.describe(), "summary": self.summary()}
            try:
                self._validate()
            except ValueError as exc:
                self.extra_columns, self.default_region = previous
                self._validate()
                raise UsageError(str(exc)) from None
            return {**self.describe(), "summary": self.summary()}

    def set_mapping(self, kind: str, choices: dict[str, Any]) -> dict[str, Any]:
        """The page's kind and header choices (header -> field / property:... / skip / '');
        remembered for the next sheet with these headers."""
        with self.lock:
            self._not_running()
            if kind not in KINDS:
                raise UsageError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
            sheet = self._sheet()
            previous = (self.kind, self.mapping)
            try:
                self.kind = kind
                self.mapping = self._differences(choices)
                self._validate()
            except Exception as exc:
                self.kind, self.mapping = previous
                self._validate()
                if isinstance(exc, ValueError | SonarBulkError):
                    raise UsageError(str(exc)) from None
                raise
            self.mappings.save(sheet.headers, self.kind, self.mapping)
            return {**self.describe(), "summary": self.summary()}

    def _differences(self, choices: dict[str, Any]) -> dict[str, str]:
        """The page's choices as ``--map`` needs them: only where they differ from what the
        aliases pick ('' for a header the aliases would import becomes ``skip``)."""
        sheet = self._sheet()
        automatic = self._automatic()
        default: dict[str, str] = {}
        for index, header in enumerate(sheet.headers):
            default.setdefault(header, automatic[index])
        out: dict[str, str] = {}
        for header, target in choices.items():
            if not isinstance(target, str):
                raise UsageError(f"column {header!r}: a choice is text, not {target!r}")
            if header not in sheet.headers or target == default.get(header, ""):
                continue
            if target == LABEL:
                raise UsageError(f"column {header!r}: only a pair's label column is a label")
            out[header] = target or SKIP
        return out

    def _sheet(self) -> Sheet:
        if self.sheet is None:
            raise UsageError("no sheet yet: upload one first")
        return self.sheet

    def _validate(self) -> None:
        sheet = self._sheet()
        if self.run is not None and self.run.mode == "plan" and self.run.state == "done":
            self.run = None  # a plan of the sheet as it was: the page plans again
        options = ValidateOptions(
            mapping=self.mapping,
            extra_columns=self.extra_columns,
            default_region=self.default_region,
        )
        validation = validate_sheet(sheet, KINDS[self.kind], options)
        self.validation = validation
        self.version += 1
        self._columns = {}
        for index, header in enumerate(sheet.headers):
            label = header if header.strip() else f"(column {_letter(index)})"
            self._columns.setdefault(label, index)
        index_of = {int(n): i for i, n in enumerate(sheet.row_numbers.tolist())}
        issues: dict[int, list[dict[str, Any]]] = {}
        for row, column, _value, code, severity, message in validation.issues.iter_rows():
            at = index_of.get(int(row), -1)
            issues.setdefault(at, []).append(
                {
                    "column": self._columns.get(column, -1),
                    "code": code,
                    "severity": severity,
                    "message": page_words(message),
                    "fix": suggested_fix(code, message),
                }
            )
        self._issue_index = issues
        self._issues = self._list_issues()
        from sonar_bulk.report import rendered_messages

        self._rendered = {
            index_of.get(m["row"], -1): {"text": m["text"], "segments": m["segments"]}
            for m in rendered_messages(validation)
        }

    def summary(self) -> dict[str, Any]:
        v = self._current()
        return {
            "rows": v.rows,
            "valid": v.valid_rows,
            "invalid": v.invalid_rows,
            "errors": v.errors,
            "warnings": v.warnings,
            "by_code": v.by_code(),
            "issues": self.issue_list(),
            "deleted": self.deleted,
            "sheet_issues": self._issue_index.get(-1, []),
            "sms": dict(v.segments),
        }

    def _current(self) -> Validation:
        if self.validation is None:
            raise UsageError("no sheet yet: upload one first")
        return self.validation

    def rows(
        self, offset: int, limit: int, errors_only: bool = False, code: str | None = None
    ) -> dict[str, Any]:
        """A window of rows for the grid: cells, issues per cell, the rendered message. With
        ``code``, only the rows with an issue of that code (an entry of the issue list)."""
        with self.lock:
            sheet, v = self._sheet(), self._current()
            if code:
                picked = np.array(
                    sorted(
                        i
                        for i, found in self._issue_index.items()
                        if i >= 0 and any(x["code"] == code for x in found)
                    ),
                    dtype=np.int64,
                )
            elif errors_only:
                picked = np.flatnonzero(np.asarray(v.invalid, dtype=bool))
            else:
                picked = np.arange(len(sheet))
            window = picked[max(0, offset) : max(0, offset) + max(0, min(limit, 1000))]
            return {
                "total": int(picked.size),
                "offset": offset,
                "rows": self._grid_rows(window),
                "summary": self.summary(),
            }

    def _grid_rows(self, window: np.ndarray) -> list[dict[str, Any]]:
        """The grid's view of these data rows (indexes, in order)."""
        sheet, v = self._sheet(), self._current()
        if not window.size:
            return []
        table = sheet.data.take(pa.array(window))
        cols = [table.column(i).to_pylist() for i in range(table.num_columns)]
        return [
            {
                "index": index,
                "row": int(sheet.row_numbers[index]),
                "cells": [c[k] for c in cols],
                "issues": self._issue_index.get(index, []),
                "invalid": bool(v.invalid[index]),
                "message": self._rendered.get(index),
            }
            for k, index in enumerate(window.tolist())
        ]

    def edit(self, changes: list[dict[str, Any]]) -> dict[str, Any]:
        """Set cells (index = data row, column = position), then validate again."""
        if len(changes) > MAX_CHANGES:
            raise UsageError(f"at most {MAX_CHANGES:,} cells in one edit")
        return self._edit(changes)

    def _edit(self, changes: list[dict[str, Any]]) -> dict[str, Any]:
        """The one cell-edit path: a typed edit, a paste, a fix in bulk, a replace."""
        with self.lock:
            self._not_running()
            sheet = self._sheet()
            by_column: dict[int, dict[int, str]] = {}
            for change in changes:
                try:
                    index, column = int(change["index"]), int(change["column"])
                except (KeyError, TypeError, ValueError):
                    raise UsageError("an edit needs index, column and value") from None
                if not (0 <= index < len(sheet) and 0 <= column < len(sheet.headers)):
                    raise UsageError(f"no cell at row index {index}, column {column}")
                value = change.get("value")
                by_column.setdefault(column, {})[index] = "" if value is None else str(value)
            table = sheet.data
            for column, cells in by_column.items():
                values = table.column(column).to_pylist()
                for index, value in cells.items():
                    values[index] = value
                    self.edited.add((index, column))
                field = table.field(column)
                table = table.set_column(column, field, pa.array(values, type=field.type))
            self.sheet = dataclasses.replace(sheet, data=table)
            self._validate()
            indexes = sorted({i for cells in by_column.values() for i in cells})
            changed = self._grid_rows(np.array(indexes[:200], dtype=np.int64))
            return {"rows": changed, "summary": self.summary()}

    def _list_issues(self) -> list[dict[str, Any]]:
        """The issue list of Review: per code, in the order first met, its count, the rows
        it is on, what it means in the page's words, the first cell with it (to jump to), and
        its fix in bulk (a label, how many cells it fixes)."""
        from sonar_bulk.advice import FLAG

        out: dict[str, dict[str, Any]] = {}
        for index in sorted(self._issue_index):
            for issue in self._issue_index[index]:
                code = issue["code"]
                entry = out.get(code)
                if entry is None:
                    meaning = for_the_page(CODES.get(code, ("", ""))[1].replace("`", ""))
                    entry = out[code] = {
                        "code": code,
                        "severity": issue["severity"],
                        "count": 0,
                        "rows": 0,
                        "meaning": "" if FLAG.search(meaning) else meaning,
                        "example": issue["message"],
                        "header": index < 0,
                        "first": {"index": index, "column": issue["column"]},
                        "fix": fix_label(code),
                        "fixable": 0,
                        "_last": None,
                    }
                entry["count"] += 1
                if issue["severity"] == "error":
                    entry["severity"] = "error"
                if index >= 0 and entry["_last"] != index:
                    entry["rows"] += 1
                    entry["_last"] = index
                if index >= 0 and issue.get("fix") is not None and issue["column"] >= 0:
                    entry["fixable"] += 1
        for entry in out.values():
            del entry["_last"]
        return sorted(out.values(), key=lambda e: (e["severity"] != "error", e["code"]))

    def issue_list(self) -> list[dict[str, Any]]:
        return self._issues

    def fix(self, code: str) -> dict[str, Any]:
        """Apply the suggested fix of ``code`` to every cell with that issue (through the one
        cell-edit path), then validate again: how many cells changed."""
        with self.lock:
            self._not_running()
            if fix_label(code) is None:
                raise UsageError(f"{code}: no fix in bulk for this issue")
            changes = [
                {"index": index, "column": issue["column"], "value": issue["fix"]}
                for index, found in sorted(self._issue_index.items())
                if index >= 0
                for issue in found
                if issue["code"] == code and issue.get("fix") is not None and issue["column"] >= 0
            ]
            if not changes:
                raise UsageError(f"{code}: no cell to fix")
            return {**self._edit(changes), "changed": len(changes)}

    def replace(
        self, column: int, find: str, replacement: str, whole: bool = False
    ) -> dict[str, Any]:
        """Find and replace in one column (text as typed, case-sensitive; with ``whole``, only
        cells that are exactly ``find``), through the one cell-edit path."""
        with self.lock:
            self._not_running()
            sheet = self._sheet()
            if not 0 <= column < len(sheet.headers):
                raise UsageError(f"no column {column}")
            if find == "":
                raise UsageError("find: give the text to look for")
            changes = []
            for index, value in enumerate(sheet.data.column(column).to_pylist()):
                text = value or ""
                new = (
                    (replacement if text == find else text)
                    if whole
                    else text.replace(find, replacement)
                )
                if new != text:
                    changes.append({"index": index, "column": column, "value": new})
            if not changes:
                return {"rows": [], "summary": self.summary(), "changed": 0}
            return {**self._edit(changes), "changed": len(changes)}

    def delete(self, indexes: list[int] | None = None, code: str | None = None) -> dict[str, Any]:
        """Delete rows: those at ``indexes`` (data rows), or every row with an issue ``code``.
        Deleted rows are left out of the fixed sheet, so of the plan, the run and its results
        (every row the run reads still ends in the results with a status); the upload itself
        keeps them."""
        with self.lock:
            self._not_running()
            sheet = self._sheet()
            if code:
                doomed = {
                    i
                    for i, found in self._issue_index.items()
                    if i >= 0 and any(x["code"] == code for x in found)
                }
            else:
                doomed = set()
                for raw in indexes or []:
                    index = int(raw)
                    if not 0 <= index < len(sheet):
                        raise UsageError(f"no row at index {index}")
                    doomed.add(index)
            if not doomed:
                raise UsageError("no row to delete")
            if len(doomed) >= len(sheet):
                raise UsageError("every row would be deleted: upload another sheet instead")
            keep = np.ones(len(sheet), dtype=bool)
            keep[sorted(doomed)] = False
            kept = np.flatnonzero(keep)
            new_index = np.full(len(sheet), -1, dtype=np.int64)
            new_index[kept] = np.arange(kept.size)
            numbers = {int(n) for n in sheet.row_numbers[kept].tolist()}
            self.edited = {(int(new_index[i]), c) for i, c in self.edited if new_index[i] >= 0}
            self.sheet = dataclasses.replace(
                sheet,
                data=sheet.data.filter(pa.array(keep)),
                row_numbers=sheet.row_numbers[kept],
                numeric={c: flags[kept] for c, flags in sheet.numeric.items()},
                hidden=None if sheet.hidden is None else sheet.hidden[kept],
                swallowed=[s for s in sheet.swallowed if s[0] in numbers],
                extra_cells=[e for e in sheet.extra_cells if e[0] in numbers],
            )
            self.deleted += len(doomed)
            self._validate()
            return {"deleted": len(doomed), "rows": len(self.sheet), "summary": self.summary()}

    def write_fixed(self) -> Path:
        """The sheet with the page's edits, beside the upload: ``<stem>.fixed.<ext>`` (the
        download). Not while a run reads it."""
        with self.lock:
            self._not_running()
            return self._write_fixed().path

    def _write_fixed(self) -> Sheet:
        """Write the edited sheet in the input's own format: its encoding, delimiter, BOM and
        line endings, every cell as typed. When an edit holds a character the input's
        encoding can't (a cp1252 sheet given "Łukasz"), the copy is UTF-8 with a BOM instead,
        so no typed character is lost. The sheet, as that file."""
        from sonar_bulk.outputs import CsvFormat, write_table
        from sonar_bulk.report import csv_format
        from sonar_bulk.workbook import typed_for

        sheet = self._sheet()
        ext = ".xlsx" if sheet.format != "csv" else sheet.path.suffix
        path = sheet.path.with_name(f"{sheet.path.stem}.fixed{ext}")
        fmt = csv_format(sheet)
        if fmt is not None and not self._encodable(sheet, fmt.encoding):
            fmt = CsvFormat(fmt.delimiter, "utf-8", True, fmt.newline)
            sheet = dataclasses.replace(sheet, encoding="utf-8", bom=True)
        if sheet.workbook is not None:  # the cells edited here replace the workbook's
            edited = frozenset(self.edited)
            sheet = dataclasses.replace(
                sheet, workbook=dataclasses.replace(sheet.workbook, edited=edited)
            )
        write_table(
            path,
            sheet.header_cells or sheet.headers,
            sheet.iter_rows(),
            sheet.sheet_name or self.kind,
            csv_format=fmt,
            as_typed=True,
            preamble=sheet.preamble,
            hidden=None if sheet.hidden is None else sheet.hidden.tolist(),
            typed=typed_for(sheet, None, range(len(sheet.headers))),
        )
        return dataclasses.replace(sheet, path=path)

    def _encodable(self, sheet: Sheet, encoding: str) -> bool:
        cells = {(i, c) for i, c in self.edited}
        for index, column in cells:
            value = sheet.data.column(column)[index].as_py() or ""
            try:
                value.encode(encoding)
            except UnicodeEncodeError:
                return False
        return True

    def _working_sheet(self) -> Sheet:
        """The sheet a run reads: the upload itself, or its fixed copy once edited."""
        sheet = self._sheet()
        if not self.edited and not self.deleted:
            return sheet
        return self._write_fixed()

    # -- plan and run ----------------------------------------------------------------------------

    def _options(self, **kw: Any) -> Any:
        """The run's BulkOptions from the page's settings. The journal and results are named
        after the upload (not its fixed copy), so a stop, an edit, a re-upload or a crash
        all find the same journal: nobody is sent to twice."""
        import math

        from sonar_bulk.engine.bulk import BulkOptions, parse_quiet_hours

        policy: Literal["hold", "skip"] = "hold"
        if kw.get("quiet_policy") not in (None, "", "hold", "skip"):
            raise UsageError(f"quiet hours policy {kw['quiet_policy']!r}: hold or skip")
        if kw.get("quiet_policy") == "skip":
            policy = "skip"
        rate = kw.get("rate")
        if rate is None or rate == "":
            rate = 10.0
        try:
            rate = float(rate)
        except (TypeError, ValueError):
            raise UsageError(f"requests per second {rate!r}: a number from 0 to 100000") from None
        if not (math.isfinite(rate) and 0 <= rate <= 100_000):
            raise UsageError(f"requests per second {rate:g}: a number from 0 to 100000")
        upload = self._upload_path()
        command = COMMANDS[self.kind]
        short = OPERATIONS[command].short
        return BulkOptions(
            rate=rate,
            skip_invalid=bool(kw.get("skip_invalid")),
            quiet_hours=parse_quiet_hours(kw.get("quiet_hours")),
            quiet_policy=policy,
            force=True,
            # "Send again to people an earlier run texted" (--resend): never an unsubscribed
            # recipient, whatever it says
            resend=bool(kw.get("resend")),
            journal=journal_path_for(upload, command),
            results=None if kw.get("dry_run") else run_file(upload, short, "results"),
            command_line=f"sonar-bulk ui ({COMMANDS[self.kind]})",
            **{k: v for k, v in kw.items() if k in ("dry_run", "diff", "resume", "stop")},
        )

    def _upload_journal_exists(self) -> bool:
        """Whether the last run of this upload ended early (a Stop, a crash: its journal says
        stopped, or running with nobody running it)."""
        from sonar_bulk.engine.journal import Journal

        path = self._upload_path()
        journal_path = journal_path_for(path, COMMANDS[self.kind])
        if not journal_path.exists():
            return False
        try:
            journal = Journal(journal_path)
        except SonarBulkError:
            return False
        try:
            runs = [r for r in journal.runs() if not r.command.endswith("(dry run)")]
        finally:
            journal.close()
        return bool(runs) and runs[-1].state in ("stopped", "running")

    def _upload_path(self) -> Path:
        sheet = self.original or self._sheet()
        return sheet.path

    def start(self, mode: str = "run", **settings: Any) -> dict[str, Any]:
        """Start a dry run (``plan``: with ``diff``, Sonar's current records are read, GET
        only) or a run (the page asked first) in the background; the page follows
        :meth:`progress`, and Stop works for both."""
        from sonar_bulk.engine.bulk import StopSignal

        with self.lock:
            self._not_running()
            self._current()
            run = RunState(COMMANDS[self.kind], StopSignal(), mode=mode)
            collect = settings.pop("collect_events", None)
            public_url = settings.pop("public_url", None) or None
            if mode == "run" and collect:
                run.collect = _minutes(collect)
                run.public_url = public_url
            if mode == "plan":
                options = self._options(dry_run=True, stop=run.stop, **settings)
            else:
                options = self._options(stop=run.stop, **settings)
            planned = run.key = self._plan_key(options)
            if mode == "run":
                # the run confirmed is the one planned: the same sheet, columns and choices
                if self.planned is None:
                    raise UsageError("make the plan first: a run follows its plan")
                if self.planned != planned:
                    raise UsageError(
                        "the sheet or the choices changed since the plan: make the plan again"
                    )
                self.planned = None  # one plan, one run
            self.run = run
            run.thread = threading.Thread(
                target=self._work, args=(run, options), name="sonar-bulk-ui-run", daemon=True
            )
            run.thread.start()
            return self.progress()

    def _work(self, run: RunState, options: BulkOptions) -> None:
        from sonar_bulk.engine.run import run_sheet

        with self.lock:
            v = self._current()
            sheet = self._working_sheet()
        if sheet is not v.sheet:
            v = dataclasses.replace(v, sheet=sheet)
        ui = WebUi(run, self._plan_facts)
        events = None
        if run.mode == "run" and run.collect and run.command in EVENT_COMMANDS:
            from sonar_bulk.events.run import RunEvents

            notice = lambda text: ui.tell(talk.EventsNote(text))  # noqa: E731
            events = RunEvents(run.collect, "127.0.0.1:0", run.public_url, notice, quiet=True)
            run.events = events
        try:
            report = run_sheet(run.command, v, self.connection, options, ui, events)
            if run.mode == "run":
                run.report = report
                self.resumable = bool(report.stopped)
            else:  # a plan's report is its plan, never results
                run.plan = report
                with self.lock:
                    if not report.stopped:
                        self.planned = run.key
            run.state = "done"
        except InvalidRows as exc:  # in the page's words: the grid, the checkbox
            v = exc.validation
            run.error, run.state = (
                f"{v.invalid_rows:,} of {v.rows:,} row{'' if v.rows == 1 else 's'} "
                f"{'has' if v.invalid_rows == 1 else 'have'} errors; nothing was sent. Fix "
                f"{'it' if v.invalid_rows == 1 else 'them'} "
                "in the grid, or tick “Leave out rows with errors”",
                "failed",
            )
        except SonarBulkError as exc:
            run.error, run.state = str(exc), "failed"
        except Exception as exc:  # shown on the page, never a silent thread death
            run.error, run.state = f"internal error: {type(exc).__name__}: {exc}", "failed"

    def _plan_key(self, options: BulkOptions) -> tuple[Any, ...]:
        """What a plan is of, as a run compares it: the sheet as checked (its version), the
        kind, and the choices that change what is sent (as the run's options read them)."""
        o = options
        return (
            self.version,
            self.kind,
            o.resume,
            o.skip_invalid,
            o.rate,
            o.quiet_hours,
            o.quiet_policy,
            o.resend,
        )

    def _plan_facts(self, facts: dict[str, Any]) -> None:
        """The page's own facts of a plan: where it goes, which file."""
        with self.connection() as conn:
            facts["target_kind"] = _target_kind(conn)
        facts["doing"] = KIND_DOING[self.kind]
        facts["file"] = self._upload_path().name
        facts["guarded_rows"] = [page_words(line) for line in facts.get("guarded_rows") or []]

    def stop(self) -> dict[str, Any]:
        with self.lock:
            run = self.run
            if run is None or run.state not in ("running", "stopping"):
                raise UsageError("nothing is running")
            # Stop lets the requests in flight finish; a second Stop (a double click, another
            # tab) must not turn into the command line's second Ctrl-C, which cuts them off
            # and leaves sends that went out unknown
            first = run.state == "running"
            run.state = "stopping"
        if first:
            run.stop.request()
        return self.progress()

    def shutdown(self, wait: bool = False) -> None:
        """The server is stopping: stop a run in progress gracefully (as Ctrl-C does); with
        ``wait``, until its journal and results are written."""
        self.closing = True
        run = self.run
        if run is None or run.state not in ("running", "stopping"):
            return
        if run.state == "running":
            run.state = "stopping"
            run.stop.request()
        if wait and run.thread is not None:
            run.thread.join(timeout=120)

    def progress(self) -> dict[str, Any]:
        run = self.run
        if run is None:
            return {"state": "idle"}
        stats = run.stats
        done = int(getattr(stats, "done", 0) or 0)
        elapsed = max(1e-6, time.monotonic() - run.started)
        rate = done / elapsed
        left = max(0, run.total - done)
        out: dict[str, Any] = {
            "state": run.state,
            "mode": run.mode,
            "command": run.command,
            "done": done,
            "total": run.total,
            "rate": round(rate, 1),
            "eta": round(left / rate, 1) if rate > 0 and left else 0,
            "failed": int(getattr(stats, "failed", 0) or 0),
            "throttled": bool(run.throttled()),
            "messages": run.messages[-5:],
            "error": run.error,
        }
        if run.facts is not None:
            out["facts"] = run.facts
        if run.phase == "events" and run.events is not None:
            out["phase"] = "events"
            out["events_received"] = run.events.counts()[0]
        report = run.report
        if report is not None:
            summary = report.summary
            out.update(
                counts=summary.counts,
                exit_code=report.exit_code,
                stopped=report.stopped,
                results=Path(summary.results).name if summary.results else "",
                failed_file=Path(summary.failed).name if summary.failed else "",
                resumable=bool(report.stopped),
                events=self._events_path(summary.results) is not None,
            )
        return out

    def results(self, offset: int, limit: int, status: str | None = None) -> dict[str, Any]:
        """A window of the finished run's rows: ``columns`` (their names as the page shows
        them: status and reason first, then the sheet's row and cells, then what the results
        file adds) and each row's ``values`` in that order; counts per status."""
        run = self.run
        if run is None or run.report is None:
            raise UsageError("no results yet")
        results = run.report.results
        sheet = run.sheet or self._sheet()
        if not status:
            indexes = np.arange(results.rows)
        elif status in STATUSES:
            indexes = np.flatnonzero(results.bad_mask((status,)))
        else:
            indexes = np.arange(0)
        extras = [name for name in _extra_order(results.extra) if results.extra[name]]
        headers = [
            h if h.strip() else f"(column {_letter(i)})" for i, h in enumerate(sheet.headers)
        ]
        columns = [
            result_label("status"),
            result_label("error"),
            result_label("row"),
            *headers,
            *(result_label(name) for name in ("http_status", "attempts", "finished_at")),
            *(result_label(name) for name in extras),
        ]
        window = indexes[max(0, offset) : max(0, offset) + max(0, min(limit, 1000))]
        rows = []
        for index in window.tolist():
            status_, http, error, attempts, finished = results.row(index)
            error = page_words(error)  # the file keeps the command line's words
            cells = list(sheet.data.slice(index, 1).to_pylist()[0].values())
            number = int(sheet.row_numbers[index])
            extra = {name: results.extra[name].get(index, "") for name in extras}
            rows.append(
                {
                    "index": index,
                    "row": number,
                    "cells": cells,
                    "status": status_,
                    "error": error,
                    "extra": extra,
                    "values": [
                        status_,
                        error,
                        str(number),
                        *(c if c is not None else "" for c in cells),
                        http,
                        attempts,
                        finished,
                        *extra.values(),
                    ],
                }
            )
        return {
            "total": int(indexes.size),
            "columns": columns,
            "rows": rows,
            "counts": results.counts(),
        }

    def plan_rows(self, offset: int, limit: int) -> dict[str, Any]:
        """A window of the last dry run's rows, as planned: ``columns`` (the page's names:
        what the plan does with the row and why, the sheet's row, then for a message its
        final text, SMS segments and encoding, the change Sonar's records show when compared,
        and the fields to be sent, decoded) and each row's ``values`` in that order."""
        run = self.run
        if run is None or run.plan is None:
            raise UsageError("no plan yet: make one first")
        results = run.plan.results
        notes = results.extra
        texts = bool(notes.get("text"))
        changes = bool(notes.get("change"))
        names = ["status", "error", "row"]
        names += ["text", "segments", "encoding"] if texts else []
        names += ["change"] if changes else []
        names.append("request")
        from sonar_bulk.engine.guard import SENT_BEFORE_PREFIX as sent_before

        window = range(max(0, offset), min(results.rows, max(0, offset) + max(0, min(limit, 1000))))
        rows = []
        for index in window:
            status, _http, error, _attempts, _finished = results.row(index)
            if error.startswith(sent_before):
                # the plan says what it will do: nothing, the row went out before (its results
                # keep the earlier status, "queued"; a plan saying "queued" reads as a send)
                status = "sent before"
            note = {name: notes.get(name, {}).get(index, "") for name in names[3:]}
            note["change"] = note.get("change", "").replace(" -> ", " → ")
            note["request"] = _fields(note.get("request", ""), skip={"text"} if texts else set())
            number = str(int(run.plan.sheet.row_numbers[index])) if run.plan.sheet else ""
            rows.append(
                {
                    "index": index,
                    "status": status,
                    "values": [
                        status,
                        page_words(error),
                        number,
                        *(note[n] for n in names[3:]),
                    ],
                }
            )
        return {
            "total": results.rows,
            "columns": [result_label(name, plan=True) for name in names],
            "rows": rows,
            "counts": results.counts(),
            "file": Path(run.plan.summary.results).name if run.plan.summary.results else "",
        }

    def download(self, what: str) -> Path:
        """The path of a download: ``fixed``, ``plan``, ``results``, ``failed`` or ``events``."""
        if what == "fixed":
            return self.write_fixed()
        if what == "plan":
            run = self.run
            written = run.plan.summary.results if run is not None and run.plan else ""
            if not written or not Path(written).is_file():
                raise UsageError("no plan file: make the plan first")
            return Path(written)
        run = self.run
        if run is None or run.report is None:
            raise UsageError("no results yet")
        summary = run.report.summary
        path = {"results": summary.results, "failed": summary.failed}.get(what, "")
        if what == "events":
            found = self._events_path(summary.results)
            path = str(found) if found is not None else ""
        if not path or not Path(path).is_file():
            raise UsageError(f"no {what} file for this run")
        return Path(path)

    @staticmethod
    def _events_path(results: str) -> Path | None:
        """The events sheet beside a results sheet, when events were collected."""
        if not results:
            return None
        candidate = events_paths(Path(results))[0]
        return candidate if candidate.is_file() else None


#: The names the page shows for the columns a results file adds (``sonar__<name>``), and for
#: the sheet's row number: the one place they are kept.
RESULT_LABELS = {
    "status": "Status",
    "error": "Reason",
    "row": "Row",
    "http_status": "HTTP",
    "attempts": "Attempts",
    "finished_at": "Finished at",
    "external_message_id": "Message id",
    "send_at": "Send at",
    "timezone": "Time zone",
    "local_time": "Local time",
    "request": "Request",
    "change": "Change",
    "text": "Text sent",
    "segments": "SMS segments",
    "encoding": "Encoding",
    "settled_by": "Settled by",
    "outbound_confirmed": "Delivery confirmed",
    "replied": "Replied",
    "reply_text": "Reply",
    "unsubscribed_after_send": "Unsubscribed after send",
    "events": "Events",
    "customer_created": "Customer created",
    "subscription": "Subscription",
    "phone_from": "Phone from",
}


#: Where a plan's table names a column otherwise: nothing is sent yet.
PLAN_LABELS = {
    "status": "Plan",
    "text": "Message text",
    "request": "Fields to send",
}


def result_label(name: str, plan: bool = False) -> str:
    """The page's name of a results column (``sonar__status`` or ``status``: "Status"), or
    with ``plan`` of a dry run's plan ("Plan")."""
    key = name.removeprefix("sonar__")
    named = (PLAN_LABELS.get(key) if plan else None) or RESULT_LABELS.get(key)
    return named or key.replace("_", " ").strip().capitalize() or name


def _fields(request: str, skip: set[str]) -> str:
    """A plan's request (``POST /customers {"phone_number": ...}``) as the fields it sends,
    decoded: ``phone_number: +1310...; properties[plan]: gold``."""
    from sonar_bulk.api.client import form_pairs

    _, brace, body = request.partition("{")
    if not brace:
        return ""
    try:
        params = json.loads(brace + body)
    except ValueError:
        return request
    if not isinstance(params, dict):
        return request
    return "; ".join(f"{k}: {v}" for k, v in form_pairs(params) if k not in skip)


def _extra_order(extra: dict[str, Any]) -> list[str]:
    """The extra results columns in the results file's order (the others after, by name)."""
    from sonar_bulk.schema import RESULT_COLUMNS

    known = [c.removeprefix("sonar__") for c in RESULT_COLUMNS]
    return [n for n in known if n in extra] + sorted(n for n in extra if n not in known)


#: The commands events can be joined to (--collect-events).
EVENT_COMMANDS = ("messages send", "campaigns send", "customers upsert")


def _minutes(value: Any) -> float:
    """Minutes from the page (0 to a day) as seconds."""
    import math

    try:
        minutes = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"events for {value!r} minutes: a number from 0 to 1440") from None
    if not (math.isfinite(minutes) and 0 <= minutes <= 1440):
        raise UsageError(f"events for {value!r} minutes: a number from 0 to 1440")
    return minutes * 60


def _target_kind(conn: Connection) -> str:
    from sonar_bulk.api.endpoints import LIVE_BASE_URL, SANDBOX_BASE_URL

    if conn.emulated:
        return "emulated"
    if conn.base_url.rstrip("/") == SANDBOX_BASE_URL:
        return "sandbox"
    if conn.base_url.rstrip("/") == LIVE_BASE_URL:
        return "live"
    return "custom"


def _letter(index: int) -> str:
    from sonar_bulk.issues import column_letter

    return column_letter(index)


def _samples(sheet: Sheet, index: int) -> list[str]:
    """The first :data:`SAMPLES` values of a column that are not blank."""
    import pyarrow.compute as pc

    column = sheet.data.column(index)
    filled = pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(column)), 0)
    mask = np.asarray(pc.fill_null(filled, False).to_numpy(zero_copy_only=False), dtype=bool)
    picked = np.flatnonzero(mask)[:SAMPLES]
    return [str(v) for v in column.take(pa.array(picked, pa.int64())).to_pylist()]


def _sheet_names(sheet: Sheet) -> list[str]:
    if sheet.format == "csv":
        return []
    try:
        from python_calamine import CalamineWorkbook

        return list(CalamineWorkbook.from_path(str(sheet.path)).sheet_names)
    except Exception:
        return [sheet.sheet_name] if sheet.sheet_name else []
