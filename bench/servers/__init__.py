"""Benchmark servers: trioconn and two baselines, all driven by the same stdin control protocol."""
