"""Block exchange between real CLI nodes (``n3xus node start``, each its own process on
127.0.0.1): a 50 MiB file fetched from one node, then from two at once, surviving the
fetcher's crash and restart (it resumes by itself; stored blocks are not fetched again) and
a source killed mid-way."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

from conftest import CliNode, n3xus_argv, run_cli, start_cli_node, wait_for
from n3xus.node.p2p.blocks import SERVE_RATE_ENV

FILE_BYTES = 50 * 1024 * 1024
CHUNK_BYTES = 256 * 1024
FILE_BLOCKS = FILE_BYTES // CHUNK_BYTES + 1  # the chunks and the root
# Sources serve 24 blocks/s each (6 MiB/s): a fetch from two takes ~4 s, long enough to
# kill a node mid-way at a known point whatever the machine's speed.
SERVE_RATE = "24"
FETCH_TIMEOUT_S = 300.0
POLL_S = 0.1


def latest_fetch(node: CliNode) -> dict[str, Any] | None:
    fetches = node.api_get("/canon/fetch")["fetches"]
    return fetches[-1] if fetches else None


def fetch_cli(node: CliNode, cid: str, *sources: str) -> subprocess.Popen[str]:
    args = ["canon", "fetch", cid, "--data-dir", str(node.data_dir), "--json"]
    for source in sources:
        args += ["--from", source]
    return subprocess.Popen(n3xus_argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def served_by_both(node: CliNode, a: str, b: str, at_most: float,
                   at_least: float = 0.0) -> bool:
    status = latest_fetch(node)
    if status is None or status["state"] != "fetching":
        return False
    peers = status["peers"]
    both = all(peers.get(p, {}).get("blocks", 0) > 0 for p in (a, b))
    assert status["blocks_fetched"] < at_most * FILE_BLOCKS, \
        f"the fetch went too far before both sources served: {status}"
    return both and status["blocks_stored"] >= at_least * FILE_BLOCKS


def test_fetch_from_one_then_two_sources_with_a_crash_and_a_killed_source(
        tmp_path: Path, cli_nodes: list[CliNode]) -> None:
    throttled = {SERVE_RATE_ENV: SERVE_RATE}
    a = start_cli_node(tmp_path / "a", env=throttled)
    cli_nodes.append(a)
    genesis = a.data_dir / "genesis.cbor"
    b = start_cli_node(tmp_path / "b", "--bootstrap", a.listen_addr, genesis=genesis,
                       env=throttled)
    cli_nodes.append(b)
    c = start_cli_node(tmp_path / "c", "--bootstrap", a.listen_addr, genesis=genesis)
    cli_nodes.append(c)

    content = os.urandom(FILE_BYTES)
    source_file = tmp_path / "file.bin"
    source_file.write_bytes(content)
    put = run_cli("canon", "put", str(source_file), "--data-dir", str(a.data_dir), "--json")
    assert put.returncode == 0, put.stderr
    cid = json.loads(put.stdout)["cid"]

    # 1. B fetches the file from A alone, with the CLI.
    fetched = run_cli("canon", "fetch", cid, "--from", a.listen_addr,
                      "--data-dir", str(b.data_dir), "--json", timeout=FETCH_TIMEOUT_S)
    assert fetched.returncode == 0, fetched.stderr
    status = json.loads(fetched.stdout)
    assert status["state"] == "done" and status["blocks_fetched"] == FILE_BLOCKS
    assert status["bytes_fetched"] >= FILE_BYTES and status["file_size"] == FILE_BYTES
    assert status["peers"][a.peer_id]["blocks"] == FILE_BLOCKS
    assert status["peers"][a.peer_id]["mismatches"] == 0
    print(f"\nB from A: {status['bytes_per_s'] / 2**20:.1f} MiB/s (A serves {SERVE_RATE} "
          "blocks/s per peer)")

    # 2. C fetches from A and B at once and crashes (SIGKILL) once both have served.
    first = fetch_cli(c, cid, a.listen_addr, b.listen_addr)
    wait_for(lambda: served_by_both(c, a.peer_id, b.peer_id, at_most=0.8, at_least=0.3),
             FETCH_TIMEOUT_S, "C fetching from both A and B, a third stored", poll_s=POLL_S)
    c.proc.send_signal(signal.SIGKILL)
    c.proc.wait()
    first.wait(timeout=60)
    assert first.returncode != 0  # the node it watched died

    # 3. C restarts and resumes the unfinished fetch by itself (its sources were recorded);
    # asking again attaches to it. Stored blocks are not fetched again.
    c = start_cli_node(tmp_path / "c", "--bootstrap", a.listen_addr)
    cli_nodes.append(c)
    wait_for(lambda: latest_fetch(c) is not None, 60, "C resuming the fetch on its own",
             poll_s=POLL_S)
    resumed_job = latest_fetch(c)
    assert resumed_job is not None and resumed_job["cid"] == cid
    assert resumed_job["sources"] == [a.listen_addr, b.listen_addr]
    second = fetch_cli(c, cid, a.listen_addr, b.listen_addr)
    # 4. B is killed mid-way: C completes from A.
    wait_for(lambda: served_by_both(c, a.peer_id, b.peer_id, at_most=0.9), FETCH_TIMEOUT_S,
             "the resumed fetch drawing on both A and B", poll_s=POLL_S)
    b.proc.send_signal(signal.SIGKILL)
    b.proc.wait()
    out, err = second.communicate(timeout=FETCH_TIMEOUT_S)
    assert second.returncode == 0, err
    resumed = json.loads(out)
    assert resumed["id"] == resumed_job["id"]  # one fetch of the DAG, not two
    peers = resumed["peers"]
    print(f"C resumed: {resumed['blocks_stored_before']} blocks stored before the restart, "
          f"{resumed['blocks_fetched']} fetched: A {peers[a.peer_id]['blocks']}, "
          f"B {peers[b.peer_id]['blocks']} (then killed: {peers[b.peer_id]['error']})")
    assert resumed["state"] == "done"
    assert resumed["blocks_stored_before"] > 0
    # Nothing stored was fetched again, nothing was fetched twice.
    assert resumed["blocks_stored_before"] + resumed["blocks_fetched"] == FILE_BLOCKS
    assert peers[a.peer_id]["blocks"] + peers[b.peer_id]["blocks"] == resumed["blocks_fetched"]
    assert peers[a.peer_id]["blocks"] > 0 and peers[b.peer_id]["blocks"] > 0
    assert peers[b.peer_id]["state"] == "failed" and peers[a.peer_id]["state"] == "finished"
    assert peers[a.peer_id]["mismatches"] == peers[b.peer_id]["mismatches"] == 0
    # A killed source is gone, not at fault: no penalty for the frame it was cut off in.
    listed = c.api_get("/peers")
    for entry in [*listed["peers"], *listed.get("others", [])]:
        if entry["peer_id"] == b.peer_id and entry.get("traffic"):
            assert not entry["traffic"]["penalties"], entry

    # The file on C is the file put on A, and it is pinned.
    copy = tmp_path / "copy.bin"
    got = run_cli("canon", "get", cid, "-o", str(copy), "--data-dir", str(c.data_dir))
    assert got.returncode == 0, got.stderr
    assert hashlib.sha256(copy.read_bytes()).digest() == hashlib.sha256(content).digest()
    assert cid in {p["cid"] for p in c.api_get("/canon/pins")["pins"]}
