"""What the benchmark ran on: CPU model, cores, memory, load, software versions."""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CpuSnapshot", "describe_machine", "load_average", "other_cores_busy"]


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (the benchmark's own work counts in them too)."""
    return [round(value, 2) for value in os.getloadavg()]


@dataclass(frozen=True)
class CpuSnapshot:
    """Machine-wide busy CPU seconds and this process tree's own CPU seconds, at one moment."""

    wall: float
    machine_busy: float
    own: float


def _process_tree_cpu_seconds(root: int) -> float:
    """CPU seconds of `root` and every live descendant, each with its reaped children."""
    ticks_per_second = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    cpu: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # exited while scanning
        # The command name may hold spaces and parentheses: split after its last ")".
        fields = text[text.rfind(")") + 2 :].split()
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        # utime, stime, cutime, cstime (fields 14-17 of /proc/<pid>/stat)
        cpu[pid] = sum(int(value) for value in fields[11:15])
    tree = {root}
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                grew = True
    return sum(cpu.get(pid, 0) for pid in tree) / ticks_per_second


def cpu_snapshot() -> CpuSnapshot:
    """Now: machine-wide busy CPU seconds (/proc/stat) and the CPU seconds of this process,
    the servers it runs and every child it has reaped, so machine minus own is what other
    processes used."""
    busy = math.nan
    own = math.nan
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        ticks = [int(value) for value in fields]
        idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
        busy = (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")
        own = _process_tree_cpu_seconds(os.getpid())
    except (OSError, ValueError, IndexError):
        pass
    return CpuSnapshot(time.monotonic(), busy, own)


def other_cores_busy(start: CpuSnapshot, end: CpuSnapshot) -> float:
    """Average cores other processes kept busy between two snapshots (0 on a quiet machine).

    A child that exits between the snapshots and is reaped by a grandparent that exited too
    is lost from both sides; short of that the figure is exact to the clock tick.
    """
    wall = end.wall - start.wall
    if wall <= 0:
        return math.nan
    other = (end.machine_busy - start.machine_busy) - (end.own - start.own)
    return round(max(0.0, other / wall), 2)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


SIMD_FLAGS = frozenset(
    {
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_vnni",
        "avx512_bf16",
        "avx512_fp16",
        "avx_vnni",
        "amx_tile",
        "amx_bf16",
        "amx_int8",
    }
)


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return float("nan")


def describe_machine() -> dict[str, Any]:
    """The machine and software the figures belong to."""
    import importlib.metadata as metadata

    versions: dict[str, str | None] = {}
    for package in ("tensorflow", "keras", "numpy", "functions-framework", "fastapi", "moto"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    flags = _cpu_flags()
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "amx_bf16": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        # The vector and matrix extensions the model's kernels can use (oneDNN picks by them).
        "simd_flags": sorted(flags & SIMD_FLAGS),
        "memory_gib": _memory_gib(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions,
    }
