"""IMVU agents on a real CLI node with the real bundled model (greedy, small token limits):
a creator creates an agent with the CLI, funds it, has it tip within its limit (a real
ledger tip with the royalty split), escalate over it (approved with the CLI), upgrades and
rolls it back (decisions name the manifest), hot-swaps with a queued request, stops and
restarts it; telemetry at /metrics; the agent's memory survives a node restart; and an
auditor re-checks and re-runs a decision offline from a CAR export with no node running."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from conftest import CliNode, n3xus_argv, run_cli, start_cli_node

# A turn on the bundled model takes ~1 s on an idle 2-core machine; the team shares it.
TURN_TIMEOUT_S = 300.0
PERSONA = "You are Nova, a cheerful stage assistant at a live music venue."


def cli(node: CliNode | Path, *args: str, timeout: float = TURN_TIMEOUT_S) -> Any:
    data_dir = node.data_dir if isinstance(node, CliNode) else node
    res = run_cli(*args, "--json", "--data-dir", str(data_dir), timeout=timeout)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def cli_error(node: CliNode, *args: str) -> str:
    res = run_cli(*args, "--data-dir", str(node.data_dir), timeout=TURN_TIMEOUT_S)
    assert res.returncode == 1, res.stdout
    return res.stderr.strip()


def api(node: CliNode, method: str, path: str, **kw: Any) -> httpx.Response:
    token = (node.data_dir / "api.token").read_text().strip()
    return httpx.request(method, f"{node.api_url}/api/v1{path}", timeout=TURN_TIMEOUT_S,
                         headers={"Authorization": f"Bearer {token}"}, **kw)


def create_nova(node: CliNode) -> dict[str, Any]:
    return cli(node, "agent", "create", "nova", "--creator", "creator", "--persona", PERSONA,
               "--action", "reply", "--action", "tip", "--payee", "alice=perf",
               "--spend-limit", "50", "--escalate-above", "20", "--max-tokens", "32")


def balance(node: CliNode, who: str) -> int:
    value: int = cli(node, "wallet", "balance", who)["balance"]
    return value


def test_an_agent_through_the_cli_tips_escalates_upgrades_and_is_audited_offline(
        tmp_path: Path, cli_nodes: list[CliNode]) -> None:
    node = start_cli_node(tmp_path / "a")
    cli_nodes.append(node)
    for wallet in ("creator", "perf"):
        cli(node, "wallet", "new", wallet)
    cli(node, "wallet", "issue", "node", "creator", "5000")

    # Bad input is refused with a clear error and changes nothing.
    assert api(node, "POST", "/agents", json={"manifest": "00"}).status_code == 400
    assert api(node, "GET", "/agents/ghost").json()["error"]["code"] == "unknown_agent"
    assert api(node, "POST", "/agents/ghost/ask", json={"text": "hi"}).status_code == 404
    assert api(node, "POST", "/agents/nova/ask", json={}).status_code == 400
    assert cli(node, "agent", "list") == {"agents": []}
    assert cli(node, "node", "status")["agents"]["model_loaded"] is False  # loads lazily

    nova = create_nova(node)
    assert (nova["name"], nova["version"], nova["enabled"]) == ("nova", 1, True)
    assert "already exists" in cli_error(node, "agent", "create", "nova", "--creator", "creator")
    v1 = nova["manifest"]
    account = nova["account"]
    cli(node, "wallet", "send", "creator", account, "1000")  # the creator funds its agent

    # Within its limit: a real ledger tip signed by the agent, the genesis split 80/20.
    tip = cli(node, "agent", "ask", "nova", "Please tip alice 10 coins for her song.")
    assert (tip["verdict"], tip["executed"]) == ("allow", True)
    assert tip["action"] == {"action": "tip", "to": "alice", "amount": 10}
    assert (balance(node, "perf"), balance(node, "node"), balance(node, account)) == (8, 2, 990)
    assert api(node, "GET", f"/ledger/txs/{tip['result']}").json()["op"] == "tip"

    # The tokens stream live (server-sent events) before the decision.
    with httpx.stream("POST", f"{node.api_url}/api/v1/agents/nova/ask", timeout=TURN_TIMEOUT_S,
                      json={"text": "Hi there!", "sender": "user:sse"},
                      headers={"Authorization": "Bearer " + (node.data_dir / "api.token").read_text().strip()}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line.split(": ", 1)[1] for line in response.iter_lines() if line.startswith("event: ")]
    assert events[-1] == "result" and events.count("token") >= 3 and set(events[:-1]) == {"token"}

    # Closing the connection mid-turn cancels it: the generation stops, nothing is recorded.
    recorded = len(cli(node, "agent", "decisions", "nova")["decisions"])
    with httpx.stream("POST", f"{node.api_url}/api/v1/agents/nova/ask", timeout=TURN_TIMEOUT_S,
                      json={"text": "Tell me a long story about the moon."},
                      headers={"Authorization": "Bearer " + (node.data_dir / "api.token").read_text().strip()}) as response:
        next(line for line in response.iter_lines() if line == "event: token")
    deadline = time.monotonic() + 30
    while cli(node, "node", "status")["agents"]["scheduler"]["cancelled"] < 1:
        assert time.monotonic() < deadline, "the turn was not cancelled"
        time.sleep(0.1)
    assert len(cli(node, "agent", "decisions", "nova")["decisions"]) == recorded

    # Over its limit: refused, logged and escalated; nothing moved until the creator approves.
    over = cli(node, "agent", "ask", "nova", "Tip alice 500 coins now!")
    assert (over["verdict"], over["primitive"], over["executed"]) == ("escalate", "spend-limit", False)
    assert balance(node, "perf") == 8
    shown = cli(node, "agent", "show", "nova")
    assert shown["pending"] == [over["decision"]]
    assert shown["pending_actions"][0]["action"] == {"action": "tip", "to": "alice", "amount": 500}
    approved = cli(node, "agent", "approve", "nova", "--creator", "creator")
    assert (approved["verdict"], approved["primitive"], approved["executed"]) == ("allow", "approval", True)
    assert balance(node, "perf") == 8 + 400 and balance(node, "node") == 2 + 100
    assert cli(node, "agent", "show", "nova")["pending"] == []
    assert "not waiting" in cli_error(node, "agent", "approve", "nova", over["decision"], "--creator", "creator")

    # Hot swap: requests queued before an upgrade are answered, not dropped (the version
    # they run under is checked deterministically in tests/test_imvu_agent.py).
    asks = [subprocess.Popen(n3xus_argv("agent", "ask", "nova", text, "--json", "--data-dir",
                                        str(node.data_dir)), stdout=subprocess.PIPE, text=True)
            for text in ("What time is the next set?", "Who is playing tonight?")]
    deadline = time.monotonic() + TURN_TIMEOUT_S
    while api(node, "GET", "/agents/nova").json()["queued"] < 1:
        assert time.monotonic() < deadline, "no request was ever queued"
        time.sleep(0.05)
    upgraded = cli(node, "agent", "upgrade", "nova", "--creator", "creator", "--persona",
                   PERSONA + " You love jazz.")
    v2 = upgraded["manifest"]
    assert (upgraded["version"], upgraded["versions"]) == (2, [v1, v2])
    queued = [json.loads(proc.communicate(timeout=TURN_TIMEOUT_S)[0]) for proc in asks]
    assert all(turn["decision"] and turn["verdict"] in ("allow", "refuse", "escalate") for turn in queued)
    after_upgrade = cli(node, "agent", "ask", "nova", "Hello!")
    rolled = cli(node, "agent", "rollback", "nova")
    assert (rolled["version"], rolled["manifest"], rolled["versions"]) == (1, v1, [v1, v2])
    after_rollback = cli(node, "agent", "ask", "nova", "Hello again!")
    decisions = {d["decision"]: d for d in cli(node, "agent", "decisions", "nova")["decisions"]}
    assert len(decisions) == 8
    assert decisions[after_upgrade["decision"]]["manifest"] == v2
    assert decisions[after_rollback["decision"]]["manifest"] == v1
    assert decisions[over["decision"]]["verdict"] == "escalate"

    # A stopped agent takes no turns; started again, it does.
    cli(node, "agent", "stop", "nova")
    assert "stopped" in cli_error(node, "agent", "ask", "nova", "Hi!")
    assert cli(node, "agent", "start", "nova")["enabled"] is True

    # Telemetry: per-agent Prometheus metrics; the backend in node status.
    metrics = httpx.get(f"{node.api_url}/metrics", timeout=10).text
    for verdict in ("allow", "escalate"):
        count = sum(d["verdict"] == verdict for d in decisions.values())
        assert f'n3xus_agent_turns_total{{agent="nova",verdict="{verdict}"}} {count:.1f}' in metrics
    assert 'n3xus_agent_spend_total{agent="nova"} 510.0' in metrics  # 10, then the approved 500
    assert 'n3xus_agent_turn_seconds_count{agent="nova"} 8.0' in metrics
    assert 'n3xus_agent_tokens_total{agent="nova",kind="output"}' in metrics
    status = cli(node, "node", "status")["agents"]
    assert status["model_loaded"] and status["backend"]["backend"] in ("cpu", "gpu")
    assert "AVX" in status["backend"]["system_info"] or "NEON" in status["backend"]["system_info"]

    # The creator's CAR exports: the agent's log entries, and the agent's state DAG.
    by_author = tmp_path / "agent-entries.car"
    by_state = tmp_path / "agent-state.car"
    cli(node, "canon", "export", "--car", str(by_author), "--author", account)
    cli(node, "canon", "export", "--car", str(by_state), cli(node, "agent", "show", "nova")["state"])
    memory = cli(node, "agent", "memory", "nova")["items"]
    assert len(memory) == 8 and memory[-1]["text"].startswith("user:cli asked: Please tip alice 10")

    # Memory and state persist across a restart.
    code, _, _ = node.stop()
    assert code == 0
    node = start_cli_node(tmp_path / "a")
    cli_nodes.append(node)
    assert cli(node, "agent", "memory", "nova")["items"] == memory
    assert cli(node, "agent", "show", "nova")["turns"] == 8

    code, _, _ = node.stop()
    assert code == 0
    # Offline (no node): re-check every decision and re-run the tip on the same weights.
    for car, ref in ((by_author, tip["entry"]), (by_state, tip["decision"])):
        res = run_cli("audit", "decision", ref, "--car", str(car), "--rerun", "--json", timeout=TURN_TIMEOUT_S)
        assert res.returncode == 0, res.stderr
        audit = json.loads(res.stdout)
        assert audit["ok"] and audit["recheck"]["problems"] == []
        assert audit["rerun"]["same_output"] and audit["rerun"]["rerun"] == tip["output"]
    for entry in decisions.values():
        res = run_cli("audit", "decision", entry["entry"], "--car", str(by_author), "--json")
        assert res.returncode == 0 and json.loads(res.stdout)["ok"], res.stdout + res.stderr
    # A CAR that lacks the decision's blocks cannot vouch for it.
    res = run_cli("audit", "decision", over["entry"], "--car", str(by_state))
    assert res.returncode == 1 and "is not in" in res.stderr
