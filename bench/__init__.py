"""Replay harness and benchmarks against peers."""
