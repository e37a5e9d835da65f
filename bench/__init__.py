"""Benchmarks (not tests): each prints its figures and the ratio to a plain-library baseline measured in the same
run."""
