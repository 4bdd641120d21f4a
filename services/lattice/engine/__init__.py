"""The lattice engine: implicit n-D grids, fills, reversible transforms, paths and analysis.

Pure numpy (and optional CuPy); imports neither grpc nor protobuf. Errors are the domain errors
of services.common.errors.
"""
