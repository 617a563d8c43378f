"""Benchmarks: each module prints a table and writes JSON; none runs as a test."""
