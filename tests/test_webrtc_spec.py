"""specs/live.md, specs/live-signaling.md, specs/protocol-live.md and specs/vectors/live.json
agree with the code: schemas, the role and state tables, the limits each document quotes,
token and /n3xus/live/1.0.0 vectors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from n3xus.webrtc import asgi, pull, recording, relay, rooms, sdp, service, signaling
from n3xus.webrtc.datachannel import DATA_BURST, DATA_RATE_PER_S, MAX_DATA_MESSAGE_BYTES
from n3xus.webrtc.errors import PullProtocolError, TokenError
from n3xus.webrtc.rooms import ROLE_PERMISSIONS, Permission, Role, RoomTokens
from n3xus.webrtc.schemas import (
    CLIENT_SIGNAL_SCHEMA,
    DATA_MESSAGE_SCHEMA,
    MAX_MESH_PEERS,
    MESH_MESSAGE_SCHEMA,
    SERVER_SIGNAL_SCHEMA,
)

SPECS = Path(__file__).resolve().parent.parent / "specs"
TEXT = (SPECS / "live.md").read_text()  # rooms, roles, tokens, pages, recordings, relay
SIGNALING_TEXT = (SPECS / "live-signaling.md").read_text()  # browser <-> node
PULL_TEXT = (SPECS / "protocol-live.md").read_text()  # /n3xus/live/1.0.0
VECTORS = json.loads((SPECS / "vectors" / "live.json").read_text())


def json_blocks(text: str) -> list[Any]:
    return [json.loads(block) for block in re.findall(r"```json\n(.*?)```", text, re.S)]


def table_rows(text: str, header: str) -> list[list[str]]:
    start = text.index(header)
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip().strip("`") for cell in line.strip("|").split("|")])
    return rows


def test_the_spec_embeds_the_code_schemas() -> None:
    assert json_blocks(SIGNALING_TEXT) == [CLIENT_SIGNAL_SCHEMA, SERVER_SIGNAL_SCHEMA,
                                           DATA_MESSAGE_SCHEMA, MESH_MESSAGE_SCHEMA]
    assert json_blocks(TEXT) == []


def test_the_role_table_is_the_codes() -> None:
    header = "| role | " + " | ".join(p.value for p in Permission) + " |"
    rows = table_rows(TEXT, header)
    table = {Role(r[0]): frozenset(p for p, cell in zip(Permission, r[1:], strict=True)
                                   if cell == "yes") for r in rows}
    assert table == ROLE_PERMISSIONS


def test_the_state_table_is_the_codes() -> None:
    rows = table_rows(SIGNALING_TEXT, "| state | message | next state |")
    assert {(signaling.State(s), m): signaling.State(n) for s, m, n in rows} == \
        signaling.TRANSITIONS


@pytest.mark.parametrize("name, value", [
    ("MAX_TOKEN_CHARS", rooms.MAX_TOKEN_CHARS),
    ("MAX_TOKEN_TTL_MS", rooms.MAX_TOKEN_TTL_MS),
    ("DEFAULT_TOKEN_TTL_MS", rooms.DEFAULT_TOKEN_TTL_MS),
    ("SUBSCRIBER_QUEUE_FRAMES", relay.SUBSCRIBER_QUEUE_FRAMES),
    ("SEGMENT_TARGET_MS", recording.SEGMENT_TARGET_MS),
])
def test_the_limits_quoted_are_the_codes(name: str, value: float) -> None:
    assert quoted_limit(TEXT, name) == value


@pytest.mark.parametrize("name, value", [
    ("SIGNAL_BURST", signaling.SIGNAL_BURST),
    ("SIGNAL_RATE_PER_S", int(signaling.SIGNAL_RATE_PER_S)),
    ("MAX_SIGNAL_MESSAGE_BYTES", signaling.MAX_SIGNAL_MESSAGE_BYTES),
    ("HELLO_TIMEOUT_S", int(signaling.HELLO_TIMEOUT_S)),
    ("MAX_SDP_BYTES", sdp.MAX_SDP_BYTES),
    ("MAX_MEDIA_SECTIONS_PER_KIND", sdp.MAX_MEDIA_SECTIONS_PER_KIND),
    ("MAX_DATA_MESSAGE_BYTES", MAX_DATA_MESSAGE_BYTES),
    ("DATA_BURST", DATA_BURST),
    ("DATA_RATE_PER_S", int(DATA_RATE_PER_S)),
    ("MAX_TIP_ENVELOPE_BYTES", asgi.MAX_TIP_ENVELOPE_BYTES),
    ("MAX_MESH_PEERS", MAX_MESH_PEERS),
])
def test_the_signaling_limits_quoted_are_the_codes(name: str, value: float) -> None:
    assert quoted_limit(SIGNALING_TEXT, name) == value


@pytest.mark.parametrize("name, value", [
    ("MAX_PULL_MESSAGE_BYTES", pull.MAX_PULL_MESSAGE_BYTES),
    ("PULL_REQUEST_TIMEOUT_S", pull.PULL_REQUEST_TIMEOUT_S),
    ("KEYFRAME_REQUEST_INTERVAL_S", relay.KEYFRAME_REQUEST_INTERVAL_S),
    ("PULL_QUEUE_FRAMES", service.PULL_QUEUE_FRAMES),
])
def test_the_pull_limits_quoted_are_the_codes(name: str, value: float) -> None:
    assert quoted_limit(PULL_TEXT, name) == value


def quoted_limit(text: str, name: str) -> float:
    quoted = re.search(rf"`{name}` =\s+([0-9,.]+)", text)
    assert quoted is not None, name
    return float(quoted.group(1).rstrip(".").replace(",", ""))


def test_room_token_vectors() -> None:
    for vector in VECTORS["room_tokens"]:
        tokens = RoomTokens(bytes.fromhex(vector["key_hex"]))
        token = tokens.issue(vector["room"], Role(vector["role"]), now_ms=vector["now_ms"],
                             ttl_ms=vector["ttl_ms"])
        assert token == vector["token"]
        payload_b64, mac_b64 = token.removeprefix(rooms.TOKEN_PREFIX).split(".")
        assert rooms._unb64(payload_b64).hex() == vector["payload_hex"]
        assert rooms._unb64(mac_b64).hex() == vector["mac_hex"]
        for check in vector["checks"]:
            if check["result"] == "ok":
                grant = tokens.verify(token, room=check["room"], now_ms=check["now_ms"])
                assert grant.role.value == vector["role"]
            else:
                with pytest.raises(TokenError) as refused:
                    tokens.verify(token, room=check["room"], now_ms=check["now_ms"])
                assert refused.value.code == check["result"]
        for forged in vector["forged"]:
            with pytest.raises(TokenError):
                tokens.verify(forged, room=vector["room"], now_ms=vector["now_ms"])


def _message_from_json(doc: dict[str, Any]) -> pull.PullMessage:
    kinds = {"v": "video", "a": "audio"}
    t = doc["type"]
    if t == "pull":
        return pull.Pull(doc["room"], doc["token"], tuple(kinds[k] for k in doc["kinds"]))
    if t == "accept":
        return pull.Accept(doc["room"], doc["live"])
    if t == "refuse":
        return pull.Refuse(doc["code"], doc["message"])
    if t == "frame":
        return pull.Frame(kinds[doc["k"]], doc["i"], doc["pts"], doc["key"],
                          bytes.fromhex(doc["data_hex"]))
    if t == "live":
        return pull.Live(doc["live"])
    return {"keyframe": pull.KeyframeRequest(), "end": pull.End(), "bye": pull.Bye()}[t]


def test_pull_message_vectors() -> None:
    for vector in VECTORS["pull_messages"]:
        message = _message_from_json(vector["message"])
        assert pull.encode(message).hex() == vector["hex"]
        assert pull.decode(bytes.fromhex(vector["hex"])) == message
    for vector in VECTORS["invalid_pull_messages"]:
        with pytest.raises(PullProtocolError) as refused:
            pull.decode(bytes.fromhex(vector["hex"]))
        assert refused.value.wire_code == vector["wire_code"], vector["why"]
    for vector in VECTORS["tolerated_pull_messages"]:
        assert pull.decode(bytes.fromhex(vector["hex"])) == \
            pull.decode(bytes.fromhex(vector["equals_hex"]))


def test_the_protocol_id_is_registered() -> None:
    registry = (SPECS / "README.md").read_text()
    assert f"| `{pull.PROTOCOL_ID}` |" in registry and "(protocol-live.md)" in registry
    assert recording.RECORDING_TYPE in registry
    assert "n3xus/room-token/v1" in registry


def test_the_room_page_mirrors_max_mesh_peers() -> None:
    page = (Path(asgi.PAGES_DIR) / "room.js").read_text()
    quoted = re.search(r"export const MAX_MESH_PEERS = (\d+);", page)
    assert quoted is not None and int(quoted.group(1)) == MAX_MESH_PEERS
