"""Metrics, baseline systems, the evaluation harness and benchmarks."""
