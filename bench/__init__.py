"""Benchmarks, run with `crm bench NAME`: each prints its figures beside a baseline measured in
the same process, so the ratios mean something on a noisy machine."""
