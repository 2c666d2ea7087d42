"""Discovery and keepalive between real CLI nodes (``n3xus node start``), each its
own process on 127.0.0.1, observed through their HTTP APIs."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx

from conftest import CliNode, run_cli, start_cli_node, wait_for
from n3xus.node.p2p.discovery import VANISHED_PEER_BOUND_SECONDS

# B and C bootstrap from A only; A answers their DHT lookups within a few seconds
# of both running (the first lookups run at once and 2 s later). Generous for a
# loaded 2-core machine with other test processes.
FIND_EACH_OTHER_BOUND_S = 30.0
# Polling the API adds up to one poll interval (conftest.WAIT_POLL_S), and the last
# keepalive round may start just before the peer stops.
DETECTION_SLACK_S = 5.0


def peer_ids(node: CliNode) -> set[str]:
    return {p["peer_id"] for p in node.api_get("/peers")["peers"]}


def test_three_cli_nodes_find_each_other_and_a_stopped_one_is_dropped(
        tmp_path: Path, cli_nodes: list[CliNode]) -> None:
    a = start_cli_node(tmp_path / "a")
    cli_nodes.append(a)
    # B and C join A's network (the hello refuses peers of another genesis).
    for name in ("b", "c"):
        joined = run_cli("node", "init", "--data-dir", str(tmp_path / name),
                         "--genesis", str(a.data_dir / "genesis.cbor"))
        assert joined.returncode == 0, joined.stderr
    # One network: nodes of different genesis refuse each other's hello.
    genesis = tmp_path / "a" / "genesis.cbor"
    b = start_cli_node(tmp_path / "b", "--bootstrap", a.listen_addr, genesis=genesis)
    cli_nodes.append(b)
    c = start_cli_node(tmp_path / "c", "--bootstrap", a.listen_addr, genesis=genesis)
    cli_nodes.append(c)

    took = wait_for(lambda: c.peer_id in peer_ids(b) and b.peer_id in peer_ids(c),
                    FIND_EACH_OTHER_BOUND_S, "B and C connected through A")
    print(f"\nB and C connected {took:.1f} s after C was up")
    assert peer_ids(a) == {b.peer_id, c.peer_id}

    # The peers route shows what an operator needs, keepalive RTT included.
    wait_for(lambda: all(p["last_ping_rtt_ms"] is not None for p in b.api_get("/peers")["peers"]),
             VANISHED_PEER_BOUND_SECONDS, "keepalive pings recorded")
    for peer in b.api_get("/peers")["peers"]:
        assert peer["direction"] in ("inbound", "outbound")
        assert peer["addrs"] and peer["connected_since"] <= time.time()
        assert 0 < peer["last_ping_rtt_ms"] < 5000
    status = b.api_get("/status")
    assert status["discovery"]["dht"] is True and status["discovery"]["mdns"] is False
    assert status["discovery"]["routing_table_size"] >= 1
    assert [t["peer_id"] for t in status["discovery"]["reconnect_targets"]
            if t["bootstrap"]] == [a.peer_id]
    assert status["connection_gate"]["pending"] == 0
    metrics = httpx.get(f"{b.api_url}/metrics", timeout=10).text
    assert 'n3xus_p2p_inbound_refused_total{reason="handshake_timeout"}' in metrics
    assert "n3xus_p2p_keepalive_disconnects_total" in metrics

    # C stops answering (its process is frozen; its sockets stay open, so the
    # kernel never tells anyone). B and A notice through keepalive.
    c.proc.send_signal(signal.SIGSTOP)
    try:
        took = wait_for(lambda: c.peer_id not in peer_ids(b) and c.peer_id not in peer_ids(a),
                        VANISHED_PEER_BOUND_SECONDS + DETECTION_SLACK_S, "C dropped")
        print(f"stopped peer dropped by A and B after {took:.1f} s "
              f"(bound {VANISHED_PEER_BOUND_SECONDS:.0f} s)")
        assert b.peer_id in peer_ids(a)  # the others are unaffected
    finally:
        c.proc.send_signal(signal.SIGCONT)
    # Awake again, C is re-dialed (it was a recently useful peer) or re-dials.
    took = wait_for(lambda: c.peer_id in peer_ids(b), FIND_EACH_OTHER_BOUND_S, "C back")
    print(f"C reconnected {took:.1f} s after it resumed")

    # Killed outright, C's sockets close with it: the others see it at once and
    # keep re-dialing it (a recently useful peer) with growing delays.
    c.proc.kill()
    c.proc.wait()
    took = wait_for(lambda: c.peer_id not in peer_ids(b), DETECTION_SLACK_S, "killed C dropped")
    print(f"killed peer dropped after {took:.1f} s")
    try:
        wait_for(lambda: any(t["peer_id"] == c.peer_id and t["failures"] >= 2
                             for t in b.api_get("/status")["discovery"]["reconnect_targets"]),
                 FIND_EACH_OTHER_BOUND_S, "B retries C with backoff")
    except AssertionError as error:
        raise AssertionError(f"{error}; B's discovery: {b.api_get('/status')['discovery']}") from None
    for node in (a, b):
        code, _, stderr = node.stop()
        assert code == 0, stderr[-2000:]
