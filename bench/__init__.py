"""Benchmarks, above everything (they may import any layer): each prints ratios measured in one run against a
baseline in the same run, and asserts nothing."""
