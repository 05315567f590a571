"""Benchmarks: accuracy against MedMNIST's published table, round overhead, scale.

Each script runs with ``python -m benchmarks.<name> --help``; see README's Performance section.
"""
