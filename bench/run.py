"""Run the benchmark suite in one go, print the table of figures and targets, and write it as JSON.

    make bench                                   # every part, full sizes: bench/results/latest.json
    make bench BENCH_ARGS=--quick                # small sizes, for development: bench/results/partial.json
    make bench BENCH_ARGS="--only ingest,latency"
    make bench BENCH_ARGS="--wait-for-idle 600"  # first wait up to 600 s for a 1-minute load below 1.0
    make bench BENCH_ARGS=--profile              # also write profiles to bench/results/profiles/

Parts, in the order they run: floors (raw consume and COPY, without ingest), ingest (the
floors and ingest on the same events), execution, peers, latency, overhead and memory.
Every part starts its own broker and creates and drops its own databases on the
PostgreSQL server at DATABASE_URL (default 127.0.0.1:5432). A part that fails is
reported in the JSON under its name and makes the command exit 1; the others still run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import exec_throughput
import ingest_throughput
import latency
import memory
import peers
from common import broker, broker_version, machine, postgres_version
from report import format_table, headline, table_rows, write_json

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
PARTS = ("floors", "ingest", "execution", "peers", "latency", "overhead", "memory")
LATENCY_RATES = [100.0, 500.0]
IDLE_CHECK_INTERVAL_S = 30.0


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much work each part does."""

    ingest_events: int
    exec_tasks: int
    pgqueuer_jobs: int
    procrastinate_jobs: int
    latency_seconds: float
    overhead_requests: int
    memory_events: int
    memory_timeout_s: float


# procrastinate takes one job at a time (about 400 jobs/s on 2 cores), so it gets fewer
# jobs than pgqueuer to keep the suite short. The figures compared are rates.
FULL = Sizes(ingest_events=200_000, exec_tasks=100_000, pgqueuer_jobs=100_000, procrastinate_jobs=10_000,
             latency_seconds=10.0, overhead_requests=2_000, memory_events=1_000_000, memory_timeout_s=840.0)
QUICK = Sizes(ingest_events=20_000, exec_tasks=10_000, pgqueuer_jobs=10_000, procrastinate_jobs=1_000,
              latency_seconds=3.0, overhead_requests=300, memory_events=50_000, memory_timeout_s=300.0)


async def _execution(sizes: Sizes, profile_dir: Path | None) -> list[dict[str, Any]]:
    with broker() as (bootstrap, is_tansu):
        return [await exec_throughput.run_once(sizes.exec_tasks, workers, bootstrap, is_tansu, profile_dir)
                for workers in (1, 2)]


def _overhead(sizes: Sizes) -> dict[str, Any]:
    """Run api_bench.py for direct execution only and return its summary."""
    with tempfile.TemporaryDirectory(prefix="taskservice-bench-") as folder:
        output = Path(folder) / "api.json"
        completed = subprocess.run(
            [sys.executable, str(BENCH_DIR / "api_bench.py"), "--tasks", "1000", "--execute-only",
             "--requests", str(sizes.overhead_requests), "--output", str(output)],
            capture_output=True, text=True, timeout=600)
        if completed.returncode != 0:
            raise RuntimeError(f"api_bench.py exited with code {completed.returncode}: {completed.stderr[-2000:]}")
        return json.loads(output.read_text())


async def run_part(part: str, sizes: Sizes, profile_dir: Path | None) -> Any:
    """Run one part of the suite and return its details."""
    if part == "floors":
        return await ingest_throughput.run(sizes.ingest_events, ingest=False)
    if part == "ingest":
        return await ingest_throughput.run(sizes.ingest_events, profile_dir=profile_dir)
    if part == "execution":
        return await _execution(sizes, profile_dir)
    if part == "peers":
        return {"pgqueuer": await peers.run_pgqueuer(sizes.pgqueuer_jobs),
                "procrastinate": await peers.run_procrastinate(sizes.procrastinate_jobs)}
    if part == "latency":
        return await latency.run(LATENCY_RATES, sizes.latency_seconds, profile_dir)
    if part == "overhead":
        return await asyncio.to_thread(_overhead, sizes)
    if part == "memory":
        return await memory.run(sizes.memory_events, memory.RATE_PER_S, sizes.memory_timeout_s)
    raise ValueError(f"unknown part {part!r}; choose from {', '.join(PARTS)}")


def _load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


def wait_for_idle(timeout_s: float, max_load: float) -> dict[str, Any]:
    """Wait until the 1-minute load average is below max_load, checking every 30 s, for at most timeout_s."""
    started = time.monotonic()
    while os.getloadavg()[0] >= max_load and time.monotonic() - started < timeout_s:
        print(f"load average {_load_average()}, waiting for the 1-minute figure to drop below {max_load}",
              flush=True)
        time.sleep(min(IDLE_CHECK_INTERVAL_S, max(timeout_s - (time.monotonic() - started), 0.1)))
    return {"waited_seconds": round(time.monotonic() - started), "max_load": max_load,
            "reached": os.getloadavg()[0] < max_load}


def _package_versions() -> dict[str, str]:
    versions = {}
    for package in ("aiokafka", "asyncpg", "pgqueuer", "procrastinate"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=",".join(PARTS),
                        help=f"comma-separated parts to run (default: all of {', '.join(PARTS)})")
    parser.add_argument("--quick", action="store_true", help="small sizes, for development")
    parser.add_argument("--profile", action="store_true",
                        help="profile ingest (pyinstrument), execution and latency (py-spy) into "
                             "bench/results/profiles/")
    parser.add_argument("--wait-for-idle", type=float, default=0.0, metavar="SECONDS",
                        help="wait up to this long for the 1-minute load average to drop below --max-load")
    parser.add_argument("--max-load", type=float, default=1.0, help="load average to wait for (default 1.0)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file; default bench/results/latest.json for a full run of every part, "
                             "bench/results/partial.json otherwise")
    args = parser.parse_args()
    args.parts = [part.strip() for part in args.only.split(",") if part.strip()]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown part(s) {', '.join(sorted(unknown))}; choose from {', '.join(PARTS)}")
    if "ingest" in args.parts and "floors" in args.parts:
        args.parts.remove("floors")     # the ingest part measures the floors on its own events
    complete = not args.quick and set(args.parts) >= set(PARTS) - {"floors"}
    args.output = args.output or RESULTS_DIR / ("latest.json" if complete else "partial.json")
    return args


async def _describe_run(sizes: Sizes, idle: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["bench/run.py", *sys.argv[1:]]),
        "machine": {**machine(), "postgresql": await postgres_version(), "broker": broker_version(),
                    "packages": _package_versions()},
        "load_average_at_start": _load_average(),
        "wait_for_idle": idle,
        "sizes": asdict(sizes),
    }


async def run_parts(parts: list[str], sizes: Sizes, profile_dir: Path | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run each part in turn and return (details per part, duration and load average per part)."""
    details: dict[str, Any] = {}
    timings: dict[str, Any] = {}
    for part in parts:
        started = time.monotonic()
        timings[part] = {"load_average_at_start": _load_average()}
        print(f"running {part} (load average {timings[part]['load_average_at_start']})", flush=True)
        try:
            details[part] = await run_part(part, sizes, profile_dir)
        except Exception as exc:  # noqa: BLE001 - one failed part must not lose the others' figures
            traceback.print_exc()
            details[part] = {"error": f"{type(exc).__name__}: {exc}"}
        timings[part]["seconds"] = round(time.monotonic() - started)
        print(f"  {part} took {timings[part]['seconds']} s", flush=True)
    return details, timings


async def main() -> int:
    args = _parse_arguments()
    sizes = QUICK if args.quick else FULL
    idle = wait_for_idle(args.wait_for_idle, args.max_load) if args.wait_for_idle > 0 else None
    profile_dir = RESULTS_DIR / "profiles" if args.profile else None
    started = time.monotonic()
    description = await _describe_run(sizes, idle)

    details, timings = await run_parts(args.parts, sizes, profile_dir)
    failed = [part for part, result in details.items() if isinstance(result, dict) and "error" in result]
    figures = headline(details)
    rows = table_rows(figures)
    results = {**figures, **description, "load_average_at_end": _load_average(),
               "duration_seconds": round(time.monotonic() - started), "parts": timings, "table": rows,
               "scenarios": details}
    write_json(args.output, results)

    print()
    print(format_table(rows))
    print(f"\nwrote {args.output}" + (f"; failed parts: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
