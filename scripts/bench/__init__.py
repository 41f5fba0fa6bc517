"""Helpers of scripts/bench.py: processes, workloads, stock Presidio, the report."""
