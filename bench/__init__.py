"""Benchmarks: throughput, latency, memory and restore time of sendtrack against a real broker."""
