"""``webhooks``: collect Sonar's webhook events over a window into a durable store, export them
as a sheet, and manage webhooks by hand (list, create, update, delete).

Also what the bulk commands' ``--collect-events`` shares: the options and the window wait."""

from __future__ import annotations

import contextlib
import json
import logging
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sonar_bulk.cli.api import api_connection, connection_options
from sonar_bulk.cli.common import EXIT_OK, cli, guard, json_option, print_json, stdout
from sonar_bulk.errors import UsageError
from sonar_bulk.events.times import iso_local, span

if TYPE_CHECKING:
    from sonar_bulk.events.run import RunEvents

#: How often a waiting collector says how many events it has.
PROGRESS_EVERY = 5.0


def default_store() -> Path:
    from sonar_bulk.connection import data_dir

    return data_dir() / "events.sqlite"


def _clock_text(ts: float) -> str:
    """``18:30:00`` today, ``2026-11-29 18:30:00`` another day (local time)."""
    today = time.strftime("%Y-%m-%d", time.localtime())
    day = time.strftime("%Y-%m-%d", time.localtime(ts))
    return time.strftime("%H:%M:%S" if day == today else "%Y-%m-%d %H:%M:%S", time.localtime(ts))


@contextlib.contextmanager
def _receiver_log(quiet: bool) -> Iterator[None]:
    """Show the receiver's warnings (a rejected delivery, a store error) on stderr."""
    logger = logging.getLogger("sonar_bulk.receiver")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("sonar-bulk: receiver: %(message)s"))
    if not quiet:
        logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)


def wait_window(
    until: float,
    progress: Callable[[], str] | None,
    clock: Callable[[], float] = time.time,
    done: Callable[[], bool] | None = None,
) -> bool:
    """Wait until ``until`` (epoch seconds), telling ``progress()`` every few seconds;
    Ctrl-C or SIGTERM end the wait early, and so does ``done()`` (asked at once, then a few
    times a second) turning true. True when it ran to its end (or ``done``)."""
    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        next_tick = clock() + PROGRESS_EVERY
        while not stop.is_set():
            now = clock()
            if now >= until or (done is not None and done()):
                return True
            if progress is not None and now >= next_tick:
                click.echo(progress(), err=True)
                next_tick = now + PROGRESS_EVERY
            stop.wait(min(0.5 if done is None else 0.05, until - now))
        return False
    except KeyboardInterrupt:
        return False
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def collect_window_options(func: Any) -> Any:
    """--listen and --public-url: where the receiver listens, and the URL Sonar is given."""
    from sonar_bulk.events.collect import DEFAULT_LISTEN

    for option in reversed(
        [
            click.option(
                "--public-url",
                metavar="URL",
                help="The address Sonar delivers to (a tunnel or this server's own URL); "
                "default: the --listen address.",
            ),
            click.option(
                "--listen",
                default=DEFAULT_LISTEN,
                show_default=True,
                metavar="HOST:PORT",
                help="Where the receiver listens (port 0: a free one).",
            ),
        ]
    ):
        func = option(func)
    return func


@cli.group("webhooks")
def webhooks() -> None:
    """Collect Sonar's webhook events into a sheet, and manage webhooks.

    \b
    Example:
      sonar-bulk --emulate webhooks collect --for 2m -o events.xlsx
    """


@webhooks.command("collect")
@click.option(
    "--events",
    "events_text",
    default="all",
    show_default=True,
    metavar="LIST|all",
    help="Events to collect, comma-separated (outbound_message,customer_unsubscribed...).",
)
@click.option("--for", "duration", metavar="DURATION", help="How long: 90s, 15m, 2h, 1h30m.")
@click.option(
    "--until", "until_text", metavar="TIME", help="Or until when: 2026-11-28T18:00, +30m."
)
@collect_window_options
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="Export the window's events here at the end (.csv or .xlsx).",
)
@click.option(
    "--store",
    type=click.Path(path_type=Path),
    help="The event store (SQLite). Default: events.sqlite in the user data folder.",
)
@click.option("--force", is_flag=True, help="Replace -o even when sonar-bulk did not write it.")
@connection_options
@json_option
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
@click.pass_context
def collect_cmd(
    ctx: click.Context,
    /,
    events_text: str,
    duration: str | None,
    until_text: str | None,
    public_url: str | None,
    listen: str,
    output: Path | None,
    store: Path | None,
    force: bool,
    as_json: bool,
    quiet: bool,
    **conn_kw: Any,
) -> None:
    """Collect webhook events for a while, then export them.

    Starts a receiver on --listen, registers one webhook for the chosen --events pointing at
    --public-url plus a long secret path, collects until the window ends or Ctrl-C, deletes
    the webhook, and writes -o. Every event is stored (deduplicated on its uuid) before Sonar
    gets its 2xx. A webhook an earlier crashed run left behind is deleted at the next start.

    \b
    Example:
      sonar-bulk webhooks collect --for 15m --public-url https://my-tunnel.example -o events.xlsx
      sonar-bulk --emulate webhooks collect --for 2m --listen 127.0.0.1:0 -o events.csv
    """

    def run() -> int:
        from sonar_bulk.events.collect import (
            CollectOptions,
            Collector,
            describe,
            parse_events,
            parse_listen,
        )
        from sonar_bulk.events.export import check_export_path
        from sonar_bulk.events.times import parse_duration, parse_time

        now = time.time()
        if duration is not None and until_text is not None:
            raise UsageError("give --for or --until, not both")
        if duration is not None:
            until = now + parse_duration(duration, "--for")
            if until <= now:
                raise UsageError(f"--for {duration}: must be more than 0")
        elif until_text is not None:
            until = parse_time(until_text, now, "--until")
            if until <= now and ":" in until_text and len(until_text.strip()) <= 8:
                until += 86400  # a time of day that has passed today: tomorrow's
            if until <= now:
                raise UsageError(f"--until {until_text}: that time has passed")
        else:
            raise UsageError("say how long to collect: --for DURATION or --until TIME")
        options = CollectOptions(
            store=store or default_store(),
            events=parse_events(events_text),
            listen=parse_listen(listen),
            public_url=public_url,
        )
        options.store.parent.mkdir(parents=True, exist_ok=True)
        out = check_export_path(output, force) if output is not None else None
        with _receiver_log(quiet), api_connection(ctx, **conn_kw) as conn:
            collector = Collector(conn, options, notice=lambda t: click.echo(t, err=True))
            collector.start()
            try:
                window = until - collector.started_at
                click.echo(
                    f"collecting {describe(options.events)} at {collector.public_url}/… "
                    f"(webhook {collector.hook_id}) for {span(window)}, until "
                    f"{_clock_text(until)}; Ctrl-C stops early",
                    err=True,
                )
                if conn.emulated:
                    base = conn.base_url.split("/api/", 1)[0]
                    click.echo(
                        "the emulator delivers here; make events with its admin API, e.g. "
                        "curl -H 'Content-Type: application/json' "
                        f'-d \'{{"phone_number":"+13105550101","text":"STOP"}}\' '
                        f"{base}/__emulator__/inbound",
                        err=True,
                    )
                wait_window(until, None if quiet else lambda: _progress(collector))
            except KeyboardInterrupt:
                pass  # Ctrl-C as the window began: the same early end as during it
            finally:
                collector.stop()
        summary = _finish(options.store, collector.started_at, out)
        if as_json:
            doc = {"command": "webhooks collect", "webhook": collector.hook_id, **summary}
            print_json({**doc, "exit_code": EXIT_OK})
        return EXIT_OK

    sys.exit(guard(run, as_json))


def plural(n: int, word: str) -> str:
    """``1 event``, ``2 events`` (normalize's, without importing Arrow at start-up)."""
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _deliveries(n: int) -> str:
    return f"{n:,} {'delivery' if n == 1 else 'deliveries'}"


def _progress(collector: Any) -> str:
    return received_text(*collector.counts())


def received_text(events: int, deliveries: int) -> str:
    """``received 3 events (1 delivery repeated)``."""
    repeats = deliveries - events
    return f"received {plural(events, 'event')}" + (
        f" ({_deliveries(repeats)} repeated)" if repeats else ""
    )


def _finish(store_path: Path, since: float, out: Path | None) -> dict[str, Any]:
    """Tell what the window collected, and export it to ``out``; the facts for --json."""
    from sonar_bulk.events.export import write_export
    from sonar_bulk.events.store import EventStore, Filter

    store = EventStore(store_path, create=False)
    try:
        where = Filter(since=since)
        events, deliveries = store.counts(where)
        click.echo(
            f"collected {plural(events, 'event')} ({_deliveries(deliveries)}) since "
            f"{_clock_text(since)}; store: {store_path}",
            err=True,
        )
        if out is not None:
            write_export(store, out, where)
            click.echo(f"wrote {out} ({plural(events, 'event')})", err=True)
        else:
            click.echo(
                "export them with: sonar-bulk webhooks export --store "
                f"{shlex.quote(str(store_path))} --since {iso_local(since)} -o events.xlsx",
                err=True,
            )
    finally:
        store.close()
    return {
        "store": str(store_path),
        "output": None if out is None else str(out),
        "since": iso_local(since),
        "events": events,
        "deliveries": deliveries,
    }


@webhooks.command("export")
@click.option("--since", metavar="TIME", help="Received at or after: ISO 8601, or -2h, -30m.")
@click.option("--until", "until_text", metavar="TIME", help="Received before: ISO 8601 or -1h.")
@click.option("--events", "events_text", metavar="LIST", help="Only these events, comma-separated.")
@click.option(
    "--store",
    type=click.Path(path_type=Path),
    help="The event store. Default: events.sqlite in the user data folder.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    required=True,
    help="The sheet to write (.csv or .xlsx: an All sheet plus one per event).",
)
@click.option("--force", is_flag=True, help="Replace -o even when sonar-bulk did not write it.")
@json_option
def export_cmd(
    since: str | None,
    until_text: str | None,
    events_text: str | None,
    store: Path | None,
    output: Path,
    force: bool,
    as_json: bool,
) -> None:
    """Export stored events: one row per event, oldest first.

    \b
    Example:
      sonar-bulk webhooks export --since -2h -o events.xlsx
      sonar-bulk webhooks export --events customer_unsubscribed --since 2026-11-01 -o unsubs.csv
    """

    def run() -> int:
        from sonar_bulk.events.export import check_export_path, write_export
        from sonar_bulk.events.store import EventStore, Filter
        from sonar_bulk.events.times import parse_time

        now = time.time()
        start = parse_time(since, now, "--since") if since else None
        end = parse_time(until_text, now, "--until") if until_text else None
        if start is not None and end is not None and start >= end:
            raise UsageError(f"--since {since} is not before --until {until_text}")
        out = check_export_path(output, force)
        store_path = store or default_store()
        event_store = EventStore(store_path, create=False)
        try:
            events = _event_filter(events_text, event_store.event_types())
            count = write_export(event_store, out, Filter(start, end, events))
        finally:
            event_store.close()
        click.echo(f"wrote {out} ({plural(count, 'event')})", err=True)
        if as_json:
            print_json(
                {
                    "command": "webhooks export",
                    "store": str(store_path),
                    "output": str(out),
                    "since": None if start is None else iso_local(start),
                    "until": None if end is None else iso_local(end),
                    "events": count,
                    "exit_code": EXIT_OK,
                }
            )
        return EXIT_OK

    sys.exit(guard(run, as_json))


def _event_filter(text: str | None, known: list[str]) -> tuple[str, ...]:
    """Events named for an export: ``all`` (or none) is every one; each other name is one of
    Sonar's events or an action the store holds (a payload's own), any case."""
    from sonar_bulk.api.endpoints import WEBHOOK_EVENTS
    from sonar_bulk.events.collect import parse_events

    if text is None:
        return ()
    names = [n.strip() for n in text.split(",") if n.strip()]
    if any(n.lower() == "all" for n in names):
        return ()
    stored = {k.lower(): k for k in known}
    chosen = []
    for name in names or [""]:
        if name.lower() in stored:
            chosen.append(stored[name.lower()])
        elif name.lower() in WEBHOOK_EVENTS:
            chosen.append(name.lower())
        else:
            parse_events(name)  # the same error as collect's, with a suggestion
            raise UsageError(f"--events: unknown event {name!r}")
    return tuple(chosen)


# -- managing webhooks by hand ------------------------------------------------------------------


def _print_json(value: Any) -> None:
    with stdout() as out:
        out.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def _settings(events_text: str) -> dict[str, str]:
    from sonar_bulk.events.collect import parse_events

    return {event: "true" for event in parse_events(events_text)}


def _hook_id(text: str) -> str:
    if not text.strip().isdigit():
        raise UsageError(f"webhook id {text!r}: a webhook id is a number (see webhooks list)")
    return text.strip()


def _admin(
    ctx: click.Context, conn_kw: dict[str, Any], method: str, *args: Callable[[], Any]
) -> None:
    """One webhook call; its answer printed as JSON with collectors' secret paths hidden.
    ``args`` are made inside the guard, so a bad one is a one-line usage error."""

    def run() -> int:
        from sonar_bulk.events.collect import call, mask_webhooks

        values = [make() for make in args]
        with api_connection(ctx, **conn_kw) as conn:
            body = call(conn, method, *values)
        _print_json(mask_webhooks(body))
        return EXIT_OK

    sys.exit(guard(run, False))


METHODS = ("POST", "PUT", "PATCH", "GET", "DELETE")


@webhooks.command("list")
@connection_options
@click.pass_context
def list_cmd(ctx: click.Context, /, **conn_kw: Any) -> None:
    """Print the account's webhooks as JSON (a collector's secret path hidden).

    \b
    Example:
      sonar-bulk --emulate webhooks list
    """
    _admin(ctx, conn_kw, "list_webhooks")


@webhooks.command("create")
@click.option("--url", required=True, metavar="URL", help="Where Sonar delivers.")
@click.option(
    "--events",
    "events_text",
    default="all",
    show_default=True,
    metavar="LIST|all",
    help="The events it sends, comma-separated.",
)
@click.option(
    "--name",
    default="sonar-bulk webhook",
    show_default=True,
    metavar="NAME",
    help="Its name in Sonar.",
)
@click.option(
    "--method",
    type=click.Choice(METHODS, case_sensitive=False),
    default="POST",
    show_default=True,
    help="The HTTP method of each delivery.",
)
@click.option("--inactive", is_flag=True, help="Create it switched off.")
@connection_options
@click.pass_context
def create_cmd(
    ctx: click.Context,
    /,
    url: str,
    events_text: str,
    name: str,
    method: str,
    inactive: bool,
    **conn_kw: Any,
) -> None:
    """Register a webhook and print it (the JSON Sonar answers).

    \b
    Example:
      sonar-bulk webhooks create --url https://hooks.example.com/sonar --events outbound_message
    """

    def body() -> dict[str, Any]:
        return {
            "name": name,
            "active": "false" if inactive else "true",
            "settings": _settings(events_text),
            "url": url,
            "http_method": method.upper(),
        }

    _admin(ctx, conn_kw, "create_webhook", body)


@webhooks.command("update")
@click.argument("webhook_id", metavar="ID")
@click.option("--url", metavar="URL", help="Where Sonar delivers.")
@click.option(
    "--events",
    "events_text",
    metavar="LIST|all",
    help="The events it sends, comma-separated; replaces the whole list.",
)
@click.option("--name", metavar="NAME", help="Its name in Sonar.")
@click.option(
    "--method",
    type=click.Choice(METHODS, case_sensitive=False),
    help="The HTTP method of each delivery.",
)
@click.option("--active/--inactive", default=None, help="Switch it on or off.")
@connection_options
@click.pass_context
def update_cmd(
    ctx: click.Context,
    /,
    webhook_id: str,
    url: str | None,
    events_text: str | None,
    name: str | None,
    method: str | None,
    active: bool | None,
    **conn_kw: Any,
) -> None:
    """Change a webhook (only what is given) and print it (the JSON Sonar answers).

    \b
    Example:
      sonar-bulk webhooks update 12 --events outbound_message,customer_unsubscribed
    """

    def body() -> dict[str, Any]:
        changes: dict[str, Any] = {}
        if url is not None:
            changes["url"] = url
        if events_text is not None:
            changes["settings"] = _settings(events_text)
        if name is not None:
            changes["name"] = name
        if method is not None:
            changes["http_method"] = method.upper()
        if active is not None:
            changes["active"] = "true" if active else "false"
        if not changes:
            raise UsageError(
                "nothing to change: give --url, --events, --name, --method or --active"
            )
        return changes

    _admin(ctx, conn_kw, "update_webhook", lambda: _hook_id(webhook_id), body)


@webhooks.command("delete")
@click.argument("webhook_id", metavar="ID")
@connection_options
@click.pass_context
def delete_cmd(ctx: click.Context, /, webhook_id: str, **conn_kw: Any) -> None:
    """Delete a webhook and print it (the JSON Sonar answers).

    \b
    Example:
      sonar-bulk webhooks delete 12
    """
    _admin(ctx, conn_kw, "delete_webhook", lambda: _hook_id(webhook_id))


# -- --collect-events on bulk runs -------------------------------------------------------------


def collect_events_options(func: Any) -> Any:
    """--collect-events DURATION, with the receiver's --listen and --public-url."""
    func = collect_window_options(func)
    return click.option(
        "--collect-events",
        "collect_events",
        metavar="DURATION|off",
        help="Collect Sonar's webhook events during the run and for DURATION after it (90s, "
        "15m; 0: during the run only), add per-row event columns to the results, settle "
        "unknown sends Sonar reports as sent, and write <stem>.<op>.events.<ext> beside them. "
        f"With --emulate a send collects for up to {span(EMULATE_WINDOW)} by itself; off: "
        "not at all.",
    )(func)


#: The window after an emulated send when --collect-events is not given: it ends as soon as
#: no unknown send is left to settle (at once when there is none).
EMULATE_WINDOW = 3.0
#: --collect-events values that turn collecting off.
OFF = ("off", "no", "none")


def run_events(
    after_text: str, listen: str, public_url: str | None, ui: Any, *, early: bool = False
) -> RunEvents:
    """The events side of a bulk run, telling ``ui`` (see sonar_bulk.events.run)."""
    from sonar_bulk.engine.talk import EventsNote
    from sonar_bulk.events.run import RunEvents
    from sonar_bulk.events.times import parse_duration

    after = parse_duration(after_text, "--collect-events")
    return RunEvents(
        after,
        listen,
        public_url,
        notice=lambda text: ui.tell(EventsNote(text)),
        early=early,
        quiet=ui.quiet,
    )
