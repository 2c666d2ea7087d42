"""World-state federation between real CLI nodes (issue 9 "done when"): three nodes of one
network (B and C join A's genesis). A shares a world with B; A and B edit it at the same
time (a write to one key on both, a delete, new keys); all three reach the same root and
values; C follows A's plain world and sees its changes; a non-writer's write is refused and
a commit forged by a non-writer is rejected everywhere; C, killed while A and B write,
catches up after its restart without operator action."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from conftest import CliNode, n3xus_argv, run_cli, start_cli_node
from conftest import wait_for as wait_for_every
from n3xus.node.config import DEFAULT_MAP_SIZE_MIB, DataDir
from n3xus.node.services.worlds_federation import SYNC_INTERVAL_ENV

SYNC_ENV = {SYNC_INTERVAL_ENV: "1"}
CONVERGE_S = 30.0
POLL_S = 0.2
# A 2000-key world edit through the API commits and announces before it answers.
POST_TIMEOUT_S = 60.0


def cli(node: CliNode, *args: str, ok: bool = True) -> Any:
    result = run_cli(*args, "--data-dir", str(node.data_dir), "--json")
    if ok:
        assert result.returncode == 0, f"{args}: {result.stderr}"
        return json.loads(result.stdout)
    return result


def public_key(node: CliNode) -> str:
    return str(cli(node, "id")["public_key"])


def wait_for(condition: Callable[[], bool], what: str, seconds: float = CONVERGE_S) -> None:
    wait_for_every(condition, seconds, what, poll_s=POLL_S)


def root(node: CliNode, world: str) -> str | None:
    result = cli(node, "world", "show", world, ok=False)
    return json.loads(result.stdout)["root"] if result.returncode == 0 else None


def value(node: CliNode, world: str, key: str) -> Any:
    result = cli(node, "world", "get", world, key, ok=False)
    return json.loads(result.stdout)["value"] if result.returncode == 0 else None


def same_root(nodes: list[CliNode], world: str) -> bool:
    roots = {root(node, world) for node in nodes}
    return len(roots) == 1 and None not in roots


def test_three_cli_nodes_share_follow_reject_and_catch_up(tmp_path: Path,
                                                          cli_nodes: list[CliNode]) -> None:
    a = start_cli_node(tmp_path / "a", env=SYNC_ENV)
    cli_nodes.append(a)
    genesis = a.data_dir / "genesis.cbor"
    b = start_cli_node(tmp_path / "b", "--bootstrap", a.listen_addr, genesis=genesis, env=SYNC_ENV)
    cli_nodes.append(b)
    c = start_cli_node(tmp_path / "c", "--bootstrap", a.listen_addr, genesis=genesis, env=SYNC_ENV)
    cli_nodes.append(c)
    key_a, key_b, key_c = public_key(a), public_key(b), public_key(c)

    # A's world, then shared with B; B and C follow it from A.
    for i in range(20):
        cli(a, "world", "set", "w", f"k{i}", str(i))
    writers = cli(a, "world", "writers", "add", "w", key_b)
    assert writers["mode"] == "shared" and writers["writers"] == [key_a, key_b]
    assert cli(b, "world", "follow", "w", "--from", a.listen_addr)["result"] == "merged"
    followed = cli(c, "world", "follow", "w", "--from", a.listen_addr)
    assert followed["result"] == "merged" and followed["commits_verified"] >= 1
    assert same_root([a, b, c], "w")
    assert value(c, "w", "k7") == 7
    assert cli(c, "world", "writers", "list", "w")["writers"] == [key_a, key_b]

    # A and B edit at the same moment: one key on both, a delete, a key each.
    argv = lambda node, *args: n3xus_argv(*args, "--data-dir", str(node.data_dir))  # noqa: E731
    procs = [
        subprocess.Popen(argv(a, "world", "set", "w", "both", '"from A"'), stdout=subprocess.PIPE),
        subprocess.Popen(argv(b, "world", "set", "w", "both", '"from B"'), stdout=subprocess.PIPE),
        subprocess.Popen(argv(a, "world", "delete", "w", "k3"), stdout=subprocess.PIPE),
        subprocess.Popen(argv(b, "world", "set", "w", "only-b", "1"), stdout=subprocess.PIPE),
    ]
    assert all(proc.wait(timeout=60) == 0 for proc in procs)
    wait_for(lambda: same_root([a, b, c], "w"), "one root of w on A, B and C")
    # Both writes to `both` have clock 1: the greater author key wins (canon-world.md §8.3).
    winner = "from A" if bytes.fromhex(key_a) > bytes.fromhex(key_b) else "from B"
    assert {value(node, "w", "both") for node in (a, b, c)} == {winner}
    assert [value(node, "w", "k3") for node in (a, b, c)] == [None, None, None]
    assert [value(node, "w", "only-b") for node in (a, b, c)] == [1, 1, 1]
    assert cli(c, "world", "show", "w")["keys"] == 21  # 20 - k3 + both + only-b

    # A non-writer cannot write: C's node refuses, nothing changes anywhere.
    refused = cli(c, "world", "set", "w", "c-key", "1", ok=False)
    assert refused.returncode != 0 and "not a writer" in refused.stderr
    # Nor may a writer change the writer set: only the owner.
    refused = cli(b, "world", "writers", "add", "w", key_c, ok=False)
    assert refused.returncode != 0 and "owner" in refused.stderr
    # A malformed key is refused in one plain line (not the API schema's text).
    refused = cli(a, "world", "writers", "add", "w", "zz", ok=False)
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1
    assert "key: 'zz' is not 32 bytes as lowercase hex" in refused.stderr, refused.stderr
    assert "^" not in refused.stderr and "request body" not in refused.stderr

    # C follows A's plain world and sees its changes.
    cli(a, "world", "set", "plain", "x", "1")
    assert cli(c, "world", "follow", "plain", "--from", a.listen_addr)["result"] == "adopted"
    cli(a, "world", "set", "plain", "y", "2")
    wait_for(lambda: value(c, "plain", "y") == 2, "C sees A's change to the followed world")
    assert cli(c, "world", "show", "plain")["head"] == cli(a, "world", "show", "plain")["head"]
    refused = cli(c, "world", "set", "plain", "z", "1", ok=False)
    assert refused.returncode != 0 and "only its owner writes" in refused.stderr

    # Over the real block exchange, a change costs what changed: a 2,000-key world is
    # fetched once whole, then 3 changed keys cost a few paths of the tree.
    a.api("POST", "/worlds/big", timeout=POST_TIMEOUT_S,
          json={"set": {f"item/{i:04}": i for i in range(2000)}})
    first = cli(c, "world", "follow", "big", "--from", a.listen_addr)
    assert first["result"] == "adopted" and first["blocks_fetched"] > 2000
    a.api("POST", "/worlds/big", timeout=POST_TIMEOUT_S,
          json={"set": {"item/0007": -7, "item/1000": -1, "item/1999": -2}})
    wait_for(lambda: value(c, "big", "item/1999") == -2, "C sees the change to big")
    delta = c.api_get("/worlds/big/federation")["stats"]["last_blocks_fetched"]
    print(f"\nbig world: first follow {first['blocks_fetched']} blocks, 3 keys changed: "
          f"{delta} blocks")
    assert 0 < delta <= 3 * 5 + 3

    # C is killed; A and B write meanwhile; C restarts and catches up by itself.
    c.proc.send_signal(signal.SIGKILL)
    c.proc.wait()
    cli(a, "world", "set", "w", "while-c-down", '"a"')
    cli(b, "world", "delete", "w", "k4")
    cli(a, "world", "set", "plain", "later", "3")
    wait_for(lambda: same_root([a, b], "w"), "A and B agree while C is down")
    c = start_cli_node(tmp_path / "c", "--bootstrap", a.listen_addr, env=SYNC_ENV)
    cli_nodes.append(c)
    wait_for(lambda: same_root([a, b, c], "w"), "C caught up on w after its restart")
    wait_for(lambda: value(c, "plain", "later") == 3, "C caught up on the followed world")
    assert value(c, "w", "while-c-down") == "a" and value(c, "w", "k4") is None

    # A commit forged by a non-writer (C signs a record and a commit behind its node's back)
    # is rejected by A and B, and its record counts nowhere, not even on C.
    before = root(a, "w")
    c.stop()
    forge_non_writer_commit(c.data_dir, "w", bytes.fromhex(key_a), "forged", "evil")
    c = start_cli_node(tmp_path / "c", "--bootstrap", a.listen_addr, env=SYNC_ENV)
    cli_nodes.append(c)
    forged_head = cli(c, "world", "show", "w")["head"]
    wait_for(lambda: last_rejected(a, "w") == forged_head and last_rejected(b, "w") == forged_head,
             "A and B reject C's forged commit")
    assert root(a, "w") == root(b, "w") == before
    assert [value(node, "w", "forged") for node in (a, b, c)] == [None, None, None]

    # The owner removes B: B's records stop counting everywhere (retroactively, §8.3) and
    # B's node refuses B's writes once it has the owner's change.
    assert cli(a, "world", "writers", "remove", "w", key_b)["writers"] == [key_a]
    wait_for(lambda: cli(b, "world", "writers", "list", "w")["writers"] == [key_a],
             "B learns that it was removed")
    wait_for(lambda: same_root([a, b], "w"), "A and B agree after the removal")
    assert [value(node, "w", "only-b") for node in (a, b)] == [None, None]
    refused = cli(b, "world", "set", "w", "after", "1", ok=False)
    assert refused.returncode != 0 and "not a writer" in refused.stderr
    assert cli(c, "world", "unfollow", "plain")["following"] is False


def last_rejected(node: CliNode, world: str) -> str | None:
    stats = node.api_get(f"/worlds/{world}/federation")["stats"]
    return None if stats["last_rejected"] is None else str(stats["last_rejected"])


def forge_non_writer_commit(data_dir: Path, world: str, owner: bytes, key: str, text: str) -> None:
    """Offline, on C's stopped node: a record and a commit signed by C's key, which is not a
    writer of ``world``, made the head (what a modified node could announce)."""
    from n3xus.canon.world_merge import SharedWorld
    from n3xus.node.services.canon import CanonService
    from n3xus.node.storage import open_environment

    dd = DataDir(data_dir)
    seed = dd.read_identity_seed()
    env = open_environment(dd.lmdb_path, DEFAULT_MAP_SIZE_MIB)
    try:
        canon = CanonService(env, SigningKey(seed), "forgery")
        head = canon.world_head(world)[1]
        forged = SharedWorld(canon.store, owner, world, head.root).put(SigningKey(seed), key, text)
        canon.world_commit_root(world, forged.root)
    finally:
        env.close()
