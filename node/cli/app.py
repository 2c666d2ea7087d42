"""The ``n3xus`` command line.

Conventions every command follows: ``--data-dir`` (default ``$N3XUS_HOME`` or
``~/.n3xus``); ``--json`` prints exactly one JSON document on stdout and nothing
else there; human output otherwise. Errors are one line on stderr (``error: ...``)
and a non-zero exit: 1 for failures, 2 for usage errors.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from typing import Any

import click
import trio
from rich.console import Console
from rich.table import Table

from .. import __version__
from ..config import DataDir, NodeConfig, resolve_data_dir
from ..errors import NodeError
from .client import ApiClient

EXIT_FAILURE = 1
EXIT_USAGE = 2
# SIGTERM/SIGINT must stop the node within 5 s; the graceful part is bounded so a
# stuck peer connection can never hold the process past that.
SHUTDOWN_GRACE_S = 3.0

stdout = Console(highlight=False, soft_wrap=True)

data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False), default=None,
    help="Node data dir (default: $N3XUS_HOME, else ~/.n3xus).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


def emit(as_json: bool, data: Any, human: Callable[[], None]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    else:
        human()


def print_lines(lines: object) -> Callable[[], None]:
    """A ``human`` printer for :func:`emit` that prints each of ``lines``."""

    def human() -> None:
        for line in lines:  # type: ignore[attr-defined]
            stdout.print(line)

    return human


def _data_dir(path: str | None) -> DataDir:
    return DataDir(resolve_data_dir(path))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="n3xus")
def cli() -> None:
    """n3xus-net node: libp2p host, canon memory and signed ledger."""


# -- node -------------------------------------------------------------------------
@cli.group()
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

    from ..p2p.host import keypair_from_seed, peer_id_of
    from ..services.wallets import ensure_genesis

    dd = _data_dir(data_dir)
    result = dd.init()
    genesis, genesis_created = ensure_genesis(dd, Path(genesis_file) if genesis_file else None)
    created = [*result.created, *(["genesis.cbor"] if genesis_created else [])]
    result = type(result)(result.data_dir, tuple(created))
    peer_id = peer_id_of(keypair_from_seed(dd.read_identity_seed()))
    data = {"data_dir": str(dd.path), "created": list(result.created),
            "changed": result.changed, "peer_id": peer_id, "network": str(genesis.cid)}

    def human() -> None:
        if result.changed:
            stdout.print(f"initialised {dd.path}: created {', '.join(result.created)}")
        else:
            stdout.print(f"{dd.path} is already initialised; nothing changed")
        stdout.print(f"peer id {peer_id}")

    emit(as_json, data, human)


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
def node_start(data_dir: str | None, listen: tuple[str, ...], bootstrap: tuple[str, ...],
               api_bind: str | None, api_allow_remote: bool, log_level: str | None,
               log_format: str | None) -> None:
    """Start the node (initialising the data dir if needed); stop with Ctrl-C."""
    from ..logs import configure_logging
    from ..runtime import Node, parse_api_bind
    from ..services.wallets import ensure_genesis

    dd = _data_dir(data_dir)
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
    config = _replace(config, overrides)
    configure_logging(log_level or config.log_level, log_format or config.log_format)
    if created.changed:
        stdout.print(f"initialised {dd.path}")
    node_obj = Node(dd, config, allow_remote_api=api_allow_remote)
    trio.run(_run_until_signal, node_obj)


def _replace(config: NodeConfig, overrides: dict[str, Any]) -> NodeConfig:
    from dataclasses import replace

    return replace(config, **overrides)


async def _run_until_signal(node_obj: Any) -> None:
    # The signal receiver is opened before anything starts, so a SIGTERM that
    # arrives during start-up also shuts down cleanly.
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(node_obj.run)
            stdout.print(f"n3xus node {__version__}  peer {node_obj.peer_id}")
            from ..runtime import dial_addrs

            for addr in node_obj.listen_addrs:
                stdout.print(f"listening on {addr}")
            if dial_addrs(node_obj.listen_addrs) != node_obj.listen_addrs:
                for addr in dial_addrs(node_obj.listen_addrs):
                    stdout.print(f"dial me at {addr}")
            stdout.print(f"API {node_obj.api_url}/api/v1  (token: {node_obj.data_dir.token_path})")
            stdout.print(f"console {node_obj.api_url}/  (open it in a browser; sign in with the "
                         f"token in {node_obj.data_dir.token_path})")
            stdout.print("press Ctrl-C to stop")
            sys.stdout.flush()
            async for signum in signals:
                stdout.print(f"received {signal.Signals(signum).name}, stopping")
                sys.stdout.flush()
                break
            nursery.cancel_scope.deadline = trio.current_time() + SHUTDOWN_GRACE_S
            nursery.cancel_scope.cancel()


@node.command("status")
@data_dir_option
@json_option
def node_status(data_dir: str | None, as_json: bool) -> None:
    """Ask the running node for its status."""
    status = ApiClient(_data_dir(data_dir)).get("/status")

    def human() -> None:
        stdout.print(f"peer id   {status['peer_id']}")
        stdout.print(f"version   {status['version']}")
        stdout.print(f"uptime    {status['uptime_s']:.1f} s")
        stdout.print(f"API       {status['api_url']}")
        for addr in status["listen_addrs"]:
            stdout.print(f"listening {addr}")
        stdout.print(f"peers     {status['peer_count']}")
        for name, value in sorted(status["counters"].items()):
            stdout.print(f"{name:<13} {value}")

    emit(as_json, status, human)


# -- peers ------------------------------------------------------------------------
@cli.group()
def peers() -> None:
    """Connect to and list peers."""


@peers.command("connect")
@click.argument("multiaddr")
@data_dir_option
@json_option
def peers_connect(multiaddr: str, data_dir: str | None, as_json: bool) -> None:
    """Dial a peer: /ip4/HOST/tcp/PORT/p2p/PEER_ID."""
    from ..p2p.host import parse_peer_addr

    parse_peer_addr(multiaddr)  # a clear error before bothering the node
    result = ApiClient(_data_dir(data_dir)).post("/peers/connect", json={"multiaddr": multiaddr})
    emit(as_json, result, lambda: stdout.print(f"connected to {result['peer_id']}"))


@peers.command("list")
@data_dir_option
@json_option
def peers_list(data_dir: str | None, as_json: bool) -> None:
    """List connected peers."""
    result = ApiClient(_data_dir(data_dir)).get("/peers")

    def human() -> None:
        if not result["peers"]:
            stdout.print("no connected peers")
            return
        table = Table("peer id", "addresses", box=None)
        for peer in result["peers"]:
            table.add_row(peer["peer_id"], "\n".join(peer["addrs"]) or "-")
        stdout.print(table)

    emit(as_json, result, human)


# -- id ---------------------------------------------------------------------------
@cli.command("id")
@data_dir_option
@json_option
def identity(data_dir: str | None, as_json: bool) -> None:
    """The node's peer ID (and addresses, when it runs)."""
    from ..errors import NodeNotRunningError
    from ..p2p.host import keypair_from_seed, peer_id_of

    dd = _data_dir(data_dir)
    try:
        data = ApiClient(dd).get("/id")
        data["running"] = True
    except NodeNotRunningError:
        key_pair = keypair_from_seed(dd.read_identity_seed())
        data = {"peer_id": peer_id_of(key_pair),
                "public_key": key_pair.public_key.to_bytes().hex(),
                "listen_addrs": [], "running": False}

    def human() -> None:
        stdout.print(data["peer_id"])
        for addr in data["listen_addrs"]:
            stdout.print(f"  {addr}")

    emit(as_json, data, human)


def _register_feature_commands() -> None:
    """Import the modules that add command groups to ``cli`` (canon, world, …).
    Imported here, not at the top, because they import this module."""
    from . import audit, canon, ledger  # noqa: F401


def _sole_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one real error inside (nested) trio exception groups, if there is one."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        elif not isinstance(exc, trio.Cancelled):
            leaves.append(exc)

    walk(group)
    return leaves[0] if len(leaves) == 1 else None


def _classify(error: BaseException) -> tuple[int, str] | None:
    """(exit code, one-line message) for errors an operator can act on; None for
    anything else, which is a bug and keeps its traceback."""
    if isinstance(error, click.exceptions.NoArgsIsHelpError):
        return EXIT_USAGE, error.format_message()
    if isinstance(error, click.UsageError):
        hint = f" (see `{error.ctx.command_path} --help`)" if error.ctx is not None else ""
        return EXIT_USAGE, f"error: {error.format_message()}{hint}"
    if isinstance(error, click.Abort):
        return EXIT_FAILURE, "error: aborted"
    if isinstance(error, click.ClickException):
        return error.exit_code, f"error: {error.format_message()}"
    # NodeError covers config, address and API errors; codec and parse errors of
    # the feature packages subclass ValueError.
    if isinstance(error, NodeError | ValueError):
        return EXIT_FAILURE, f"error: {error}"
    if isinstance(error, KeyboardInterrupt):
        return 130, "error: interrupted"
    return None


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors on stderr, meaningful exit codes."""
    _register_feature_commands()
    try:
        cli.main(args=argv, prog_name="n3xus", standalone_mode=False)
    except SystemExit:
        raise
    except BaseException as exc:
        # Errors raised inside the node's nurseries arrive wrapped in exception
        # groups; the operator should see the one error, not the task tree.
        error = _sole_error(exc) if isinstance(exc, BaseExceptionGroup) else exc
        verdict = None if error is None else _classify(error)
        if verdict is None:
            raise
        code, message = verdict
        click.echo(message, err=True)
        sys.exit(code)


if __name__ == "__main__":
    main()
