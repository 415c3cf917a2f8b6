"""Benchmark of `sonar-bulk validate` (issue targets). Not part of the test suite.

Generates its inputs (never committed), runs the real CLI in a subprocess, and reports wall
time and the child's peak RSS:

  python tests/bench/bench_validate.py                    # every case below
  python tests/bench/bench_validate.py --rows 200000 --xlsx-rows 0
  python tests/bench/bench_validate.py --case us-invalid --case uk-gb

Cases (customers sheets, 8 columns, about half the phone numbers unique):

  us-clean    1,000,000-row CSV, North American numbers in mixed formats  <= 5 s, <= 1 GB
  us-invalid  the same, half the numbers invalid (exchange 000-199: ``310 055 0101``)
                                                                         <= 15 s, <= 1 GB
  uk-us       UK mobiles (``07xxx xxxxxx``...), default region US        <= 15 s, <= 1 GB
  uk-gb       the same list with ``--default-region GB``                 <= 15 s, <= 1 GB
  intl-email  the us-clean rows, 12% of the emails internationalized (``élif.4@example.com``,
              RFC 6531), each of them valid                               <= 5 s, <= 1 GB
  xlsx        100,000-row XLSX of the us-clean rows                       <= 5 s
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
from collections.abc import Iterator
from pathlib import Path

AREAS = [310, 213, 415, 646, 212, 917, 303, 206, 512, 617]
FORMATS = ["({a}) {b}-{c}", "{a}.{b}.{c}", "1{a}{b}{c}", "+1{a}{b}{c}"]
#: Formats of the messy US sheet (the issue's example is ``310 055 0101``).
MESSY_FORMATS = [*FORMATS, "{a} {b} {c}", "{a}-{b}-{c}"]
#: UK mobiles as people type them; mostly ``07xxx xxxxxx``.
UK_FORMATS = ["07{a} {b}"] * 6 + ["07{a}{b}", "+44 7{a} {b}", "+447{a}{b}", "(07{a}) {b}"]
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
NAMES = ["Ana", "Ben", "Chen", "Dana", "Elif", "Farah"]
#: Local parts of internationalized addresses (RFC 6531), for the intl-email case.
INTL_NAMES = ["élif", "zoë", "josé", "françois", "søren", "müller", "北京", "ивана"]
UK_POSTCODES = ["SW1A 1AA", "M1 1AE", "B33 8TH", "CR2 6XH", "LS1 4DY"]


def _phone_pool(n: int, case: str, rnd: random.Random) -> list[tuple[str, str, str]]:
    """n // 2 distinct-ish numbers as (a, b, c) parts for the case's formats."""
    if case == "uk":
        return [
            (f"{rnd.randint(1, 9)}{rnd.randint(0, 99):02d}", f"{rnd.randint(0, 999999):06d}", "")
            for _ in range(n // 2)
        ]
    pool = []
    for _ in range(n // 2):
        a = rnd.choice(AREAS)
        # us-invalid: half the exchange codes are 000-199, which no NANP number has.
        bad = case == "us-invalid" and rnd.random() < 0.5
        b = rnd.randint(0, 199) if bad else rnd.randint(200, 999)
        pool.append((str(a), f"{b:03d}", f"{rnd.randint(0, 9999):04d}"))
    return pool


def make_rows(n: int, case: str = "us-clean", seed: int = 7) -> Iterator[list[str]]:
    """n customer rows, 8 columns, about half the numbers unique (us-clean, us-invalid, uk)."""
    rnd = random.Random(seed)
    pool = _phone_pool(n, case, rnd)
    formats = {"us-clean": FORMATS, "us-invalid": MESSY_FORMATS, "uk": UK_FORMATS}
    formats["intl-email"] = FORMATS
    uk = case == "uk"
    intl = case == "intl-email"
    for i in range(n):
        a, b, c = pool[i] if i < len(pool) else rnd.choice(pool)
        first = rnd.choice(NAMES)
        # about 12% internationalized: élif.4@example.com
        local = f"{rnd.choice(INTL_NAMES)}.{i}" if intl and rnd.random() < 0.12 else first.lower()
        yield [
            rnd.choice(formats[case]).format(a=a, b=b, c=c),
            first,
            "Smith",
            f"{local}{'' if '.' in local else i}@example.com",
            rnd.choice(["yes", "no", "", "true"]),
            rnd.choice(UK_POSTCODES) if uk else f"{rnd.randint(10000, 99999)}",
            "Europe/London" if uk else "America/Los_Angeles",
            rnd.choice(["gold", "silver"]),
        ]


def write_csv(path: Path, n: int, case: str) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(HEADERS)
        w.writerows(make_rows(n, case))


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


#: case → (CSV flavour, extra CLI options); the xlsx case is separate.
CSV_CASES = {
    "us-clean": ("us-clean", []),
    "us-invalid": ("us-invalid", []),
    "uk-us": ("uk", []),
    "uk-gb": ("uk", ["--default-region", "GB"]),
    "intl-email": ("intl-email", []),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--xlsx-rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--case",
        action="append",
        choices=[*CSV_CASES, "xlsx"],
        help="run only these cases (repeatable; default: all)",
    )
    opts = parser.parse_args()
    chosen = opts.case or [*CSV_CASES, "xlsx"]
    cli = [sys.executable, "-m", "sonar_bulk", "validate"]
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as tmp:
        cases: list[tuple[str, Path, list[str]]] = []
        files: dict[str, Path] = {}
        for name, (flavour, extra) in CSV_CASES.items():
            if name not in chosen or not opts.rows:
                continue
            if flavour not in files:
                files[flavour] = Path(tmp) / f"customers-{flavour}.csv"
                write_csv(files[flavour], opts.rows, flavour)
            path = files[flavour]
            size = path.stat().st_size / 1e6
            cases.append((f"{name}: {opts.rows:,}-row CSV ({size:.0f} MB)", path, extra))
        if "xlsx" in chosen and opts.xlsx_rows:
            path = Path(tmp) / "customers.xlsx"
            write_xlsx(path, opts.xlsx_rows)
            size = path.stat().st_size / 1e6
            cases.append((f"xlsx: {opts.xlsx_rows:,}-row XLSX ({size:.0f} MB)", path, []))
        for label, path, extra in cases:
            args = cli + [str(path), "--kind", "customers", "-q", *extra]
            runs = [measure(args) for _ in range(opts.repeat)]
            walls = sorted(r[0] for r in runs)
            rss = max(r[1] for r in runs)
            codes = {r[2] for r in runs}
            print(
                f"{label}: wall best {walls[0]:.2f} s, median {walls[len(walls) // 2]:.2f} s, "
                f"peak RSS {rss:.0f} MiB, exit {sorted(codes)}",
                flush=True,
            )


if __name__ == "__main__":
    main()
