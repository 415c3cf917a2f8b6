"""The events side of one bulk run (``--collect-events``, and the web page's "collect events
after the run"): checked before anything is sent, a collector started before the first
request, then after the run a wait, the join into the results, and the events sheet.

No terminal here: ``notice`` is told what a person should know, and the caller says how to
wait (the CLI's clock and Ctrl-C, the page's Stop)."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sonar_bulk.errors import ExitCode
from sonar_bulk.events.collect import (
    CollectOptions,
    Collector,
    check_public_url,
    parse_listen,
)
from sonar_bulk.events.times import iso_local, span


class RunEvents:
    """Checked before, started before sending, joined after."""

    def __init__(
        self,
        after: float,
        listen: str,
        public_url: str | None,
        notice: Callable[[str], None] = lambda text: None,
        *,
        early: bool = False,
        quiet: bool = False,
    ) -> None:
        self.after = after
        #: Say nothing of starting to collect.
        self.quiet = quiet
        #: End the wait after the run as soon as it can settle nothing more (the window
        #: --emulate opens by itself); a window asked for is waited out.
        self.early = early
        #: The unknown sends the events settled (set by :meth:`finish`).
        self.settled: list[Any] = []
        self.listen = parse_listen(listen)
        self.public_url = check_public_url(public_url) if public_url is not None else None
        self.notice = notice
        self.collector: Collector | None = None
        self.sheet = self.store = Path()

    def bind(self, results_path: Path) -> None:
        """The events sheet and store go beside the results: ``<stem>.<op>.events.<ext>`` and
        ``<stem>.<op>.events.sqlite`` (:func:`sonar_bulk.run_files.events_paths`)."""
        from sonar_bulk.run_files import events_paths

        self.sheet, self.store = events_paths(results_path)

    def check(self, force: bool) -> Path | None:
        """Make ready for this run's events sheet. An earlier run's sheet (sonar-bulk's, as
        it wrote it) is removed, as it would pass for this run's if this one ends early; one
        edited since, or not sonar-bulk's, is kept, and this run writes the next free name
        instead: the name kept is returned (None when nothing was)."""
        from sonar_bulk.events.export import check_export_path
        from sonar_bulk.owned import Written
        from sonar_bulk.run_files import free_name

        kept: Path | None = None
        if not force:
            chosen = free_name(self.sheet, Written().ours)
            if chosen != self.sheet:
                kept, self.sheet = self.sheet, chosen
        check_export_path(self.sheet, force, "events sheet")
        self.sheet.unlink(missing_ok=True)
        return kept

    def start(self, conn: Any, quiet: bool | None = None) -> None:
        quiet = self.quiet if quiet is None else quiet
        options = CollectOptions(self.store, listen=self.listen, public_url=self.public_url)
        self.collector = Collector(conn, options, notice=self.notice)
        self.collector.start()
        if not quiet:
            self.notice(
                f"collecting events at {self.collector.public_url}/… (webhook "
                f"{self.collector.hook_id}) during the run and {'up to ' if self.early else ''}"
                f"{span(self.after)} after it"
            )

    def counts(self) -> tuple[int, int]:
        return self.collector.counts() if self.collector is not None else (0, 0)

    def stop(self) -> None:
        if self.collector is not None:
            self.collector.stop()

    def nothing_to_wait_for(self, prepared: Any, report: Any) -> bool:
        """Whether waiting longer can settle no more unknown sends: none is left unsettled by
        the events stored so far, or (the emulator) every delivery has been made."""
        import numpy as np

        from sonar_bulk.events import settle
        from sonar_bulk.events.store import EventStore

        results = report.results
        indices = np.flatnonzero(results.bad_mask(("unknown",))).tolist()
        if not indices or not prepared.operation.sends:
            return True
        since = report.summary.started
        ids = dict(results.extra.get("external_message_id", {}))
        rows = settle.unknown_rows(prepared.validation, indices, ids, since)
        store = EventStore(self.store, create=False)
        try:
            found = settle.match(rows, settle.outbound_events(store, since))
        finally:
            store.close()
        return len(found) == len(rows) or self._delivered()

    def _delivered(self) -> bool:
        """The emulator has no delivery pending for this run's webhook (nothing more will
        come); False for the real Sonar, or when that can't be told."""
        collector = self.collector
        if collector is None or not collector.conn.emulated or collector.hook_id is None:
            return False
        import httpx

        admin = collector.conn.base_url.split("/api/", 1)[0] + "/__emulator__/queue"
        try:
            with httpx.Client(trust_env=False, timeout=5) as client:
                hooks = client.get(admin).raise_for_status().json().get("webhooks", [])
        except (httpx.HTTPError, ValueError, AttributeError):
            return False
        # no counters for the webhook: nothing was ever queued for it
        mine = [h for h in hooks if str(h.get("webhook_id")) == collector.hook_id]
        return not any(h.get("pending") or h.get("waiting_retry") for h in mine)

    def finish(self, prepared: Any, report: Any, wait: Callable[[], object] | None) -> int:
        """After the run: ``wait`` (not after an interrupted run), stop collecting, join the
        events into the results, settle the unknown sends the events prove sent (the journal
        learns them too), write the results again and the events sheet; how many events the
        window had."""
        from sonar_bulk.engine.bulk import write_outputs
        from sonar_bulk.events.export import write_export
        from sonar_bulk.events.join import join_events
        from sonar_bulk.events.settle import settle_run
        from sonar_bulk.events.store import EventStore, Filter

        collector = self.collector
        assert collector is not None
        if report.exit_code != ExitCode.ABORTED and wait is not None:
            wait()
        since = collector.started_at
        try:
            collector.stop()
            v = prepared.validation
            column = prepared.operation.phone_column
            phones = [p or "" for p in v.normalized[column].to_pylist()] if column else []
            store = EventStore(self.store, create=False)
            try:
                command = prepared.operation.command
                names = join_events(store, command, phones, report.results, since)
                report.extra_columns += [n for n in names if n not in report.extra_columns]
                _note_unsubscribes(prepared, report, phones)
                until = collector.clock()
                self.settled = settle_run(store, prepared, report, until, self.notice)
                write_outputs(prepared, report)
                count = write_export(store, self.sheet, Filter(since=since))
                from sonar_bulk.owned import Written

                Written().note(self.sheet)  # ours to replace next run, while nobody edits it
            finally:
                store.close()
        except KeyboardInterrupt:
            self.notice(
                f"events were not joined to {report.summary.results} (interrupted); they are "
                "stored: sonar-bulk webhooks export --store "
                f"{shlex.quote(str(self.store))} --since {iso_local(since)} -o events.xlsx"
            )
            raise
        return count


def _note_unsubscribes(prepared: Any, report: Any, phones: list[str]) -> None:
    """Recipients of a send who unsubscribed in the window (a STOP reply, Sonar's
    ``customer_unsubscribed`` event), into the send ledger: no later run texts them."""
    from sonar_bulk.engine.guard import record_unsubscribed

    if not prepared.operation.sends or not prepared.options.ledger:
        return
    notes = report.results.extra
    replied, after = notes.get("replied", {}), notes.get("unsubscribed_after_send", {})
    gone: dict[str, str] = {}
    for index, phone in enumerate(phones):
        if phone and replied.get(index) == "stop":
            gone[phone] = "replied STOP"
        elif phone and after.get(index) == "yes":
            gone[phone] = "unsubscribed after a send (Sonar's customer_unsubscribed event)"
    if not gone:
        return
    try:
        record_unsubscribed(prepared, prepared.ledger(), gone)
    finally:
        prepared.close()
