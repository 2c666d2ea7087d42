"""An agent on node A asks an agent on node B over ``/n3xus/imvu/1.0.0`` (two CLI nodes of
one network, connected, after their hello): real libp2p streams, the real bundled model on
both sides. B records the ask as a turn from A's agent at A's authenticated peer id; an ask
to an agent B does not have is refused with ``unknown-agent`` and becomes a tool failure of
A's turn, never an action. A contact on A itself is asked in-process."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from conftest import CliNode, run_cli, start_cli_node

TURN_TIMEOUT_S = 300.0
HELLO_TIMEOUT_S = 30.0


def cli(node: CliNode, *args: str) -> Any:
    res = run_cli(*args, "--json", "--data-dir", str(node.data_dir), timeout=TURN_TIMEOUT_S)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_an_agent_on_node_a_asks_an_agent_on_node_b(tmp_path: Path, cli_nodes: list[CliNode]) -> None:
    a = start_cli_node(tmp_path / "a")
    cli_nodes.append(a)
    b = start_cli_node(tmp_path / "b", genesis=a.data_dir / "genesis.cbor")
    cli_nodes.append(b)
    cli(a, "peers", "connect", b.listen_addr)
    deadline = time.monotonic() + HELLO_TIMEOUT_S
    while not any(p["peer_id"] == b.peer_id and (p.get("hello") or {}).get("protocols")
                  for p in cli(a, "peers", "list")["peers"]):
        assert time.monotonic() < deadline, "no completed hello with B"
        time.sleep(0.2)
    hello = next(p["hello"] for p in cli(a, "peers", "list")["peers"] if p["peer_id"] == b.peer_id)
    assert "/n3xus/imvu/1.0.0" in hello["protocols"]  # B serves the protocol and says so

    for node in (a, b):
        cli(node, "wallet", "new", "creator")
    echo = cli(b, "agent", "create", "echo", "--creator", "creator", "--persona",
               "You are Echo. You answer in one short sentence.", "--max-tokens", "96")
    nova = cli(a, "agent", "create", "nova", "--creator", "creator", "--persona",
               "You are Nova. You pass greetings on to your friends.",
               "--action", "message_agent", "--contact", f"echo={b.peer_id}/echo",
               "--max-tokens", "32")

    turn = cli(a, "agent", "ask", "nova", "Say hello to echo.")
    assert turn["action"]["action"] == "message_agent" and turn["action"]["to"] == "echo"
    assert (turn["verdict"], turn["executed"]) == ("allow", True)
    # B ran a turn of echo for A's agent, named by the peer id the connection authenticated.
    (item,) = cli(b, "agent", "memory", "echo")["items"]
    assert item["who"] == f"agent:{nova['account']}@{a.peer_id}"
    (answered,) = cli(b, "agent", "decisions", "echo")["decisions"]
    assert answered["executed"], (answered["primitive"], answered["reason"])
    assert turn["result"] == answered["result"] != ""
    assert echo["account"] == answered["agent"]

    # An agent B does not host: refused on the wire (unknown-agent), a tool failure here.
    # --contact on upgrade replaces the contacts: ghost is the only name the action grammar
    # lets the model write, so the model's choice cannot fall back on echo. The text is the
    # model's only freedom left (its memory now holds echo's answer, which varies with the
    # peer ids): room for it, so that no output is cut off before the action is complete.
    upgraded = cli(a, "agent", "upgrade", "nova", "--creator", "creator", "--contact",
                   f"ghost={b.peer_id}/ghost", "--max-tokens", "96")
    assert upgraded["manifest_view"]["primitives"]["contacts"] == {"ghost": f"{b.peer_id}/ghost"}
    missing = cli(a, "agent", "ask", "nova", "Say hello to ghost.")
    assert missing["action"] == {"action": "message_agent", "to": "ghost", "text": missing["action"]["text"]}
    assert missing["verdict"] == "allow" and not missing["executed"]
    assert "unknown-agent" in missing["result"] and "ghost" in missing["result"]
    assert len(cli(b, "agent", "decisions", "echo")["decisions"]) == 1

    # A contact on the same node is asked directly (no stream), recorded the same way.
    cli(a, "agent", "create", "pal", "--creator", "creator", "--persona",
        "You are Pal. You answer in one short sentence.", "--max-tokens", "96")
    cli(a, "agent", "upgrade", "nova", "--creator", "creator", "--contact", "pal=pal")
    local = cli(a, "agent", "ask", "nova", "Say hello to pal.")
    assert local["action"]["to"] == "pal" and local["executed"]
    (pal_turn,) = cli(a, "agent", "decisions", "pal")["decisions"]
    assert pal_turn["executed"] and local["result"] == pal_turn["result"] != ""
    assert cli(a, "agent", "memory", "pal")["items"][0]["who"] == f"agent:{nova['account']}"
