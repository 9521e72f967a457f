"""The chaos soak: workload, chaos schedule, oracle, report; the short variant runs in make test."""
