"""Catalytic Lattice Platform services: auth, lattice, webhook and their shared foundation."""
