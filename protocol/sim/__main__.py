"""``python -m n3xus.protocol.sim --nodes N --seed S``: run one seeded simulation and say
whether every node converged; exit status 1 if not (the seed then replays the failure)."""

from __future__ import annotations

import argparse
import sys

from .ledger import SimConfig, simulate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m n3xus.protocol.sim",
                                     description="deterministic ledger federation simulation")
    defaults = SimConfig()
    parser.add_argument("--nodes", type=int, default=defaults.nodes)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--degree", type=int, default=defaults.degree)
    parser.add_argument("--users", type=int, default=None,
                        help="client accounts (default: max(10, nodes // 10))")
    parser.add_argument("--transfers", type=int, default=None,
                        help="client transfers (default: max(40, nodes // 5))")
    parser.add_argument("--double-spends", type=int, default=defaults.double_spends)
    parser.add_argument("--races", type=int, default=defaults.races)
    parser.add_argument("--loss", type=float, default=defaults.loss)
    parser.add_argument("--duplicate", type=float, default=defaults.duplicate)
    parser.add_argument("--partitions", type=int, default=defaults.partitions)
    parser.add_argument("--crashes", type=int, default=None,
                        help="node crashes (default: max(2, nodes // 50))")
    parser.add_argument("--settle-ms", type=int, default=defaults.settle_ms)
    parser.add_argument("--no-wire", action="store_true",
                        help="pass message objects instead of their DAG-CBOR bytes")
    args = parser.parse_args(argv)
    config = SimConfig(
        nodes=args.nodes, seed=args.seed, degree=args.degree,
        users=args.users if args.users is not None else max(10, args.nodes // 10),
        transfers=args.transfers if args.transfers is not None else max(40, args.nodes // 5),
        double_spends=args.double_spends, races=args.races, loss=args.loss,
        duplicate=args.duplicate, partitions=args.partitions,
        crashes=args.crashes if args.crashes is not None else max(2, args.nodes // 50),
        settle_ms=args.settle_ms, wire=not args.no_wire)
    result = simulate(config)
    print(result.summary())
    return 0 if result.converged else 1


if __name__ == "__main__":
    sys.exit(main())
