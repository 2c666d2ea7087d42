"""``n3xus node …``, ``n3xus peers …`` and ``n3xus id``."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from .app import client_for, data_dir_of, data_dir_option, echo, emit, json_option
from .output import table

# SIGTERM/SIGINT must stop the node within 5 s; the graceful part is bounded so a
# stuck peer connection can never hold the process past that.
SHUTDOWN_GRACE_S = 3.0


@click.group()
def node() -> None:
    """Create, start and inspect the node."""


@node.command("init")
@data_dir_option
@click.option("--genesis", "genesis_file", type=click.Path(dir_okay=False), default=None,
              help="Join the network of this genesis file (default: a new development "
                   "network whose issuer and platform is this node).")
@json_option
def node_init(data_dir: str | None, genesis_file: str | None, as_json: bool) -> None:
    """Create the data dir, identity key, API token, config and genesis (idempotent)."""
    from pathlib import Path

    from ..services.wallets import ensure_genesis
    from .peerid import peer_id_from_seed

    dd = data_dir_of(data_dir)
    result = dd.init()
    genesis, genesis_created = ensure_genesis(dd, Path(genesis_file) if genesis_file else None)
    created = [*result.created, *(["genesis.cbor"] if genesis_created else [])]
    peer_id = peer_id_from_seed(dd.read_identity_seed())
    data = {"data_dir": str(dd.path), "created": created, "changed": bool(created),
            "peer_id": peer_id, "network": str(genesis.cid)}

    def human() -> None:
        if created:
            echo(f"initialised {dd.path}: created {', '.join(created)}")
        else:
            echo(f"{dd.path} is already initialised; nothing changed")
        echo(f"peer id {peer_id}")

    emit(as_json, data, human)


class _Events:
    """``node start`` output: human lines, or one JSON object per line and event."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json

    def __call__(self, event: str, human: list[str], **fields: Any) -> None:
        if self.as_json:
            sys.stdout.write(json.dumps({"event": event, **fields}, sort_keys=True) + "\n")
        else:
            for line in human:
                sys.stdout.write(line + "\n")
        sys.stdout.flush()


@node.command("start")
@data_dir_option
@click.option("--listen", multiple=True, metavar="MULTIADDR",
              help="libp2p listen address (repeatable), e.g. /ip4/127.0.0.1/tcp/0.")
@click.option("--bootstrap", multiple=True, metavar="MULTIADDR",
              help="Peer to dial at start (repeatable): /ip4/H/tcp/P/p2p/ID.")
@click.option("--api", "api_bind", metavar="HOST:PORT", default=None,
              help="HTTP API address (default 127.0.0.1:8741; :0 picks a free port).")
@click.option("--api-allow-remote", is_flag=True,
              help="Allow the API on a non-loopback address (logged as a warning).")
@click.option("--log-level", default=None, type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--log-format", default=None, type=click.Choice(["text", "json"]))
@click.option("--model", "model_path", type=click.Path(dir_okay=False, exists=True),
              default=None, help="GGUF model file of the agents (default: [agents] model in "
                                 "config.toml, else the bundled SmolLM2).")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object per line and event (initialised, started, "
                   "stopping, stopped) instead of text.")
def node_start(data_dir: str | None, listen: tuple[str, ...], bootstrap: tuple[str, ...],
               api_bind: str | None, api_allow_remote: bool, log_level: str | None,
               log_format: str | None, model_path: str | None, as_json: bool) -> None:
    """Start the node (initialising the data dir if needed); stop with Ctrl-C."""
    from dataclasses import replace

    import trio

    from ..logs import configure_logging
    from ..runtime import Node, parse_api_bind
    from ..services.wallets import ensure_genesis

    dd = data_dir_of(data_dir)
    created = dd.init()
    ensure_genesis(dd)
    config = dd.load_config()
    overrides: dict[str, Any] = {}
    if listen:
        overrides["listen"] = tuple(listen)
    if bootstrap:
        overrides["bootstrap"] = tuple(bootstrap)
    if api_bind is not None:
        overrides["api_host"], overrides["api_port"] = parse_api_bind(api_bind)
    if model_path is not None:
        overrides["agents"] = {**config.agents, "model": model_path}
    config = replace(config, **overrides)
    configure_logging(log_level or config.log_level, log_format or config.log_format)
    events = _Events(as_json)
    if created.changed:
        events("initialised", [f"initialised {dd.path}"], data_dir=str(dd.path),
               created=list(created.created))
    node_obj = Node(dd, config, allow_remote_api=api_allow_remote)
    trio.run(_run_until_signal, node_obj, events)
    events("stopped", [], peer_id=node_obj.peer_id)


async def _run_until_signal(node_obj: Any, events: _Events) -> None:
    import signal

    import trio

    from .. import __version__
    from ..runtime import dial_addrs

    # The signal receiver is opened before anything starts, so a SIGTERM that
    # arrives during start-up also shuts down cleanly.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(node_obj.run)
            listen = list(node_obj.listen_addrs)
            dial = dial_addrs(listen)
            lines = [f"n3xus node {__version__}  peer {node_obj.peer_id}",
                     *(f"listening on {addr}" for addr in listen),
                     *((f"dial me at {addr}" for addr in dial) if dial != listen else ()),
                     f"API {node_obj.api_url}/api/v1  (token: {node_obj.data_dir.token_path})",
                     f"console {node_obj.api_url}/  (open it in a browser; sign in with the "
                     f"token in {node_obj.data_dir.token_path})",
                     "press Ctrl-C to stop"]
            events("started", lines, version=__version__, peer_id=node_obj.peer_id,
                   listen_addrs=listen, dial_addrs=dial, api_url=f"{node_obj.api_url}/api/v1",
                   console_url=f"{node_obj.api_url}/",
                   token_path=str(node_obj.data_dir.token_path), data_dir=str(node_obj.data_dir.path))
            async for signum in signals:
                name = signal.Signals(signum).name
                events("stopping", [f"received {name}, stopping"], signal=name)
                break
            nursery.cancel_scope.deadline = trio.current_time() + SHUTDOWN_GRACE_S
            nursery.cancel_scope.cancel()


@node.command("status")
@data_dir_option
@json_option
def node_status(data_dir: str | None, as_json: bool) -> None:
    """Ask the running node for its status."""
    status = client_for(data_dir).get("/status")

    def human() -> None:
        echo(f"peer id   {status['peer_id']}")
        echo(f"version   {status['version']}")
        echo(f"uptime    {status['uptime_s']:.1f} s")
        echo(f"API       {status['api_url']}")
        for addr in status["listen_addrs"]:
            echo(f"listening {addr}")
        echo(f"peers     {status['peer_count']}")
        for name, value in sorted(status["counters"].items()):
            echo(f"{name:<13} {value}")
        agents = status.get("agents")
        if agents:
            backend = agents["backend"]
            inference = (f"{backend['backend']} ({backend['threads']} threads, context "
                         f"{backend['context_tokens']})" if backend else
                         f"{(agents.get('build_backend') or {}).get('backend', '?')} build, model not "
                         "loaded yet (loads on the first agent start or ask)")
            echo(f"agents    {agents['agents']} ({agents['enabled']} enabled)")
            echo(f"inference {inference}")

    emit(as_json, status, human)


# -- peers ------------------------------------------------------------------------
@click.group()
def peers() -> None:
    """Connect to, list, ban and unban peers."""


@peers.command("connect")
@click.argument("multiaddr")
@data_dir_option
@json_option
def peers_connect(multiaddr: str, data_dir: str | None, as_json: bool) -> None:
    """Dial a peer: /ip4/HOST/tcp/PORT/p2p/PEER_ID (the node checks the address)."""
    result = client_for(data_dir).post("/peers/connect", json={"multiaddr": multiaddr})
    used = ", ".join(result["addrs"]) or "an address the peer dialled from"

    def human() -> None:
        if result["already_connected"]:
            echo(f"already connected to {result['peer_id']} via {used}; {multiaddr} was not dialled")
        else:
            echo(f"connected to {result['peer_id']} via {used}")

    emit(as_json, result, human)


@peers.command("list")
@data_dir_option
@json_option
def peers_list(data_dir: str | None, as_json: bool) -> None:
    """List connected peers."""
    result = client_for(data_dir).get("/peers")

    def human() -> None:
        if not result["peers"]:
            echo("no connected peers")
        else:
            rows = [[p["peer_id"], ", ".join(p["addrs"]) or "-", _hello_cell(p),
                     _score_cell(p)] for p in result["peers"]]
            for line in table(["peer id", "addresses", "hello", "score"], rows):
                echo(line)
        others = result.get("others") or []
        if others:
            echo("not connected (refused or banned):")
            rows = [[p["peer_id"], _hello_cell(p), _score_cell(p)] for p in others]
            for line in table(["peer id", "hello", "score"], rows):
                echo(line)

    emit(as_json, result, human)


def _hello_cell(peer: dict[str, Any]) -> str:
    hello, refusal = peer.get("hello"), peer.get("refusal")
    if hello:
        return f"ok v{hello.get('version')}"
    if refusal:
        return f"refused by {refusal.get('by')}: {refusal.get('reason')} ({refusal.get('code')})"
    return "-"


def _score_cell(peer: dict[str, Any]) -> str:
    score = peer.get("score")
    text = "-" if score is None else f"{score:.1f}"
    banned = peer.get("banned")
    return f"{text} banned {banned.get('seconds_left', 0):.0f} s" if banned else text


@peers.command("ban")
@click.argument("peer_id")
@click.option("--for", "seconds", type=float, default=None, metavar="SECONDS",
              help="How long (default: the node's federation.ban_seconds).")
@data_dir_option
@json_option
def peers_ban(peer_id: str, seconds: float | None, data_dir: str | None, as_json: bool) -> None:
    """Disconnect a peer and refuse it, in and out, for a while."""
    body: dict[str, Any] = {"peer_id": peer_id}
    if seconds is not None:
        body["seconds"] = seconds
    result = client_for(data_dir).post("/peers/ban", json=body)
    ban = result.get("banned") or {}
    emit(as_json, result, lambda: echo(
        f"banned {peer_id} for {ban.get('seconds_left', seconds or 0):.0f} s"))


@peers.command("unban")
@click.argument("peer_id")
@data_dir_option
@json_option
def peers_unban(peer_id: str, data_dir: str | None, as_json: bool) -> None:
    """Lift a peer's ban."""
    result = client_for(data_dir).post("/peers/unban", json={"peer_id": peer_id})
    emit(as_json, result, lambda: echo(
        f"unbanned {peer_id}" if result["was_banned"] else f"{peer_id} was not banned"))


# -- id ---------------------------------------------------------------------------
@click.command("id")
@data_dir_option
@json_option
def identity(data_dir: str | None, as_json: bool) -> None:
    """The node's peer ID (and addresses, when it runs)."""
    from ..errors import NodeNotRunningError
    from .peerid import peer_id_from_public_key, public_key_of

    dd = data_dir_of(data_dir)
    try:
        data = client_for(data_dir).get("/id")
        data["running"] = True
    except NodeNotRunningError:
        public_key = public_key_of(dd.read_identity_seed())
        data = {"peer_id": peer_id_from_public_key(public_key), "public_key": public_key.hex(),
                "listen_addrs": [], "dial_addrs": [], "running": False}

    def human() -> None:
        echo(data["peer_id"])
        for addr in data["listen_addrs"]:
            echo(f"  {addr}")

    emit(as_json, data, human)
