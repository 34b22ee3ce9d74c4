"""The benchmark harness of `make bench` (docs/benchmarks.md); not part of the product."""
