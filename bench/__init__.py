"""Benchmarks of the lattice engine against igraph, scipy.sparse.csgraph, rustworkx and networkx.

Run `python -m bench --help` (or `make bench`); results: docs/performance.md.
"""
