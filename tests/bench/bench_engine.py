"""Benchmark of the engine against plain aiohttp, in the same run (issue 20). Not part of the
test suite.

One `sonar-bulk emulator --port 0` process without limits serves both sides. For each of
``--repeat`` rounds (median of them reported):

  baseline  plain ``aiohttp.ClientSession`` in this process: N workers over a connector of N
            connections posting the same fields (phone_number, first_name, last_name, email,
            E.164 numbers) to ``POST /api/v1/customers``, each answer's JSON read;
  engine    the real CLI in its own process: ``customers upsert FILE --rate 0
            [--concurrency N]``, journal and results included, timed from start to exit;
  library   the same run through the Python API in its own process,
            ``sonar_bulk.run("customers upsert", FILE, rate=0, ...)``, timed from the call
            to its return: the engine as the baseline is timed, its libraries loaded first
            (the baseline's rows are even read before its clock starts; the engine's call
            reads, checks and plans the sheet, and writes the journal and the results).

The emulator is reset before each side. Reported per round: rows/s of each side, their ratio,
and the CLI process's CPU (user + system, from ``wait4``) per row:

  cpu/row (whole)   the CLI process's CPU / rows: start-up, reading, validating, the run,
                    the results file, everything;
  cpu/row (client)  the same less the CPU of ``sonar-bulk validate FILE --kind customers``
                    on the same sheet (measured once, in the same run): what the run itself
                    costs (planning, the send guard and journal, the HTTP client, the
                    results), the "client's own CPU";

the CLI's peak RSS (``ru_maxrss``), and the CLI's own rows/s over its sending phase (its
``--json`` summary: start-up, reading, validating and the results file left out). Targets:
engine >= 0.8 x baseline rows/s (reported for the CLI from start to exit, its sending phase,
and the library call); client's CPU <= 0.5 ms a row; peak RSS <= 1 GB at 1,000,000 rows (read
as 1 GiB, 1,024 MiB, as docs/performance.md reads its memory targets).

  python tests/bench/bench_engine.py                        # 20,000 rows, 3 rounds
  python tests/bench/bench_engine.py --rows 1000000 --repeat 1 --no-baseline
  python tests/bench/bench_engine.py --sweep 4,8,16,32      # --concurrency N on both sides
  python tests/bench/bench_engine.py --sweep 4,8,16,32 --latency-ms 100 --rows 2000
                                          # the emulator answering after 100 ms (an API far away)
  python tests/bench/bench_engine.py --profile out.prof     # the CLI under cProfile
  python tests/bench/bench_engine.py --client --repeat 5    # the API client alone, in this
                                          # process, against plain aiohttp (CPU a request)

Inputs are generated into a temporary folder and never committed. The machine's other work
moves absolute numbers; the ratio is measured in the same round, against the same emulator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout, for tests.bench
from tests.bench.bench_bulk import (  # noqa: E402
    TOKEN,
    CliRun,
    Emulator,
    load_average,
    read_rows,
    upsert,
    write_customers,
)

GB = 1e9


async def aiohttp_post_all(
    base: str, rows: list[dict[str, str]], connections: int
) -> tuple[float, Counter[int]]:
    """The baseline: ``connections`` workers on one session of ``connections`` connections,
    each posting its next row as a form and reading the JSON answer."""
    statuses: Counter[int] = Counter()
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(
        base_url=base, headers={"Token": TOKEN}, connector=connector
    ) as session:
        todo = iter(rows)

        async def worker() -> None:
            for row in todo:
                async with session.post("/api/v1/customers", data=row) as response:
                    await response.json()
                    statuses[response.status] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return time.perf_counter() - started, statuses


async def client_post_all(
    base: str, rows: list[dict[str, str]], connections: int
) -> tuple[float, Counter[int]]:
    """The client alone, as the baseline: ``connections`` workers on one
    :class:`~sonar_bulk.api.client.SonarClient` of ``connections`` connections, each calling
    ``upsert_customer`` with the row's fields (no engine, journal or sheet)."""
    from sonar_bulk.api.client import SonarClient

    statuses: Counter[int] = Counter()
    async with SonarClient(f"{base}/api/v1", token=TOKEN, connections=connections) as client:
        todo = iter(rows)

        async def worker() -> None:
            for row in todo:
                answer = await client.call("upsert_customer", row)
                statuses[answer.status] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return time.perf_counter() - started, statuses


def client_rounds(emu: Emulator, data: list[dict[str, str]], opts: argparse.Namespace) -> None:
    """``--client``: plain aiohttp and the API client alone, in this process, interleaved."""
    connections = opts.default_concurrency
    rows = len(data)
    got: dict[str, list[tuple[float, float]]] = {"aiohttp": [], "client": []}
    for n in range(opts.repeat):
        for name, post in (("aiohttp", aiohttp_post_all), ("client", client_post_all)):
            emu.reset()
            cpu = time.process_time()
            seconds, statuses = asyncio.run(post(emu.url, data, connections))
            cpu = time.process_time() - cpu
            got[name].append((rows / seconds, cpu / rows * 1000))
            print(
                f"  round {n + 1}, {name}: {rows / seconds:,.0f} rows/s, CPU {cpu:.2f} s "
                f"({cpu / rows * 1000:.3f} ms a row); statuses {dict(statuses)}",
                flush=True,
            )
    print("\nsummary:")
    for name, values in got.items():
        rate = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        print(f"  {name}: {rate:,.0f} rows/s, {cpu:.3f} ms of CPU a row (median of {opts.repeat})")


def run_validate(path: Path) -> float:
    """CPU seconds of `sonar-bulk validate PATH --kind customers` (start-up, read, validate)."""
    args = [sys.executable, "-m", "sonar_bulk", "validate", str(path), "--kind", "customers"]
    args += ["-q"]
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, _status, usage = os.wait4(proc.pid, 0)
    return usage.ru_utime + usage.ru_stime


LIBRARY_RUN = """
import json, sys, time
import pyarrow
import sonar_bulk.library, sonar_bulk.engine.run, sonar_bulk.api.transport  # loaded first
pyarrow.array([""])  # pyarrow loads pandas (where installed) on its first array: loading too
path, base, token, folder = sys.argv[1:5]
started = time.perf_counter()
cpu = time.process_time()
report = sonar_bulk.library.run(
    "customers upsert", path, base_url=base, token=token, rate=0, yes=True,
    journal=folder + "/library.journal.sqlite", results=folder + "/library.results.csv",
)
print(json.dumps({"seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu,
                  "counts": report.counts, "exit_code": report.exit_code}))
"""


def library_run(tmp: Path, path: Path, base: str, timeout: float) -> dict[str, object]:
    """The run through ``sonar_bulk.run`` in a process of its own, timed around the call."""
    for old in tmp.glob("library.*"):
        old.unlink()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONAR_")}
    done = subprocess.run(
        [sys.executable, "-c", LIBRARY_RUN, str(path), f"{base}/api/v1", TOKEN, str(tmp)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SystemExit(f"the library run failed: {done.stderr.strip()[-2000:]}")
    found: dict[str, object] = json.loads(lines[-1])
    return found


@dataclass
class Round:
    concurrency: int | None
    baseline: float | None  # rows/s
    baseline_cpu: float | None
    engine: CliRun
    ok: bool
    library: float | None = None  # rows/s of the sonar_bulk.run call


def one_round(
    tmp: Path,
    emu: Emulator,
    path: Path,
    data: list[dict[str, str]] | None,
    rows: int,
    concurrency: int | None,
    name: str,
    opts: argparse.Namespace,
) -> Round:
    connections = concurrency or opts.default_concurrency
    base = base_cpu = None
    if data is not None:
        emu.reset()
        cpu = time.process_time()
        seconds, statuses = asyncio.run(aiohttp_post_all(emu.url, data, connections))
        base_cpu = time.process_time() - cpu
        base = rows / seconds
        print(
            f"    aiohttp: {rows:,} posts over {connections} connections in {seconds:.2f} s = "
            f"{base:,.0f} rows/s, CPU {base_cpu:.1f} s ({base_cpu / rows * 1000:.3f} ms a "
            f"row); statuses {dict(statuses)}",
            flush=True,
        )
    emu.reset()
    extra = ["--rate", "0"]
    if concurrency is not None:
        extra += ["--concurrency", str(concurrency)]
    run = upsert(tmp, name, path, emu.url, *extra, timeout=opts.timeout)
    stored = emu.customers()
    ok = run.exit_code == 0 and run.counts == {"created": rows} and stored == rows
    print(
        f"    engine:  wall {run.wall:.2f} s = {run.rows_per_second(rows):,.0f} rows/s (its "
        f"sending phase: {sending(run):,.0f} rows/s); CPU "
        f"{run.cpu:.1f} s ({run.cpu / rows * 1000:.3f} ms a row, whole process); peak RSS "
        f"{run.rss_mib:,.0f} MiB; exit {run.exit_code}, counts {run.counts}, emulator holds "
        f"{stored:,}",
        flush=True,
    )
    library = None
    if data is not None:
        emu.reset()
        got = library_run(tmp, path, emu.url, opts.timeout)
        seconds = float(got["seconds"])  # type: ignore[arg-type]
        library = rows / seconds
        ok = ok and got["counts"] == {"created": rows} and emu.customers() == rows
        print(
            f"    library: sonar_bulk.run in {seconds:.2f} s = {library:,.0f} rows/s; CPU "
            f"{float(got['cpu']):.1f} s; counts {got['counts']}",  # type: ignore[arg-type]
            flush=True,
        )
    points = [p for p in run.samples if p[1] > 0]
    if rows >= 200_000 and points:
        step = max(1, len(points) // 16)
        shown = points[::step] + ([points[-1]] if (len(points) - 1) % step else [])
        print(
            "    RSS of the CLI over the run (s: MiB, sampled each second): "
            + ", ".join(f"{t:.0f}: {m:,.0f}" for t, m in shown),
            flush=True,
        )
    return Round(concurrency, base, base_cpu, run, ok, library)


def sending(run: CliRun) -> float:
    """The CLI's own rows/s over its sending phase (its ``--json`` summary)."""
    return float(run.summary.get("rows_per_second") or 0.0)


def report(rounds: list[Round], rows: int, validate_cpu: float, label: str) -> list[str]:
    engine = statistics.median(r.engine.rows_per_second(rows) for r in rounds)
    cpu = statistics.median(r.engine.cpu for r in rounds)
    rss = max(r.engine.rss_mib for r in rounds)
    whole = cpu / rows * 1000
    client = (cpu - validate_cpu) / rows * 1000
    lines = [f"{label}: median of {len(rounds)} round(s), {rows:,} rows"]
    bases = [r.baseline for r in rounds if r.baseline is not None]
    if bases:
        base = statistics.median(bases)
        ratios = [
            r.engine.rows_per_second(rows) / r.baseline for r in rounds if r.baseline is not None
        ]
        ratio = statistics.median(ratios)
        word = "PASS" if ratio >= 0.8 else "NOT REACHED"
        lines.append(
            f"  rate: engine {engine:,.0f} rows/s, plain aiohttp {base:,.0f} rows/s; ratio "
            f"{ratio:.2f} x (rounds: {', '.join(f'{x:.2f}' for x in ratios)}) "
            f"(target >= 0.80 x) {word}"
        )
        called = [r.library / r.baseline for r in rounds if r.baseline is not None and r.library]
        if called:
            word = "PASS" if statistics.median(called) >= 0.8 else "NOT REACHED"
            lines.append(
                f"  the engine through the library (sonar_bulk.run, timed as the baseline is, "
                f"its libraries loaded first): "
                f"{statistics.median(r.library for r in rounds if r.library):,.0f} rows/s, "
                f"{statistics.median(called):.2f} x (rounds: "
                f"{', '.join(f'{x:.2f}' for x in called)}) (target >= 0.80 x) {word}"
            )
        phase = [sending(r.engine) / r.baseline for r in rounds if r.baseline is not None]
        lines.append(
            f"  the engine's sending phase alone (start-up and results left out): "
            f"{statistics.median(sending(r.engine) for r in rounds):,.0f} rows/s, "
            f"{statistics.median(phase):.2f} x (rounds: {', '.join(f'{x:.2f}' for x in phase)})"
        )
    else:
        lines.append(f"  rate: engine {engine:,.0f} rows/s (no baseline)")
    word = "PASS" if client <= 0.5 else "NOT REACHED"
    lines.append(
        f"  CPU: {whole:.3f} ms a row (whole CLI process, {cpu:.1f} s); {client:.3f} ms a row "
        f"(client's own: less validate's {validate_cpu:.1f} s) (target <= 0.5 ms) {word}"
    )
    word = "PASS" if rss <= 1024 else "NOT REACHED"
    lines.append(
        f"  peak RSS: {rss:,.0f} MiB = {rss * 2**20 / GB:.2f} GB (target <= 1 GB at 1,000,000 "
        f"rows, read as 1 GiB = 1,024 MiB as docs/performance.md does) {word}"
    )
    lines.append(f"  all created: {'yes' if all(r.ok for r in rounds) else 'NO'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3, help="rounds (median reported)")
    parser.add_argument(
        "--sweep", help="comma-separated --concurrency values, each measured on both sides"
    )
    parser.add_argument(
        "--no-baseline", action="store_true", help="the engine only (a 1,000,000-row run)"
    )
    parser.add_argument("--profile", help="also run the CLI once under cProfile into this file")
    parser.add_argument(
        "--client",
        action="store_true",
        help="the API client alone against plain aiohttp, in this process (no CLI)",
    )
    parser.add_argument("--timeout", type=float, default=7200, help="seconds per CLI run")
    parser.add_argument(
        "--latency-ms", type=float, default=0, help="the emulator answers after this long"
    )
    opts = parser.parse_args()
    from sonar_bulk.engine.options import DEFAULT_CONCURRENCY

    opts.default_concurrency = DEFAULT_CONCURRENCY
    print(
        f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, aiohttp "
        f"{aiohttp.__version__}, httpx {httpx.__version__}; load average {load_average()}; "
        f"default --concurrency {DEFAULT_CONCURRENCY}",
        flush=True,
    )
    levels: list[int | None] = [int(x) for x in opts.sweep.split(",")] if opts.sweep else [None]
    out: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp_name:
        tmp = Path(tmp_name)
        # the runs' ledger and emulator state in a folder of their own, gone at the end (a
        # million-row run would leave hundreds of MB in the user's data folder)
        os.environ["XDG_DATA_HOME"] = str(tmp / "data")
        os.environ["XDG_CONFIG_HOME"] = str(tmp / "config")
        path = write_customers(tmp / "customers.csv", opts.rows)
        data = None if opts.no_baseline else read_rows(path)
        if opts.client:
            emu = Emulator()
            try:
                client_rounds(emu, data or read_rows(path), opts)
            finally:
                emu.close()
            return
        validate_cpu = run_validate(path)
        print(f"  validate alone: CPU {validate_cpu:.2f} s", flush=True)
        emu = Emulator(*(["--latency-ms", f"{opts.latency_ms:g}"] if opts.latency_ms else []))
        try:
            knobs = f"--latency-ms {opts.latency_ms:g}" if opts.latency_ms else "no limits"
            print(f"  emulator: {emu.url} ({knobs})", flush=True)
            by_level: dict[int | None, list[Round]] = {level: [] for level in levels}
            for n in range(opts.repeat):
                for level in levels:
                    shown = level or f"{DEFAULT_CONCURRENCY} (default)"
                    print(f"  round {n + 1}, concurrency {shown}:", flush=True)
                    by_level[level].append(
                        one_round(tmp, emu, path, data, opts.rows, level, f"r{n}c{level}", opts)
                    )
            if opts.profile:
                emu.reset()
                profiled(tmp, emu, path, opts)
        finally:
            emu.close()
        for level, rounds in by_level.items():
            label = f"--concurrency {level or f'{DEFAULT_CONCURRENCY} (default)'}"
            out += report(rounds, opts.rows, validate_cpu, label)
    print("\nsummary:")
    for line in out:
        print(line)


def profiled(tmp: Path, emu: Emulator, path: Path, opts: argparse.Namespace) -> None:
    """The same engine run under cProfile, its statistics into ``opts.profile``."""
    args = [
        sys.executable,
        "-m",
        "cProfile",
        "-o",
        opts.profile,
        "-m",
        "sonar_bulk",
        "customers",
        "upsert",
        str(path),
        "--base-url",
        f"{emu.url}/api/v1",
        "--token",
        TOKEN,
        "--rate",
        "0",
        "-q",
        "--json",
        "--results",
        str(tmp / "profiled.results.csv"),
        "--journal",
        str(tmp / "profiled.journal.sqlite"),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONAR_")}
    started = time.perf_counter()
    subprocess.run(args, env=env, stdout=subprocess.DEVNULL, check=False, timeout=opts.timeout)
    print(f"  profiled run: {time.perf_counter() - started:.1f} s -> {opts.profile}", flush=True)


if __name__ == "__main__":
    main()
