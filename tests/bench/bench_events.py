"""Benchmark: the webhook receiver's durable intake (issue target: "the receiver stores at
least 10,000 events per minute durably on this machine, with 8 concurrent senders, and its
memory stays flat over a 100,000-event run"). Not part of the test suite.

Each case starts the real receiver (``sonar_bulk.events.receiver.Receiver``: Starlette on
uvicorn, one writer thread committing in groups, SQLite in WAL mode with synchronous=FULL) in
its own process, run from this very file (``--serve``), storing into a fresh temporary folder
(``--dir``: on the disk a real store would use). Its RSS is read from /proc/<pid>/status
every 0.5 s, so the number is the receiver's alone. The senders are 8 keep-alive HTTP/1.1
connections in this process (raw requests over asyncio streams on uvloop, cheap on CPU, so
the client is not what is measured), each POSTing its share to ``<url>/<secret>`` one at a
time and waiting for the answer, as Sonar does.

Every event is a Sonar-shaped body (uuid, action, created_at, the customer block, message id,
external id, a ~100-character text) with its own uuid (random-looking, as Sonar's uuid4s, so
the store's uuid index is written all over, not appended); 5 % more deliveries (--repeats)
resend an earlier event's exact body, as Sonar's retries do, and the receiver's answer must say
``"duplicate": true`` for those and only those. One delivery before the clock starts warms the
receiver up (its first one imports the phone normaliser). After the run the receiver is killed
with SIGKILL (no clean close, no checkpoint) and the store opened read-only: every uuid
answered 200 must be in it, its rows must equal the distinct uuids answered 200 and its
summed ``deliveries`` the deliveries answered 200.

  python tests/bench/bench_events.py --case all
  python tests/bench/bench_events.py --case throughput [--events 20000]
  python tests/bench/bench_events.py --case memory [--events 100000]
  python tests/bench/bench_events.py --case all --events 2000        # a quick check
  python tests/bench/bench_events.py --case throughput --profile     # where its CPU goes

Cases (--events replaces the size of every case run; marks scale with it):

  throughput  20,000 events (+5 % repeats) as fast as 8 senders go: events stored and
              acknowledged per minute, p50/p99 latency per delivery, the receiver's CPU by
              thread and its commits (group size, time per commit)
                                      >= 10,000 events/min, every acknowledged event stored
  memory      100,000 events (+5 % repeats): the receiver's RSS at 10k, 20k, 50k and 100k
              events and its peak   growth from the 20,000-event mark to the end < 10 MiB
              (and the same rate and durability checks over the long run)

--profile runs cProfile in the receiver's threads (server and writer) and prints their top
functions; it slows the receiver, so its rates are not the ones to quote.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import cProfile
import hashlib
import io
import json
import os
import platform
import pstats
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

CASES = ("throughput", "memory")
SIZES = {"throughput": 20_000, "memory": 100_000}
TARGET_PER_MINUTE = 10_000
FLAT_MIB = 10.0
#: The memory case's marks, as shares of its events (10k, 20k, 50k, 100k by default); growth
#: is judged from the second one on (before it: warm-up, caches filling).
MARKS = (0.1, 0.2, 0.5, 1.0)
SAMPLE_EVERY = 0.5
PROGRESS_EVERY = 15.0
MIB = 1024 * 1024
T = TypeVar("T")

# -- Sonar-shaped payloads -------------------------------------------------------------------

#: One cycle of 20 actions: what a bulk sender's webhook mostly sees.
MIX = (
    ("outbound_message",) * 12
    + ("new_unassigned_message",) * 3
    + ("new_assigned_message", "customer_unsubscribed", "customer_subscribed")
    + ("customer_created", "customer_unsubscribed")
)
MESSAGE_ACTIONS = {"outbound_message", "new_unassigned_message", "new_assigned_message"}
AREAS = (212, 310, 415, 646, 312, 617, 702, 206, 303, 404, 213, 917, 512, 305, 619)
EXCHANGES = [x for x in range(200, 1000) if x % 100 != 11 and x != 555]
FIRST = ("Ana", "Ben", "Chen", "Dana", "Elif", "Farah", "Gus", "Hana", "Ivan", "Jia")
LAST = ("Smith", "Garcia", "Nguyen", "Okafor", "Kowalski", "Haddad", "Rossi", "Tanaka")
TEXTS = (
    "Hi {first}, your order #{n} has shipped and should arrive on Thursday. Reply STOP to opt out.",
    "{first}, thanks for visiting us! Show this text for 15% off your next visit (code {n}).",
    "Reminder: your appointment is tomorrow at 10:30. Reply C to confirm or R to reschedule. #{n}",
    "yes please, can you move it to friday afternoon instead? thanks so much {first} ({n})",
)


def _digest(seed: bytes, kind: bytes, i: int) -> bytes:
    return hashlib.blake2b(seed + kind + i.to_bytes(8, "big"), digest_size=16).digest()


def event_uuid(seed: bytes, i: int) -> str:
    return str(uuid.UUID(bytes=_digest(seed, b"u", i), version=4))


def event_body(seed: bytes, base: float, i: int) -> bytes:
    """Event ``i``'s body, the same bytes every time it is asked for (a repeat is identical)."""
    action = MIX[i % len(MIX)]
    first, last = FIRST[i % len(FIRST)], LAST[(i // 7) % len(LAST)]
    exchange = EXCHANGES[(i // 15) % len(EXCHANGES)]
    phone = f"+1{AREAS[i % len(AREAS)]}{exchange}{(i * 7919) % 10000:04d}"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base + i // 100))
    assignee = {"email": "agent@example.com"} if action == "new_assigned_message" else None
    payload: dict[str, Any] = {
        "uuid": event_uuid(seed, i),
        "action": action,
        "created_at": f"{stamp}.{i % 1000:03d}Z",
        "customer": {
            "id": 100_000 + i % 50_000,
            "phone_number": phone,
            "first_name": first,
            "last_name": last,
            "email": f"{first}.{last}{i % 1000}@example.com".lower(),
            "subscribed": action != "customer_unsubscribed",
            "external_id": None,
            "state": "open",
            "assignee": assignee,
            "properties": {},
        },
    }
    if action in MESSAGE_ACTIONS:
        payload["message_id"] = str(uuid.UUID(bytes=_digest(seed, b"m", i), version=4))
        payload["external_id"] = base64.urlsafe_b64encode(_digest(seed, b"x", i)).decode()
        payload["text"] = TEXTS[i % len(TEXTS)].format(first=first, n=i)
        payload["conversation_id"] = f"conv-{100_000 + i % 50_000}"
    return json.dumps(payload, separators=(",", ":")).encode()


# -- the receiver's process (this file with --serve) -----------------------------------------


def _thread_cpu(native_id: int | None) -> float:
    """CPU seconds (user + system) of one thread of this process, from /proc."""
    if native_id is None:
        return 0.0
    try:
        with open(f"/proc/self/task/{native_id}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def serve(path: Path, profile: bool) -> None:
    """Run the receiver on a free port; one JSON line says where. Then, on stdin: "counters"
    prints the counters, the CPU by thread and the commits as a JSON line; "stop" (or end of
    input) stops it cleanly (then the profiles, with --profile)."""
    from sonar_bulk.events import store as store_module
    from sonar_bulk.events.receiver import Receiver

    commits: dict[str, float] = {"batches": 0, "items": 0, "seconds": 0.0, "largest": 0}
    add_many = store_module.EventStore.add_many

    def timed_add_many(
        self: store_module.EventStore, items: Sequence[store_module.Incoming]
    ) -> list[bool]:
        started = time.perf_counter()
        try:
            return add_many(self, items)
        finally:
            commits["seconds"] += time.perf_counter() - started
            commits["batches"] += 1
            commits["items"] += len(items)
            commits["largest"] = max(commits["largest"], len(items))

    store_module.EventStore.add_many = timed_add_many  # type: ignore[method-assign]

    profiles: list[tuple[str, cProfile.Profile]] = []
    if profile:
        run = threading.Thread.run

        def profiled_run(thread: threading.Thread) -> None:
            profiler = cProfile.Profile()
            profiles.append((thread.name, profiler))
            profiler.enable()
            try:
                run(thread)
            finally:
                profiler.disable()

        setattr(threading.Thread, "run", profiled_run)  # noqa: B010 (mypy: a method swapped)

    store = store_module.EventStore(path)
    secret = store.secret
    store.close()
    receiver = Receiver(path, secret).start()
    print(json.dumps({"url": receiver.url, "secret": secret, "pid": os.getpid()}), flush=True)
    for line in sys.stdin:
        if line.strip() != "counters":
            break
        times = os.times()
        report = {
            "counters": vars(receiver.counters),
            "cpu": times.user + times.system,
            "threads": {t.name: _thread_cpu(t.native_id) for t in threading.enumerate()},
            "commits": commits,
        }
        print(json.dumps(report), flush=True)
    receiver.stop()
    for name, profiler in profiles:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(22)
        stats.sort_stats("cumulative").print_stats(22)
        print(f"\n=== cProfile of the receiver's thread {name!r} ===\n{out.getvalue()}")
    sys.stdout.flush()


# -- the senders (this process) ---------------------------------------------------------------


@dataclass
class Run:
    """One case's deliveries and what came back."""

    events: int
    senders: int
    repeat_every: int  # one repeat after every this many originals of a sender (0: none)
    seed: bytes = field(default_factory=lambda: os.urandom(16))
    base: float = field(default_factory=lambda: time.time() - 86_400)
    started: float = 0.0
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    acked: set[str] = field(default_factory=set)  # uuids answered 200
    acked_deliveries: int = 0
    acked_new: int = 0  # originals answered 200 (the events count)
    repeats_sent: int = 0
    wrong_duplicate: int = 0  # answers whose "duplicate" flag was not what was sent
    errors: Counter[str] = field(default_factory=Counter)


class Connection:
    """One keep-alive HTTP/1.1 connection POSTing JSON to the receiver's secret path."""

    def __init__(self, host: str, port: int, secret: str) -> None:
        self.host, self.port = host, port
        self.head = (
            f"POST /{secret} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: bench-events\r\n"
            "Content-Type: application/json\r\nContent-Length: "
        ).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(self.head + b"%d\r\n\r\n%s" % (len(body), body))
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        answer = await self.reader.readexactly(length) if length else b""
        return int(head[9:12]), answer

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def deliver(run: Run, conn: Connection, i: int, repeat: bool) -> bool:
    """Send event ``i`` (again when ``repeat``); True when it was answered 200."""
    body = event_body(run.seed, run.base, i)
    started = time.perf_counter()
    try:
        status, answer = await conn.post(body)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        run.errors[type(exc).__name__] += 1
        conn.close()
        return False
    run.latencies.append(time.perf_counter() - started)
    run.statuses[status] += 1
    if status != 200:
        return False
    if json.loads(answer).get("duplicate") is not repeat:
        run.wrong_duplicate += 1
    run.acked.add(event_uuid(run.seed, i))
    run.acked_deliveries += 1
    if not repeat:
        run.acked_new += 1
    return True


async def sender(run: Run, conn: Connection, k: int) -> None:
    """Sender ``k``: events k, k + senders, ...; after every ``repeat_every`` of them, one
    earlier event of its own (already acknowledged) again."""
    rng = random.Random(k)
    done: list[int] = []
    for count, i in enumerate(range(k, run.events, run.senders), 1):
        if await deliver(run, conn, i, False):
            done.append(i)
        if run.repeat_every and count % run.repeat_every == 0 and done:
            run.repeats_sent += 1
            await deliver(run, conn, rng.choice(done), True)
    conn.close()


def rss_kib(pid: int, key: str = "VmRSS") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {key} for process {pid}")


async def sample(
    pid: int, run: Run, done: asyncio.Event, out: list[tuple[float, int, int]]
) -> None:
    """(seconds, events acknowledged, RSS KiB) every SAMPLE_EVERY seconds, with a progress
    line every PROGRESS_EVERY seconds."""
    next_progress = PROGRESS_EVERY
    while not done.is_set():
        seconds = time.perf_counter() - run.started
        out.append((seconds, run.acked_new, rss_kib(pid)))
        if seconds >= next_progress:
            next_progress += PROGRESS_EVERY
            print(
                f"    {seconds:5.0f} s: {run.acked_new:,} events, "
                f"{run.acked_new / seconds:,.0f}/s, receiver RSS {out[-1][2] * 1024 / MIB:.1f} MiB",
                flush=True,
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), SAMPLE_EVERY)


async def drive(
    run: Run, url: str, secret: str, pid: int, samples: list[tuple[float, int, int]]
) -> float:
    """Warm up, then all senders at once; the seconds they took."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    warm = Connection(host, int(port), secret)
    samples.append((0.0, 0, rss_kib(pid)))  # before any delivery
    if not await deliver(run, warm, run.events, False):  # event n: outside the senders' range
        raise RuntimeError(f"the warm-up delivery failed: {run.statuses} {run.errors}")
    warm.close()
    run.acked_new = run.acked_deliveries = 0
    run.latencies.clear()
    run.statuses.clear()
    samples.append((0.0, 0, rss_kib(pid)))  # after the warm-up
    conns = [Connection(host, int(port), secret) for _ in range(run.senders)]
    done = asyncio.Event()
    run.started = time.perf_counter()
    sampler = asyncio.create_task(sample(pid, run, done, samples))
    await asyncio.gather(*(sender(run, conn, k) for k, conn in enumerate(conns)))
    elapsed = time.perf_counter() - run.started
    done.set()
    await sampler
    samples.append((elapsed, run.acked_new, rss_kib(pid)))  # at the end
    return elapsed


def run_loop(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())


# -- after the run: the store as left by a killed receiver -----------------------------------


@dataclass
class StoreCheck:
    how: str
    rows: int
    deliveries: int
    repeated_rows: int
    missing: int  # uuids answered 200 that are not in the store
    unacknowledged: int  # rows whose uuid was never answered 200 (a lost answer)


def check_store(path: Path, acked: set[str]) -> StoreCheck:
    how = "opened read-only"
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        db.execute("SELECT count(*) FROM events").fetchone()
    except sqlite3.Error as exc:  # a read-only connection could not recover the WAL index
        how = f"read-only failed ({exc}), opened read-write"
        db = sqlite3.connect(path)
    try:
        uuids = {str(u) for (u,) in db.execute("SELECT uuid FROM events")}
        deliveries, repeated = db.execute(
            "SELECT coalesce(sum(deliveries), 0), count(*) FILTER (WHERE deliveries > 1) "
            "FROM events"
        ).fetchone()
    finally:
        db.close()
    return StoreCheck(
        how, len(uuids), int(deliveries), int(repeated), len(acked - uuids), len(uuids - acked)
    )


# -- one case -------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def mib(kib: int) -> str:
    return f"{kib * 1024 / MIB:.1f} MiB"


def verdict(ok: bool) -> str:
    return "reached" if ok else "NOT reached"


def run_case(case: str, events: int, opts: argparse.Namespace) -> bool:
    run = Run(events, opts.senders, round(1 / opts.repeats) if opts.repeats > 0 else 0)
    repeats_planned = (
        sum(len(range(k, events, opts.senders)) // run.repeat_every for k in range(opts.senders))
        if run.repeat_every
        else 0
    )
    print(
        f"\n== {case}: {events:,} events + {repeats_planned:,} repeated deliveries from "
        f"{opts.senders} senders (one keep-alive connection each)",
        flush=True,
    )
    samples: list[tuple[float, int, int]] = []
    profile_text = ""
    with tempfile.TemporaryDirectory(prefix="bench-events-", dir=opts.dir) as tmp:
        path = Path(tmp) / "events.sqlite"
        command = [sys.executable, os.path.abspath(__file__), "--serve", str(path)]
        child = subprocess.Popen(
            command + (["--profile"] if opts.profile else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdin is not None and child.stdout is not None
        try:
            line = child.stdout.readline()
            if not line:
                raise RuntimeError("the receiver process did not start (see its stderr above)")
            hello = json.loads(line)
            pid = int(hello["pid"])
            cpu_before = os.times()
            elapsed = run_loop(lambda: drive(run, hello["url"], hello["secret"], pid, samples))
            cpu_after = os.times()
            peak_kib = rss_kib(pid, "VmHWM")
            child.stdin.write("counters\n")
            child.stdin.flush()
            report = json.loads(child.stdout.readline())
            if opts.profile:  # the profiles need a clean stop
                child.stdin.write("stop\n")
                child.stdin.flush()
                profile_text = child.stdout.read()
                child.wait(timeout=60)
                killed = "stopped cleanly (--profile)"
            else:
                os.kill(child.pid, signal.SIGKILL)
                child.wait(timeout=30)
                killed = "after SIGKILL"
            check = check_store(path, run.acked)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=30)

    # -- rates, latency, answers
    per_minute = run.acked_new / elapsed * 60
    lat = sorted(run.latencies)
    p50 = lat[len(lat) // 2] if lat else 0.0
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else 0.0
    answers = ", ".join(f"{n:,} x {s}" for s, n in sorted(run.statuses.items()))
    errors = ", ".join(f"{n:,} x {e}" for e, n in run.errors.items()) or "none"
    print(
        f"  {run.acked_new:,} events and {run.acked_deliveries - run.acked_new:,} repeats "
        f"acknowledged in {elapsed:.2f} s"
    )
    print(
        f"  stored and acknowledged: {per_minute:,.0f} events/min ({run.acked_new / elapsed:,.0f}"
        f"/s); {run.acked_deliveries / elapsed * 60:,.0f} deliveries/min"
    )
    print(
        f"  latency per delivery: p50 {ms(p50)}, p99 {ms(p99)}, max {ms(lat[-1] if lat else 0)}"
        f", mean {ms(statistics.fmean(lat) if lat else 0)}"
    )
    print(
        f"  answers: {answers}; connection errors: {errors}; 'duplicate' flag wrong on "
        f"{run.wrong_duplicate:,} answers"
    )

    # -- where the time went
    commits = report["commits"]
    threads = ", ".join(f"{n} {s:.1f} s" for n, s in report["threads"].items())
    client_cpu = (cpu_after.user + cpu_after.system) - (cpu_before.user + cpu_before.system)
    batches = max(1, int(commits["batches"]))
    print(
        f"  receiver CPU: {report['cpu']:.1f} s in all (warm-up and start included; {threads})"
        f"; this process (senders) {client_cpu:.1f} s in the {elapsed:.1f} s run"
    )
    print(
        f"  receiver commits: {int(commits['batches']):,} transactions of "
        f"{commits['items'] / batches:.1f} deliveries on average (largest "
        f"{int(commits['largest'])}), {ms(commits['seconds'] / batches)} each (fsync included)"
    )

    # -- durability
    counters = report["counters"]
    print(
        "  receiver counters: "
        + ", ".join(f"{k} {v:,}" for k, v in counters.items() if isinstance(v, int))
    )
    durable = (
        check.missing == 0
        and check.unacknowledged == 0
        and check.rows == len(run.acked)
        and check.deliveries == run.acked_deliveries + 1  # the warm-up delivery
        and counters["deliveries"] == check.deliveries
        and counters["events"] == check.rows
        and run.acked_new == events
        and run.wrong_duplicate == 0
    )
    print(
        f"  store {killed}, {check.how}: {check.rows:,} rows for {len(run.acked):,} distinct "
        f"uuids answered 200 (warm-up included), {check.missing:,} of them missing, "
        f"{check.unacknowledged:,} rows never acknowledged; summed deliveries "
        f"{check.deliveries:,} for {run.acked_deliveries + 1:,} answered 200; "
        f"{check.repeated_rows:,} rows delivered more than once"
    )
    print(
        f"  durability: every acknowledged event stored, counts match, every event "
        f"acknowledged: {'yes' if durable else 'NO'}"
    )
    ok = durable
    rate_ok = per_minute >= TARGET_PER_MINUTE
    print(
        f"  target >= {TARGET_PER_MINUTE:,} events/min stored durably with {opts.senders} "
        f"senders: {per_minute:,.0f}/min: {verdict(rate_ok and durable)}"
    )
    ok = ok and rate_ok

    # -- memory
    if case == "memory":
        print(
            f"  receiver RSS: before any delivery {mib(samples[0][2])}, after the warm-up "
            f"delivery {mib(samples[1][2])}"
        )
        marked: list[tuple[int, float, int]] = []
        for share in MARKS:
            mark = max(1, round(events * share))
            seconds, count, kib = next(s for s in samples[2:] if s[1] >= mark)
            marked.append((mark, seconds, kib))
            print(
                f"    at {mark:,} events: {mib(kib)} (sampled at {count:,} events, {seconds:.1f} s)"
            )
        peak_sampled = max(s[2] for s in samples)
        print(f"    peak: {mib(peak_sampled)} sampled, {mib(peak_kib)} VmHWM (the kernel's peak)")
        start_mark, start_s, start_kib = marked[1]
        end_kib = samples[-1][2]
        later = [s for s in samples[2:] if s[0] >= start_s]
        growth = (end_kib - start_kib) * 1024 / MIB
        highest = (max(s[2] for s in later) - start_kib) * 1024 / MIB
        slope = 0.0
        if len(later) > 2 and later[-1][1] > later[0][1]:
            xs, ys = [s[1] for s in later], [s[2] * 1024 / MIB for s in later]
            slope = statistics.linear_regression(xs, ys).slope * 10_000
        flat = growth < FLAT_MIB and highest < FLAT_MIB
        print(
            f"  growth from the {start_mark:,}-event mark to the end: {growth:+.1f} MiB (highest"
            f" {highest:+.1f} MiB; trend {slope:+.2f} MiB per 10,000 events over "
            f"{len(later)} samples)"
        )
        print(f"  target: memory flat (growth < {FLAT_MIB:.0f} MiB): {verdict(flat)}")
        ok = ok and flat
    if profile_text:
        print(profile_text)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=(*CASES, "all"), default="all")
    parser.add_argument("--events", type=int, help="events per case (defaults: " + str(SIZES))
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--repeats", type=float, default=0.05, help="share of repeated deliveries")
    parser.add_argument("--dir", help="where the temporary store goes (default: the temp dir)")
    parser.add_argument("--profile", action="store_true", help="cProfile the receiver")
    parser.add_argument("--serve", metavar="STORE", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.serve:
        serve(Path(opts.serve), opts.profile)
        return
    cases = CASES if opts.case == "all" else (opts.case,)
    load1, load5, _ = os.getloadavg()
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()} {platform.system()}, Python "
        f"{platform.python_version()}; load {load1:.2f} (1 min) {load5:.2f} (5 min); store in "
        f"{opts.dir or tempfile.gettempdir()}"
    )
    results = {case: run_case(case, opts.events or SIZES[case], opts) for case in cases}
    print("\nsummary: " + ", ".join(f"{c} {verdict(ok)}" for c, ok in results.items()))


if __name__ == "__main__":
    main()
