"""Benchmark: how many POST /customers per second the emulator serves (issue #3 target: 2,000/s).

The emulator runs as `sonar-bulk emulator` in its own process; clients are separate processes
with concurrent keep-alive connections (raw HTTP/1.1 over asyncio streams, so the client is
cheap and the number measures the server). Not part of the test suite:

  python tests/bench/bench_emulator.py [--requests 20000] [--clients 1] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import subprocess
import sys
import time
import urllib.request

TOKEN = "bench-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def worker(port: int, start: int, count: int, stats: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for i in range(start, start + count):
        body = f"phone_number=%2B1310{2000000 + i % 8000000:07d}&first_name=Bench&properties[n]={i}"
        request = (
            f"POST /api/v1/customers HTTP/1.1\r\nHost: 127.0.0.1\r\nToken: {TOKEN}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        )
        writer.write(request.encode())
        await writer.drain()
        status_line = await reader.readline()
        length = 0
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        stats.append(int(status_line.split()[1]))
    writer.close()


def client(port: int, offset: int, requests: int, concurrency: int, queue: object) -> None:
    stats: list[int] = []

    async def main() -> None:
        per = requests // concurrency
        await asyncio.gather(
            *(worker(port, offset + k * per, per, stats) for k in range(concurrency))
        )

    asyncio.run(main())
    queue.put(stats)  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args()
    rates = sorted(run_once(opts) for _ in range(opts.repeat))
    print(
        f"median {rates[len(rates) // 2]:,.0f} requests/s over {opts.repeat} runs "
        f"(best {rates[-1]:,.0f})"
    )


def run_once(opts: argparse.Namespace) -> float:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "sonar_bulk", "emulator", "--port", str(port), "--token", TOKEN],
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/__emulator__/config", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        queue: multiprocessing.Queue[list[int]] = multiprocessing.Queue()
        per_client = opts.requests // opts.clients
        procs = [
            multiprocessing.Process(
                target=client, args=(port, c * per_client, per_client, opts.concurrency, queue)
            )
            for c in range(opts.clients)
        ]
        start = time.perf_counter()
        for p in procs:
            p.start()
        statuses = [s for _ in procs for s in queue.get()]
        for p in procs:
            p.join()
        elapsed = time.perf_counter() - start
        ok = sum(1 for s in statuses if s in (200, 201))
        print(
            f"machine: {os.cpu_count()} cores; {len(statuses):,} POST /customers "
            f"({opts.clients} client process(es) x {opts.concurrency} connections) in "
            f"{elapsed:.2f} s = {len(statuses) / elapsed:,.0f} requests/s; {ok:,} answered 2xx"
        )
        return len(statuses) / elapsed
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
