"""The ``n3xus`` command line: the root group, shared options, output helpers, ``main``.

Conventions every command follows: ``--data-dir`` (default ``$N3XUS_HOME`` or
``~/.n3xus``); ``--json`` prints exactly one JSON document on stdout and nothing
else there (``node start --json``: one JSON line per event); human output otherwise.
Errors are one line on stderr (``error: ...``) and a non-zero exit: 1 for failures,
2 for usage errors.

Speed: a command answers in well under 300 ms because nothing heavy is imported
before it is needed. The root group loads a command group's module only when that
group runs (:class:`LazyGroup`, whose help lists groups from a table without
importing them); commands that talk to the node use the standard library's HTTP
client (:mod:`.client`); trio, libp2p, rich, nacl and cbor2 are imported inside the
commands that need them.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Iterable
from typing import Any

import click

from ..config import DataDir, resolve_data_dir
from ..errors import NodeError

EXIT_FAILURE = 1
EXIT_USAGE = 2

data_dir_option = click.option(
    "--data-dir", type=click.Path(file_okay=False), default=None,
    help="Node data dir (default: $N3XUS_HOME, else ~/.n3xus).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
output_option = click.option(
    "-o", "--output", metavar="PATH", default=None,
    help="Write to PATH instead of stdout (`-` is stdout; a regular file is replaced "
         "atomically, a symlink, FIFO or device is written in place).")

# Command groups: name -> (module under n3xus.node.cli, attribute, one-line help). The
# help text is repeated here so `n3xus --help` imports none of them; a test checks it
# matches each command's own help.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "node": ("node", "node", "Create, start and inspect the node."),
    "peers": ("node", "peers", "Connect to, list, ban and unban peers."),
    "id": ("node", "identity", "The node's peer ID (and addresses, when it runs)."),
    "canon": ("canon", "canon", "Content-addressed blocks and files, pins, GC, the canon log, "
                                "CAR export/import."),
    "world": ("world", "world", "Worlds: signed, mergeable key-value state (Merkle search "
                                "trees)."),
    "wallet": ("wallet", "wallet", "Accounts: create, balance, send, issue, tip."),
    "asset": ("wallet", "asset", "Creator assets: mint, transfer, list for sale, buy, show."),
    "ledger": ("ledger", "ledger", "The ledger log, transactions, status, transparency proofs."),
    "agent": ("agent", "agent", "IMVU agents: create, ask, upgrade, roll back, approve, audit "
                                "their decisions."),
    "room": ("room", "room", "Live rooms: create, list, show, end, follow another node's room."),
    "audit": ("audit", "audit", "Verify ledger proofs, checkpoints and exports offline (no "
                                "node, no data dir)."),
}


def _short(text: str, limit: int) -> str:
    """The first sentence of ``text``, cut at a word to fit ``limit`` (as click does)."""
    first = text.split(". ")[0].rstrip(".")
    if len(first) <= limit:
        return first
    return first[: max(limit - 3, 1)].rsplit(" ", 1)[0].rstrip(",") + "..."


class LazyGroup(click.Group):
    """A group whose subcommands live in modules imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*COMMANDS, *sorted(set(self.commands) - set(COMMANDS))]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands:
            return self.commands[cmd_name]
        if cmd_name not in COMMANDS:
            return None
        module_name, attribute, _ = COMMANDS[cmd_name]
        module = importlib.import_module(f"{__package__}.{module_name}")
        command: click.Command = getattr(module, attribute)
        self.commands[cmd_name] = command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        limit = formatter.width - 6 - max(len(name) for name in COMMANDS)
        rows = [(name, _short(COMMANDS[name][2], limit))
                for name in COMMANDS]
        rows += [(name, command.get_short_help_str(limit))
                 for name, command in sorted(self.commands.items()) if name not in COMMANDS]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(None, package_name="n3xus", prog_name="n3xus")
def cli() -> None:
    """n3xus-net node: libp2p host, canon memory and signed ledger."""


# -- output ---------------------------------------------------------------------------
def echo(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def emit(as_json: bool, data: Any, human: Callable[[], None]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    else:
        human()


def print_lines(lines: Iterable[str]) -> Callable[[], None]:
    """A ``human`` printer for :func:`emit` that prints each of ``lines``."""

    def human() -> None:
        for line in lines:
            echo(line)

    return human


def data_dir_of(path: str | None) -> DataDir:
    return DataDir(resolve_data_dir(path))


_data_dir = data_dir_of  # the name the command modules used before the split


def client_for(data_dir: str | None, timeout: float | None = None) -> Any:
    """An API client of the node running on ``data_dir`` (:class:`.client.ApiClient`)."""
    from .client import DEFAULT_TIMEOUT_S, ApiClient

    return ApiClient(data_dir_of(data_dir), timeout=timeout or DEFAULT_TIMEOUT_S)


# -- errors -----------------------------------------------------------------------------
def _sole_error(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one real error inside (nested) trio exception groups, if there is one."""
    import trio

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
    if isinstance(error, BrokenPipeError):  # `n3xus … | head`: the reader left
        return EXIT_FAILURE, ""
    if isinstance(error, KeyboardInterrupt):
        return 130, "error: interrupted"
    return None


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors on stderr, meaningful exit codes."""
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
        if message:
            click.echo(message.replace("\n", " "), err=True)
        sys.exit(code)


if __name__ == "__main__":
    main()
