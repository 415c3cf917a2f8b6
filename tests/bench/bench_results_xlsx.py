"""Benchmark of writing an .xlsx results file for a big workbook (issue 18, point 4). Not part
of the test suite.

Generates a customers workbook (never committed) of typed cells: phone and names as text, a
number with "0.00", a currency, a date with its own format, a boolean, and a second sheet.
Then, in a fresh process each time, reads it (`read_sheet`) and writes its results
(`write_results`, every row "created", plus the failed file for 1 % failed rows), and prints
the read and write times and the process's peak RSS before and after the write:

  python tests/bench/bench_results_xlsx.py --rows 200000

To compare with another checkout (the code before a change), put it first on the path:

  PYTHONPATH=/path/to/other/checkout python tests/bench/bench_results_xlsx.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_workbook(path: Path, rows: int) -> None:
    import xlsxwriter

    wb = xlsxwriter.Workbook(str(path), {"constant_memory": True, "strings_to_numbers": False})
    ws = wb.add_worksheet("Customers")
    money = wb.add_format({"num_format": '"$"#,##0.00'})
    two = wb.add_format({"num_format": "0.00"})
    date = wb.add_format({"num_format": "dd mmm yyyy"})
    ws.write_row(
        0,
        0,
        ["phone_number", "first_name", "last_name", "email", "property:spend:number",
         "property:price", "property:joined:date", "property:vip"],
    )  # fmt: skip
    start = dt.date(2020, 1, 1)
    for i in range(rows):
        r = i + 1
        ws.write_string(r, 0, f"+1310{2000000 + i:07d}")
        ws.write_string(r, 1, "Ana")
        ws.write_string(r, 2, "Lopez")
        ws.write_string(r, 3, f"ana{i}@example.com")
        ws.write_number(r, 4, 235.33 + i % 100, two)
        ws.write_number(r, 5, 1234.5, money)
        ws.write_datetime(r, 6, start + dt.timedelta(days=i % 1000), date)
        ws.write_boolean(r, 7, i % 2 == 0)
    other = wb.add_worksheet("Lookup")
    other.write_formula(0, 0, "=SUM(Customers!E2:E10)")
    wb.close()


def child(path: str, out_dir: str) -> None:
    """One measurement, in its own process: prints a JSON line."""
    import numpy as np

    from sonar_bulk.results import Outcome, RowResults, RunSummary, write_results
    from sonar_bulk.sheets import read_sheet

    started = time.perf_counter()
    sheet = read_sheet(path)
    read = time.perf_counter() - started
    rss_read = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    results = RowResults(len(sheet))
    for i in range(len(sheet)):
        failed = i % 100 == 0
        results.set(
            i,
            Outcome(
                "failed" if failed else "created",
                http_status=422 if failed else 201,
                error="refused" if failed else "",
                attempts=1,
                finished_at="2030-01-01T00:00:00Z",
            ),
        )
    out = Path(out_dir) / "bench.results.xlsx"
    summary = RunSummary("customers upsert", path, "bench", results.counts(), 0.0, 1.0)
    started = time.perf_counter()
    write_results(sheet, results, out, Path(out_dir) / "bench.failed.xlsx", summary)
    write = time.perf_counter() - started
    rss_write = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    del np
    print(
        json.dumps(
            {
                "rows": len(sheet),
                "read_s": round(read, 2),
                "write_s": round(write, 2),
                "peak_rss_after_read_mb": round(rss_read / 1e6),
                "peak_rss_after_write_mb": round(rss_write / 1e6),
                "results_mb": round(out.stat().st_size / 1e6, 1),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        child(*opts.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.xlsx"
        started = time.perf_counter()
        make_workbook(path, opts.rows)
        size = path.stat().st_size / 1e6
        print(f"input: {opts.rows:,}-row workbook ({size:.1f} MB), made in "
              f"{time.perf_counter() - started:.1f} s", flush=True)  # fmt: skip
        got = subprocess.run(
            [sys.executable, __file__, "--child", str(path), tmp],
            capture_output=True,
            text=True,
            check=False,
        )
        if got.returncode:
            print(got.stderr, file=sys.stderr)
            raise SystemExit(got.returncode)
        print(got.stdout.strip())


if __name__ == "__main__":
    main()
