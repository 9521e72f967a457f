"""Synthetic Kafka traffic for tests, benchmarks and `make run`; not part of the shipped package."""
