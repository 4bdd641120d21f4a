"""Lattice service: lattice shapes and fields, plan limits, storage and the gRPC adapter."""
