"""The tables in specs/protocol*.md are the tables the code runs (state machines, error
codes, limits): each is regenerated from the code and compared with the text."""

from __future__ import annotations

from pathlib import Path

import pytest

from n3xus.protocol.hello import INITIATOR_TRANSITIONS, RESPONDER_TRANSITIONS, HelloState
from n3xus.protocol.tables import embedded, rewrite, spec_tables, transition_table

SPECS = Path(__file__).resolve().parents[1] / "specs"


@pytest.mark.parametrize("name", list(spec_tables()))
def test_spec_table_equals_the_code(name: str) -> None:
    filename, render = spec_tables()[name]
    text = (SPECS / filename).read_text(encoding="utf-8")
    found = embedded(text, name)
    assert found is not None, f"{filename} has no table {name!r}"
    assert found == render(), (f"{filename}: table {name!r} differs from the code "
                               "(python -m n3xus.protocol.tables --write)")


def test_a_changed_table_is_noticed() -> None:
    changed = dict(INITIATOR_TRANSITIONS)
    changed.popitem()
    text = (SPECS / "protocol-hello.md").read_text(encoding="utf-8")
    assert embedded(text, "hello-initiator") != transition_table(changed)
    assert embedded(rewrite(text, "hello-initiator", "x"), "hello-initiator") == "x"


def test_every_waiting_state_handles_errors_deadlines_and_the_end() -> None:
    for table in (INITIATOR_TRANSITIONS, RESPONDER_TRANSITIONS):
        waiting = {state for state, _ in table} - {HelloState.IDLE}
        inputs = {(state, event.value) for state, event in table}
        for state in waiting:
            for event in ("refuse", "receive error", "deadline", "end of stream"):
                assert (state, event) in inputs


def test_the_registry_lists_our_tag_protocols_and_formats() -> None:
    from n3xus.protocol.blocks import BLOCKS_PROTOCOL_ID
    from n3xus.protocol.hello import HELLO_PROTOCOL_ID, HELLO_SIGNATURE_TAG
    from n3xus.protocol.witness import SPLIT_VIEW_TYPE

    registry = (SPECS / "README.md").read_text(encoding="utf-8")
    tag = HELLO_SIGNATURE_TAG.rstrip(b"\x00").decode()
    assert f"| `{tag}` | `{HELLO_SIGNATURE_TAG.hex()}` |" in registry
    for protocol_id in (HELLO_PROTOCOL_ID, BLOCKS_PROTOCOL_ID):
        assert f"| `{protocol_id}` |" in registry
    for reserved in ("/n3xus/ledger-sync/2.0.0", "/n3xus/imvu/1.0.0", "/n3xus/live/1.0.0"):
        assert f"| `{reserved}` |" in registry
    assert f'`"{SPLIT_VIEW_TYPE}"`' in registry
