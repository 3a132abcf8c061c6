"""`python -m bench` (`make bench`): run the benchmarks, write the results and the report.

    python -m bench                 # everything (about 10-15 minutes on 2 cores)
    python -m bench --quick         # one short repetition of each, for trying changes
    python -m bench --only monolith,floor
    python -m bench --report-only   # rebuild REPORT.md and the plots from results/latest.json

Results: bench/results/latest.json (machine-readable) and bench/REPORT.md with PNG plots in
bench/. A `--quick` or `--only` run writes bench/results/quick.json and leaves the report alone
unless `--report` is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bench.measure import Plan

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="xray-bench", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs, one repetition")
    parser.add_argument("--only", help="comma-separated section names (setup always runs)")
    parser.add_argument("--keep-work", action="store_true", help="keep the temporary folder")
    parser.add_argument("--report", action="store_true", help="write REPORT.md even if partial")
    parser.add_argument("--report-only", action="store_true", help="only rebuild the report")
    parser.add_argument("--results", type=Path, default=None, help="results JSON path")
    arguments = parser.parse_args(argv)
    # The compute floor runs TensorFlow in this process: with the allocator the model server
    # runs with (devstack.processes.MODEL_SERVER_ENV), set before TensorFlow is first imported.
    from devstack.processes import MODEL_SERVER_ENV

    for name, value in MODEL_SERVER_ENV.items():
        os.environ.setdefault(name, value)

    from bench.report import write_report

    partial = arguments.quick or bool(arguments.only)
    results_path = arguments.results or RESULTS_DIR / ("quick.json" if partial else "latest.json")
    if arguments.report_only:
        results = json.loads(results_path.read_text(encoding="utf-8"))
        write_report(results, BENCH_DIR)
        print(f"[bench] wrote {BENCH_DIR / 'REPORT.md'}")
        return 0

    from bench.runner import SECTIONS, run_benchmarks

    only = None
    if arguments.only:
        only = {name.strip() for name in arguments.only.split(",") if name.strip()}
        unknown = only - {name for name, _ in SECTIONS}
        if unknown:
            parser.error(f"unknown sections {sorted(unknown)}; known: {[n for n, _ in SECTIONS]}")
    plan = Plan.quick_plan() if arguments.quick else Plan.full()
    results = run_benchmarks(plan, keep_work=arguments.keep_work, only=only)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    results_path.write_text(json.dumps(results, indent=1, sort_keys=True), encoding="utf-8")
    print(f"[bench] wrote {results_path} ({results['meta']['seconds']:.0f} s)")
    if not partial or arguments.report:
        write_report(results, BENCH_DIR)
        print(f"[bench] wrote {BENCH_DIR / 'REPORT.md'}")
    return 1 if results.get("errors") else 0


if __name__ == "__main__":
    sys.exit(main())
