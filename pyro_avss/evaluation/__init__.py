"""Metrics, baseline systems and enhancers, the evaluation harness and its reports."""
