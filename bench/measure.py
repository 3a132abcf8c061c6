"""Repeated, bounded measurements: the run plan, load series over client counts, and timers.

Every figure is the median over `repetitions` short runs, with the minimum and maximum kept so a
run disturbed by other work on the machine shows as spread; the load average is recorded
around each series.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bench.loadgen import Client, run_closed_loop
from bench.machine import CpuSnapshot, cpu_snapshot, load_average, other_cores_busy
from bench.stats import over_repetitions, percentile

__all__ = ["Plan", "Section", "interleaved_pair", "load_series", "section"]


@dataclass(frozen=True)
class Plan:
    """How long and how often to measure: `--quick` trades precision for time."""

    quick: bool
    repetitions: int
    seconds: float  # per load run
    max_requests: int  # per load run
    history_sizes: tuple[int, ...]
    moto_history_sizes: tuple[int, ...]
    history_queries: int  # per size and repetition
    cold_starts_function: int
    cold_starts_monolith: int
    client_levels: tuple[int, ...] = (1, 4, 8, 16)
    soak_seconds: float = 600.0  # the soak's steady load

    @classmethod
    def full(cls) -> Plan:
        return cls(
            quick=False,
            repetitions=3,
            seconds=2.0,
            max_requests=2000,
            history_sizes=(1_000, 10_000, 100_000),
            moto_history_sizes=(1_000, 10_000, 100_000),
            history_queries=15,
            cold_starts_function=5,
            cold_starts_monolith=3,
        )

    @classmethod
    def quick_plan(cls) -> Plan:
        return cls(
            quick=True,
            repetitions=1,
            seconds=1.5,
            max_requests=500,
            history_sizes=(1_000, 10_000),
            moto_history_sizes=(1_000, 10_000),
            history_queries=5,
            cold_starts_function=2,
            cold_starts_monolith=1,
            soak_seconds=60.0,
        )


@dataclass
class Section:
    """A part of the run: its wall time and the load average before and after it."""

    name: str
    load_before: list[float]
    started: float
    cpu_before: CpuSnapshot
    seconds: float = 0.0
    load_after: list[float] | None = None
    other_cores: float = float("nan")

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 1),
            "load_before": self.load_before,
            "load_after": self.load_after,
            "other_processes_cores": self.other_cores,
        }


@contextmanager
def section(name: str, log: dict[str, Any]) -> Iterator[Section]:
    """Time a part of the run and note the machine load around it in `log[name]`: the load
    average, and the cores other processes kept busy meanwhile (someone else's work)."""
    current = Section(name, load_average(), time.perf_counter(), cpu_snapshot())
    print(f"[bench] {name} (load {current.load_before[0]:.2f}) ...", flush=True)
    try:
        yield current
    finally:
        current.seconds = time.perf_counter() - current.started
        current.load_after = load_average()
        current.other_cores = other_cores_busy(current.cpu_before, cpu_snapshot())
        log[name] = current.to_json()
        print(
            f"[bench] {name}: {current.seconds:.1f} s "
            f"(other processes: {current.other_cores:.2f} cores busy)",
            flush=True,
        )


def load_series(
    make_client: Callable[[], Client],
    levels: Sequence[int],
    plan: Plan,
    *,
    repetitions: int | None = None,
    seconds: float | None = None,
    warmup_per_client: int = 1,
    label: str = "",
) -> dict[str, Any]:
    """Closed-loop runs at each client count, repeated; per level the runs and their medians."""
    runs: dict[int, list[dict[str, Any]]] = {level: [] for level in levels}
    for _ in range(repetitions or plan.repetitions):
        for level in levels:
            before = cpu_snapshot()
            run = run_closed_loop(
                make_client,
                level,
                seconds=seconds or plan.seconds,
                max_requests=plan.max_requests,
                warmup_per_client=warmup_per_client,
            )
            figures = run.to_json()
            figures["load"] = load_average()[0]
            figures["other_cores"] = other_cores_busy(before, cpu_snapshot())
            runs[level].append(figures)
            if label:
                print(
                    f"[bench]   {label} x{level}: p50 {figures['p50']:.1f} ms, "
                    f"{figures['throughput']:.1f}/s, errors {int(figures['errors'])}, "
                    f"others busy {figures['other_cores']:.2f} cores",
                    flush=True,
                )
    return {
        str(level): {
            "runs": level_runs,
            "stats": over_repetitions(
                {key: value for key, value in run.items() if key not in ("clients", "statuses")}
                for run in level_runs
            ),
        }
        for level, level_runs in runs.items()
    }


def interleaved_pair(
    make_baseline: Callable[[], Client],
    make_other: Callable[[], Client],
    plan: Plan,
    *,
    pairs: int = 60,
    warmup: int = 3,
    label: str = "",
) -> dict[str, Any]:
    """One client of each, called alternately (the order swapped every pair), repeated.

    For a ratio of two latencies this is fairer than two load series minutes apart: whatever
    else the machine does (frequency, neighbours) moves both sides alike. Per repetition the
    p50 of each side and their ratio; reported: the medians, with min and max.
    """
    runs = []
    for _ in range(plan.repetitions):
        baseline, other = make_baseline(), make_other()
        for number in range(warmup):
            baseline(number)
            other(number)
        times: dict[str, list[float]] = {"baseline": [], "other": []}
        failures = 0
        for number in range(pairs if not plan.quick else max(10, pairs // 6)):
            order = [("baseline", baseline), ("other", other)]
            for name, client in order if number % 2 == 0 else order[::-1]:
                started = time.perf_counter()
                status = client(number)
                times[name].append((time.perf_counter() - started) * 1000)
                failures += status != 200
        baseline_p50 = percentile(times["baseline"], 0.5)
        other_p50 = percentile(times["other"], 0.5)
        runs.append(
            {
                "baseline_p50": baseline_p50,
                "other_p50": other_p50,
                "ratio": other_p50 / baseline_p50,
                "pairs": float(len(times["other"])),
                "errors": float(failures),
            }
        )
        if label:
            print(
                f"[bench]   {label}: {other_p50:.1f} against {baseline_p50:.1f} ms "
                f"({other_p50 / baseline_p50:.2f}x), errors {failures}",
                flush=True,
            )
    return {"runs": runs, "stats": over_repetitions(runs)}


def interleaved_windows(
    make_baseline: Callable[[], Client],
    make_other: Callable[[], Client],
    clients: int,
    plan: Plan,
    *,
    windows: int = 3,
    seconds: float | None = None,
    label: str = "",
) -> dict[str, Any]:
    """Throughput of two systems at `clients` closed-loop clients, in alternating windows.

    Each repetition runs `windows` pairs of windows, the order swapped every pair, so drift
    over minutes (clock frequency, neighbours) falls on both sides; per pair the ratio of the
    other's throughput to the baseline's. Reported: every pair, and the medians.
    """
    runs = []
    window = seconds or plan.seconds
    for _ in range(plan.repetitions):
        for number in range(windows if not plan.quick else 1):
            figures: dict[str, float] = {}
            order = [("baseline", make_baseline), ("other", make_other)]
            for name, factory in order if number % 2 == 0 else order[::-1]:
                run = run_closed_loop(
                    factory,
                    clients,
                    seconds=window,
                    max_requests=plan.max_requests,
                    warmup_per_client=1,
                ).to_json()
                figures[f"{name}_throughput"] = run["throughput"]
                figures[f"{name}_errors"] = run["errors"]
            figures["ratio"] = figures["other_throughput"] / figures["baseline_throughput"]
            runs.append(figures)
            if label:
                print(
                    f"[bench]   {label}: {figures['other_throughput']:.1f} against "
                    f"{figures['baseline_throughput']:.1f}/s ({figures['ratio']:.2f}x), errors "
                    f"{int(figures['other_errors'] + figures['baseline_errors'])}",
                    flush=True,
                )
    return {"runs": runs, "stats": over_repetitions(runs), "clients": clients}
