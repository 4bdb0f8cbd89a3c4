"""Benchmark harness for trioconn: servers, a load generator and a runner (see bench/README.md)."""
