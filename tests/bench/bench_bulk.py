"""Benchmark of the bulk commands (`sonar-bulk customers upsert`) against the emulator (issue
targets). Not part of the test suite.

Each case starts its own `sonar-bulk emulator --port 0` process and runs the real CLI in
another process (client and server each have their own, as they would in reality); the
inputs (customers CSVs of unique, valid US numbers) are generated in a temporary folder and
never committed. Every case prints its numbers, its target and PASS or NOT REACHED:

  python tests/bench/bench_bulk.py --case all
  python tests/bench/bench_bulk.py --case ceiling [--rows 20000] [--repeat 3]
  python tests/bench/bench_bulk.py --case memory --rows 200000

Rows hold E.164 numbers, so the baseline and the CLI send the same values. Each emulator
gets one API request and a reset before it is measured (its very first request is slow and
would bunch the next ones). The baseline runs on asyncio's default loop in this process.

Cases (--rows replaces the first size given):

  ceiling  20,000 rows, emulator without limits: a bare httpx.AsyncClient posting the same
           rows over 8 connections (the baseline), then `customers upsert --rate 0
           --concurrency 8` (journal and results included), timed from start to exit
                                           CLI >= 0.7 x baseline rows/s; 20,000 created
  latency  1,000 rows, emulator --latency-ms 100, CLI --rate 100 (default concurrency)
                                           >= 97 rows/s (rows / CLI wall time; the CLI's
                                           own rows_per_second is judged too)
  rate     3,000 rows, emulator --rate-limit 50, CLI --rate 80
                                           >= 45 rows/s, < 2 % of requests answered 429,
                                           every row created;
           then 500 rows, emulator unlimited, CLI --rate 50: no 1-second window of the
           emulator's request log holds more than 51 requests
  memory   1,000,000 rows, emulator unlimited, CLI --rate 0: peak RSS of the CLI process
           (/usr/bin/time -v when present)     <= 1.5 GB (1.5e9 bytes); several minutes
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import csv
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import phonenumbers

TOKEN = "emulator-token"
CASES = ("ceiling", "latency", "rate", "faults", "resync", "memory")
#: Real US area codes; exchanges 200-999 except N11 and 555, every line 0000-9999.
AREAS = [212, 310, 415, 646, 312, 617, 702, 206, 303, 404, 213, 917, 512, 305, 619]
HEADERS = ["phone_number", "first_name", "last_name", "email"]
FIRST = ["Ana", "Ben", "Chen", "Dana", "Elif", "Farah", "Gus", "Hana"]
LAST = ["Smith", "Garcia", "Nguyen", "Okafor", "Kowalski", "Haddad"]
#: The emulator keeps the last 10,000 requests (EmulatorConfig.request_log_size).
REQUEST_LOG_SIZE = 10_000
GB = 1e9


# -- inputs -----------------------------------------------------------------------------------


def phones() -> Iterator[str]:
    """Unique E.164 US numbers that libphonenumber calls valid (the invalid ones skipped)."""
    for line in range(10_000):
        for exchange in range(200, 1000):
            if exchange == 555 or exchange % 100 == 11:
                continue
            for area in AREAS:
                text = f"+1{area}{exchange:03d}{line:04d}"
                if phonenumbers.is_valid_number(phonenumbers.parse(text)):
                    yield text


def customer_rows(n: int) -> Iterator[list[str]]:
    for i, phone in zip(range(n), phones(), strict=False):
        first, last = FIRST[i % len(FIRST)], LAST[i % len(LAST)]
        yield [phone, first, last, f"{first.lower()}.{last.lower()}.{i}@example.com"]


def write_customers(path: Path, n: int) -> Path:
    started = time.perf_counter()
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(HEADERS)
        w.writerows(customer_rows(n))
    size = path.stat().st_size / 1e6
    print(
        f"  input: {n:,}-row customers CSV ({size:.1f} MB), made in "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return path


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# -- the emulator, in its own process ---------------------------------------------------------


class Emulator:
    """`sonar-bulk emulator --port 0 ARGS...`; its URL read from the first stderr line."""

    def __init__(self, *args: str) -> None:
        self.args = args
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sonar_bulk", "emulator", "--port", "0", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        first = self.proc.stderr.readline()
        found = re.search(r"(http://\S+?)/api/v1", first)
        if found is None:
            self.proc.kill()
            rest = self.proc.stderr.read()
            self.proc.wait()
            raise SystemExit(f"the emulator did not start: {first}{rest}")
        self.url = found.group(1)
        self.stderr: list[str] = [first]
        self._drain = threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True)
        self._drain.start()
        self.http = httpx.Client(timeout=120, trust_env=False)
        try:
            self.warm_up()
        except BaseException:
            self.close()
            raise

    def warm_up(self) -> None:
        """One API request, then a reset: the emulator's first request is slow (libraries
        loading; about 60 ms, its loop blocked), which would bunch the next few together."""
        response = self.http.post(
            f"{self.url}/api/v1/customers",
            data={"phone_number": "+12125550100", "first_name": "Warm"},
            headers={"Token": TOKEN},
        )
        response.raise_for_status()
        self.reset()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.stderr.append(line)

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        if method == "GET":
            response = self.http.get(f"{self.url}/__emulator__{path}")
        else:
            response = self.http.request(
                method, f"{self.url}/__emulator__{path}", json={} if body is None else body
            )
        response.raise_for_status()
        return response.json()

    def reset(self) -> None:
        self.admin("POST", "/reset", {})

    def customers(self) -> int:
        return len(self.admin("GET", "/state")["customers"])

    def requests(self) -> list[dict[str, Any]]:
        log: list[dict[str, Any]] = self.admin("GET", "/requests")
        return log

    def peak_rss_mib(self) -> float | None:
        """The emulator process's VmHWM (Linux), before it stops."""
        try:
            text = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return None
        found = re.search(r"VmHWM:\s+(\d+) kB", text)
        return int(found.group(1)) / 1024 if found else None

    def close(self) -> None:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._drain.join(timeout=5)
        noise = [line for line in self.stderr[1:] if "Traceback" in line or "error" in line]
        if noise:
            print(f"  emulator stderr ({' '.join(self.args) or 'no knobs'}):", flush=True)
            for line in self.stderr[-20:]:
                print(f"    {line.rstrip()}", flush=True)


@contextlib.contextmanager
def emulator(*args: str) -> Iterator[Emulator]:
    emu = Emulator(*args)
    try:
        print(f"  emulator: {emu.url} ({' '.join(args) or 'no limits'})", flush=True)
        yield emu
    finally:
        emu.close()


# -- the CLI, in its own process ----------------------------------------------------------------


@dataclass
class CliRun:
    wall: float
    exit_code: int
    #: Peak RSS of the CLI process in MiB: /usr/bin/time -v when used, else wait4's.
    rss_mib: float
    summary: dict[str, Any]
    stderr: str
    #: CPU seconds (user + system) of the CLI process.
    cpu: float = 0.0
    command: list[str] = field(default_factory=list)
    #: (seconds since start, RSS MiB of the process tree), about once a second.
    samples: list[tuple[float, float]] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = self.summary.get("counts") or {}
        return counts

    def rows_per_second(self, rows: int) -> float:
        return rows / self.wall if self.wall > 0 else 0.0

    def describe(self) -> str:
        s = self.summary
        return (
            f"exit {self.exit_code}, counts {self.counts}, {s.get('requests', '?')} requests, "
            f"CLI's own seconds {s.get('seconds', '?')} and rows_per_second "
            f"{s.get('rows_per_second', '?')}, CPU {self.cpu:.1f} s, "
            f"peak RSS {self.rss_mib:,.0f} MiB"
        )


def tree_rss_mib(pid: int) -> float:
    """VmRSS of ``pid`` and its descendants (Linux /proc); 0 once gone."""
    total = 0.0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        found = re.search(r"VmRSS:\s+(\d+) kB", status)
        total += int(found.group(1)) / 1024 if found else 0.0
        todo += [int(c) for c in children]
    return total


def sample_rss(pid: int, samples: list[tuple[float, float]], stop: threading.Event) -> None:
    started = time.perf_counter()
    while not stop.wait(1.0):
        samples.append((time.perf_counter() - started, tree_rss_mib(pid)))


def upsert(
    tmp: Path,
    name: str,
    csv_path: Path,
    base: str,
    *extra: str,
    timeout: float,
    time_v: bool = False,
) -> CliRun:
    """`sonar-bulk customers upsert` with its own journal and results; timed start to exit."""
    args = [
        sys.executable,
        "-m",
        "sonar_bulk",
        "customers",
        "upsert",
        str(csv_path),
        "--base-url",
        f"{base}/api/v1",
        "--token",
        TOKEN,
        *extra,
        "-q",
        "--json",
        "--results",
        str(tmp / f"{name}.results.csv"),
        "--journal",
        str(tmp / f"{name}.journal.sqlite"),
    ]
    timer_bin = shutil.which("time", path="/usr/bin")
    if time_v and timer_bin:
        args = [timer_bin, "-v", *args]
    out_path, err_path = tmp / f"{name}.stdout", tmp / f"{name}.stderr"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONAR_")}
    with out_path.open("wb") as out, err_path.open("wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        samples: list[tuple[float, float]] = []
        stop = threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(proc.pid, samples, stop), daemon=True)
        sampler.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
            stop.set()
            sampler.join()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = err_path.read_text(errors="replace")
    rss = usage.ru_maxrss / 1024
    found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr)
    if found:
        rss = int(found.group(1)) / 1024
    summary: dict[str, Any] = {}
    text = out_path.read_text(errors="replace").strip()
    if text:
        try:
            summary = json.loads(text.splitlines()[-1])
        except ValueError:
            summary = {"unparsed stdout": text[-2000:]}
    cpu = usage.ru_utime + usage.ru_stime
    run = CliRun(wall, proc.returncode, rss, summary, stderr, cpu, args, samples)
    if proc.returncode != 0 or "Traceback" in stderr:
        print(f"  CLI exit {proc.returncode}; stderr (last 40 lines):", flush=True)
        for line in stderr.splitlines()[-40:]:
            print(f"    {line}", flush=True)
    return run


# -- verdicts ---------------------------------------------------------------------------------


@dataclass
class Verdict:
    case: str
    what: str
    measured: str
    target: str
    ok: bool


VERDICTS: list[Verdict] = []


def verdict(case: str, what: str, measured: str, target: str, ok: bool) -> None:
    VERDICTS.append(Verdict(case, what, measured, target, ok))
    word = "PASS" if ok else "NOT REACHED"
    print(f"  {what}: {measured} (target {target}) -> {word}", flush=True)


def load_average() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "unknown"
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


def created_all(run: CliRun, rows: int) -> bool:
    return run.exit_code == 0 and run.counts == {"created": rows}


# -- ceiling ----------------------------------------------------------------------------------


async def post_all(
    base: str, rows: list[dict[str, str]], connections: int
) -> tuple[float, Counter[int]]:
    """The baseline: the rows posted by ``connections`` workers on one pooled client."""
    statuses: Counter[int] = Counter()
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(
        base_url=base, headers={"Token": TOKEN}, limits=limits, timeout=30, trust_env=False
    ) as client:
        todo = iter(rows)

        async def worker() -> None:
            for row in todo:
                response = await client.post("/api/v1/customers", data=row)
                statuses[response.status_code] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return time.perf_counter() - started, statuses


def case_ceiling(tmp: Path, rows: int, opts: argparse.Namespace) -> None:
    connections = 8
    path = write_customers(tmp / "ceiling.csv", rows)
    data = read_rows(path)
    baselines: list[float] = []
    clis: list[float] = []
    counted: list[bool] = []
    with emulator() as emu:
        for attempt in range(opts.repeat):
            emu.reset()
            cpu = time.process_time()
            seconds, statuses = asyncio.run(post_all(emu.url, data, connections))
            cpu = time.process_time() - cpu
            stored = emu.customers()
            baselines.append(rows / seconds)
            print(
                f"  baseline {attempt + 1}: {rows:,} POST /customers over {connections} "
                f"connections in {seconds:.2f} s = {rows / seconds:,.0f} rows/s, CPU "
                f"{cpu:.1f} s; statuses {dict(statuses)}; emulator holds {stored:,} customers",
                flush=True,
            )
            emu.reset()
            run = upsert(
                tmp,
                f"ceiling-{attempt}",
                path,
                emu.url,
                "--rate",
                "0",
                "--concurrency",
                str(connections),
                timeout=opts.timeout,
            )
            stored = emu.customers()
            clis.append(run.rows_per_second(rows))
            counted.append(created_all(run, rows) and stored == rows)
            print(
                f"  CLI {attempt + 1}: wall {run.wall:.2f} s = {run.rows_per_second(rows):,.0f} "
                f"rows/s; {run.describe()}; emulator holds {stored:,} customers",
                flush=True,
            )
    base, cli = statistics.median(baselines), statistics.median(clis)
    label = "median of " + str(opts.repeat) + " runs, " if opts.repeat > 1 else ""
    verdict(
        "ceiling",
        "CLI vs baseline",
        f"{label}CLI {cli:,.0f} rows/s, baseline {base:,.0f} rows/s = {cli / base:.3f} x",
        ">= 0.70 x",
        cli >= 0.7 * base,
    )
    verdict(
        "ceiling",
        "rows created",
        "all" if all(counted) else "NOT all (see the counts above)",
        f"{rows:,} created",
        all(counted),
    )


# -- latency ----------------------------------------------------------------------------------


def case_latency(tmp: Path, rows: int, opts: argparse.Namespace) -> None:
    path = write_customers(tmp / "latency.csv", rows)
    with emulator("--latency-ms", "100") as emu:
        run = upsert(tmp, "latency", path, emu.url, "--rate", "100", timeout=opts.timeout)
        stored = emu.customers()
    rate = run.rows_per_second(rows)
    print(f"  CLI: wall {run.wall:.2f} s; {run.describe()}", flush=True)
    verdict(
        "latency",
        "rows/s by wall time",
        f"{rate:.1f} rows/s (the CLI's own figure: {run.summary.get('rows_per_second')})",
        ">= 97 rows/s",
        rate >= 97,
    )
    own = float(run.summary.get("rows_per_second") or 0)
    verdict(
        "latency",
        "rows/s by the CLI's own clock (the sending phase only)",
        f"{own:.1f} rows/s over {run.summary.get('seconds')} s",
        ">= 97 rows/s",
        own >= 97,
    )
    ok = created_all(run, rows) and stored == rows
    verdict("latency", "rows created", f"{stored:,} stored", f"{rows:,} created", ok)


# -- rate -------------------------------------------------------------------------------------


def api_posts(log: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in log if e["method"] == "POST" and e["path"].startswith("/api/v1/")]


def busiest_second(times: list[float]) -> int:
    """The most requests any window [t, t + 1 s) holds."""
    times = sorted(times)
    return max((bisect.bisect_left(times, t + 1.0) - i for i, t in enumerate(times)), default=0)


def stamp(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def arrival(entry: dict[str, Any]) -> float:
    """When the request reached the emulator: its log time (written once answered) less its
    duration."""
    return stamp(entry["time"]) - float(entry["duration_ms"]) / 1000


def timeline(log: list[dict[str, Any]], step: float = 5.0) -> str:
    """Requests a second in each ``step`` seconds of the log, with the 429s among them."""
    if not log:
        return "(empty)"
    points = sorted((arrival(e), str(e["status"])) for e in log)
    first = points[0][0]
    buckets: dict[int, Counter[str]] = {}
    for t, status in points:
        buckets.setdefault(int((t - first) // step), Counter())[status] += 1
    parts = []
    for k in range(max(buckets) + 1):
        got = buckets.get(k, Counter())
        text = f"{sum(got.values()) / step:.0f}"
        if got["429"]:
            text += f"({got['429']}x429)"
        parts.append(text)
    return " ".join(parts)


def case_rate(tmp: Path, rows: int, opts: argparse.Namespace) -> None:
    path = write_customers(tmp / "rate.csv", rows)
    with emulator("--rate-limit", "50") as emu:
        run = upsert(tmp, "rate", path, emu.url, "--rate", "80", timeout=opts.timeout)
        stored = emu.customers()
        log = api_posts(emu.requests())
    rate = run.rows_per_second(rows)
    statuses = Counter(str(e["status"]) for e in log)
    throttled = statuses.get("429", 0)
    share = throttled / len(log) if log else 0.0
    print(f"  CLI: wall {run.wall:.2f} s; {run.describe()}", flush=True)
    print(f"  emulator request log: {len(log):,} API requests, statuses {dict(statuses)}")
    print(f"  requests/s per 5 s of the run: {timeline(log)}", flush=True)
    if len(log) >= REQUEST_LOG_SIZE:
        print(f"  (the log keeps the last {REQUEST_LOG_SIZE:,}: the share is of those)")
    verdict(
        "rate",
        "rows/s by wall time",
        f"{rate:.1f} rows/s (the CLI's own figure: {run.summary.get('rows_per_second')})",
        ">= 45 rows/s",
        rate >= 45,
    )
    verdict(
        "rate",
        "requests answered 429",
        f"{throttled:,} of {len(log):,} = {share:.2%}",
        "< 2%",
        share < 0.02,
    )
    ok = created_all(run, rows) and stored == rows
    verdict(
        "rate",
        "rows lost",
        f"counts {run.counts}, {stored:,} stored",
        f"none ({rows:,} created)",
        ok,
    )

    small = min(rows, 500)
    path = write_customers(tmp / "adherence.csv", small)
    with emulator() as emu:
        run = upsert(tmp, "adherence", path, emu.url, "--rate", "50", timeout=opts.timeout)
        log = api_posts(emu.requests())
    times = [stamp(e["time"]) for e in log]
    peak = busiest_second(times)
    span = max(times) - min(times) if times else 0.0
    print(
        f"  adherence: CLI --rate 50, {small:,} rows, wall {run.wall:.2f} s; {run.describe()}; "
        f"{len(log):,} requests logged over {span:.2f} s "
        f"(mean {len(log) / span if span else 0:.1f}/s); busiest second by arrival time "
        f"(log time less duration): {busiest_second([arrival(e) for e in log])}",
        flush=True,
    )
    verdict(
        "rate",
        "busiest 1-second window at --rate 50",
        f"{peak} requests",
        "<= 51",
        peak <= 51 and created_all(run, small),
    )


# -- memory -----------------------------------------------------------------------------------


def case_faults(tmp: Path, rows: int, opts: argparse.Namespace) -> None:
    """2 % of requests answered 503 (Retry-After 1): a --rate 50 upsert keeps >= 90 % of its
    rate (the refused request waits; nobody else does), and every row is created once."""
    path = write_customers(tmp / "faults.csv", rows)
    with emulator() as emu:
        emu.admin("POST", "/config", {"fail_rate": 0.02, "fault_kinds": ["503"]})
        run = upsert(tmp, "faults", path, emu.url, "--rate", "50", timeout=opts.timeout)
        stored = emu.customers()
        log = api_posts(emu.requests())
    rate = run.rows_per_second(rows)
    statuses = Counter(str(e["status"]) for e in log)
    print(f"  CLI: wall {run.wall:.2f} s; {run.describe()}", flush=True)
    print(f"  emulator request log: {len(log):,} API requests, statuses {dict(statuses)}")
    print(f"  requests/s per 5 s of the run: {timeline(log)}", flush=True)
    verdict(
        "faults",
        "rows/s by wall time with 2 % 503s, --rate 50",
        f"{rate:.1f} rows/s (the CLI's own figure: {run.summary.get('rows_per_second')})",
        ">= 45 rows/s (90 %)",
        rate >= 45,
    )
    ok = created_all(run, rows) and stored == rows
    verdict("faults", "rows lost", f"counts {run.counts}, {stored:,} stored", "none", ok)


def case_resync(tmp: Path, rows: int, opts: argparse.Namespace) -> None:
    """Next week's export of the same list with 500 rows changed, re-sorted: --changed-only
    makes 500 requests. Then the ledger at 1,000,000 applied requests: its size, the cost of
    a lookup, and the same --changed-only run against it."""
    import random
    import sqlite3

    os.environ["XDG_DATA_HOME"] = str(tmp / "data")  # a ledger of this benchmark's own
    path = write_customers(tmp / "week1.csv", rows)
    with emulator() as emu:
        first = upsert(tmp, "week1", path, emu.url, "--rate", "0", timeout=opts.timeout)
        print(f"  week 1: {first.describe()}", flush=True)
        table = read_rows(path)
        changed = set(random.Random(7).sample(range(rows), 500))
        for i in changed:
            table[i]["first_name"] = table[i]["first_name"] + " Jr"
        random.Random(8).shuffle(table)
        week2 = tmp / "week2.csv"
        with week2.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=list(table[0]))
            w.writeheader()
            w.writerows(table)
        second = upsert(
            tmp, "week2", week2, emu.url, "--rate", "0", "--changed-only", timeout=opts.timeout
        )
        requests = int(second.summary.get("requests", -1))
        print(f"  week 2: {second.describe()}", flush=True)
        verdict(
            "resync",
            f"requests for next week's {rows:,}-row export, 500 changed",
            f"{requests:,} requests, {second.counts}, wall {second.wall:.1f} s",
            "500",
            requests == 500,
        )
        ledger = tmp / "data" / "sonar-bulk" / "sent.sqlite"
        small = ledger.stat().st_size
        # grow the ledger to 1,000,000 applied requests (random keys, as real ones are)
        db = sqlite3.connect(ledger)
        have = db.execute("SELECT COUNT(*) FROM applied").fetchone()[0]
        rng = random.Random(9)
        with db:
            db.executemany(
                "INSERT OR IGNORE INTO applied VALUES (?, ?, ?)",
                (
                    (f"{rng.getrandbits(128):032x}", "2026-12-01T00:00:00Z", "old.csv")
                    for _ in range(1_000_000 - have)
                ),
            )
        db.execute("VACUUM")
        db.close()
        big = ledger.stat().st_size
        from sonar_bulk.engine.ledger import Ledger

        probe = [f"{rng.getrandbits(128):032x}" for _ in range(50_000)]
        started = time.perf_counter()
        handle = Ledger(ledger)
        handle.applied(probe)
        handle.close()
        lookup = time.perf_counter() - started
        third = upsert(
            tmp, "week2b", week2, emu.url, "--rate", "0", "--changed-only", timeout=opts.timeout
        )
    print(
        f"  ledger: {small / 1e6:.1f} MB after week 1 ({rows:,} applied); "
        f"{big / 1e6:.1f} MB at 1,000,000 applied requests",
        flush=True,
    )
    verdict(
        "resync",
        "ledger at 1,000,000 applied requests: size; 50,000 lookups",
        f"{big / 1e6:.0f} MB; {lookup:.2f} s ({lookup / 50_000 * 1e6:.0f} µs each)",
        "reported",
        True,
    )
    verdict(
        "resync",
        "the same --changed-only run against the 1,000,000-entry ledger",
        f"{int(third.summary.get('requests', -1)):,} requests, wall {third.wall:.1f} s "
        f"(against {second.wall:.1f} s with {rows:,} entries)",
        "0 requests (the 500 were applied by week 2)",
        int(third.summary.get("requests", -1)) == 0,
    )


def case_memory(tmp: Path, rows: int, opts: argparse.Namespace) -> None:
    path = write_customers(tmp / "memory.csv", rows)
    with emulator() as emu:
        run = upsert(tmp, "memory", path, emu.url, "--rate", "0", timeout=opts.timeout, time_v=True)
        server_rss = emu.peak_rss_mib()
    how = "/usr/bin/time -v" if run.command[0].endswith("time") else "wait4 ru_maxrss"
    points = [p for p in run.samples if p[1] > 0]
    if points:
        step = max(1, len(points) // 12)
        shown = points[::step] + ([points[-1]] if (len(points) - 1) % step else [])
        top = max(points, key=lambda p: p[1])
        print(
            "  RSS over the run (s: MiB, sampled each second): "
            + ", ".join(f"{t:.0f}: {m:,.0f}" for t, m in shown)
            + f"; highest sample {top[1]:,.0f} MiB at {top[0]:.0f} s",
            flush=True,
        )
    print(
        f"  CLI: wall {run.wall:.1f} s = {run.rows_per_second(rows):,.0f} rows/s; "
        f"{run.describe()}; emulator peak RSS "
        f"{'unknown' if server_rss is None else f'{server_rss:,.0f} MiB'}",
        flush=True,
    )
    verdict(
        "memory",
        f"CLI peak RSS ({how})",
        f"{run.rss_mib:,.0f} MiB = {run.rss_mib * 2**20 / GB:.2f} GB",
        "<= 1.5 GB",
        run.rss_mib * 2**20 <= 1.5 * GB,
    )
    verdict(
        "memory",
        "rows created",
        f"counts {run.counts}",
        f"{rows:,} created",
        created_all(run, rows),
    )


RUNNERS: dict[str, tuple[int, Callable[[Path, int, argparse.Namespace], None]]] = {
    "ceiling": (20_000, case_ceiling),
    "latency": (1_000, case_latency),
    "rate": (3_000, case_rate),
    "faults": (1_500, case_faults),
    "resync": (50_000, case_resync),
    "memory": (1_000_000, case_memory),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--case", action="append", choices=[*CASES, "all"], required=True, help="repeatable"
    )
    parser.add_argument("--rows", type=int, help="rows of each chosen case (default: its own)")
    parser.add_argument("--repeat", type=int, default=1, help="ceiling: runs of each side")
    parser.add_argument(
        "--timeout", type=float, default=3600, help="seconds before a CLI run is killed"
    )
    opts = parser.parse_args()
    chosen = list(CASES) if "all" in opts.case else list(dict.fromkeys(opts.case))
    print(
        f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"httpx {httpx.__version__}",
        flush=True,
    )
    for name in chosen:
        default, run = RUNNERS[name]
        rows = opts.rows or default
        print(f"\n== {name}: {rows:,} rows; load average {load_average()}", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"bench-bulk-{name}-") as tmp:
            # each case's ledger and emulator state in a folder of its own, gone at the end
            os.environ["XDG_DATA_HOME"] = str(Path(tmp) / "data")
            os.environ["XDG_CONFIG_HOME"] = str(Path(tmp) / "config")
            run(Path(tmp), rows, opts)
    print("\nsummary:")
    for v in VERDICTS:
        word = "PASS" if v.ok else "NOT REACHED"
        print(f"  {v.case:8} {v.what}: {v.measured} (target {v.target}) {word}")


if __name__ == "__main__":
    main()
