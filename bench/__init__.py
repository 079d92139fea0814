"""Benchmarks and the case-study reproduction."""
