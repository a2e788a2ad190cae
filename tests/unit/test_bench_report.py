"""Pure helpers of the benchmark suite (bench/report.py): percentiles, memory trend, targets, JSON file."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

BENCH_REPORT = Path(__file__).resolve().parents[2] / "bench" / "report.py"


def _load_report():
    # bench/ is a folder of scripts, not a package, so the module is loaded from its path.
    spec = importlib.util.spec_from_file_location("bench_report", BENCH_REPORT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


report = _load_report()


def test_percentile_nearest_rank() -> None:
    values = [float(value) for value in range(100, 0, -1)]
    assert report.percentile(values, 0.5) == 50.0
    assert report.percentile(values, 0.99) == 99.0
    assert report.percentile(values, 1.0) == 100.0
    assert report.percentile(values, 0.0) == 1.0


def test_percentile_small_and_empty() -> None:
    assert report.percentile([7.0], 0.99) == 7.0
    assert report.percentile([1.0, 2.0], 0.5) == 1.0
    assert math.isnan(report.percentile([], 0.5))


def test_summarise_ms_rounds() -> None:
    summary = report.summarise_ms([1.234, 2.345, 10.0])
    assert summary == {"n": 3, "p50": 2.35, "p99": 10.0, "max": 10.0}


def test_rss_trend_flat_and_growing() -> None:
    samples = [(float(second), {"ingest": 50_000, "worker": 50_000 + second * 1_000}) for second in range(101)]
    trend = report.rss_trend(samples)
    assert trend["ingest"]["flat"] is True
    assert trend["ingest"]["peak_mb"] == round(50_000 / 1024, 1)
    assert trend["worker"]["flat"] is False
    assert trend["worker"]["last_quarter_peak_mb"] == round(150_000 / 1024, 1)


def test_rss_trend_small_growth_is_flat() -> None:
    samples = [(0.0, {"relay": 20_000}), (10.0, {"relay": 24_000})]
    assert report.rss_trend(samples)["relay"]["flat"] is True


def test_table_rows_bounds() -> None:
    rows = {row["key"]: row for row in report.table_rows({
        "ingest_events_per_s": 15_000, "latency_p99_ms": 20.0, "peak_rss_mb": 400.0, "rss_flat": True})}
    assert rows["ingest_events_per_s"]["met"] is False
    assert rows["ingest_events_per_s"]["ratio"] == 0.5
    assert rows["latency_p99_ms"]["met"] is True
    assert rows["peak_rss_mb"]["met"] is False
    assert rows["rss_flat"]["met"] is True
    assert rows["raw_consume_per_s"]["met"] is None


def test_headline_ratios() -> None:
    details = {
        "ingest": {"raw_consume": {"records_per_s": 100_000}, "copy": {"rows_per_s": 50_000},
                   "ingest": {"events_per_s": 25_000}},
        "execution": [{"workers": 1, "tasks_per_s": 9_000}, {"workers": 2, "tasks_per_s": 10_000}],
        "peers": {"pgqueuer": {"jobs_per_s": 20_000}, "procrastinate": {"jobs_per_s": 400}},
        "latency": {"error": "RuntimeError: timed out"},
    }
    figures = report.headline(details)
    assert figures["ingest_to_raw_consume"] == 0.25
    assert figures["exec_tasks_per_s_2_workers"] == 10_000
    assert figures["exec_to_pgqueuer"] == 0.5
    assert figures["exec_to_procrastinate"] == 25.0
    assert figures["latency_p50_ms"] is None
    assert figures["peak_rss_mb"] is None


def test_write_json_nan_as_null(tmp_path: Path) -> None:
    target = tmp_path / "results" / "latest.json"
    report.write_json(target, {"latency_p50_ms": float("nan"), "runs": [{"p99": float("nan"), "n": 3}]})
    assert json.loads(target.read_text()) == {"latency_p50_ms": None, "runs": [{"p99": None, "n": 3}]}
