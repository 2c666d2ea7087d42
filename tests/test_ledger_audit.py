"""Offline audit: every byte of a bundle, a checkpoint and an export matters. A change to
any of them is detected and blamed on the part it broke (never a crash, never an OK), and
forged exports with valid hashes fail at the entry or root they forged."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import lmdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from ledger_support import account, key, make_genesis
from tlog_support import LOG_KEY, NODE, OTHER_KEY, LedgerNet, build_history, flips, open_env

from n3xus.canon.car import encode_header, encode_section
from n3xus.canon.checkpoint import Checkpoint
from n3xus.canon.cid import cid_of
from n3xus.canon.codec import encode
from n3xus.canon.note import make_vkey, parse_note
from n3xus.ledger.audit import (
    StateCommitment,
    open_checkpoint,
    parse_proof_lines,
    replay_export,
    verify_bundle,
    verify_consistency,
    verify_inclusion_bundle,
    verify_state_bundle,
)
from n3xus.ledger.errors import AuditError, AuditPart
from n3xus.ledger.export import export_ledger
from n3xus.ledger.fraud import FRAUD_PROOF_PREFIX
from n3xus.ledger.transparency import ledger_origin
from n3xus.ledger.tx import AccountChain, Op, decode_tx

P = AuditPart
NOTE_PARTS = {P.FORMAT, P.CHECKPOINT, P.NOTE_SIGNATURE}


@pytest.fixture
def env(tmp_path: Path) -> Iterator[lmdb.Environment]:
    environment = open_env(tmp_path / "ledger")
    yield environment
    environment.close()


@pytest.fixture
def net(env: lmdb.Environment) -> LedgerNet:
    net = LedgerNet(env)
    net.history = build_history(net)  # type: ignore[attr-defined]
    net.tlog.checkpoint(LOG_KEY)
    return net


def regions(text: str, roles: Callable[[int, str], set[AuditPart]]) -> list[set[AuditPart]]:
    """For each byte of ``text``: the parts a change there may be blamed on, from the role
    of its line (``roles(line number, line)``); a line's newline belongs to the line."""
    allowed: list[set[AuditPart]] = []
    for number, line in enumerate(text.split("\n")):
        parts = roles(number, line)
        allowed.extend([parts] * (len(line.encode()) + 1))
    return allowed[:len(text.encode())]


def assert_every_flip_is_named(data: bytes, verify: Callable[[bytes], object],
                               allowed: list[set[AuditPart]],
                               may_prove_else: Callable[[int, object], bool] | None = None) -> set[AuditPart]:
    seen: set[AuditPart] = set()
    for position, changed in flips(data, masks=(0x01, 0x20)):
        try:
            result = verify(changed)
        except AuditError as exc:
            assert exc.part in allowed[position], (position, chr(data[position]), str(exc))
            seen.add(exc.part)
            continue
        assert may_prove_else is not None and may_prove_else(position, result), \
            f"a change at byte {position} verified"
    for length in range(len(data)):  # every truncation too
        with pytest.raises(AuditError):
            verify(data[:length])
    return seen


# --- inclusion bundles -------------------------------------------------------------------------


def test_inclusion_bundle_every_byte_matters(net: LedgerNet) -> None:
    bundle = net.tlog.inclusion_bundle(net.history.transfer_id).encode()  # type: ignore[attr-defined]
    assert verify_inclusion_bundle(bundle, net.vkey).decoded.tx is not None
    head_lines = bundle.decode().partition("\n\n")[0].count("\n") + 1

    def roles(number: int, line: str) -> set[AuditPart]:
        if number == 0:
            return {P.FORMAT}
        if line.startswith("extra "):
            return {P.FORMAT, P.ENTRY, P.ENTRY_SIGNATURE}
        if number < head_lines:  # index and proof hashes
            return {P.FORMAT, P.PROOF_PATH}
        return NOTE_PARTS

    seen = assert_every_flip_is_named(bundle, lambda b: verify_inclusion_bundle(b, net.vkey),
                                      regions(bundle.decode(), roles))
    assert {P.FORMAT, P.ENTRY_SIGNATURE, P.PROOF_PATH, P.NOTE_SIGNATURE} <= seen


def test_inclusion_bundle_of_a_fraud_proof_every_byte_matters(net: LedgerNet) -> None:
    bundle = net.tlog.inclusion_bundle(net.history.fraud_index).encode()  # type: ignore[attr-defined]
    assert verify_bundle(bundle, net.vkey).to_json()["entry"]["kind"] == "fraud-proof"
    for _position, changed in flips(bundle, step=3):
        with pytest.raises(AuditError):
            verify_bundle(changed, net.vkey)


def test_inclusion_bundle_rejects_the_wrong_key_and_a_foreign_origin(net: LedgerNet) -> None:
    bundle = net.tlog.inclusion_bundle(3)
    other = make_vkey(net.tlog.origin, OTHER_KEY.verify_key)
    with pytest.raises(AuditError) as caught:
        verify_inclusion_bundle(bundle, other)
    assert caught.value.part == P.NOTE_SIGNATURE
    wrong_name = make_vkey("n3xus.net/ledger/other", LOG_KEY.verify_key)
    with pytest.raises(AuditError) as caught:
        verify_inclusion_bundle(bundle, wrong_name)
    assert caught.value.part == P.NOTE_SIGNATURE  # a signature by an unknown key is ignored
    # The key of another network's log, signing a checkpoint that carries this log's entry.
    foreign = Checkpoint.parse(parse_note(net.tlog.last_checkpoint() or "").text)
    origin = ledger_origin(cid_of(b"another network"), NODE)
    note = Checkpoint(origin, foreign.size, foreign.root_hash, foreign.extensions).sign(origin, LOG_KEY)
    forged = bundle.split("\n\n")[0] + "\n\n" + note
    with pytest.raises(AuditError) as caught:
        verify_inclusion_bundle(forged, make_vkey(origin, LOG_KEY.verify_key))
    assert caught.value.part == P.NETWORK


# --- state proofs ------------------------------------------------------------------------------


def state_roles(number: int, line: str) -> set[AuditPart]:
    if number == 0 or line == "":
        return {P.FORMAT} | NOTE_PARTS  # the header; the blank line joins the note
    if number in (1, 2):
        return {P.FORMAT, P.STATE_PROOF}  # the key; the claim: present <value> or absent
    if len(line) == 44:
        return {P.FORMAT, P.STATE_PROOF}  # a sibling hash on the path
    return NOTE_PARTS


def test_present_state_proof_every_byte_matters(net: LedgerNet) -> None:
    bundle = net.tlog.state_proof_bundle(account("bob")).encode()
    assert verify_state_bundle(bundle, net.vkey).value == net.store.balance(account("bob")).to_bytes(8, "big")
    text = bundle.decode()
    head = text.partition("\n\n")[0].count("\n") + 1
    allowed = regions(text, lambda n, line: state_roles(n, line) if n < head else NOTE_PARTS)
    seen = assert_every_flip_is_named(bundle, lambda b: verify_state_bundle(b, net.vkey), allowed)
    assert {P.FORMAT, P.STATE_PROOF, P.NOTE_SIGNATURE} <= seen


def test_absent_state_proof_every_byte_matters_except_within_the_gap(net: LedgerNet) -> None:
    """An absence proof walks the asked key's path to an empty subtree or another key's
    leaf; no signature covers the asked key, so a changed key whose path ends at the same
    place is a valid proof that *that* key is absent. Everything else is detected, and such
    a result names the other key."""
    asked = account("nobody")
    bundle = net.tlog.state_proof_bundle(asked).encode()
    assert verify_state_bundle(bundle, net.vkey).value is None
    text = bundle.decode()
    key_line = text.split("\n")[1]
    key_start = len(text.split("\n")[0]) + 1 + len("key ")
    key_end = key_start + len(key_line) - len("key ")
    head = text.partition("\n\n")[0].count("\n") + 1
    allowed = regions(text, lambda n, line: state_roles(n, line) if n < head else NOTE_PARTS)

    def other_key(position: int, result: object) -> bool:
        return key_start <= position < key_end and getattr(result, "key", asked) != asked

    assert_every_flip_is_named(bundle, lambda b: verify_state_bundle(b, net.vkey), allowed, other_key)


def test_state_proof_claims_must_match_the_leaves(net: LedgerNet) -> None:
    present = net.tlog.state_proof_bundle(account("alice"))
    lines = present.split("\n")
    assert lines[2].startswith("present ")
    value = lines[2][len("present "):]
    for claim, part in (("absent", P.STATE_PROOF),  # an empty subtree where the leaf is
                        # the key's own leaf shown as "another key's": refused on parsing
                        (f"absent {lines[1][len('key '):]} {value}", P.FORMAT),
                        (f"present {base64.b64encode(bytes(8)).decode()}", P.STATE_PROOF)):
        forged = "\n".join([*lines[:2], claim, *lines[3:]])
        with pytest.raises(AuditError) as caught:
            verify_state_bundle(forged, net.vkey)
        assert caught.value.part == part


# --- consistency -------------------------------------------------------------------------------


def test_consistency_bundle_and_old_checkpoint_every_byte_matters(net: LedgerNet) -> None:
    old = net.tlog.last_checkpoint() or ""
    old_size = open_checkpoint(old, net.vkey).size
    net.fund("zed", 5)
    net.fund("zed", 6)
    net.tlog.checkpoint(LOG_KEY)
    bundle = net.tlog.consistency_bundle(old_size).encode()
    assert verify_consistency(old, bundle, net.vkey).new.size == old_size + 2
    head = bundle.decode().partition("\n\n")[0].count("\n") + 1

    def roles(number: int, line: str) -> set[AuditPart]:
        if number == 0:  # a damaged header: then NEW is read as a (malformed) bare checkpoint
            return {P.FORMAT, P.CHECKPOINT}
        if number < head:
            return {P.FORMAT, P.CONSISTENCY}
        return NOTE_PARTS

    seen = assert_every_flip_is_named(bundle, lambda b: verify_consistency(old, b, net.vkey),
                                      regions(bundle.decode(), roles))
    assert {P.FORMAT, P.CONSISTENCY, P.NOTE_SIGNATURE} <= seen
    old_bytes = old.encode()
    assert_every_flip_is_named(old_bytes, lambda b: verify_consistency(b, bundle, net.vkey),
                               [NOTE_PARTS] * len(old_bytes))


def test_consistency_with_a_separate_proof_and_its_failures(net: LedgerNet) -> None:
    old = net.tlog.last_checkpoint() or ""
    old_size = open_checkpoint(old, net.vkey).size
    net.fund("zed", 5)
    new = net.tlog.checkpoint(LOG_KEY)
    proof_text = "".join(base64.b64encode(h).decode() + "\n"
                         for h in net.tlog.consistency_proof(old_size))
    proof = parse_proof_lines(proof_text)
    assert verify_consistency(old, new, net.vkey, proof).old.size == old_size
    assert verify_consistency(new, new, net.vkey).new.size == old_size + 1  # equal sizes
    inclusion = net.tlog.inclusion_bundle(1)  # OLD may be any bundle holding a checkpoint
    assert verify_consistency(inclusion, new, net.vkey, proof).new.size == old_size + 1
    cases = [
        ((old, new, None), P.CONSISTENCY),  # no proof
        ((new, old, proof), P.CONSISTENCY),  # reversed
        ((old, new, proof[:-1]), P.CONSISTENCY),  # a hash missing
    ]
    for (first, second, hashes), part in cases:
        with pytest.raises(AuditError) as caught:
            verify_consistency(first, second, net.vkey, hashes)
        assert caught.value.part == part


def test_a_fork_signed_by_the_log_key_is_caught(net: LedgerNet) -> None:
    honest = net.tlog.last_checkpoint() or ""
    checkpoint = Checkpoint.parse(parse_note(honest).text)
    lie = Checkpoint(checkpoint.origin, checkpoint.size, bytes(32), checkpoint.extensions)
    lying_note = lie.sign(checkpoint.origin, LOG_KEY)
    with pytest.raises(AuditError, match="forked") as caught:
        verify_consistency(honest, lying_note, net.vkey)
    assert caught.value.part == P.CONSISTENCY


# --- exports -----------------------------------------------------------------------------------


def write_export(entries: list[bytes], notes: list[str], page: int) -> bytes:
    """An export CAR written from the spec (specs/ledger.md §13.7), independently of
    export.py: for forging exports whose every hash is valid."""
    cids = [cid_of(entry) for entry in entries]
    pages = [encode({"entries": cids[i:i + page]}) for i in range(0, len(entries), page)]
    manifest = encode({"v": 1, "page": page, "size": len(entries), "type": "n3xus-ledger-export",
                       "pages": [cid_of(p) for p in pages], "network": cids[0],
                       "checkpoints": notes})
    out = encode_header([cid_of(manifest)]) + encode_section(cid_of(manifest), manifest)
    for number, block in enumerate(pages):
        out += encode_section(cid_of(block), block)
        for cid, entry in zip(cids[number * page:(number + 1) * page],
                              entries[number * page:(number + 1) * page], strict=True):
            out += encode_section(cid, entry)
    return out


def replay(data: bytes, vkey: str | None) -> object:
    return replay_export(io.BytesIO(data), vkey)


def test_export_matches_the_spec_and_replays_to_the_store_roots(net: LedgerNet) -> None:
    old = net.tlog.last_checkpoint() or ""
    net.fund("zed", 9)
    latest = net.tlog.checkpoint(LOG_KEY)
    out = io.BytesIO()
    report = export_ledger(net.store, net.tlog, out, extra_checkpoints=[old], page_entries=4)
    data = out.getvalue()
    assert data == write_export(list(net.store.iter_log()), [old, latest], 4)
    assert report.size == net.store.log_size() and report.bytes_written == len(data)
    replayed = replay_export(io.BytesIO(data), net.vkey)
    assert replayed.size == net.store.log_size()
    assert replayed.log_root == net.tlog.root()
    assert replayed.state == StateCommitment(len(net.store.state_items()), net.store.state_root())
    assert [c.size for c in replayed.checkpoints] == [report.size - 1, report.size]
    assert replayed.fraud_proofs == 1 and replayed.transactions == report.size - 2
    unsigned = replay_export(io.BytesIO(data), None)
    assert not any(c.signature_checked for c in unsigned.checkpoints)


@pytest.mark.slow
def test_export_every_byte_matters(net: LedgerNet) -> None:
    out = io.BytesIO()
    export_ledger(net.store, net.tlog, out, page_entries=4)
    data = out.getvalue()
    frame_parts = {P.CAR_FRAME, P.BLOCK_HASH, P.MANIFEST}
    seen: set[AuditPart] = set()
    for position, changed in flips(data, masks=(0x01,)):
        with pytest.raises(AuditError) as caught:
            replay(changed, net.vkey)
        assert caught.value.part in frame_parts, (position, str(caught.value))
        seen.add(caught.value.part)
    for _position, changed in flips(data, masks=(0x80, 0x10), step=7):
        with pytest.raises(AuditError):
            replay(changed, net.vkey)
    for length in range(0, len(data), 3):
        with pytest.raises(AuditError):
            replay(data[:length], net.vkey)
    with pytest.raises(AuditError) as caught:
        replay(data + data[-40:], net.vkey)
    assert caught.value.part in frame_parts
    assert {P.CAR_FRAME, P.BLOCK_HASH} <= seen


def _real_notes(net: LedgerNet) -> list[str]:
    return [net.tlog.last_checkpoint() or ""]


def expect(data: bytes, vkey: str | None, part: AuditPart, index: int | None = None) -> AuditError:
    with pytest.raises(AuditError) as caught:
        replay(data, vkey)
    assert caught.value.part == part, str(caught.value)
    if index is not None:
        assert caught.value.index == index, str(caught.value)
    return caught.value


def test_forged_exports_fail_at_the_forged_entry(net: LedgerNet) -> None:
    entries = list(net.store.iter_log())
    notes = _real_notes(net)
    assert replay(write_export(entries, notes, 5), net.vkey) is not None
    # A broken signature in entry 6 (hashes recomputed, so only replay can tell).
    bad_sig = entries.copy()
    bad_sig[6] = bad_sig[6][:-1] + bytes([bad_sig[6][-1] ^ 1])
    expect(write_export(bad_sig, notes, 5), net.vkey, P.ENTRY_SIGNATURE, 6)
    # Two transactions of one account (bob's tip and his buy) in the wrong order.
    bob = [i for i, e in enumerate(entries[1:], start=1)
           if not e.startswith(FRAUD_PROOF_PREFIX) and decode_tx(e).account == account("bob")]
    first, second = bob[0], bob[-1]
    assert decode_tx(entries[second]).seq > decode_tx(entries[first]).seq
    swapped = entries.copy()
    swapped[first], swapped[second] = swapped[second], swapped[first]
    expect(write_export(swapped, notes, 5), net.vkey, P.CHAIN_LINK, first)
    # A validly signed transaction that breaks the rules (an overdraft) in the last place:
    # ledger v2 admits it (it fails at its position, consuming its seq), so the export
    # replays, but not to the log (and state) the checkpoint signed.
    overdraft = AccountChain(key("pauper"), net.genesis.cid).sign(
        Op.TRANSFER, {"to": account("alice"), "amount": 1}, time_ms=1)
    broke = [*entries[:-1], overdraft]
    expect(write_export(broke, notes, 5), net.vkey, P.LOG_ROOT)
    # A transaction of another network.
    other = make_genesis(max_editions=7)
    foreign = AccountChain(key("issuer"), other.cid).sign(
        Op.ISSUE, {"to": account("alice"), "amount": 1}, time_ms=1)
    expect(write_export([*entries[:-1], foreign], notes, 5), net.vkey, P.NETWORK, len(entries) - 1)
    # Malformed bytes with a valid hash.
    expect(write_export([*entries[:-1], b"\xa2\x62tx\x00"], notes, 5), net.vkey, P.ENTRY,
           len(entries) - 1)


def _signed(net: LedgerNet, size: int, root: bytes, state: StateCommitment,
            origin: str | None = None) -> str:
    origin = origin or net.tlog.origin
    return Checkpoint(origin, size, root, (state.to_line(),)).sign(origin, LOG_KEY)


def test_forged_checkpoints_fail_at_the_root_they_forged(net: LedgerNet) -> None:
    entries = list(net.store.iter_log())
    honest = open_checkpoint(net.tlog.last_checkpoint() or "", net.vkey)
    size, root, state = honest.size, honest.root, honest.state
    wrong_root = _signed(net, size, bytes(32), state)
    expect(write_export(entries, [wrong_root], 5), net.vkey, P.LOG_ROOT)
    wrong_state = _signed(net, size, root, StateCommitment(state.leaves, bytes(32)))
    expect(write_export(entries, [wrong_state], 5), net.vkey, P.STATE_ROOT)
    wrong_count = _signed(net, size, root, StateCommitment(state.leaves + 1, state.root))
    expect(write_export(entries, [wrong_count], 5), net.vkey, P.STATE_ROOT)
    short = _signed(net, size - 1, root, state)
    expect(write_export(entries, [short], 5), net.vkey, P.MANIFEST)  # does not cover it all
    expect(write_export(entries, [honest.note, wrong_root], 5), net.vkey, P.CONSISTENCY)
    origin = ledger_origin(make_genesis(max_editions=7).cid, NODE)
    expect(write_export(entries, [_signed(net, size, root, state, origin)], 5),
           make_vkey(origin, LOG_KEY.verify_key), P.NETWORK)
    expect(write_export(entries, [honest.note], 5), make_vkey(net.tlog.origin, OTHER_KEY.verify_key),
           P.NOTE_SIGNATURE)
    # An earlier checkpoint whose root is not the log's at its size.
    early = _signed(net, 3, bytes(32), StateCommitment(1, bytes(32)))
    expect(write_export(entries, [early, honest.note], 5), net.vkey, P.LOG_ROOT)


# --- random damage: never a crash ----------------------------------------------------------------


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, bytes]]]:
    environment = open_env(tmp_path_factory.mktemp("artefacts"))
    net = LedgerNet(environment)
    history = build_history(net)
    old = net.tlog.checkpoint(LOG_KEY)
    net.fund("zed", 3)
    net.tlog.checkpoint(LOG_KEY)
    out = io.BytesIO()
    export_ledger(net.store, net.tlog, out, page_entries=3)
    files = {
        "inclusion": net.tlog.inclusion_bundle(history.transfer_id).encode(),
        "state": net.tlog.state_proof_bundle((history.asset, 1)).encode(),
        "consistency": net.tlog.consistency_bundle(open_checkpoint(old, net.vkey).size).encode(),
        "old": old.encode(),
        "export": out.getvalue(),
    }
    yield net.vkey, files
    environment.close()


def damage(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    """Apply (position, deleted length, inserted bytes) edits, positions taken modulo."""
    changed = bytearray(data)
    for position, deleted, inserted in edits:
        at = position % (len(changed) + 1)
        changed[at:at + deleted] = inserted
    return bytes(changed)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["inclusion", "state", "consistency", "export"]),
       st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 3), st.binary(max_size=3)),
                min_size=1, max_size=4))
def test_random_damage_is_an_audit_error_never_a_crash(
        artefacts: tuple[str, dict[str, bytes]], kind: str,
        edits: list[tuple[int, int, bytes]]) -> None:
    vkey, files = artefacts
    original = files[kind]
    changed = damage(original, edits)
    if changed == original:
        return
    with pytest.raises(AuditError):
        if kind == "export":
            replay(changed, vkey)
        elif kind == "consistency":
            verify_consistency(files["old"], changed, vkey)
        else:
            verify_bundle(changed, vkey)
