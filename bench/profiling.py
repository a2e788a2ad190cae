"""py-spy profiles of role processes during a benchmark span, summarised as text.

py-spy samples a running process from outside, so the role processes run unchanged.
Without --idle, py-spy leaves out threads it finds idle, but a thread inside a system
call such as epoll or a socket write can still be sampled, so the sampled seconds exceed
the CPU time that /proc reports (see procstat.py for that). Stacks of runtime processes
(children of a worker) are kept apart from those of the role process itself.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

SAMPLES_PER_S = 200
TOP_FUNCTIONS = 25


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise RuntimeError("py-spy is not installed; run `make bench`, which installs the bench extra")
    return found


class PySpyRecorder:
    """Records the stacks of some processes and their children until stop()."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir
        self._recorders: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, pids: dict[str, int]) -> None:
        """Start one py-spy for each pid of pids, which maps a label (used in file names) to a pid."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for label, pid in pids.items():
            self._recorders[label] = subprocess.Popen(
                [_py_spy(), "record", "--pid", str(pid), "--subprocesses", "--format", "raw", "--nolineno",
                 "--rate", str(SAMPLES_PER_S), "--nonblocking", "--output", str(self._raw_path(label))],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> dict[str, str]:
        """Stop every recorder, write label.txt summaries, and return label -> summary file."""
        summaries = {}
        for label, recorder in self._recorders.items():
            recorder.send_signal(signal.SIGINT)
            try:
                _out, err = recorder.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                recorder.kill()
                _out, err = recorder.communicate()
            raw = self._raw_path(label)
            if not raw.exists():
                raise RuntimeError(f"py-spy wrote no profile of {label}: {err.decode()[-1000:]}")
            summary = self.output_dir / f"{label}.txt"
            summary.write_text(summarise_collapsed(raw.read_text(), label))
            summaries[label] = str(summary)
        self._recorders.clear()
        return summaries

    def _raw_path(self, label: str) -> Path:
        return self.output_dir / f"{label}.collapsed"


def _split_stack(line: str) -> tuple[str, list[str], int] | None:
    """Split one collapsed line into (process kind, frames root first, sample count)."""
    stack, _, count = line.rpartition(" ")
    if not stack or not count.isdigit():
        return None
    frames = stack.split(";")
    processes = [frame for frame in frames if frame.startswith("process ")]
    kind = "role process" if len(processes) <= 1 else "child processes"
    return kind, [frame for frame in frames if not frame.startswith("process ")], int(count)


def summarise_collapsed(text: str, label: str) -> str:
    """Return the functions with the most samples, by own time and by time below them."""
    own: dict[str, Counter[str]] = {}
    inclusive: dict[str, Counter[str]] = {}
    totals: Counter[str] = Counter()
    for line in text.splitlines():
        parsed = _split_stack(line)
        if parsed is None or not parsed[1]:
            continue
        kind, frames, count = parsed
        totals[kind] += count
        own.setdefault(kind, Counter())[frames[-1]] += count
        for frame in set(frames):
            inclusive.setdefault(kind, Counter())[frame] += count
    lines = [f"py-spy profile of {label}, {SAMPLES_PER_S} samples/s of threads py-spy found active"]
    for kind, total in totals.most_common():
        lines += ["", f"{kind}: {total} samples ({total / SAMPLES_PER_S:.1f} s sampled)",
                  "", "  own %  below %  function (file)"]
        for frame, count in own[kind].most_common(TOP_FUNCTIONS):
            lines.append(f"  {100 * count / total:5.1f}  {100 * inclusive[kind][frame] / total:7.1f}  {frame}")
        lines += ["", "  functions with the most time below them:"]
        for frame, count in inclusive[kind].most_common(TOP_FUNCTIONS):
            lines.append(f"  {100 * own[kind][frame] / total:5.1f}  {100 * count / total:7.1f}  {frame}")
    return "\n".join(lines) + "\n"
