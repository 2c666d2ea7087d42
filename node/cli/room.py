"""``n3xus room …``: live rooms through the node's API (node/api/rooms.py).

``room create`` and ``room show`` print the room's three invite links (the room page,
the performer page, the audience page), each carrying its scoped room token in the URL
fragment (``#token=…``: browsers never send a fragment, so the token is in no request
line and no log), and the tokens themselves. ``room follow`` serves another node's room
on this node: it pulls one copy of the stream over ``/n3xus/live/1.0.0`` with a viewer
token of the origin, and prints this node's own links for local viewers.
"""

from __future__ import annotations

from typing import Any

import click

from .app import client_for, data_dir_option, echo, emit, json_option
from .client import path_of

#: Ending a room closes the open recording segment and stores the manifest.
END_TIMEOUT_S = 60.0


@click.group()
def room() -> None:
    """Live rooms: create, list, show, end, follow another node's room."""


def _print_room(doc: dict[str, Any]) -> None:
    state = "ended" if doc.get("ended") else ("live" if doc.get("live") else "open")
    echo(f"room     {doc['name']} ({state})")
    if doc.get("origin"):
        echo(f"origin   {doc['origin'].get('room')} on {doc['origin'].get('peer')}")
        if doc.get("follow_error"):
            echo(f"error    {doc['follow_error']}")
    echo(f"creator  {doc['creator']}")
    if "viewers" in doc:
        echo(f"viewers  {doc['viewers']}")
    for cid in doc.get("recordings", []):
        echo(f"recorded {cid}")
    links = doc.get("links") or {}
    for label, key in (("room page", "room"), ("performer", "perform"), ("audience", "watch")):
        if key in links:
            echo(f"{label:<10} {links[key]}")
    for role, token in (doc.get("tokens") or {}).items():
        echo(f"token {role:<12} {token}")


@room.command("create")
@click.argument("name")
@click.option("--creator", default=None, metavar="ACCOUNT",
              help="Account (64 hex) that tips go to (default: the node's account).")
@data_dir_option
@json_option
def room_create(name: str, creator: str | None, data_dir: str | None, as_json: bool) -> None:
    """Create room NAME and print its invite links and tokens."""
    body: dict[str, Any] = {"name": name}
    if creator is not None:
        body["creator"] = creator
    result = client_for(data_dir).post("/rooms", json=body)
    emit(as_json, result, lambda: _print_room(result))


@room.command("list")
@data_dir_option
@json_option
def room_list(data_dir: str | None, as_json: bool) -> None:
    """Rooms of this node."""
    result = client_for(data_dir).get("/rooms")

    def human() -> None:
        for doc in result["rooms"]:
            state = "ended" if doc["ended"] else ("live" if doc["live"] else "open")
            origin = f" (follows {doc['origin']['peer']})" if doc.get("origin") else ""
            echo(f"{doc['name']:<24} {state:<6} viewers {doc['viewers']}{origin}")

    emit(as_json, result, human)


@room.command("show")
@click.argument("name")
@data_dir_option
@json_option
def room_show(name: str, data_dir: str | None, as_json: bool) -> None:
    """Room NAME: state, recordings, fresh invite links and tokens."""
    result = client_for(data_dir).get(path_of("/rooms/{}", name))
    emit(as_json, result, lambda: _print_room(result))


@room.command("end")
@click.argument("name")
@data_dir_option
@json_option
def room_end(name: str, data_dir: str | None, as_json: bool) -> None:
    """End room NAME: everyone is disconnected, the recording is closed."""
    result = client_for(data_dir, timeout=END_TIMEOUT_S).post(path_of("/rooms/{}/end", name))
    emit(as_json, result, lambda: _print_room(result))


@room.command("follow")
@click.argument("name")
@click.option("--from", "source", required=True,
              help="The origin: a dial address /ip4/…/tcp/…/p2p/<peer id>, or a peer id.")
@click.option("--token", required=True,
              help="A room token of the origin that may watch (its audience link's #token=).")
@click.option("--remote-room", default=None, help="The room's name on the origin (default NAME).")
@data_dir_option
@json_option
def room_follow(name: str, source: str, token: str, remote_room: str | None,
                data_dir: str | None, as_json: bool) -> None:
    """Serve the origin's room NAME here (one pulled copy) and print local links."""
    body: dict[str, Any] = {"from": source, "token": token}
    if remote_room is not None:
        body["remote_room"] = remote_room
    result = client_for(data_dir).post(path_of("/rooms/{}/follow", name), json=body)
    emit(as_json, result, lambda: _print_room(result))
