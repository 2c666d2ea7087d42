"""The hello exchange: real keys and signatures, every refusal with its code."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from protocol_support import (
    NETWORK,
    NOW,
    NOW_MS,
    OTHER_NETWORK,
    config,
    pair,
    peer,
    run,
    signed_checkpoint,
)

from n3xus.canon.codec import decode, encode
from n3xus.canon.entries import check_payload
from n3xus.protocol.codes import ErrorCode
from n3xus.protocol.errors import LocalProtocolError, PeerError, RemoteProtocolError
from n3xus.protocol.framing import FrameDecoder, encode_message
from n3xus.protocol.hello import (
    HELLO_SIGNATURE_TAG,
    HELLO_TIMEOUT_S,
    MAX_CLOCK_SKEW_MS,
    MAX_HELLO_FRAME_BYTES,
    FederationPolicy,
    HelloExchange,
    HelloState,
    Role,
    describe_failure,
)


def test_a_completed_exchange_verifies_both_sides() -> None:
    a, b = pair(config(1), config(2))
    frames = run(a, b)
    assert a.state is HelloState.DONE and b.state is HelloState.DONE
    assert len(frames) == 4  # hello-start, hello, hello, hello-accept
    assert a.result is not None and b.result is not None
    assert a.result.peer_id == peer(2) and b.result.peer_id == peer(1)
    assert a.result.role is Role.RESPONDER and b.result.role is Role.INITIATOR
    assert a.result.canon_checkpoint is not None and a.result.canon_checkpoint.size == 5
    assert a.result.ledger_checkpoint is not None and a.result.ledger_checkpoint.size == 3
    assert a.deadline is None and b.deadline is None
    # Both hellos sign the same session: both peer ids and both nonces.
    assert a.sent_hello is not None and b.sent_hello is not None
    assert a.sent_hello.session == b.sent_hello.session
    assert a.sent_hello.session.initiator_nonce == a.nonce
    assert a.sent_hello.signing_bytes().startswith(HELLO_SIGNATURE_TAG)


def test_the_result_is_a_valid_handshake_log_entry() -> None:
    a, b = pair(config(1), config(2))
    run(a, b)
    assert b.result is not None
    payload = b.result.handshake_entry(direction="inbound", addresses=["/ip4/127.0.0.1/tcp/4001"],
                                       time_ms=NOW_MS)
    checked = check_payload("handshake", 1, encode(payload))
    assert checked["peer"] == peer(1)
    assert checked["protocols"] == ["/n3xus/blocks/1.0.0", "/n3xus/hello/1.0.0"]


def test_hellos_without_checkpoints_are_fine() -> None:
    a, b = pair(config(1, canon_checkpoint=None, ledger_checkpoint=None), config(2))
    run(a, b)
    assert b.result is not None and b.result.canon_checkpoint is None


def _refused_by_responder(initiator_config: object, responder_config: object, **kw: int) -> tuple[HelloExchange, HelloExchange]:
    a, b = pair(initiator_config, responder_config)  # type: ignore[arg-type]
    run(a, b, **kw)
    return a, b


@pytest.mark.parametrize(("initiator", "responder", "code"), [
    (config(1, network=OTHER_NETWORK, policy=FederationPolicy((OTHER_NETWORK,)), ledger_checkpoint=None),
     config(2), ErrorCode.WRONG_NETWORK),
    (config(1, version="1.0.0"), config(2), ErrorCode.UNSUPPORTED_VERSION),
    (config(1), config(2, policy=FederationPolicy((NETWORK,), deny=(peer(1),))), ErrorCode.POLICY_DENIED),
    (config(1), config(2, policy=FederationPolicy((NETWORK,), allow=(peer(3),))), ErrorCode.POLICY_DENIED),
    (config(1, canon_checkpoint=signed_checkpoint(3, 5)), config(2), ErrorCode.BAD_CHECKPOINT),
])
def test_refusals_carry_their_reason_to_both_sides(initiator: object, responder: object, code: ErrorCode) -> None:
    a, b = _refused_by_responder(initiator, responder)
    # Whichever side checks first refuses; the other learns the reason from the error.
    refuser, refused = (a, b) if a.state is HelloState.FAILED else (b, a)
    assert refuser.state is HelloState.FAILED
    assert refuser.error is not None and refuser.error.code is code
    assert refused.state is HelloState.REFUSED_BY_PEER
    assert isinstance(refused.error, PeerError) and refused.error.raw_code == code
    described = describe_failure(refused.error)
    assert described is not None and described["reason"] == code.label and described["by"] == "peer"


def test_the_initiator_refuses_a_responder_of_another_network() -> None:
    a, b = pair(config(1), config(2, network=OTHER_NETWORK, policy=FederationPolicy((OTHER_NETWORK,)),
                                   ledger_checkpoint=None))
    run(a, b)
    assert a.state is HelloState.FAILED and a.error is not None
    assert a.error.code is ErrorCode.WRONG_NETWORK
    assert b.state is HelloState.REFUSED_BY_PEER


def test_stale_hello_is_refused() -> None:
    a, b = pair(config(1), config(2))
    run(a, b, a_ms=NOW_MS + MAX_CLOCK_SKEW_MS + 1)
    assert a.state is HelloState.FAILED and a.error is not None
    assert a.error.code is ErrorCode.STALE


def test_a_hello_replayed_on_another_connection_is_refused() -> None:
    a, b = pair(config(1), config(2))
    frames = run(a, b)
    recorded_hello = frames[2]  # the initiator's signed hello on the first connection
    # A second connection between the same peers: fresh nonces.
    c, d = pair(config(1), config(2))
    d.receive_data(c.start(), now=NOW, wall_ms=NOW_MS)
    d.receive_data(recorded_hello, now=NOW, wall_ms=NOW_MS)
    assert d.state is HelloState.FAILED and d.error is not None
    assert d.error.code is ErrorCode.REPLAYED


def test_a_hello_of_another_key_is_an_identity_mismatch() -> None:
    # Peer 3 relays peer 1's hello on its own connection.
    a, b = pair(config(1), config(2))
    frames = run(a, b)
    c = HelloExchange(Role.RESPONDER, config(2), local_peer=peer(2), remote_peer=peer(3),
                      now=NOW, nonce=b.nonce)
    c.receive_data(frames[0], now=NOW, wall_ms=NOW_MS)
    c.receive_data(frames[2], now=NOW, wall_ms=NOW_MS)
    assert c.error is not None and c.error.code is ErrorCode.IDENTITY_MISMATCH


def test_a_tampered_hello_has_a_bad_signature() -> None:
    a, b = pair(config(1), config(2), nonces=(b"\x01" * 32, b"\x02" * 32))
    b_out = b.receive_data(a.start(), now=NOW, wall_ms=NOW_MS)
    a_out = a.receive_data(b_out, now=NOW, wall_ms=NOW_MS)
    frames = FrameDecoder(MAX_HELLO_FRAME_BYTES)
    frames.receive_data(a_out, NOW)
    body = frames.next_frame()
    assert body is not None
    hello = decode(body)
    hello["agent"] = "someone else"
    b.receive_data(encode_message(hello, MAX_HELLO_FRAME_BYTES), now=NOW, wall_ms=NOW_MS)
    assert b.error is not None and b.error.code is ErrorCode.BAD_SIGNATURE


def test_messages_out_of_order_are_unexpected() -> None:
    a, b = pair(config(1), config(2))
    b.receive_data(encode_message({"type": "hello-accept"}, 100), now=NOW, wall_ms=NOW_MS)
    assert b.error is not None and b.error.code is ErrorCode.UNEXPECTED_MESSAGE
    out = b.receive_data(b"", now=NOW, wall_ms=NOW_MS)
    assert out == b""
    with pytest.raises(RemoteProtocolError):
        b.receive_data(b"\x00", now=NOW, wall_ms=NOW_MS)


def test_local_misuse_is_a_local_error() -> None:
    a, b = pair(config(1), config(2))
    with pytest.raises(LocalProtocolError):
        b.start()
    a.start()
    with pytest.raises(LocalProtocolError):
        a.start()
    with pytest.raises(LocalProtocolError):
        HelloExchange(Role.INITIATOR, config(1), local_peer=peer(1), remote_peer=peer(1), now=NOW)


def test_silent_peer_is_cut_off_at_the_deadline() -> None:
    a, b = pair(config(1), config(2))
    assert b.deadline == NOW + HELLO_TIMEOUT_S
    assert b.check_deadline(NOW + 1) == b""
    frame = b.check_deadline(NOW + HELLO_TIMEOUT_S)
    assert b.state is HelloState.FAILED and b.error is not None
    assert b.error.code is ErrorCode.TIMEOUT
    assert decode(frame[1:])["code"] == ErrorCode.TIMEOUT


def test_end_of_stream_mid_exchange_fails_cleanly() -> None:
    a, b = pair(config(1), config(2))
    b.receive_data(a.start()[:5], now=NOW, wall_ms=NOW_MS)
    assert b.receive_eof() == b""
    assert b.state is HelloState.FAILED and b.error is not None
    assert b.error.code is ErrorCode.TRUNCATED


def test_an_oversized_prefix_is_refused_before_the_body() -> None:
    a, b = pair(config(1), config(2))
    prefix = bytes([0x80, 0x80, 0x80, 0x01])  # 2**21 bytes announced, nothing sent
    out = b.receive_data(prefix, now=NOW, wall_ms=NOW_MS)
    assert b.error is not None and b.error.code is ErrorCode.FRAME_TOO_LARGE
    assert decode(out[1:])["type"] == "error"


# --- property tests: whatever the bytes, a clean outcome -------------------------------------

def _responder_outcome(data: bytes, *, eof: bool) -> None:
    """Feeding ``data`` (a mangled initiator side) ends in a waiting state or a clean
    failure with a code; only the unmangled bytes complete the exchange."""
    a, b = pair(config(1), config(2), nonces=(b"\x01" * 32, b"\x02" * 32))
    try:
        b.receive_data(data, now=NOW, wall_ms=NOW_MS)
        if eof:
            b.receive_eof()
    except RemoteProtocolError:
        assert b.finished  # only data after the end raises
    if data == INITIATOR_BYTES:
        assert b.state is HelloState.DONE
        return
    assert b.state in (HelloState.AWAIT_START, HelloState.AWAIT_HELLO, HelloState.FAILED,
                       HelloState.REFUSED_BY_PEER)
    if b.state is HelloState.FAILED:
        assert isinstance(b.error, RemoteProtocolError)


def _initiator_hello() -> bytes:
    a, b = pair(config(1), config(2), nonces=(b"\x01" * 32, b"\x02" * 32))
    start = a.start()
    return start + a.receive_data(b.receive_data(start, now=NOW, wall_ms=NOW_MS), now=NOW, wall_ms=NOW_MS)


INITIATOR_BYTES = _initiator_hello()
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(st.integers(min_value=0, max_value=len(INITIATOR_BYTES)))
def test_every_truncation_fails_cleanly(end: int) -> None:
    _responder_outcome(INITIATOR_BYTES[:end], eof=True)


@PROPERTY
@given(st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=7)),
                min_size=1, max_size=4))
def test_bit_flips_fail_cleanly(flips: list[tuple[int, int]]) -> None:
    data = bytearray(INITIATOR_BYTES)
    for position, bit in flips:
        data[position % len(data)] ^= 1 << bit
    _responder_outcome(bytes(data), eof=False)


@PROPERTY
@given(st.binary(max_size=200))
def test_random_bytes_fail_cleanly(data: bytes) -> None:
    _responder_outcome(data, eof=True)


@PROPERTY
@given(st.lists(st.integers(min_value=1, max_value=64), max_size=40))
def test_any_chunking_completes_the_exchange(cuts: list[int]) -> None:
    a, b = pair(config(1), config(2))
    start = a.start()
    to_a = b.receive_data(start, now=NOW, wall_ms=NOW_MS)
    position, to_b = 0, bytearray()
    for cut in [*cuts, len(to_a)]:
        to_b += a.receive_data(to_a[position:position + cut], now=NOW, wall_ms=NOW_MS)
        position += cut
    b.receive_data(bytes(to_b), now=NOW, wall_ms=NOW_MS)
    assert b.state is HelloState.DONE
    assert replace(config(1)).peer_id == peer(1)
