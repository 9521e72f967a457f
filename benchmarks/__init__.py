"""Benchmarks of capi-stream (`make bench`); figures, not pass/fail tests."""
