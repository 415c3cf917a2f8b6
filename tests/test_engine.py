"""The engine's parts on their own: the rate limiter on a virtual clock, the AIMD controller,
what each answer means, the client's protocol corners, the journal, and the pure helpers."""

from __future__ import annotations

import asyncio
import datetime as dt
import selectors
import sqlite3
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sonar_bulk.api.client import SonarClient, form_body, form_pairs, parse_retry_after
from sonar_bulk.api.endpoints import ENDPOINTS, Errors, action_for, endpoint
from sonar_bulk.engine.bulk import command_line, describe_change
from sonar_bulk.engine.journal import Journal, row_key
from sonar_bulk.engine.limiter import DECREASE, FLOOR, Limiter, RateController
from sonar_bulk.engine.quiet import _window_end
from sonar_bulk.errors import (
    ExitCode,
    FatalApiError,
    OutcomeUnknown,
    Retryable,
    RowFailed,
    Unreachable,
    UsageError,
)
from sonar_bulk.plan import OPERATIONS, Call
from sonar_bulk.results import results_paths

from .emulator_helpers import FakeClock

# -- a loop whose clock only moves when every task waits --------------------------------------


class _VirtualSelector(selectors.DefaultSelector):
    """Never blocks: a wait for ``timeout`` seconds moves the loop's virtual clock instead.
    Every turn of the loop also costs a microsecond, as real turns do: a timer due "now" (a
    float rounding) is then reached instead of polled forever."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        super().__init__()
        self.virtual_loop = loop

    def select(self, timeout: float | None = None) -> list[Any]:
        ready = super().select(0)
        if not ready:
            self.virtual_loop.now += max(timeout or 0.0, 1e-6)
        return ready


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on virtual time: aiolimiter (which reads ``loop.time()``) and
    ``asyncio.sleep`` both run in no real time, whatever the machine's load."""

    def __init__(self) -> None:
        self.now = 1000.0
        super().__init__(_VirtualSelector(self))

    def time(self) -> float:
        return self.now


def run_virtual(main: Callable[[VirtualTimeLoop], Coroutine[Any, Any, Any]]) -> Any:
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(main(loop))
    finally:
        loop.close()


def max_in_window(stamps: list[float], window: float = 1.0) -> int:
    """The most stamps in any half-open window of ``window`` seconds."""
    stamps = sorted(stamps)
    best, lo = 0, 0
    for hi, t in enumerate(stamps):
        while t - stamps[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


# -- the limiter -----------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [1.0, 7.0, 50.0, 333.0])
def test_the_limiter_never_exceeds_the_rate_plus_one_in_any_second(rate: float) -> None:
    async def main(loop: VirtualTimeLoop) -> list[float]:
        limiter = Limiter(RateController(rate, clock=loop.time))
        stamps: list[float] = []

        async def worker() -> None:
            for _ in range(int(rate * 3) // 8 + 1):
                await limiter.acquire()
                stamps.append(loop.time())

        await asyncio.gather(*(worker() for _ in range(8)))
        return stamps

    stamps = run_virtual(main)
    assert max_in_window(stamps) <= rate + 1
    # and it is not slower than asked: the whole batch takes about n / rate seconds
    span = max(stamps) - min(stamps)
    assert span <= len(stamps) / rate + 0.1


def test_a_stop_ends_a_long_wait_for_a_slot_at_once() -> None:
    """At 0.005 requests a second the next slot is 200 s away: Stop must not wait for it."""

    async def main(loop: VirtualTimeLoop) -> tuple[bool, bool, float]:
        limiter = Limiter(RateController(0.005, clock=loop.time))
        stop = asyncio.Event()
        first = await limiter.acquire(stop)
        start = loop.time()
        loop.call_later(5.0, stop.set)
        second = await limiter.acquire(stop)
        return first, second, loop.time() - start

    first, second, waited = run_virtual(main)
    assert first is True and second is False
    assert waited == pytest.approx(5.0)


def test_no_rate_means_no_wait() -> None:
    async def main(loop: VirtualTimeLoop) -> float:
        limiter = Limiter(RateController(0, clock=loop.time))
        start = loop.time()
        for _ in range(1000):
            await limiter.acquire()
        return loop.time() - start

    assert run_virtual(main) == 0


def test_a_throttle_pauses_every_request_for_retry_after_and_lowers_the_rate() -> None:
    async def main(loop: VirtualTimeLoop) -> tuple[list[float], float]:
        controller = RateController(20, clock=loop.time)
        limiter = Limiter(controller)
        for _ in range(40):
            await limiter.acquire()  # two seconds at 20 a second
        t0 = loop.time()
        controller.throttle(3.0)
        stamps = []
        for _ in range(5):
            await limiter.acquire()
            stamps.append(loop.time() - t0)
        return stamps, controller.rate

    stamps, rate = run_virtual(main)
    assert stamps[0] >= 3.0  # nobody goes before Retry-After has passed
    assert rate == pytest.approx(16.0)  # 80 % of the 20 a second reached
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert min(gaps) >= 1 / rate - 1e-9  # then at the lowered rate


def test_late_wake_ups_are_made_up_so_the_rate_is_the_rate() -> None:
    """Each sleep wakes a millisecond late (as libuv's timers do): the slots, fixed in
    advance, absorb it instead of adding it up."""

    async def main(loop: VirtualTimeLoop) -> float:
        async def late_sleep(seconds: float) -> None:
            await asyncio.sleep(seconds + 0.001)

        limiter = Limiter(RateController(100, clock=loop.time), sleep=late_sleep)
        start = loop.time()
        for _ in range(500):
            await limiter.acquire()
        return 500 / (loop.time() - start)

    assert run_virtual(main) >= 99


def test_late_wake_ups_never_bunch_past_the_rate_plus_one() -> None:
    """Wake-ups late by 0 to 30 ms, unevenly: two slots may fall close together, and the
    guard keeps every one-second window at the rate plus one."""

    async def main(loop: VirtualTimeLoop) -> list[float]:
        lateness = [0.0, 0.03, 0.0, 0.0, 0.025, 0.001]
        calls = 0

        async def jittery_sleep(seconds: float) -> None:
            nonlocal calls
            calls += 1
            await asyncio.sleep(seconds + lateness[calls % len(lateness)])

        limiter = Limiter(RateController(50, clock=loop.time), sleep=jittery_sleep)
        stamps = []
        for _ in range(400):
            await limiter.acquire()
            stamps.append(loop.time())
        return stamps

    stamps = run_virtual(main)
    assert max_in_window(stamps) <= 51
    assert len(stamps) / (stamps[-1] - stamps[0]) >= 44  # late sleeps cost a little


def _reach(c: RateController, clock: FakeClock, per_second: float, seconds: float) -> None:
    for _ in range(int(per_second * seconds)):
        c.started()
        clock.advance(1 / per_second)


def test_aimd_lowers_once_per_burst_then_climbs_back_and_probes_gently() -> None:
    clock = FakeClock()
    c = RateController(100, clock=clock, quiet=5)
    assert not c.throttled
    _reach(c, clock, 60, 3)  # the server holds us at 60 a second
    c.throttle(None)
    c.throttle(None)  # the same burst: one decrease
    assert c.rate == pytest.approx(48)  # 80 % of the 60 reached
    assert c.throttled
    clock.advance(2)
    c.raise_if_quiet()
    assert c.rate == pytest.approx(48)  # not quiet long enough
    rates = []
    for _ in range(120):
        clock.advance(1.01)
        c.raise_if_quiet()
        rates.append(c.rate)
    climbed = [r for r in rates if r <= 57 + 1e-6]
    assert climbed[-1] == pytest.approx(57)  # back up to 95 % of the mark, quickly
    assert len(climbed) <= 8
    assert rates[len(climbed) + 2] == pytest.approx(57 + 3 * 0.6)  # then +1 % of the mark a second
    assert rates[-1] == 100 and not c.throttled  # and back to the ceiling in the end
    for _ in range(200):
        c.throttle(None)
        clock.advance(1.1)
    assert c.rate == FLOOR  # never below the floor


def test_sporadic_503s_keep_the_rate_and_frequent_ones_lower_it_less_than_429s() -> None:
    clock = FakeClock()
    c = RateController(50, clock=clock, quiet=5)
    # 2 % of requests answered 503 (one a second at 50/s): the rate stays at the ceiling
    for i in range(50 * 60):
        c.started()
        if i % 50 == 49:
            c.strained()
        clock.advance(1 / 50)
    assert c.rate == 50 and c.paused_until <= clock()
    # a storm of 503s (a third of the requests) lowers it, less than a 429 does
    for i in range(150):
        c.started()
        if i % 3 == 0:
            c.strained()
        clock.advance(1 / 50)
    lowered = c.rate
    assert 0.9**3 * 50 - 1e-6 <= lowered < 50
    assert lowered >= 50 * DECREASE**3  # gentler than as many 429s
    assert c.paused_until <= clock()  # nobody else waited for the 503s
    # and it recovers once they stop
    for _ in range(100):
        _reach(c, clock, c.rate or 50, 1.01)
    assert c.rate == 50


def test_a_pause_is_not_counted_as_the_rate_reached() -> None:
    clock = FakeClock()
    c = RateController(100, clock=clock, quiet=5)
    _reach(c, clock, 60, 1)
    c.throttle(2.0)  # pause everything for 2 s
    assert c.rate == pytest.approx(48)
    clock.advance(2.0)
    _reach(c, clock, 48, 0.5)
    c.throttle(1.0)  # the second 429 reads the rate over the time not paused
    assert c.rate == pytest.approx(0.8 * 48, rel=0.15)


def test_without_a_ceiling_the_first_429_sets_one_and_it_is_lifted_again() -> None:
    clock = FakeClock()
    c = RateController(0, clock=clock, quiet=5)
    _reach(c, clock, 50, 1)
    c.throttle(2.0)
    assert c.rate == pytest.approx(40, rel=0.05)
    assert c.throttled
    for _ in range(200):
        clock.advance(1.01)
        c.raise_if_quiet()
    assert c.rate == 0 and not c.throttled


# -- what answers mean -------------------------------------------------------------------------

SEND = endpoint("send_message")
UPSERT = endpoint("upsert_customer")


@pytest.mark.parametrize(
    ("status", "error", "retry_after", "send", "safe"),
    [
        (401, Errors.BAD_TOKEN, None, "stop", "stop"),
        (401, Errors.TOKEN_NOT_FOUND, None, "stop", "stop"),
        (403, Errors.NO_SUBSCRIPTION, None, "stop", "stop"),
        (403, Errors.API_DISABLED, None, "stop", "stop"),
        (403, Errors.INVALID_PHONE, None, "fail", "fail"),
        (400, Errors.INVALID_PHONE, None, "fail", "fail"),
        (404, Errors.CUSTOMER_NOT_FOUND, None, "fail", "fail"),
        (409, Errors.DUPLICATE_MESSAGE, None, "unknown", "fail"),
        (429, Errors.RATE_LIMITED, 1.0, "retry", "retry"),
        (429, "", None, "retry", "retry"),
        (503, "", 1.0, "retry", "retry"),
        (503, "", None, "unknown", "retry"),
        (500, "", None, "unknown", "retry"),
        (502, "", None, "unknown", "retry"),
        (504, "", None, "unknown", "retry"),
        (408, "", None, "unknown", "retry"),
    ],
)
def test_what_each_answer_means(
    status: int, error: str, retry_after: float | None, send: str, safe: str
) -> None:
    assert action_for(SEND, status, error, retry_after) == send
    assert action_for(UPSERT, status, error, retry_after) == safe
    assert action_for(None, status, error, retry_after) == send  # a raw call reads as a send


def test_only_sends_are_marked_as_sends() -> None:
    assert {e.name for e in ENDPOINTS if e.sends} == {"send_message", "send_campaign"}
    assert {op for op, o in OPERATIONS.items() if o.sends} == {"messages send", "campaigns send"}


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), ("0", 0.0), ("-5", 0.0), ("1.5", 1.5), ("nope", None), (None, None)],
)
def test_retry_after_in_seconds(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds


def test_retry_after_as_an_http_date_and_capped_at_an_hour() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("99999") == 3600.0


def test_form_pairs_encode_like_the_official_gem() -> None:
    pairs = form_pairs(
        {"phone_number": "+1", "properties": {"plan": "gold"}, "tag_names": ["a", "b"], "x": None}
    )
    assert pairs == [
        ("phone_number", "+1"),
        ("properties[plan]", "gold"),
        ("tag_names[]", "a"),
        ("tag_names[]", "b"),
    ]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["phone_number", "properties[plan]", "tag_names[]", "a b&c=d"]),
            st.text(),
        ),
        max_size=6,
    )
)
@example([("phone_number", "".join(map(chr, range(128)))), ("email", "a b+c@d.e")])
def test_a_form_body_is_what_urlencode_writes(pairs: list[tuple[str, str]]) -> None:
    from urllib.parse import urlencode

    assert form_body(pairs) == urlencode(pairs, safe="[]").encode()


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> SonarClient:
    return SonarClient(
        "http://127.0.0.1:9/api/v1", token="secret-token", transport=httpx.MockTransport(handler)
    )


def test_a_gateway_page_becomes_a_short_error_and_a_send_stays_unknown() -> None:
    html = "<html><body><h1>502 Bad Gateway</h1><p>nginx</p></body></html>"

    async def main() -> tuple[BaseException, BaseException]:
        async with _client(lambda r: httpx.Response(502, text=html)) as client:
            with pytest.raises(OutcomeUnknown) as send:
                await client.send_message("+13105550101", "hi")
            with pytest.raises(Retryable) as upsert:
                await client.upsert_customer("+13105550101")
            return send.value, upsert.value

    send, upsert = asyncio.run(main())
    assert "502 Bad Gateway" in str(send) and "<" not in str(send)
    assert isinstance(upsert, Retryable) and not isinstance(upsert, Unreachable)


def test_answers_that_refuse_become_the_right_errors_without_the_token() -> None:
    answers = {
        "/api/v1/customers": httpx.Response(401, json={"error": "Bad Token secret-token"}),
        "/api/v1/messages": httpx.Response(400, json={"error": Errors.INVALID_PHONE}),
    }

    async def main() -> tuple[BaseException, BaseException]:
        async with _client(lambda r: answers[r.url.path]) as client:
            with pytest.raises(FatalApiError) as fatal:
                await client.upsert_customer("+13105550101")
            with pytest.raises(RowFailed) as row:
                await client.send_message("+1", "hi")
            return fatal.value, row.value

    fatal, row = asyncio.run(main())
    assert "secret-token" not in str(fatal) and "[REDACTED]" in str(fatal)
    assert isinstance(fatal, FatalApiError) and fatal.exit_code == ExitCode.REFUSED
    assert str(row) == f"400 Bad Request: {Errors.INVALID_PHONE}"


def test_a_refused_connection_is_unreachable_and_was_never_sent() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    def dropped(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected", request=request)

    async def main() -> tuple[BaseException, BaseException]:
        async with _client(refuse) as client:
            with pytest.raises(Unreachable) as first:
                await client.send_message("+1", "hi")
        async with _client(dropped) as client:
            with pytest.raises(OutcomeUnknown) as second:
                await client.send_message("+1", "hi")
        return first.value, second.value

    first, second = asyncio.run(main())
    assert isinstance(first, Unreachable) and first.not_sent
    assert "could not reach the API at http://127.0.0.1:9/api/v1/messages" in str(first)
    assert "may have been processed" in str(second)


def test_the_client_refuses_a_url_off_its_base() -> None:
    async def main() -> None:
        async with _client(lambda r: httpx.Response(200, json={})) as client:
            await client.request("GET", "https://evil.example/api/v1/customers")

    with pytest.raises(UsageError, match="not under the base URL"):
        asyncio.run(main())


# -- the journal ---------------------------------------------------------------------------


def test_the_journal_keeps_intents_and_outcomes_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    journal.start_run("messages send", "emulator", tmp_path / "m.csv", "0" * 64, "sonar-bulk x")
    journal.intent("k1", 0, 1)
    journal.intent("k2", 1, 1)
    journal.outcome(
        "k2",
        1,
        status="queued",
        http_status=202,
        error="",
        attempts=1,
        finished_at="2026-01-01T00:00:00Z",
        outputs={"external_message_id": "abc"},
        urgent=True,  # a send's outcome is committed at once
    )
    journal.intent("k3", 2, 1)
    journal.outcome(
        "k3",
        2,
        status="created",
        http_status=201,
        error="",
        attempts=1,
        finished_at="2026-01-01T00:00:00Z",
        outputs={},
        urgent=False,  # a safe operation's outcome may wait for the next batch
    )
    journal.db.close()  # no clean close, as after kill -9 (nothing was flushed by close())
    again = Journal(path)
    found = again.lookup(["k1", "k2", "k3", "k4"])
    assert found["k1"].state == "inflight"
    assert found["k2"].status == "queued" and found["k2"].outputs == {"external_message_id": "abc"}
    # lost with the crash: its intent stands, so a resume makes the (safe) call again
    assert found["k3"].state == "inflight"
    assert "k4" not in found
    assert [r.operation for r in again.runs()] == ["messages send"]
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    again.close()


def test_the_journal_folds_its_log_as_if_each_entry_had_been_applied_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run appends intents and outcomes to the log; folding them all at the end (or at the
    next opening, after a kill) leaves every row as folding after each entry would: the
    entries of a key in their order, a send kept in ``sent`` across later attempts."""
    import random

    from sonar_bulk.engine import journal as journal_module

    monkeypatch.setattr(journal_module, "now_iso", lambda: "2026-01-02T03:04:05Z")
    dice = random.Random(20)
    keys = [f"k{n}" for n in range(40)]
    statuses = ["queued", "unknown", "failed", "created", "skipped", "scheduled"]
    ops: list[tuple[str, str, int]] = []
    for run in range(3):
        for _ in range(300):
            ops.append((dice.choice(["intent", "outcome", "record"]), dice.choice(keys), run))

    def replay(path: Path, every: bool) -> list[tuple[Any, ...]]:
        journal = Journal(path)
        last_run = -1
        for n, (kind, key, run) in enumerate(ops):
            if run != last_run:
                journal.start_run("messages send", "e", tmp_path / "m.csv", "0" * 64, "x")
                last_run = run
            row = int(key[1:])
            if kind == "intent":
                journal.intent(key, row, n % 3 + 1, recipient=f"+1{row}", content="hi")
            elif kind == "outcome":
                journal.outcome(
                    key,
                    row,
                    status=dice.choice(statuses),
                    http_status=dice.choice([None, 202, 500]),
                    error=dice.choice(["", "boom"]),
                    attempts=n % 4,
                    finished_at=f"2026-01-01T00:00:{n % 60:02d}Z",
                    outputs=dice.choice([{}, {"external_message_id": str(n)}]),
                    urgent=dice.random() < 0.5,
                )
            else:
                journal.record_many([(key, row, dice.choice(statuses), "why")], urgent=False)
            if every:
                journal.fold()
        if not every:  # killed: no fold, no close; the next opening folds
            journal.db.close()
            journal = Journal(path)
        found = journal.db.execute(
            "SELECT key, run, row, state, status, http_status, error, attempts, finished_at, "
            "outputs, recipient, content, sent FROM rows ORDER BY key"
        ).fetchall()
        assert journal.db.execute("SELECT count(*) FROM log").fetchone()[0] == 0
        journal.close()
        return found

    state = dice.getstate()
    at_once = replay(tmp_path / "a.sqlite", every=True)
    dice.setstate(state)  # the same outcomes drawn again
    folded = replay(tmp_path / "b.sqlite", every=False)
    assert len(at_once) == 40 and folded == at_once
    assert any(r[12] for r in folded)  # some rows keep an earlier send


def test_a_version_2_journal_is_opened_and_keeps_its_sends(tmp_path: Path) -> None:
    """Version 2 had no log: its rows are read as they are, and the next run appends."""
    path = tmp_path / "j.sqlite"
    journal = Journal(path)
    journal.start_run("messages send", "e", tmp_path / "m.csv", "0" * 64, "x")
    journal.intent("k1", 0, 1, recipient="+13105550101", content="hi")
    journal.outcome(
        "k1",
        0,
        status="queued",
        http_status=202,
        error="",
        attempts=1,
        finished_at="2026-01-01T00:00:00Z",
        outputs={},
        urgent=True,
    )
    journal.close()
    with sqlite3.connect(path) as db:  # as version 2 left it
        db.execute("DROP TABLE log")
        db.execute("UPDATE meta SET value = '2' WHERE key = 'version'")
    again = Journal(path)
    assert again.lookup(["k1"])["k1"].status == "queued"
    again.start_run("messages send", "e", tmp_path / "m.csv", "0" * 64, "x")
    again.record_many([("k1", 0, "skipped", "not sent: beyond --limit 0")])
    found = again.lookup(["k1"])["k1"]
    assert found.status == "queued" and "sent before (queued" in (found.error or "")
    version = again.db.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()[0]
    assert version == "3"
    again.close()


def test_a_file_that_is_not_a_journal_is_never_written(tmp_path: Path) -> None:
    other = tmp_path / "data.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE mine (x)")
    db.commit()
    db.close()
    before = other.read_bytes()
    with pytest.raises(UsageError, match="not a sonar-bulk journal"):
        Journal(other)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(UsageError):
        Journal(text)
    assert other.read_bytes() == before and text.read_text() == "hello"


def test_row_keys_tell_apart_operations_targets_and_repeats() -> None:
    fp = Call("send_message", {"to": "+1", "text": "hi"}).fingerprint()
    assert fp == Call("send_message", {"text": "hi", "to": "+1"}).fingerprint()
    # the journals on users' disks are keyed by these bytes: they never change
    assert fp == "fe3b8a34ec159617394239d3877dd6f7"
    keys = {
        row_key("messages send", "emulator", fp, 0),
        row_key("messages send", "https://www.sendsonar.com/api/v1", fp, 0),
        row_key("messages send", "emulator", fp, 1),
        row_key("campaigns send", "emulator", fp, 0),
    }
    assert len(keys) == 4


# -- pure helpers ------------------------------------------------------------------------------


def test_the_resume_command_never_carries_a_token() -> None:
    line = command_line(
        ["messages", "send", "my file.csv", "--token", "s3cret", "--token=s3cret", "--yes"]
    )
    assert "s3cret" not in line
    assert line == "sonar-bulk messages send 'my file.csv' --yes"
    assert "--resume" not in command_line(["x", "--resume", "j.sqlite", "--resume=j2"])


def test_describe_change_names_old_and_new_values() -> None:
    record = {
        "first_name": "Ana",
        "last_name": None,
        "email": "a@example.com",
        "subscribed": True,
        "properties": {"plan": "gold"},
    }
    same = {"phone_number": "+1", "first_name": "Ana", "subscribed": "true"}
    assert describe_change({**same, "properties": {"plan": "gold"}}, record) == ("unchanged", True)
    text, unchanged = describe_change(
        {**same, "first_name": "Anna", "properties": {"plan": "silver", "vip": "1"}}, record
    )
    assert not unchanged
    assert "first_name Ana -> Anna" in text
    assert "property plan gold -> silver" in text and "property vip (none) -> 1" in text
    blind, unchanged = describe_change({**same, "zip_code": "90210"}, record)
    assert not unchanged and "zip_code" in blind


@pytest.mark.parametrize(
    ("clock", "start", "end", "ends_at"),
    [
        ("22:30", "21:00", "08:00", "2026-11-29 08:00"),
        ("03:00", "21:00", "08:00", "2026-11-28 08:00"),
        ("12:00", "21:00", "08:00", None),
        ("08:00", "21:00", "08:00", None),
        ("13:30", "12:00", "14:00", "2026-11-28 14:00"),
        ("14:00", "12:00", "14:00", None),
    ],
)
def test_quiet_hours_windows(clock: str, start: str, end: str, ends_at: str | None) -> None:
    zone = ZoneInfo("America/Chicago")
    local = dt.datetime.fromisoformat(f"2026-11-28 {clock}").replace(tzinfo=zone)
    got = _window_end(local, dt.time.fromisoformat(start), dt.time.fromisoformat(end))
    assert (got.strftime("%Y-%m-%d %H:%M") if got else None) == ends_at


def test_results_and_failed_paths_follow_the_input_and_the_operation() -> None:
    assert results_paths(Path("d/list.csv"), "upsert") == (
        Path("d/list.upsert.results.csv"),
        Path("d/list.upsert.failed.csv"),
    )
    assert results_paths(Path("d/list.xls"), "get") == (
        Path("d/list.get.results.xlsx"),
        Path("d/list.get.failed.xlsx"),
    )
    assert results_paths(Path("d/list.csv"), "send", Path("out/r.xlsx")) == (
        Path("out/r.xlsx"),
        Path("out/r.failed.xlsx"),
    )
    assert results_paths(Path("d/list.tsv"), "send", None, Path("out")) == (
        Path("out/list.send.results.tsv"),
        Path("out/list.send.failed.tsv"),
    )


# -- quiet hours: a held row waits for its window to end ---------------------------------------


def test_a_held_row_waits_until_its_window_ends_then_goes_out() -> None:
    from sonar_bulk.emulator.app import EmulatorConfig
    from sonar_bulk.emulator.server import EmulatorServer
    from sonar_bulk.engine.runner import Job, Runner, Settings
    from sonar_bulk.results import RowResults

    wall = FakeClock()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        wall.advance(seconds)
        await asyncio.sleep(0)

    op = OPERATIONS["messages send"]
    jobs = [
        Job(0.0, 0, Call("send_message", {"to": "+13105550101", "text": "now"}), "a"),
        Job(wall() + 3600, 1, Call("send_message", {"to": "+12125550101", "text": "later"}), "b"),
    ]
    with EmulatorServer(EmulatorConfig()) as server:

        async def main() -> RowResults:
            results = RowResults(2)
            async with SonarClient(server.api_url, token="emulator-token") as client:
                runner = Runner(
                    client,
                    op,
                    None,
                    results,
                    Limiter(RateController(0)),
                    Settings(concurrency=2),
                    sleep=sleep,
                    clock=wall,
                )
                await runner.run(jobs)
                assert runner.stats.held == 0
            return results

        results = asyncio.run(main())
        texts = [m["text"] for m in server.admin("GET", "/state")["messages"]]
    assert slept == [3600]  # the held row waited exactly until its window's end
    assert [results.status(0), results.status(1)] == ["queued", "queued"]
    assert texts == ["now", "later"]


def test_one_run_at_a_time_holds_a_journal(tmp_path: Path) -> None:
    first = Journal(tmp_path / "j.sqlite")
    first.lock()
    second = Journal(tmp_path / "j.sqlite")
    with pytest.raises(UsageError, match="another sonar-bulk run is using it"):
        second.lock()
    first.close()
    second.lock()  # free again once the first run ends
    second.close()


def test_a_429_in_the_first_moments_does_not_set_a_low_mark() -> None:
    clock = FakeClock()
    c = RateController(50, clock=clock, quiet=5)
    c.started()
    clock.advance(0.05)
    c.throttle(1.0)  # one request in, one 429: says nothing of the server's limit yet
    assert c.mark == 50 and c.rate == pytest.approx(40)
