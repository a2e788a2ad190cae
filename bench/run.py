"""Run every benchmark script in turn and collect their JSON output in bench/results/latest.json.

    make bench        # or: .venv/bin/python bench/run.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
SCRIPTS = (
    ("execution", ["exec_throughput.py", "--tasks", "100000", "--workers", "1", "2"]),
    ("delayed_start", ["delayed_start.py", "--rate", "100", "--seconds", "10"]),
    ("http_api", ["api_bench.py"]),
)


def _last_json_object(output: str) -> object:
    start = output.find("{")
    if start < 0:
        raise ValueError("the benchmark printed no JSON object")
    return json.loads(output[start:])


def main() -> int:
    results: dict[str, object] = {"time": datetime.now(UTC).isoformat()}
    for name, command in SCRIPTS:
        print(f"running {name}: {' '.join(command)}", flush=True)
        completed = subprocess.run([sys.executable, str(BENCH_DIR / command[0]), *command[1:]],
                                   capture_output=True, text=True, cwd=BENCH_DIR.parent)
        if completed.returncode != 0:
            print(completed.stderr[-3000:], file=sys.stderr)
            return completed.returncode
        results[name] = _last_json_object(completed.stdout)
        print(json.dumps(results[name], indent=2))
    target = BENCH_DIR / "results" / "latest.json"
    target.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
