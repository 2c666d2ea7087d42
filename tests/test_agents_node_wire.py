"""``/n3xus/imvu/1.0.0`` against a real CLI node, spoken by hand from a raw py-libp2p host:
gated on a completed hello; an unknown agent, a stopped agent and a malformed frame are each
refused with their code before any inference (the model stays unloaded); a streamed ask
gets token frames, then the answer; the node keeps serving throughout. And the world tools:
an agent reads a world and proposes an edit, a world commit signed by its own key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
from libp2p.custom_types import TProtocol
from test_federation_scoring import RAW_SEED, RawPeer, network_of, read_error

from conftest import CliNode, run_cli, start_cli_node
from n3xus.imvu.wire import PROTOCOL_ID, AgentExchange, Answer, Ask, Role, Token
from n3xus.node.p2p import host as p2p
from n3xus.protocol.codes import ErrorCode
from n3xus.protocol.framing import encode_frame

IMVU = TProtocol(PROTOCOL_ID)
SENDER = bytes(range(32))  # the asking agent's key, as the asker claims it
ANSWER_TIMEOUT_S = 300.0


def cli(node: CliNode, *args: str, check: bool = True) -> Any:
    res = run_cli(*args, "--json", "--data-dir", str(node.data_dir), timeout=ANSWER_TIMEOUT_S)
    if not check and res.returncode != 0:
        return None
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


async def ask_raw(raw: RawPeer, ask: Ask) -> tuple[list[str], Answer | int | None]:
    """One ask by hand: (token texts, the answer, or the error code, or None)."""
    stream = await raw.stream(IMVU)
    exchange = AgentExchange(Role.ASKER)
    await stream.write(exchange.send(ask))
    tokens: list[str] = []
    with trio.move_on_after(ANSWER_TIMEOUT_S):
        while True:
            data = await stream.read(65536)
            if not data:
                return tokens, None
            try:
                messages = exchange.receive_data(data, trio.current_time())
            except Exception as exc:  # noqa: BLE001 - the peer's error frame is the answer
                return tokens, getattr(exc, "raw_code", None)
            for message in messages:
                if isinstance(message, Token):
                    tokens.append(message.text)
                elif isinstance(message, Answer):
                    return tokens, message
    raise AssertionError("no answer in time")


async def test_imvu_streams_are_gated_refused_with_codes_and_stream_tokens(
        tmp_path: Path, cli_nodes: list[CliNode]) -> None:
    node = start_cli_node(tmp_path / "a")
    cli_nodes.append(node)
    cli(node, "wallet", "new", "creator")
    cli(node, "agent", "create", "echo", "--creator", "creator", "--persona",
        "You are Echo. You answer in one short sentence.", "--max-tokens", "96")
    cli(node, "agent", "create", "sleepy", "--creator", "creator")
    cli(node, "agent", "stop", "sleepy")

    host = p2p.make_host(p2p.keypair_from_seed(RAW_SEED))
    async with p2p.running_host(host, []):
        raw = RawPeer(host, node, network_of(node))
        # Before a hello: refused at once, whatever the ask.
        stream = await raw.stream(IMVU)
        await stream.write(AgentExchange(Role.ASKER).send(Ask("echo", SENDER, "hi")))
        assert await read_error(stream) == ErrorCode.UNEXPECTED_MESSAGE
        await raw.done()

        code, _ = await raw.exchange()
        assert code is None  # hello completed: now the node serves the protocol
        assert (await ask_raw(raw, Ask("ghost", SENDER, "hi")))[1] == ErrorCode.UNKNOWN_AGENT
        assert (await ask_raw(raw, Ask("sleepy", SENDER, "hi")))[1] == ErrorCode.AGENT_STOPPED
        stream = await raw.stream(IMVU)
        await stream.write(encode_frame(b"\xff\xfe", 100))
        assert await read_error(stream) == ErrorCode.MALFORMED
        # None of that needed the model.
        assert cli(node, "node", "status")["agents"]["model_loaded"] is False

        tokens, answer = await ask_raw(raw, Ask("echo", SENDER, "Hello Echo!", stream=True))
        assert isinstance(answer, Answer), answer
        assert (answer.verdict, answer.action) == ("allow", "reply") and answer.decision is not None
        output = "".join(tokens)
        assert output.startswith('{"action":"reply","text":"') and len(tokens) >= 3
        assert json.loads(output)["text"] == answer.result
        await raw.done()

    (item,) = cli(node, "agent", "memory", "echo")["items"]
    assert item["who"] == f"agent:{SENDER.hex()}@{raw.peer_id}"
    assert cli(node, "node", "status")["agents"]["peer_asks"] == {"answered": 1, "refused": 2}
    assert cli(node, "agent", "decisions", "echo")["decisions"][0]["decision"] == str(answer.decision)


def test_an_agent_reads_and_edits_a_world_with_its_own_key(tmp_path: Path, cli_nodes: list[CliNode]) -> None:
    node = start_cli_node(tmp_path / "a")
    cli_nodes.append(node)
    cli(node, "wallet", "new", "creator")
    cli(node, "world", "set", "stage", "title", '"Night Set"')
    scribe = cli(node, "agent", "create", "scribe", "--creator", "creator", "--persona",
                 "You are Scribe. You keep the stage world up to date.", "--action",
                 "propose_world_edit", "--world", "stage", "--max-tokens", "48")
    turn = cli(node, "agent", "ask", "scribe", "Set the stage title to Jazz Night.")
    action = turn["action"]
    assert action["action"] == "propose_world_edit" and action["world"] == "stage"
    assert (turn["verdict"], turn["executed"]) == ("allow", True)
    assert cli(node, "world", "get", "stage", action["key"])["value"] == action["value"]
    head = cli(node, "world", "history", "stage")["history"][0]
    assert head["commit"] == turn["result"] and head["author"] == scribe["account"]
    # The world is the only one it may touch: upgraded to read only, a read of another
    # world's key cannot even be expressed (the grammar lists "stage"), and reading works.
    cli(node, "agent", "upgrade", "scribe", "--creator", "creator", "--action", "read_world")
    read = cli(node, "agent", "ask", "scribe", "What is the stage title?")
    assert read["action"]["action"] == "read_world" and read["action"]["world"] == "stage"
    assert read["executed"]
    expected = cli(node, "world", "get", "stage", read["action"]["key"], check=False)
    assert read["result"] == (expected["value"] if expected else "(not set)")


def test_a_model_that_is_not_the_manifests_is_refused(tmp_path: Path, cli_nodes: list[CliNode]) -> None:
    """Decisions name the manifest's model; a node running other weights must not run its
    turns (nor can it load a file that is not a model): clear errors, nothing recorded."""
    not_a_model = tmp_path / "not-a-model.gguf"
    not_a_model.write_bytes(b"GGUF but not really" * 100)
    node = start_cli_node(tmp_path / "a", "--model", str(not_a_model))
    cli_nodes.append(node)
    cli(node, "wallet", "new", "creator")
    made = cli(node, "agent", "create", "odd", "--creator", "creator")
    assert made["model"]["name"] == "not-a-model.gguf" and made["model"]["size"] == 1900
    res = run_cli("agent", "ask", "odd", "Hello!", "--data-dir", str(node.data_dir))
    assert res.returncode == 1 and "cannot load model" in res.stderr, res.stderr
    assert node.stop()[0] == 0

    node = start_cli_node(tmp_path / "a")  # the bundled model now
    cli_nodes.append(node)
    res = run_cli("agent", "ask", "odd", "Hello!", "--data-dir", str(node.data_dir))
    assert res.returncode == 1 and "pins model not-a-model.gguf" in res.stderr, res.stderr
    assert cli(node, "agent", "decisions", "odd")["decisions"] == []
    assert cli(node, "node", "status")["agents"]["model_loaded"] is False
