"""Latency and parity benchmarks of every backend against the PyTorch reference."""
