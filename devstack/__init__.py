"""Runs the real local stack (PostgreSQL, Redis, the three services, Envoy) as child processes."""

from devstack.ports import StackPorts
from devstack.stack import Stack, StackError

__all__ = ["Stack", "StackError", "StackPorts"]
