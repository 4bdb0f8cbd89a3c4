"""Tests of the benchmark harness itself (``pytest bench/tests``)."""
