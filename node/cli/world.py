"""``n3xus world …``: signed world state (Merkle search trees) through the node's API.

Every name and key travels percent-encoded in its own path segment, so a key like
``a/../b`` or a world named ``..`` is exactly that key or world.
"""

from __future__ import annotations

import json
from typing import Any

import click

from .app import client_for, data_dir_option, echo, emit, json_option, print_lines
from .client import API_PREFIX, path_of


@click.group()
def world() -> None:
    """Worlds: signed, mergeable key-value state (Merkle search trees)."""


def _parse_value(text: str, as_string: bool) -> Any:
    if as_string:
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"{text[:60]!r} is not JSON ({exc.msg}); quote a string as JSON ('\"hello\"') "
            "or pass --string to store the text as it is", param_hint="VALUE") from None


def _written(name: str, result: dict[str, Any]) -> None:
    echo(f"{name} @ {result['head']} (seq {result['seq']})")


@world.command("set")
@click.argument("name")
@click.argument("key")
@click.argument("value")
@click.option("--string", "as_string", is_flag=True,
              help="Store VALUE as a text string, as it is (without it, VALUE must be JSON).")
@data_dir_option
@json_option
def world_set(name: str, key: str, value: str, as_string: bool, data_dir: str | None,
              as_json: bool) -> None:
    """Set KEY to VALUE; signs and logs a commit.

    VALUE is JSON (`42`, `"hello"`, `{"a": [1, 2]}`; a link is `{"/": "<CID>"}`), so a
    bare word is an error rather than silently a string: pass --string to store the
    text as a string."""
    body = {"set": {key: _parse_value(value, as_string)}}
    result = client_for(data_dir).post(path_of("/worlds/{}", name), json=body)
    emit(as_json, result, lambda: _written(name, result))


@world.command("delete")
@click.argument("name")
@click.argument("keys", nargs=-1, required=True)
@data_dir_option
@json_option
def world_delete(name: str, keys: tuple[str, ...], data_dir: str | None, as_json: bool) -> None:
    """Delete KEYs; signs and logs a commit."""
    result = client_for(data_dir).post(path_of("/worlds/{}", name), json={"delete": list(keys)})
    emit(as_json, result, lambda: _written(name, result))


@world.command("get")
@click.argument("name")
@click.argument("key")
@click.option("--at", default=None, help="A past commit or root CID.")
@data_dir_option
@json_option
def world_get(name: str, key: str, at: str | None, data_dir: str | None, as_json: bool) -> None:
    """Print KEY's value (as JSON)."""
    params = {"at": at} if at else None
    result = client_for(data_dir).get(path_of("/worlds/{}/keys/{}", name, key), params=params)
    emit(as_json, result, lambda: echo(json.dumps(result["value"])))


@world.command("list")
@click.argument("name", required=False)
@click.option("--prefix", default=None)
@data_dir_option
@json_option
def world_list(name: str | None, prefix: str | None, data_dir: str | None, as_json: bool) -> None:
    """List worlds, or NAME's keys and values."""
    client = client_for(data_dir)
    if name is None:
        result = client.get("/worlds")
        emit(as_json, result, print_lines(result["worlds"]))
        return
    result = client.get(path_of("/worlds/{}/entries", name),
                        params={"prefix": prefix} if prefix else None)
    emit(as_json, result, print_lines(f"{row['key']}\t{json.dumps(row['value'])}"
                                      for row in result["entries"]))


@world.command("diff")
@click.argument("name")
@click.argument("from_ref", metavar="FROM")
@click.argument("to_ref", metavar="[TO]", required=False)
@data_dir_option
@json_option
def world_diff(name: str, from_ref: str, to_ref: str | None, data_dir: str | None,
               as_json: bool) -> None:
    """Changes from commit/root FROM to TO (default: the current head)."""
    params = {"from": from_ref, **({"to": to_ref} if to_ref else {})}
    result = client_for(data_dir).get(path_of("/worlds/{}/diff", name), params=params)

    def human() -> None:
        for c in result["changes"]:
            sign = "+" if c["old"] is None else "-" if c["new"] is None else "~"
            echo(f"{sign} {c['key']}")
        echo(f"{len(result['changes'])} changes, {result['blocks_read']} blocks read")

    emit(as_json, result, human)


@world.command("history")
@click.argument("name")
@click.option("--limit", default=20, type=click.IntRange(0, 10_000))
@data_dir_option
@json_option
def world_history(name: str, limit: int, data_dir: str | None, as_json: bool) -> None:
    """NAME's commits, newest first."""
    result = client_for(data_dir).get(path_of("/worlds/{}/history", name),
                                      params={"limit": limit})
    emit(as_json, result, print_lines(f"{c['seq']:>5}  {c['time']}  {c['commit']}"
                                      for c in result["history"]))


@world.command("show")
@click.argument("name")
@data_dir_option
@json_option
def world_show(name: str, data_dir: str | None, as_json: bool) -> None:
    """NAME's head commit, root and size."""
    result = client_for(data_dir).get(path_of("/worlds/{}", name))
    emit(as_json, result, print_lines(f"{k:<6} {v}" for k, v in result.items()))


# -- federation: follow, writers (node/api/worlds_federation.py) ---------------------------
# A follow fetches a commit chain and the changed tree paths from a peer: give it time.
FOLLOW_TIMEOUT_S = 120.0


@world.command("follow")
@click.argument("name")
@click.option("--from", "source", required=True,
              help="The peer: a dial address /ip4/…/tcp/…/p2p/<peer id>, or a connected peer id.")
@data_dir_option
@json_option
def world_follow(name: str, source: str, data_dir: str | None, as_json: bool) -> None:
    """Follow the peer's world NAME: verify and fetch it, then keep it in sync."""
    result = client_for(data_dir, timeout=FOLLOW_TIMEOUT_S).post(
        path_of("/worlds/{}/follow", name), json={"from": source})
    emit(as_json, result, lambda: echo(
        f"{name}: {result['result']} from {result['peer']} ({result['commits_verified']} "
        f"commits verified, {result['blocks_fetched']} blocks fetched)"
        + (f": {result['reason']}" if result.get("reason") else "")))


@world.command("unfollow")
@click.argument("name")
@data_dir_option
@json_option
def world_unfollow(name: str, data_dir: str | None, as_json: bool) -> None:
    """Stop following NAME (what was fetched stays)."""
    result = client_for(data_dir).request("DELETE", API_PREFIX + path_of("/worlds/{}/follow", name))
    emit(as_json, result, lambda: echo(f"{name}: no longer followed"))


@world.group("writers")
def writers() -> None:
    """Who may write a shared world (only its owner changes the set)."""


def _print_writers(result: dict[str, Any]) -> None:
    echo(f"{result['world']} ({result['mode']}), owner {result['owner']}")
    for key in result["writers"]:
        echo(f"  {key}")


@writers.command("list")
@click.argument("name")
@data_dir_option
@json_option
def writers_list(name: str, data_dir: str | None, as_json: bool) -> None:
    """NAME's writers: the owner first."""
    result = client_for(data_dir).get(path_of("/worlds/{}/writers", name))
    emit(as_json, result, lambda: _print_writers(result))


@writers.command("add")
@click.argument("name")
@click.argument("key")
@data_dir_option
@json_option
def writers_add(name: str, key: str, data_dir: str | None, as_json: bool) -> None:
    """Let KEY (64 hex digits, a node's public key) write NAME; NAME becomes shared."""
    result = client_for(data_dir).post(path_of("/worlds/{}/writers", name),
                                       json={"key": key.lower()})
    emit(as_json, result, lambda: _print_writers(result))


@writers.command("remove")
@click.argument("name")
@click.argument("key")
@data_dir_option
@json_option
def writers_remove(name: str, key: str, data_dir: str | None, as_json: bool) -> None:
    """Remove KEY from NAME's writers (their records stop counting)."""
    result = client_for(data_dir).request(
        "DELETE", API_PREFIX + path_of("/worlds/{}/writers/{}", name, key.lower()))
    emit(as_json, result, lambda: _print_writers(result))
