"""Benchmark: the emulator's API rate with a webhook registered (issue #7 targets).

Each case starts its own `sonar-bulk emulator` process (and, for "ok", a receiver process) on
127.0.0.1, sends a bounded number of POST /customers (each one a new customer, so one
`customer_created` delivery each) over keep-alive connections from this process, and stops
everything it started. Cases:

  none         no webhook: the baseline rate
  ok           one webhook to a local receiver that answers 200 at once; also how long until
               every event has been received (target: all within 30 s)
  dead         one webhook to a closed port (every delivery fails and waits for its retry)
  dead-capped  the same with --webhook-queue 500, so most deliveries are dropped

Targets: "ok" at least half of "none"'s rate, "dead" at least 80 % of it, pending deliveries
bounded. Beside each rate, the emulator's CPU time per request (user + system, read from
/proc on Linux): from the first request to the last answer, and for "ok" until the receiver
has every event; on a machine shared with other work it moves less than the rate does.

--baseline DIR runs every case twice per repeat, interleaved: once with the emulator imported
from DIR (a copy of an older ``sonar_bulk`` package, put first on its PYTHONPATH) and once
with the installed one, so a change is measured before and after in the same run, e.g.
``git archive main sonar_bulk | tar -x -C /tmp/before``.

Before it starts, it waits (up to 10 min, polling every 30 s) until the 1-minute load average
is below --max-load. Not part of the test suite:

  python tests/bench/bench_webhooks.py [--requests 2000] [--concurrency 32] [--repeat 3]
      [--baseline DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any, cast

import httptools

# The sibling benchmark's client and helpers (run as a script, this folder is on sys.path).
_sibling = importlib.import_module("bench_emulator")
TOKEN: str = _sibling.TOKEN
free_port: Callable[[], int] = _sibling.free_port
worker: Callable[[int, int, int, list[int]], Awaitable[None]] = _sibling.worker

CASES = ("none", "ok", "dead", "dead-capped")


# -- the receiver: a lean HTTP/1.1 server (its own process) that answers 200 at once ----------


class _Hook(asyncio.Protocol):
    def __init__(self, seen: dict[str, Any]) -> None:
        self.seen = seen
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.transport is not None
        if self.url.startswith(b"/count"):
            answer = json.dumps(
                {"requests": self.seen["requests"], "events": len(self.seen["uuids"])}
            ).encode()
        else:
            self.seen["requests"] += 1
            self.seen["uuids"].add(json.loads(b"".join(self.body))["uuid"])
            answer = b"ok"
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
            % (len(answer), answer)
        )
        self.url, self.body = b"", []


def receiver_main(port: int) -> None:
    seen: dict[str, Any] = {"requests": 0, "uuids": set()}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Hook(seen), "127.0.0.1", port)
        async with server:
            await server.serve_forever()

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def post_json(url: str, body: Any, headers: dict[str, str]) -> Any:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **headers},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def wait_until_up(url: str, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            get_json(url, timeout=1)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# -- one run of one case -----------------------------------------------------------------------


async def load(port: int, requests: int, concurrency: int, offset: int) -> list[int]:
    stats: list[int] = []
    per, extra = divmod(requests, concurrency)
    starts, start = [], offset
    for k in range(concurrency):
        count = per + (1 if k < extra else 0)
        starts.append((start, count))
        start += count
    await asyncio.gather(*(worker(port, s, c, stats) for s, c in starts if c))
    return stats


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux's /proc; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_case(
    case: str, opts: argparse.Namespace, run: int, baseline: str | None = None
) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ["--port", str(port), "--token", TOKEN]
    if case == "dead-capped":
        args += ["--webhook-queue", "500"]
    log = tempfile.TemporaryFile()
    env = dict(os.environ)
    if baseline is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [baseline, env.get("PYTHONPATH")]))
    server = subprocess.Popen(
        [sys.executable, "-m", "sonar_bulk", "emulator", *args], stderr=log, stdout=log, env=env
    )
    receiver: multiprocessing.Process | None = None
    try:
        wait_until_up(base + "/__emulator__/config")
        if case != "none":
            if case == "ok":
                hook_port = free_port()
                receiver = multiprocessing.Process(
                    target=receiver_main, args=(hook_port,), daemon=True
                )
                receiver.start()
                wait_until_up(f"http://127.0.0.1:{hook_port}/count")
            else:
                hook_port = free_port()  # nothing listens there
            post_json(
                base + "/api/v1/webhooks",
                {
                    "webhook": {
                        "url": f"http://127.0.0.1:{hook_port}/hook",
                        "active": True,
                        "settings": {"customer_created": True},
                    }
                },
                {"Token": TOKEN},
            )
        cpu_before = cpu_seconds(server.pid)
        started = time.perf_counter()
        statuses = asyncio.run(load(port, opts.requests, opts.concurrency, run * opts.requests))
        elapsed = time.perf_counter() - started
        out: dict[str, Any] = {
            "rate": len(statuses) / elapsed,
            "seconds": elapsed,
            "created": statuses.count(201),
        }
        if case == "ok":
            deadline = started + opts.deliver_within + 30
            while True:
                seen = get_json(f"http://127.0.0.1:{hook_port}/count")
                if seen["events"] >= opts.requests or time.perf_counter() > deadline:
                    break
                time.sleep(0.01)
            out["delivered_after"] = time.perf_counter() - started
            out["events"] = seen["events"]
            out["receiver_requests"] = seen["requests"]
        cpu_after = cpu_seconds(server.pid)
        if cpu_before is not None and cpu_after is not None:
            out["cpu_ms_per_request"] = (cpu_after - cpu_before) * 1000 / len(statuses)
        if case.startswith("dead"):
            (stats,) = get_json(base + "/__emulator__/queue")["webhooks"]
            out["pending"] = stats["pending"]
            out["dropped"] = stats["dropped"]
            out["cap"] = get_json(base + "/__emulator__/queue")["max_pending"]
        return out
    finally:
        server.terminate()
        server.wait(timeout=15)
        if receiver is not None:
            receiver.terminate()
            receiver.join(timeout=10)
        log.seek(0)
        errors = log.read().decode("utf-8", "replace")
        log.close()
        if "Traceback" in errors:
            print(errors, file=sys.stderr)


def wait_for_quiet(max_load: float) -> None:
    """Wait (up to 10 minutes, polling every 30 s) for the 1-minute load to fall below
    ``max_load``; say so and go on when it does not."""
    if max_load <= 0:
        return
    deadline = time.monotonic() + 600
    while True:
        load1 = os.getloadavg()[0]
        if load1 < max_load:
            print(f"1-minute load {load1:.2f} < {max_load}: starting")
            return
        if time.monotonic() > deadline:
            print(f"1-minute load still {load1:.2f} after 10 minutes: starting anyway")
            return
        print(f"1-minute load {load1:.2f} >= {max_load}: waiting 30 s")
        time.sleep(30)


def summarize(
    title: str, results: dict[str, list[dict[str, Any]]], opts: argparse.Namespace
) -> None:
    print(f"\n{title}best / median requests/s, median emulator CPU ms per request:")
    medians: dict[str, float] = {}
    for case, runs in results.items():
        rates = [r["rate"] for r in runs]
        medians[case] = statistics.median(rates)
        line = f"  {case:12} {max(rates):8,.0f} / {medians[case]:8,.0f}"
        cpu = [r["cpu_ms_per_request"] for r in runs if "cpu_ms_per_request" in r]
        if cpu:
            line += f"   cpu {statistics.median(cpu):.3f} ms"
        if case == "ok":
            after = [r["delivered_after"] for r in runs]
            complete = all(r["events"] >= opts.requests for r in runs)
            line += (
                f"   every event received after {min(after):.2f} / {statistics.median(after):.2f}"
                f" s (all {opts.requests:,} in every run: {complete})"
            )
        if case.startswith("dead"):
            pending = max(r["pending"] for r in runs)
            dropped = max(r["dropped"] for r in runs)
            cap = runs[0]["cap"]
            line += f"   pending at most {pending:,} (cap {cap:,}), dropped {dropped:,}"
        print(line)
    if "none" in medians:
        for case, target in (("ok", 0.5), ("dead", 0.8), ("dead-capped", 0.8)):
            if case in medians:
                ratio = medians[case] / medians["none"]
                verdict = "reached" if ratio >= target else "NOT reached"
                print(
                    f"  {case}: median {ratio:.0%} of the no-webhook median "
                    f"(target {target:.0%}): {verdict}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--deliver-within", type=float, default=30.0)
    parser.add_argument("--max-load", type=float, default=1.0)
    parser.add_argument("--baseline", metavar="DIR", help="an older sonar_bulk's parent folder")
    opts = parser.parse_args()
    cases = [c for c in opts.cases.split(",") if c]
    assert all(c in CASES for c in cases), f"cases are {', '.join(CASES)}"
    if opts.baseline:
        opts.baseline = os.path.abspath(opts.baseline)
        assert os.path.isdir(os.path.join(opts.baseline, "sonar_bulk")), "--baseline DIR/sonar_bulk"
    wait_for_quiet(opts.max_load)
    print(
        f"machine: {os.cpu_count()} cores, {platform.machine()} {platform.system()}, Python "
        f"{platform.python_version()}; {opts.requests:,} POST /customers over "
        f"{opts.concurrency} connections, each case {opts.repeat} times"
        + (f", before ({opts.baseline}) and after, interleaved" if opts.baseline else "")
    )
    variants: list[str | None] = [opts.baseline, None] if opts.baseline else [None]
    results: dict[str | None, dict[str, list[dict[str, Any]]]] = {
        v: {c: [] for c in cases} for v in variants
    }
    for run in range(opts.repeat):  # interleaved, so drifting background load hits all cases
        for case in cases:
            for variant in variants:
                out = run_case(case, opts, run, variant)
                results[variant][case].append(out)
                extra = ", ".join(f"{k} {v:,.2f}" for k, v in out.items() if k not in ("rate",))
                name = ("before " if variant else "after  ") if opts.baseline else ""
                print(f"  {name}{case:12} run {run + 1}: {out['rate']:8,.0f} requests/s ({extra})")
    for variant in variants:
        title = ("before: " if variant else "after: ") if opts.baseline else ""
        summarize(title, results[variant], opts)


if __name__ == "__main__":
    main()
