"""`python -m loadtest {rest,webhooks,grpc,pool,rls} [...]`: dispatch to the scenario's main()."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys

# Scenario name -> module under loadtest/ (`grpc` would shadow the grpc package as a module name).
SCENARIOS = {
    "rest": "rest",
    "webhooks": "webhooks",
    "grpc": "grpc_direct",
    "pool": "pool",
    "rls": "rls",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    available = [
        name
        for name, module in SCENARIOS.items()
        if importlib.util.find_spec(f"loadtest.{module}") is not None
    ]
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in available:
        print(f"usage: python -m loadtest {{{','.join(available)}}} [options]", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(f"loadtest.{SCENARIOS[argv[0]]}")
    if inspect.signature(module.main).parameters:
        return int(module.main(argv[1:]) or 0)
    sys.argv = [f"python -m loadtest {argv[0]}", *argv[1:]]  # a main() that reads sys.argv
    return int(module.main() or 0)


if __name__ == "__main__":
    sys.exit(main())
