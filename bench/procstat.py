"""Per-process CPU time and resident memory from /proc, grouped by what each process is.

The benchmarks share two cores with PostgreSQL, the broker and whatever else runs on the
machine, so each scenario reports where the CPU time of its span went. A process that
starts and exits between two snapshots is missed; every process that the scenarios
start lives for the whole span.
"""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """One process as /proc shows it at one moment."""

    pid: int
    ppid: int
    name: str
    cmdline: str
    cpu_s: float
    rss_kb: int


def _read_process(pid: int) -> ProcessSample | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return None
    # The name sits in parentheses and may itself contain spaces or parentheses.
    name = stat[stat.index("(") + 1:stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2:].split()
    cpu_ticks = int(fields[11]) + int(fields[12])
    return ProcessSample(pid=pid, ppid=int(fields[1]), name=name, cmdline=cmdline,
                         cpu_s=cpu_ticks / CLOCK_TICKS_PER_S, rss_kb=int(fields[21]) * PAGE_KB)


def snapshot() -> dict[int, ProcessSample]:
    """Read every process on the machine."""
    processes = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            sample = _read_process(int(entry.name))
            if sample is not None:
                processes[sample.pid] = sample
    return processes


def descendants(processes: dict[int, ProcessSample], root: int) -> set[int]:
    """Return the pids below root in the process tree, root excluded."""
    children: dict[int, list[int]] = defaultdict(list)
    for sample in processes.values():
        children[sample.ppid].append(sample.pid)
    found: set[int] = set()
    pending = list(children[root])
    while pending:
        pid = pending.pop()
        if pid not in found:
            found.add(pid)
            pending.extend(children[pid])
    return found


@dataclass
class Labeller:
    """Names each process by its part in a scenario: a role, PostgreSQL, the broker or other."""

    database: str | None = None
    roles: dict[int, str] = field(default_factory=dict)   # pid of a started process -> its role
    client_pid: int = field(default_factory=os.getpid)
    client_label: str = "benchmark client"

    def label(self, sample: ProcessSample, processes: dict[int, ProcessSample]) -> str:
        """Return the group that sample's CPU time and memory count under."""
        if sample.pid in self.roles:
            return self.roles[sample.pid]
        parent = processes.get(sample.ppid)
        if parent is not None and parent.pid in self.roles:
            return f"{self.roles[parent.pid]} runtime"
        if sample.pid == self.client_pid:
            return self.client_label
        if sample.cmdline.startswith("postgres:"):
            return self._postgres_label(sample.cmdline)
        if sample.name.startswith("tansu"):
            return "broker (tansu)"
        if sample.name == "py-spy":
            return "profiler (py-spy)"
        if sample.ppid == self.client_pid:
            return "other children of the benchmark"
        return "other processes"

    def _postgres_label(self, cmdline: str) -> str:
        # Backends show "postgres: [cluster:] <user> <database> <client> <state>" and server
        # processes "postgres: [cluster:] walwriter". Debian names the cluster, e.g. 15/main.
        words = cmdline.split()[1:]
        if words and words[0].endswith(":"):
            words = words[1:]
        if self.database and self.database in words:
            return "postgres (benchmark database)"
        if len(words) >= 3 and ("(" in words[2] or words[2] == "[local]"):
            return "postgres (other databases)"
        return "postgres (server processes)"


class CpuMeter:
    """CPU seconds per label between start() and stop()."""

    def __init__(self, labeller: Labeller) -> None:
        self.labeller = labeller
        self._before: dict[int, ProcessSample] = {}
        self._started = 0.0

    def start(self) -> None:
        self._before = snapshot()
        self._started = time.monotonic()

    def stop(self) -> dict[str, object]:
        """Return wall seconds, busy share of all cores, and CPU seconds per label."""
        after = snapshot()
        wall_s = time.monotonic() - self._started
        by_label: dict[str, float] = defaultdict(float)
        for pid, sample in after.items():
            previous = self._before.get(pid)
            # A process started during the span counts whole, and so does a reused pid,
            # which shows less CPU time than its predecessor.
            used = sample.cpu_s - previous.cpu_s if previous and previous.cpu_s <= sample.cpu_s else sample.cpu_s
            if used > 0:
                by_label[self.labeller.label(sample, after)] += used
        total = sum(by_label.values())
        cores = os.cpu_count() or 1
        return {"wall_seconds": round(wall_s, 2), "busy_share_of_all_cores": round(total / (wall_s * cores), 3),
                "cpu_seconds": {label: round(seconds, 2)
                                for label, seconds in sorted(by_label.items(), key=lambda item: -item[1])}}


class RssSampler:
    """Samples the resident memory of labelled processes every interval_s in a thread."""

    def __init__(self, labeller: Labeller, interval_s: float = 1.0) -> None:
        self.labeller = labeller
        self.interval_s = interval_s
        self.samples: list[tuple[float, dict[str, int]]] = []   # (seconds since start, label -> max RSS kB)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join()

    def _run(self) -> None:
        started = time.monotonic()
        while not self._stopping.is_set():
            processes = snapshot()
            wanted: set[int] = set()
            for pid in self.labeller.roles:
                wanted |= {pid} | descendants(processes, pid)
            by_label: dict[str, int] = {}
            for pid in wanted & processes.keys():
                label = self.labeller.label(processes[pid], processes)
                by_label[label] = max(by_label.get(label, 0), processes[pid].rss_kb)
            self.samples.append((time.monotonic() - started, by_label))
            self._stopping.wait(self.interval_s)
