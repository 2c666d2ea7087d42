"""Ledger sync at scale (issue 9, specs/protocol-ledger-sync.md §2.4): round trips,
messages and bytes of one range-reconciliation exchange (``/n3xus/ledger-sync/2.0.0``
query/summary, every message through its frame) between two account sets that differ in
1 % and 10 % of their accounts, over 100,000 accounts (``--large``: 1,000,000 too).

Of the accounts that differ, a third are only at the initiator, a third only at the
responder, a third at another version on each (``protocol/sim/reconcile.py``: synthetic
summary rows; the range core is the node's). The exchange must find exactly them.

Reference ceiling: an oracle that already knows which accounts differ and sends just their
summary rows (one ~80-byte row each, no fingerprints, one message). ratio = oracle bytes /
our bytes (geometric mean over the rows; 1.0 would be no overhead). Also shown: the bytes
of listing every row (what a summary without reconciliation must send).

    .venv/bin/python bench/ledger_sync_ranges.py [--large] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from n3xus.protocol.sim.reconcile import exchange, make_pair  # noqa: E402
from n3xus.protocol.sync.messages import ROOT, RangeRows, Summary  # noqa: E402
from n3xus.protocol.sync.session import encode_sync  # noqa: E402


def row_bytes(side: Any, accounts: list[bytes]) -> int:
    """Frame bytes of ``accounts``' rows listed in summaries of 16 rows per item."""
    total = 0
    for start in range(0, len(accounts), 4096):
        chunk = [side.rows[a] for a in accounts[start:start + 4096]]
        items = tuple(RangeRows(ROOT, tuple(chunk[i:i + 16])) for i in range(0, len(chunk), 16))
        total += len(encode_sync(Summary(items)))
    return total


def measure(accounts: int, fraction: float, seed: int) -> dict[str, Any]:
    first, second, differing = make_pair(accounts, fraction / 3, fraction / 3, fraction / 3, seed=seed)
    started = time.perf_counter()
    cost = exchange(first, second)
    elapsed = time.perf_counter() - started
    if cost.differing != differing:
        raise AssertionError("the exchange did not find exactly the accounts that differ")
    holder = {**first.rows, **second.rows}

    class _Both:
        rows = holder

    oracle = row_bytes(_Both, sorted(differing))
    listing = row_bytes(second, sorted(second.rows))
    return {"accounts": accounts, "differ %": round(fraction * 100, 1), "differing": len(differing),
            "round trips": cost.rounds, "messages": cost.messages, "bytes": cost.sent_bytes,
            "bytes per differing account": round(cost.sent_bytes / len(differing)),
            "oracle bytes": oracle, "full listing bytes": listing,
            "deepest listed range (nibbles)": cost.max_depth,
            "exchange cpu s (both sides, one process)": round(elapsed, 1),
            "ratio": oracle / cost.sent_bytes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--large", action="store_true", help="also 1,000,000 accounts")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sizes = [100_000, 1_000_000] if args.large else [100_000]
    rows = [measure(n, fraction, seed=n + int(fraction * 100)) for n in sizes for fraction in (0.01, 0.10)]
    ratio = math.exp(sum(math.log(r["ratio"]) for r in rows) / len(rows))
    if args.json:
        print(json.dumps({"rows": rows, "ratio": ratio,
                          "load average": os.getloadavg()}, indent=2))
        return 0
    for row in rows:
        print(f"{row['accounts']:>9,} accounts, {row['differ %']:>4}% differ ({row['differing']:,}): "
              f"{row['round trips']} round trips, {row['messages']} messages, "
              f"{row['bytes'] / 1e6:.2f} MB ({row['bytes per differing account']} B per differing "
              f"account); oracle {row['oracle bytes'] / 1e6:.2f} MB, full listing "
              f"{row['full listing bytes'] / 1e6:.2f} MB; ratio {row['ratio']:.2f}; "
              f"{row['exchange cpu s (both sides, one process)']} s cpu")
    print("load average: " + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    print(f"ratio={ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
