"""/n3xus/imvu/1.0.0: message round-trips, the exchange's transition table, and property
tests (truncation, bit flips, junk: a clean protocol error, never a crash)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from n3xus.canon.cid import cid_of
from n3xus.imvu.wire import TRANSITIONS, AgentExchange, Answer, Ask, Role, State, Token
from n3xus.protocol.errors import LocalProtocolError, MessageError, PeerError, ProtocolError

SENDER = bytes(range(32))
ANSWER = Answer("allow", "", "", "reply", "The next set starts at ten.", cid_of(b"\xa0"))


def exchange(stream: bool) -> tuple[AgentExchange, AgentExchange, list[object]]:
    asker, answerer = AgentExchange(Role.ASKER), AgentExchange(Role.ANSWERER)
    received = answerer.receive_data(asker.send(Ask("echo", SENDER, "When?", ("ctx",), stream)), 0.0)
    wire = b""
    if stream:
        wire += answerer.send(Token("The next")) + answerer.send(Token(" set"))
    wire += answerer.send(ANSWER)
    return asker, answerer, received + asker.receive_data(wire, 0.0)


@pytest.mark.parametrize("stream", [False, True])
def test_one_exchange_round_trips(stream: bool) -> None:
    asker, answerer, messages = exchange(stream)
    assert messages[0] == Ask("echo", SENDER, "When?", ("ctx",), stream)
    assert messages[-1] == ANSWER
    assert [type(m).__name__ for m in messages[1:-1]] == (["Token", "Token"] if stream else [])
    assert asker.state is State.DONE and answerer.state is State.DONE
    asker.receive_eof()  # a closed stream after the answer is the normal end


def test_illegal_steps_are_refused_by_the_table() -> None:
    answerer = AgentExchange(Role.ANSWERER)
    with pytest.raises(LocalProtocolError):
        answerer.send(ANSWER)  # no ask yet
    asker, answerer = AgentExchange(Role.ASKER), AgentExchange(Role.ANSWERER)
    answerer.receive_data(asker.send(Ask("echo", SENDER, "hi")), 0.0)
    with pytest.raises(LocalProtocolError, match="stream"):
        answerer.send(Token("x"))  # the ask did not stream
    with pytest.raises(MessageError):
        asker.receive_data(_answer_frame_twice(), 0.0)


def _answer_frame_twice() -> bytes:
    a, b = AgentExchange(Role.ASKER), AgentExchange(Role.ANSWERER)
    b.receive_data(a.send(Ask("echo", SENDER, "hi")), 0.0)
    first = b.send(ANSWER)
    return first + first  # a second answer after DONE is unexpected


def test_errors_end_the_exchange_and_truncation_is_named() -> None:
    asker, answerer = AgentExchange(Role.ASKER), AgentExchange(Role.ANSWERER)
    answerer.receive_data(asker.send(Ask("nobody", SENDER, "hi")), 0.0)
    with pytest.raises(PeerError) as caught:
        asker.receive_data(answerer.send_error(64, "no agent named 'nobody'"), 0.0)
    assert caught.value.raw_code == 64 and asker.state is State.DONE
    early = AgentExchange(Role.ASKER)
    early.send(Ask("echo", SENDER, "hi"))
    with pytest.raises(MessageError, match="before an answer"):
        early.receive_eof()


def test_table_covers_both_roles() -> None:
    assert {role for role, _, _ in TRANSITIONS} == set(Role)
    assert all(state in State for _, state, _ in TRANSITIONS)


def _valid_stream() -> bytes:
    asker = AgentExchange(Role.ASKER)
    return asker.send(Ask("echo", SENDER, "When does the set start?", ("a", "b"), True))


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_truncation_and_bit_flips_fail_cleanly(data: st.DataObject) -> None:
    frame = _valid_stream()
    cut = data.draw(st.integers(0, len(frame) - 1))
    answerer = AgentExchange(Role.ANSWERER)
    assert answerer.receive_data(frame[:cut], 0.0) == []  # waits for the rest, never guesses
    flipped = bytearray(frame)
    flipped[data.draw(st.integers(0, len(frame) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    try:  # anything but a ProtocolError (a bare ValueError, an IndexError...) fails the test
        AgentExchange(Role.ANSWERER).receive_data(bytes(flipped), 0.0)
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_junk_is_a_protocol_error(junk: bytes) -> None:
    try:
        AgentExchange(Role.ANSWERER).receive_data(junk, 0.0)
    except ProtocolError:
        pass
