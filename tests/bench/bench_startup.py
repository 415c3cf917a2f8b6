"""Benchmark of the command line's start-up (issue 20, point 5). Not part of the test suite.

Each measure is a fresh process, run ``--runs`` times (interleaved, so drifting background load
hits every case alike); the median is reported, with the best:

  bare      ``python -c pass``: the interpreter alone (subtracted from "import")
  import    ``python -c "import sonar_bulk.cli"``, less "bare"       target <= 0.3 s
  help      ``sonar-bulk --help``
  validate  ``sonar-bulk validate customers.csv --kind customers`` of a generated 10-row sheet

Then one ``python -X importtime`` run of each of import, help and validate lists the heaviest
imports: the packages (their own time, summed over their modules) and how many modules in all.

  python tests/bench/bench_startup.py [--runs 7] [--top 12]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

#: What "import" may take (issue 20, point 5).
TARGET_IMPORT = 0.3

ROWS = [
    ("+13105550101", "Ana", "Lopez", "ana.lopez@example.com", "true", "90210", "gold"),
    ("(310) 555-0102", "Ben", "Okafor", "ben.okafor@example.com", "yes", "90401", "silver"),
    ("310.555.0103", "Chen", "Wei", "chen.wei@example.com", "", "90024", "gold"),
    ("13105550104", "Dana", "Kowalski", "dana.k@example.com", "1", "10001", "bronze"),
    ("+1 646 555 0105", "Elif", "Demir", "elif.demir@example.com", "true", "10011", "gold"),
    ("646-555-0106", "Farah", "Haddad", "farah.h@example.com", "no", "11201", "silver"),
    ("(415) 555-0107", "Gus", "Andersen", "gus@example.com", "true", "94110", "bronze"),
    ("+14155550108", "Hana", "Sato", "hana.sato@example.com", "true", "94103", "gold"),
    ("+442079460958", "Isla", "Brown", "isla.brown@example.co.uk", "true", "SW1A 1AA", "silver"),
    ("+33612345678", "Jules", "Martin", "jules.martin@example.fr", "", "75011", "bronze"),
]
HEADERS = [
    "phone_number",
    "first_name",
    "last_name",
    "email",
    "subscribed",
    "zip_code",
    "property:plan",
]


def write_sheet(folder: Path) -> Path:
    """A 10-row customers CSV, every row valid."""
    path = folder / "customers.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(HEADERS)
        writer.writerows(ROWS)
    return path


def sonar_bulk() -> list[str]:
    """The installed console script beside this Python, else ``python -m sonar_bulk``."""
    script = Path(sys.executable).parent / "sonar-bulk"
    return [str(script)] if script.exists() else [sys.executable, "-m", "sonar_bulk"]


def wall(argv: list[str], cwd: Path, expect: tuple[int, ...] = (0,)) -> float:
    """Seconds from start to exit of one fresh process (its output discarded)."""
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - started
    if done.returncode not in expect:
        sys.exit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.decode()[-2000:]}")
    return seconds


def import_times(argv: list[str], cwd: Path) -> tuple[dict[str, float], int, float]:
    """One run under ``-X importtime``: each top-level package's own import time (seconds,
    summed over its modules), the number of modules imported, and the cumulative time of
    ``sonar_bulk.cli`` (0 when it was not imported at the top level)."""
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    done = subprocess.run(
        argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    per: dict[str, float] = defaultdict(float)
    modules = 0
    cli = 0.0
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, name = line.removeprefix("import time:").split("|")
        modules += 1
        per[name.strip().split(".")[0]] += int(self_us) / 1e6
        if name.strip() == "sonar_bulk.cli":
            cli = int(cumulative_us) / 1e6
    return dict(per), modules, cli


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--top", type=int, default=12, help="packages listed per case")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        folder = Path(tmp)
        sheet = write_sheet(folder)
        cases: dict[str, tuple[list[str], tuple[int, ...]]] = {
            "bare": ([sys.executable, "-c", "pass"], (0,)),
            "import": ([sys.executable, "-c", "import sonar_bulk.cli"], (0,)),
            "help": ([*sonar_bulk(), "--help"], (0,)),
            "validate": ([*sonar_bulk(), "validate", sheet.name, "--kind", "customers"], (0,)),
        }
        print(
            f"machine: {os.cpu_count()} cores, {platform.machine()} {platform.system()}, Python "
            f"{platform.python_version()}; 1-minute load {os.getloadavg()[0]:.2f}; "
            f"{opts.runs} fresh processes per case, interleaved"
        )
        for argv, expect in cases.values():  # once each, untimed: warm the disk cache and .pyc
            wall(argv, folder, expect)
        times: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(opts.runs):
            for name, (argv, expect) in cases.items():
                times[name].append(wall(argv, folder, expect))
        bare = statistics.median(times["bare"])
        print("\nmedian / best seconds (wall time of the whole process):")
        for name, seconds in times.items():
            line = f"  {name:9} {statistics.median(seconds):6.3f} / {min(seconds):6.3f}"
            if name == "import":
                net = [s - bare for s in seconds]
                verdict = "reached" if statistics.median(net) <= TARGET_IMPORT else "NOT reached"
                line += (
                    f"   less bare python: {statistics.median(net):.3f} / {min(net):.3f}"
                    f" (target <= {TARGET_IMPORT} s: {verdict})"
                )
            print(line)
        print("\nheaviest imports (one -X importtime run each; own time summed per package):")
        for name in ("import", "help", "validate"):
            argv, _ = cases[name]
            if argv[0] != sys.executable:  # the console script: the same under python -m
                argv = [sys.executable, "-m", "sonar_bulk", *argv[1:]]
            per, modules, cli = import_times(argv, folder)
            total = sum(per.values())
            heaviest = sorted(per.items(), key=lambda item: -item[1])[: opts.top]
            listed = ", ".join(f"{pkg} {seconds * 1000:.0f}" for pkg, seconds in heaviest)
            print(f"  {name}: {modules} modules, {total:.3f} s of imports", end="")
            print(f" (sonar_bulk.cli {cli:.3f} s)" if cli else "")
            print(f"    ms: {listed}")


if __name__ == "__main__":
    main()
