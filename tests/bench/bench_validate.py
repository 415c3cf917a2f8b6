"""Benchmark of `sonar-bulk validate` (issue #2 targets). Not part of the test suite.

Generates its inputs (never committed), runs the real CLI in a subprocess, and reports wall
time and the child's peak RSS:

  python tests/bench/bench_validate.py            # 1,000,000-row CSV + 100,000-row XLSX
  python tests/bench/bench_validate.py --rows 200000 --xlsx-rows 0

Targets: 1M-row customers CSV <= 5 s wall and <= 1 GB peak RSS; 100k-row XLSX <= 5 s.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

AREAS = [310, 213, 415, 646, 212, 917, 303, 206, 512, 617]
FORMATS = ["({a}) {b}-{c}", "{a}.{b}.{c}", "1{a}{b}{c}", "+1{a}{b}{c}"]
HEADERS = [
    "phone_number",
    "first_name",
    "last_name",
    "email",
    "subscribed",
    "zip_code",
    "timezone",
    "property:plan",
]


def make_rows(n: int, seed: int = 7):  # type: ignore[no-untyped-def]
    """n customer rows, 8 columns, mixed phone formats, about half the numbers unique."""
    rnd = random.Random(seed)
    pool = [(rnd.choice(AREAS), rnd.randint(200, 999), rnd.randint(0, 9999)) for _ in range(n // 2)]
    names = ["Ana", "Ben", "Chen", "Dana", "Elif", "Farah"]
    for i in range(n):
        a, b, c = pool[i] if i < len(pool) else rnd.choice(pool)
        first = rnd.choice(names)
        yield [
            rnd.choice(FORMATS).format(a=a, b=b, c=f"{c:04d}"),
            first,
            "Smith",
            f"{first.lower()}{i}@example.com",
            rnd.choice(["yes", "no", "", "true"]),
            f"{rnd.randint(10000, 99999)}",
            "America/Los_Angeles",
            rnd.choice(["gold", "silver"]),
        ]


def write_csv(path: Path, n: int) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(HEADERS)
        w.writerows(make_rows(n))


def write_xlsx(path: Path, n: int) -> None:
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("customers")
    ws.append(HEADERS)
    for row in make_rows(n):
        ws.append(row)
    wb.save(path)


def measure(args: list[str]) -> tuple[float, float, int]:
    """Run the CLI; (wall seconds, peak RSS MiB of the child, exit code)."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    return wall, usage.ru_maxrss / 1024, os.waitstatus_to_exitcode(status)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--xlsx-rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    opts = parser.parse_args()
    cli = [sys.executable, "-m", "sonar_bulk", "validate"]
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        cases = []
        if opts.rows:
            path = Path(tmp) / "customers.csv"
            write_csv(path, opts.rows)
            cases.append((f"{opts.rows:,}-row CSV ({path.stat().st_size / 1e6:.0f} MB)", path))
        if opts.xlsx_rows:
            path = Path(tmp) / "customers.xlsx"
            write_xlsx(path, opts.xlsx_rows)
            cases.append(
                (f"{opts.xlsx_rows:,}-row XLSX ({path.stat().st_size / 1e6:.0f} MB)", path)
            )
        for label, path in cases:
            runs = [
                measure(cli + [str(path), "--kind", "customers", "-q"]) for _ in range(opts.repeat)
            ]
            walls = sorted(r[0] for r in runs)
            rss = max(r[1] for r in runs)
            codes = {r[2] for r in runs}
            print(
                f"{label}: wall best {walls[0]:.2f} s, median {walls[len(walls) // 2]:.2f} s, "
                f"peak RSS {rss:.0f} MiB, exit {sorted(codes)}"
            )


if __name__ == "__main__":
    main()
