"""Shared foundation of every service: config, errors, server factory, interceptors, db, metrics."""
