"""Per-stream bulk throughput: two of our nodes against two js-libp2p nodes, same machine,
same run (informational; issue 8's benchmark list).

Both pairs move the same kind of DAG with the same wire protocol, /n3xus/blocks/1.0.0 over
TCP + Noise + yamux, one blocks stream per fetch: a file of random bytes stored with ``n3xus
canon put`` (256 KiB raw chunks under a DAG-CBOR root), fetched by walking its links and
verifying every block against its CID (BLAKE3).

* **ours**: CLI node B runs ``n3xus canon fetch ROOT --from A`` (the node's own timing,
  ``elapsed_s``; B also stores every block in LMDB).
* **ceiling**: JS peer J2 fetches the same DAG from JS peer J1 (``tests/interop/peer.mjs``:
  js-libp2p 3 on Node.js, the n3xus protocols written from specs/; blocks in memory).
* cross pairs, to see which side dominates: J1 fetching from A (Python serves, JS
  requests) and B fetching from J1 (JS serves, Python requests).

Two workloads: a SHA2-256 DAG (the headline: both sides hash natively, Node's OpenSSL and
Python's hashlib, so the ratio compares the stacks) and a BLAKE3 DAG (n3xus's default; the
JS peer hashes it in pure JS with @noble/hashes, which bounds its requester on its own).
For every transfer the CPU seconds each process spent (``/proc/<pid>/stat``) are reported
per MiB: the side that burns the most CPU per byte is what bounds the stream.

    python bench/interop_js.py [--json] [--large] [--repeats N]   (needs npm ci in tests/interop)
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from interop_support import JsPeer  # noqa: E402

from _harness import Result, parser, report  # noqa: E402
from conftest import CliNode, run_cli, start_cli_node  # noqa: E402

FILE_MIB = 32
LARGE_FILE_MIB = 128
DEFAULT_REPEATS = 3
MIB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")
FETCH_TIMEOUT_S = 600.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cli_json(*args: str) -> Any:
    res = run_cli(*args, "--json", timeout=FETCH_TIMEOUT_S)
    if res.returncode != 0:
        raise RuntimeError(f"n3xus {' '.join(args)}: {res.stderr[-2000:]}")
    return json.loads(res.stdout)


def put_file(node: CliNode, mib: int, directory: Path, hash_name: str) -> str:
    path = directory / f"file-{time.monotonic_ns()}.bin"
    path.write_bytes(os.urandom(mib * MIB))
    cid = str(cli_json("canon", "put", str(path), "--hash", hash_name,
                       "--data-dir", str(node.data_dir))["cid"])
    path.unlink()
    return cid


class Transfer:
    """One fetch: seconds, bytes and each process's CPU seconds during it."""

    def __init__(self, seconds: float, nbytes: int, cpu: dict[str, float]) -> None:
        self.seconds, self.nbytes, self.cpu = seconds, nbytes, cpu

    @property
    def mib_per_s(self) -> float:
        return self.nbytes / MIB / self.seconds


def measured(pids: dict[str, int], run: Callable[[], tuple[float, int]]) -> Transfer:
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    seconds, nbytes = run()
    cpu = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    return Transfer(seconds, nbytes, cpu)


def node_fetch(node: CliNode, root: str, source: str) -> tuple[float, int]:
    got = cli_json("canon", "fetch", root, "--from", source, "--data-dir", str(node.data_dir))
    if got["state"] != "done":
        raise RuntimeError(f"fetch failed: {got}")
    return float(got["elapsed_s"]), int(got["bytes_fetched"])


def js_fetch(js: JsPeer, root: str, source: str, keep: bool) -> tuple[float, int]:
    got = js.ok("fetch-dag", peer=source, root=root, keep=keep, timeout=FETCH_TIMEOUT_S)
    if got["dont_have"]:
        raise RuntimeError(f"js fetch incomplete: {got}")
    return float(got["seconds"]), int(got["bytes"])


def summary(transfers: list[Transfer], sides: tuple[str, str]) -> str:
    rate = statistics.median(t.mib_per_s for t in transfers)
    cpu = {side: statistics.median(t.cpu[side] * MIB / t.nbytes for t in transfers) for side in sides}
    return (f"{rate:,.1f} MiB/s; CPU per MiB: {sides[0]} (serves) {cpu[sides[0]] * 1000:.1f} ms, "
            f"{sides[1]} (fetches) {cpu[sides[1]] * 1000:.1f} ms")


def measure_workload(hash_name: str, mib: int, repeats: int, root_dir: Path, a: CliNode,
                     b: CliNode, j1: JsPeer, j2: JsPeer, pids: dict[str, int]) -> Result:
    py_py: list[Transfer] = []
    js_js: list[Transfer] = []
    py_js: list[Transfer] = []
    js_py: list[Transfer] = []
    for i in range(repeats):
        first, second = put_file(a, mib, root_dir, hash_name), put_file(a, mib, root_dir, hash_name)
        j1.ok("clear")
        py_js.append(measured(pids, partial(js_fetch, j1, first, a.peer_id, True)))
        js_fetch(j1, second, a.peer_id, True)  # J1 now serves both files
        # Interleaved, so that a noisy moment hurts both pairs alike.
        steps = [(py_py, partial(node_fetch, b, first, a.peer_id)),
                 (js_js, partial(js_fetch, j2, first, j1.peer_id, False))]
        for transfers, fetch in steps if i % 2 == 0 else reversed(steps):
            transfers.append(measured(pids, fetch))
        js_py.append(measured(pids, partial(node_fetch, b, second, j1.peer_id)))
    ours_s = statistics.median(t.seconds * MIB * mib / t.nbytes for t in py_py)
    ceiling_s = statistics.median(t.seconds * MIB * mib / t.nbytes for t in js_js)
    # The headline is the SHA2-256 DAG, which both sides hash natively (Node's OpenSSL,
    # Python's hashlib), so the ratio compares the stacks; BLAKE3 (n3xus's default) is
    # pure JS in the JS peer (@noble/hashes) and bounds its requester on its own.
    return Result(f"one blocks stream, {mib} MiB {hash_name} DAG", "MiB", mib, ours_s, ceiling_s,
                  None, hash_name == "sha2-256", {
                      "ours (py A -> py B)": summary(py_py, ("A", "B")),
                      "ceiling (js J1 -> js J2)": summary(js_js, ("J1", "J2")),
                      "cross (py A -> js J1)": summary(py_js, ("A", "J1")),
                      "cross (js J1 -> py B)": summary(js_py, ("J1", "B")),
                  })


def js_blake3_rate(js: JsPeer) -> float:
    return float(js.ok("hash-rate", mib=16)["blake3_mib_per_s"])


def run(args: Any) -> None:
    mib = LARGE_FILE_MIB if args.large else FILE_MIB
    with tempfile.TemporaryDirectory(prefix="n3xus-bench-interop-") as tmp:
        root_dir = Path(tmp)
        a = start_cli_node(root_dir / "a")
        b = start_cli_node(root_dir / "b", genesis=root_dir / "a" / "genesis.cbor")
        network = cli_json("ledger", "status", "--data-dir", str(a.data_dir))["network"]
        j1, j2 = JsPeer(network), JsPeer(network)
        try:
            for js in (j1, j2):
                js.ok("dial", addr=a.listen_addr)
            j1.ok("dial", addr=b.listen_addr)
            j2.ok("dial", addr=j1.addr)
            run_cli("peers", "connect", a.listen_addr, "--data-dir", str(b.data_dir))
            pids = {"A": a.proc.pid, "B": b.proc.pid, "J1": j1.proc.pid, "J2": j2.proc.pid}
            results = [measure_workload(hash_name, mib, args.repeats, root_dir, a, b, j1, j2, pids)
                       for hash_name in ("sha2-256", "blake3")]
            report("interop: per-stream bulk throughput, our nodes vs js-libp2p nodes", results,
                   {"repeats": args.repeats, "block_bytes": 256 * 1024,
                    "js hashing (noble BLAKE3, pure JS)": f"{js_blake3_rate(j1):,.1f} MiB/s"},
                   args.json)
        finally:
            for js in (j1, j2):
                js.stop()
            for node in (a, b):
                if node.proc.poll() is None:
                    node.stop()


if __name__ == "__main__":
    p = parser(__doc__.splitlines()[0])
    p.set_defaults(repeats=DEFAULT_REPEATS)
    run(p.parse_args())
