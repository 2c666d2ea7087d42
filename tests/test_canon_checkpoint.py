"""C2SP signed notes, tlog checkpoints and tlog proofs (n3xus.canon.note / .checkpoint).

Interop is pinned with notes made by other implementations: the C2SP signed-note
example, Go's ``sumdb/note`` documentation example (signed byte for byte the same from
its signer key), and two real checkpoints of sum.golang.org.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from n3xus.canon import merkle
from n3xus.canon.checkpoint import (
    MAX_PROOF_HASHES,
    TLOG_PROOF_HEADER,
    Checkpoint,
    ProofBundle,
)
from n3xus.canon.errors import (
    CanonDecodeError,
    CanonError,
    LimitExceededError,
    VerificationError,
)
from n3xus.canon.note import (
    MAX_NOTE_BYTES,
    MAX_NOTE_SIGNATURES,
    NoteSigner,
    add_signature,
    key_id,
    make_vkey,
    open_note,
    parse_note,
    parse_vkey,
    sign_note,
    sign_note_with,
)

# c2sp.org/signed-note example.
C2SP_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
C2SP_NOTE = (
    "This is an example message.\n\n"
    "— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRK"
    "uwHjG1Yu72IneyaQM=\n"
)
# golang.org/x/mod/sumdb/note package documentation example.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = GO_TEXT + (
    "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngo"
    "tpRZb6KE6RyyBwJnAM=\n"
)
# The Go checksum database's key and two of its signed tree heads.
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_ORIGIN = "go.sum database tree"
SUMDB_CHECKPOINTS = [
    (
        31700353,
        "go.sum database tree\n31700353\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n\n"
        "— sum.golang.org Az3grnmrIUEDFqHzAElIQCPNoRFRAAdFo47fooyWKMHb89k11GJh5zHIfNCOBmwn/C3YI8oW9"
        "/C8DJ87F61QqspBYwM=\n",
    ),
    (
        65209736,
        "go.sum database tree\n65209736\n5+uGFjx6xBZG8ip1+wi77v+grwbhhukIrxEUS8PXvRo=\n\n"
        "— sum.golang.org Az3grnbssgK7ubgFX36gVETtNv0U23qxyAhAMai2QUfeGa3nB/akvkMdlUErfcZz7l/R3cVtY"
        "spg3dxXABkGZZKdsQ8=\n",
    ),
]

LOG = "log.n3xus.example/canon"
LOG_KEY = SigningKey(bytes(range(32)))
WITNESS = "witness.example/w1"
WITNESS_KEY = SigningKey(bytes(range(1, 33)))
LOG_VKEY = make_vkey(LOG, LOG_KEY.verify_key)
WITNESS_VKEY = make_vkey(WITNESS, WITNESS_KEY.verify_key)


# ------------------------------------------------------------------ signed notes


def test_c2sp_example_verifies() -> None:
    assert open_note(C2SP_NOTE, [C2SP_VKEY]) == (
        "This is an example message.\n",
        ("example.com/foo",),
    )
    assert open_note(C2SP_NOTE.encode(), C2SP_VKEY)[1] == ("example.com/foo",)


def test_go_signer_key_signs_byte_for_byte_like_go() -> None:
    signer = NoteSigner.from_skey(GO_SKEY)
    assert signer.vkey == GO_VKEY
    assert sign_note_with(GO_TEXT, signer) == GO_NOTE
    assert signer.to_skey() == GO_SKEY
    assert "AYEKFALV" not in repr(signer)  # the seed never prints
    assert open_note(GO_NOTE, [GO_VKEY]) == (GO_TEXT, ("PeterNeumann",))


@pytest.mark.parametrize(("size", "note"), SUMDB_CHECKPOINTS)
def test_real_sumdb_checkpoints_verify(size: int, note: str) -> None:
    checkpoint, names = Checkpoint.open(note, SUMDB_VKEY, origin=SUMDB_ORIGIN)
    assert checkpoint.size == size and len(checkpoint.root_hash) == 32
    assert names == ("sum.golang.org",)
    with pytest.raises(VerificationError):
        Checkpoint.open(note.replace(str(size), str(size + 1)), SUMDB_VKEY, origin=SUMDB_ORIGIN)
    with pytest.raises(VerificationError, match="origin"):
        Checkpoint.open(note, SUMDB_VKEY)  # origin is not the key name here


def test_key_ids_and_vkeys() -> None:
    public = bytes(LOG_KEY.verify_key)
    assert key_id(LOG, public) == int.from_bytes(
        hashlib.sha256(LOG.encode() + b"\n\x01" + public).digest()[:4], "big"
    )
    verifier = parse_vkey(LOG_VKEY)
    assert (verifier.name, verifier.public_key, verifier.vkey) == (LOG, public, LOG_VKEY)
    sumdb = parse_vkey(SUMDB_VKEY)  # its base64 key holds "+" signs
    assert sumdb.name == "sum.golang.org" and sumdb.key_id == 0x033DE0AE


@pytest.mark.parametrize(
    "vkey",
    [
        "",
        "example.com/foo",
        "example.com/foo+530d903a",
        "example.com/foo+530D903A+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        "example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        "example.com/foo+530d903+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        "example.com/bar+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        "example.com/foo+530d903a+AukyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2",
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2l",
        "example com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
        "+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
    ],
)
def test_malformed_vkeys_are_rejected(vkey: str) -> None:
    with pytest.raises(CanonDecodeError):
        parse_vkey(vkey)


def test_unknown_signatures_are_ignored_and_known_ones_must_verify() -> None:
    signed = sign_note("hello\n", LOG, LOG_KEY)
    cosigned = add_signature(signed, WITNESS, WITNESS_KEY)
    assert open_note(cosigned, [LOG_VKEY]) == ("hello\n", (LOG,))
    assert open_note(cosigned, [WITNESS_VKEY, LOG_VKEY]) == ("hello\n", (LOG, WITNESS))
    with pytest.raises(VerificationError, match="no signature from a trusted key"):
        open_note(signed, [WITNESS_VKEY])
    with pytest.raises(VerificationError):
        open_note(signed, [])
    # Same name, other key: an unknown key, ignored; nothing trusted remains.
    impostor = make_vkey(LOG, WITNESS_KEY.verify_key)
    with pytest.raises(VerificationError, match="no signature from a trusted key"):
        open_note(signed, [impostor])
    # A signature by a trusted key that fails rejects the whole note.
    parsed = parse_note(cosigned)
    bad = parsed.signatures[0]
    forged = type(parsed)(
        parsed.text,
        (
            type(bad)(bad.name, bad.key_id, bytes([bad.signature[0] ^ 1]) + bad.signature[1:]),
            parsed.signatures[1],
        ),
    )
    with pytest.raises(VerificationError, match="does not verify"):
        open_note(forged.to_text(), [LOG_VKEY, WITNESS_VKEY])
    # Re-signing with the same key replaces its signature instead of duplicating it.
    assert len(parse_note(add_signature(cosigned, LOG, LOG_KEY)).signatures) == 2


def test_duplicate_trusted_keys_are_harmless_and_ids_are_checked() -> None:
    other = parse_vkey(LOG_VKEY)
    twin = type(other)(other.name, other.key_id, other.public_key)
    assert open_note(sign_note("x\n", LOG, LOG_KEY), [other, twin])[1] == (LOG,)
    with pytest.raises(ValueError):
        type(other)(other.name, other.key_id ^ 1, other.public_key)


GOOD_SIG = "— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM="


@pytest.mark.parametrize(
    "note",
    [
        "This is an example message.\n" + GOOD_SIG + "\n",  # no blank line
        "This is an example message.\n\n" + GOOD_SIG,  # no final newline
        "This is an example message.\n\n",  # no signatures
        "This is\tan example message.\n\n" + GOOD_SIG + "\n",  # control character
        "This is an example message.\r\n\n" + GOOD_SIG + "\n",
        "This is an example message.\n\n- example.com/foo AAAAAAAA\n",  # hyphen, not em dash
        "This is an example message.\n\n—example.com/foo AAAAAAAA\n",
        "This is an example message.\n\n— example.com/foo\n",
        "This is an example message.\n\n— example.com/foo \n",
        "This is an example message.\n\n— example.com/foo AAAA\n",  # 3 bytes: too short
        "This is an example message.\n\n— example.com/foo AAAAAAB=\n",  # non-canonical
        "This is an example message.\n\n— example.com/foo AAAAAAAA=\n",
        "This is an example message.\n\n— example.com/foo AAAA AAAA\n",
        "This is an example message.\n\n— example.com+foo AAAAAAAA\n",
        "This is an example message.\n\n— \u00a0 AAAAAAAA\n",
        "This is an example message.\n\n" + GOOD_SIG + "\n\n",
        "This is an example message.\n\n\ud800 AAAAAAAA\n",
    ],
)
def test_malformed_notes_are_decode_errors(note: str) -> None:
    with pytest.raises(CanonDecodeError):
        open_note(note, [C2SP_VKEY])


def test_note_limits() -> None:
    with pytest.raises(CanonDecodeError):
        open_note(b"caf\xc3\n\n" + GOOD_SIG.encode() + b"\n", [C2SP_VKEY])
    many = "x\n\n" + (GOOD_SIG + "\n") * (MAX_NOTE_SIGNATURES + 1)
    with pytest.raises(LimitExceededError):
        open_note(many, [C2SP_VKEY])
    big = "x" * MAX_NOTE_BYTES + "\n\n" + GOOD_SIG + "\n"
    with pytest.raises(LimitExceededError):
        open_note(big, [C2SP_VKEY])
    with pytest.raises(ValueError, match="newline"):
        sign_note("no newline", LOG, LOG_KEY)
    with pytest.raises(ValueError):
        sign_note("x\n", "bad name", LOG_KEY)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_corrupted_notes_fail_cleanly(data: st.DataObject) -> None:
    note = add_signature(
        sign_note("a log\n7\n" + "q" * 44 + "\n", LOG, LOG_KEY), WITNESS, WITNESS_KEY
    ).encode()
    if data.draw(st.booleans()):
        corrupted = note[: data.draw(st.integers(0, len(note) - 1))]
    else:
        position = data.draw(st.integers(0, len(note) - 1))
        bit = data.draw(st.integers(0, 7))
        corrupted = note[:position] + bytes([note[position] ^ (1 << bit)]) + note[position + 1 :]
    try:
        text, names = open_note(corrupted, [LOG_VKEY])
    except CanonError:
        return
    # Only a change outside the log's signature can leave the note valid.
    assert text == "a log\n7\n" + "q" * 44 + "\n" and names == (LOG,)
    assert parse_note(corrupted).signatures[0] == parse_note(note).signatures[0]


# ------------------------------------------------------------------- checkpoints

ROOT = bytes(range(32))


def test_checkpoint_text_format() -> None:
    checkpoint = Checkpoint(LOG, 20852163, ROOT, ("ext one", "ext two"))
    text = checkpoint.to_text()
    assert text == f"{LOG}\n20852163\n{base64.b64encode(ROOT).decode()}\next one\next two\n"
    assert Checkpoint.parse(text) == checkpoint
    assert Checkpoint.parse(Checkpoint(LOG, 0, ROOT).to_text()).size == 0


@pytest.mark.parametrize(
    "text",
    [
        f"{LOG}\n01\n{base64.b64encode(ROOT).decode()}\n",
        f"{LOG}\n+1\n{base64.b64encode(ROOT).decode()}\n",
        f"{LOG}\n-1\n{base64.b64encode(ROOT).decode()}\n",
        f"{LOG}\n1_000\n{base64.b64encode(ROOT).decode()}\n",
        f"{LOG}\n 1\n{base64.b64encode(ROOT).decode()}\n",
        f"{LOG}\n\u0661\u0662\n{base64.b64encode(ROOT).decode()}\n",
        f"{LOG}\n18446744073709551616\n{base64.b64encode(ROOT).decode()}\n",
        f"{LOG}\n\n{base64.b64encode(ROOT).decode()}\n",
        f"{LOG}\n5\n{base64.b64encode(ROOT[:31]).decode()}\n",
        f"{LOG}\n5\n{base64.b64encode(ROOT).decode().rstrip('=')}\n",
        f"{LOG}\n5\n{base64.b64encode(ROOT).decode()}",
        f"{LOG}\n5\n",
        f"\n5\n{base64.b64encode(ROOT).decode()}\n",
        f"{LOG}\n5\n{base64.b64encode(ROOT).decode()}\n\n",
        f"{LOG}\n5\n{base64.b64encode(ROOT).decode()}\next\n\nmore\n",
        f"{LOG}\x01\n5\n{base64.b64encode(ROOT).decode()}\n",
    ],
)
def test_malformed_checkpoints_are_rejected(text: str) -> None:
    with pytest.raises(CanonDecodeError):
        Checkpoint.parse(text)


line_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)


@settings(max_examples=200, deadline=None)
@given(
    line_text,
    st.integers(0, 2**64 - 1),
    st.binary(min_size=32, max_size=32),
    st.lists(line_text, max_size=3),
)
def test_checkpoint_round_trip(origin: str, size: int, root: bytes, extensions: list[str]) -> None:
    checkpoint = Checkpoint(origin, size, root, tuple(extensions))
    assert Checkpoint.parse(checkpoint.to_text()) == checkpoint
    assert Checkpoint.parse(checkpoint.to_text().encode()) == checkpoint


def test_checkpoint_open_requires_the_log_key() -> None:
    checkpoint = Checkpoint(LOG, 3, ROOT)
    signed = checkpoint.sign(LOG, LOG_KEY)
    cosigned = add_signature(signed, WITNESS, WITNESS_KEY)
    assert Checkpoint.open(cosigned, LOG_VKEY, cosigner_keys=[WITNESS_VKEY]) == (
        checkpoint,
        (LOG, WITNESS),
    )
    assert Checkpoint.open(signed, LOG_VKEY) == (checkpoint, (LOG,))
    witness_only = sign_note(checkpoint.to_text(), WITNESS, WITNESS_KEY)
    with pytest.raises(VerificationError):
        Checkpoint.open(witness_only, LOG_VKEY, cosigner_keys=[WITNESS_VKEY])
    other = Checkpoint("other.example/log", 3, ROOT).sign(LOG, LOG_KEY)
    with pytest.raises(VerificationError, match="origin"):
        Checkpoint.open(other, LOG_VKEY)
    assert Checkpoint.open(other, LOG_VKEY, origin="other.example/log")[0].size == 3


# -------------------------------------------------------------------- tlog proofs


def _bundle(extra: bytes | None = b"artifact v1") -> tuple[ProofBundle, list[bytes], int]:
    entries = [f"entry {i}".encode() for i in range(100)]
    tree = merkle.MerkleTree(merkle.BLAKE3, [merkle.BLAKE3.leaf_hash(e) for e in entries])
    signed = Checkpoint(LOG, tree.size, tree.root()).sign(LOG, LOG_KEY)
    signed = add_signature(signed, WITNESS, WITNESS_KEY)
    bundle = ProofBundle(37, tuple(tree.inclusion_proof(37)), signed, extra)
    return bundle, entries, 37


def test_bundle_text_layout_and_round_trip() -> None:
    bundle, _, _ = _bundle()
    text = bundle.to_text()
    lines = text.split("\n")
    assert lines[0] == TLOG_PROOF_HEADER
    assert lines[1] == "extra " + base64.b64encode(b"artifact v1").decode()
    assert lines[2] == "index 37"
    assert lines[3 : 3 + len(bundle.proof)] == [base64.b64encode(h).decode() for h in bundle.proof]
    assert text.endswith("\n\n" + bundle.signed_checkpoint)
    assert ProofBundle.parse(text) == bundle
    plain, _, _ = _bundle(extra=None)
    assert "extra" not in plain.to_text() and ProofBundle.parse(plain.to_text()) == plain
    empty_extra, _, _ = _bundle(extra=b"")
    assert ProofBundle.parse(empty_extra.to_text()).extra == b""


def test_bundle_verifies_the_entry() -> None:
    bundle, entries, index = _bundle()
    checkpoint = bundle.verify(LOG_VKEY, merkle.BLAKE3, entry=entries[index])
    assert checkpoint.size == 100
    bundle.verify(
        LOG_VKEY,
        merkle.BLAKE3,
        leaf_hash=merkle.BLAKE3.leaf_hash(entries[index]),
        cosigner_keys=[WITNESS_VKEY],
        min_cosigners=1,
    )
    with pytest.raises(VerificationError):
        bundle.verify(LOG_VKEY, merkle.BLAKE3, entry=entries[index + 1])
    with pytest.raises(VerificationError):
        bundle.verify(LOG_VKEY, merkle.SHA256, entry=entries[index])  # other tree hash
    with pytest.raises(VerificationError):
        bundle.verify(WITNESS_VKEY, merkle.BLAKE3, entry=entries[index])
    with pytest.raises(VerificationError, match="cosignatures"):
        bundle.verify(LOG_VKEY, merkle.BLAKE3, entry=entries[index], min_cosigners=1)
    with pytest.raises(TypeError):
        bundle.verify(LOG_VKEY, merkle.BLAKE3)


def test_sha256_bundle_single_leaf() -> None:
    tree = merkle.MerkleTree(merkle.SHA256, [merkle.SHA256.leaf_hash(b"only")])
    signed = Checkpoint(LOG, 1, tree.root()).sign(LOG, LOG_KEY)
    bundle = ProofBundle.parse(ProofBundle(0, (), signed).to_text())
    assert bundle.proof == () and bundle.verify(LOG_VKEY, merkle.SHA256, entry=b"only").size == 1


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t.replace(TLOG_PROOF_HEADER, "c2sp.org/tlog-proof@v2"),
        lambda t: t.replace("index 37", "index 037"),
        lambda t: t.replace("index 37", "index -37"),
        lambda t: t.replace("index 37", "idx 37"),
        lambda t: t.replace("index 37\n", ""),
        lambda t: t.replace("extra ", "extra !"),
        lambda t: t.replace("\n\n", "\n", 1),
        lambda t: t.split("\n\n", 1)[0] + "\n\n",
        lambda t: t.replace("index 37\n", "index 37\n" + "A" * 42 + "B=\n"),
        lambda t: t.replace(
            "index 37\n", "index 37\n" + base64.b64encode(bytes(64)).decode() + "\n"
        ),
        lambda t: t.replace(
            "index 37\n",
            "index 37\n" + (base64.b64encode(bytes(32)).decode() + "\n") * (MAX_PROOF_HASHES + 1),
        ),
        lambda t: t.replace(f"{LOG}\n100\n", f"{LOG}\n100x\n"),
    ],
)
def test_malformed_bundles_are_rejected(mangle: Callable[[str], str]) -> None:
    bundle, _, _ = _bundle()
    text = mangle(bundle.to_text())
    with pytest.raises((CanonDecodeError, LimitExceededError)):
        ProofBundle.parse(text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_corrupted_bundles_fail_cleanly(data: st.DataObject) -> None:
    bundle, entries, index = _bundle()
    raw = bundle.to_text().encode()
    if data.draw(st.booleans()):
        corrupted = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        position = data.draw(st.integers(0, len(raw) - 1))
        bit = data.draw(st.integers(0, 7))
        corrupted = raw[:position] + bytes([raw[position] ^ (1 << bit)]) + raw[position + 1 :]
    try:
        parsed = ProofBundle.parse(corrupted)
        parsed.verify(LOG_VKEY, merkle.BLAKE3, entry=entries[index])
    except CanonError:
        return
    # The extra data is not authenticated; everything else must be intact.
    assert (parsed.index, parsed.proof) == (bundle.index, bundle.proof)
    assert parse_note(parsed.signed_checkpoint).text == parse_note(bundle.signed_checkpoint).text
