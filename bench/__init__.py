"""Benchmarks of the serverless stack against a re-creation of the original monolith.

`python -m bench` (`make bench`) builds the seed model once, serves the very same weights
through the whole local stack (gateway, functions, REST, model server) and through the monolith,
measures both on loopback in one run, and writes `bench/results/latest.json` and `bench/REPORT.md`
with plots. Timings live here, never in tests.
"""
