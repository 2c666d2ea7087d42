"""The signed hello between real CLI nodes (``n3xus node start``, each its own process on
127.0.0.1): three nodes of one network recognise each other and log it verifiably; a node of
another network and one of another major version are refused with their reasons, visible in
``n3xus peers list --json`` and in the log."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from conftest import CliNode, run_cli, start_cli_node, wait_for
from n3xus.canon.codec import decode
from n3xus.node.p2p.hello import TEST_VERSION_ENV, verify_recognition
from n3xus.protocol.codes import ErrorCode
from n3xus.protocol.errors import HelloRefused

# B and C bootstrap from A and find each other through the DHT; on a loaded 2-core
# machine with other test processes the first lookups can take a while.
CONNECT_BOUND_S = 40.0


def peers_json(node: CliNode) -> dict[str, Any]:
    res = run_cli("peers", "list", "--data-dir", str(node.data_dir), "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def recognised(node: CliNode) -> set[str]:
    return {p["peer_id"] for p in node.api_get("/peers")["peers"] if p.get("hello")}


def test_three_cli_nodes_complete_hellos_and_log_verifiable_handshakes(
        tmp_path: Path, cli_nodes: list[CliNode]) -> None:
    a = start_cli_node(tmp_path / "a")
    cli_nodes.append(a)
    genesis = tmp_path / "a" / "genesis.cbor"
    b = start_cli_node(tmp_path / "b", "--bootstrap", a.listen_addr, genesis=genesis)
    cli_nodes.append(b)
    c = start_cli_node(tmp_path / "c", "--bootstrap", a.listen_addr, genesis=genesis)
    cli_nodes.append(c)
    nodes = {a.peer_id: a, b.peer_id: b, c.peer_id: c}

    took = wait_for(lambda: all(recognised(n) == set(nodes) - {pid} for pid, n in nodes.items()),
                    CONNECT_BOUND_S, "every node recognises the two others")
    print(f"\nall hellos complete {took:.1f} s after C started")

    networks = set()
    durations = []
    for peer_id, node in nodes.items():
        listed = peers_json(node)
        assert {p["peer_id"] for p in listed["peers"]} == set(nodes) - {peer_id}
        for peer in listed["peers"]:
            hello = peer["hello"]
            networks.add(hello["network"])
            assert hello["version"] == "0.1.0"
            assert "/n3xus/hello/1.0.0" in hello["protocols"] and "witness" in hello["capabilities"]
            assert peer["refusal"] is None and peer["banned"] is None and peer["score"] > 0
            assert hello["direction"] in ("inbound", "outbound")
            durations.append(hello["elapsed_ms"])
        status = node.api_get("/status")["federation"]
        assert status["hellos_completed"] >= 2 and status["hellos_refused"] == 0
    assert len(networks) == 1  # one genesis

    # Each completed hello is a handshake v2 entry that a third party can check: the
    # linked block is the peer's signed hello for a session between the two nodes.
    for peer_id, node in nodes.items():
        entries = [e for e in node.api_get("/canon/log", start=0, limit=100)["entries"]
                   if e["type"] == "handshake"]
        assert entries and all(e["version"] == 2 for e in entries)
        seen = set()
        for entry in entries:
            payload = decode(node.api_get(f"/canon/blocks/{entry['payload']}"))
            block = node.api_get(f"/canon/blocks/{payload['hello']}")
            hello = verify_recognition(payload, block, peer_id)
            assert hello.peer_id == payload["peer"] != peer_id
            seen.add(payload["peer"])
            tampered = bytearray(block)
            tampered[-1] ^= 1
            with pytest.raises(HelloRefused) as refused:
                verify_recognition(payload, bytes(tampered), peer_id)
            assert refused.value.code is ErrorCode.BAD_SIGNATURE
            with pytest.raises(HelloRefused) as refused:  # not a recognition of a third node
                verify_recognition(payload, block, "12D3KooWGYHiagipDUke28zYWUQ68LJvzGQ9kzAdbsikGbcHu8Aw")
            assert refused.value.code is ErrorCode.REPLAYED
        assert seen == set(nodes) - {peer_id}
        # The log still verifies as a whole with these entries (their schema is registered).
        proof = node.api_get(f"/canon/log/proof/{entries[0]['index']}")
        assert proof
    print(f"hello exchange (as each side saw it): median {statistics.median(durations):.1f} ms, "
          f"max {max(durations):.1f} ms over {len(durations)} sides")
    for node in nodes.values():
        code, _, stderr = node.stop()
        assert code == 0, stderr[-2000:]


def refusal_of(node: CliNode, peer_id: str) -> dict[str, Any] | None:
    listed = peers_json(node)
    for peer in [*listed["peers"], *listed["others"]]:
        if peer["peer_id"] == peer_id and peer.get("refusal"):
            return peer["refusal"]  # type: ignore[no-any-return]
    return None


def test_other_network_and_other_major_version_are_refused_with_reasons(
        tmp_path: Path, cli_nodes: list[CliNode]) -> None:
    # A denies one peer id of its own network in its federation policy (config.toml).
    assert run_cli("node", "init", "--data-dir", str(tmp_path / "a")).returncode == 0
    init = run_cli("node", "init", "--data-dir", str(tmp_path / "d"), "--genesis",
                   str(tmp_path / "a" / "genesis.cbor"), "--json")
    denied_id = json.loads(init.stdout)["peer_id"]
    with (tmp_path / "a" / "config.toml").open("a", encoding="utf-8") as config:
        config.write(f'\n[federation]\ndeny = ["{denied_id}"]\n')
    a = start_cli_node(tmp_path / "a")
    cli_nodes.append(a)
    denied = start_cli_node(tmp_path / "d", "--bootstrap", a.listen_addr)
    cli_nodes.append(denied)
    # A fresh data dir is a development network of its own: another genesis.
    stranger = start_cli_node(tmp_path / "x", "--bootstrap", a.listen_addr)
    cli_nodes.append(stranger)
    # Same network, but it advertises major version 7 (the documented test hook).
    future = start_cli_node(tmp_path / "v", "--bootstrap", a.listen_addr,
                            genesis=tmp_path / "a" / "genesis.cbor",
                            env={TEST_VERSION_ENV: "7.0.0"})
    cli_nodes.append(future)

    wait_for(lambda: refusal_of(a, stranger.peer_id) is not None
             and refusal_of(a, future.peer_id) is not None, CONNECT_BOUND_S,
             "A shows both refusals")
    wait_for(lambda: refusal_of(stranger, a.peer_id) is not None
             and refusal_of(future, a.peer_id) is not None, CONNECT_BOUND_S,
             "the refused nodes show them too")

    # The dialer verifies first (it receives the responder's hello), so it refuses: A
    # learns the reason from the error frame ("by": "peer").
    on_a = refusal_of(a, stranger.peer_id)
    assert on_a is not None and on_a["code"] == ErrorCode.WRONG_NETWORK == 16, on_a
    assert on_a["reason"] == "wrong-network" and on_a["by"] == "peer", on_a
    assert "is not one this node accepts" in on_a["message"]
    on_x = refusal_of(stranger, a.peer_id)
    assert on_x is not None and on_x["reason"] == "wrong-network" and on_x["by"] == "us", on_x

    on_a = refusal_of(a, future.peer_id)
    assert on_a is not None and on_a["code"] == ErrorCode.UNSUPPORTED_VERSION == 17, on_a
    assert on_a["reason"] == "unsupported-version" and "major versions differ" in on_a["message"], on_a
    on_v = refusal_of(future, a.peer_id)
    assert on_v is not None and on_v["reason"] == "unsupported-version", on_v

    # The responder refuses a denied peer at hello-start, before signing anything for it.
    wait_for(lambda: refusal_of(a, denied_id) is not None, CONNECT_BOUND_S, "denied peer refused")
    on_a = refusal_of(a, denied_id)
    assert on_a is not None and on_a["reason"] == "policy-denied" and on_a["by"] == "us", on_a
    assert on_a["code"] == ErrorCode.POLICY_DENIED == 22 and "deny list" in on_a["message"]
    wait_for(lambda: refusal_of(denied, a.peer_id) is not None, CONNECT_BOUND_S, "D told why")
    assert refusal_of(denied, a.peer_id)["by"] == "peer"  # type: ignore[index]

    # Refused peers are not connected, and are kept away (no reconnect loop) for a while.
    listed = peers_json(a)
    assert listed["peers"] == [], listed
    others = {p["peer_id"]: p for p in listed["others"]}
    assert others[stranger.peer_id]["banned"]["reason"].startswith("hello refused (wrong-network")
    assert others[future.peer_id]["hello"] is None
    human = run_cli("peers", "list", "--data-dir", str(a.data_dir)).stdout
    assert "wrong-network (16)" in human and "unsupported-version (17)" in human
    assert a.api_get("/status")["federation"]["hellos_completed"] == 0

    for node in (a, stranger, future, denied):
        code, _, stderr = node.stop()
        assert code == 0, stderr[-2000:]
        if node is a:
            log = stderr + "\n".join(node.stdout_lines)
            assert "hello refused" in log and "reason=wrong-network" in log
            assert "reason=unsupported-version" in log


def test_federation_settings_from_config() -> None:
    from n3xus.canon.cid import cid_of
    from n3xus.node.errors import ConfigError
    from n3xus.node.p2p.hello import FederationSettings, federation_settings

    own, other = cid_of(b"own network"), cid_of(b"other network")
    assert federation_settings(None) == FederationSettings()
    settings = federation_settings({"networks": [str(other)], "deny": ["12D3KooWx"],
                                    "ban_seconds": 30, "ban_threshold": -50})
    assert settings.ban_seconds == 30.0 and settings.ban_threshold == -50.0
    policy = settings.policy(own)
    assert policy.networks == (own, other) and policy.deny == ("12D3KooWx",)
    assert policy.refusal("12D3KooWx", own) is not None  # denied
    assert policy.refusal("12D3KooWy", other) is None
    refused = policy.refusal("12D3KooWy", cid_of(b"third"))
    assert refused is not None and refused.code is ErrorCode.WRONG_NETWORK
    for bad in ({"netwrks": []}, {"networks": ["not a cid"]}, {"allow": "x"},
                {"ban_seconds": 0}, {"ban_seconds": True}, {"ban_threshold": "low"}):
        with pytest.raises(ConfigError):
            federation_settings(bad)
