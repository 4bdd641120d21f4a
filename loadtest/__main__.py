"""`python -m loadtest [{api,seed,capacity,fairness,rest,webhooks,grpc,pool,rls,clientcost}]
[...]`: dispatch to the scenario's main(). No scenario (or only options) runs `api`, the suite of
seed, capacity and fairness; `seed`, `capacity` and `fairness` run one of them."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys

# Scenario name -> module under loadtest/ (`grpc` would shadow the grpc package as a module name).
SCENARIOS = {
    "api": "api",
    "rest": "rest",
    "webhooks": "webhooks",
    "grpc": "grpc_direct",
    "pool": "pool",
    "rls": "rls",
    "clientcost": "clientcost",
}
# The API suite's scenarios, each also a name of its own: `seed` is `api --only seed`.
API_SCENARIOS = ("seed", "capacity", "fairness")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["api", *argv]
    elif argv[0] in API_SCENARIOS:
        argv = ["api", "--only", argv[0], *argv[1:]]
    available = [
        name
        for name, module in SCENARIOS.items()
        if importlib.util.find_spec(f"loadtest.{module}") is not None
    ]
    if argv[0] in ("-h", "--help") or argv[0] not in available:
        names = ",".join([*available, *API_SCENARIOS])
        print(f"usage: python -m loadtest [{{{names}}}] [options]", file=sys.stderr)
        return 0 if argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(f"loadtest.{SCENARIOS[argv[0]]}")
    if inspect.signature(module.main).parameters:
        return int(module.main(argv[1:]) or 0)
    sys.argv = [f"python -m loadtest {argv[0]}", *argv[1:]]  # a main() that reads sys.argv
    return int(module.main() or 0)


if __name__ == "__main__":
    sys.exit(main())
