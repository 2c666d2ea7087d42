"""ipld/codec-fixtures DAG-CBOR vectors (see /work/shared/conformance/README.md).

Every ``fixtures/<name>/<CID>.dag-cbor`` must decode strictly, re-encode byte for byte, and
hash (sha2-256, CIDv1 dag-cbor) to the CID in its file name; every ``negative/decode`` entry
must be refused. Each fixture and each negative entry is its own test id.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from n3xus.canon import CID, CanonDecodeError, LimitExceededError, cid_of, decode, encode
from n3xus.canon.codec import decode_exact


def conformance_dir() -> Path:
    configured = os.environ.get("N3XUS_CONFORMANCE_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[1].parent / "shared" / "conformance"


DAG_CBOR_DIR = conformance_dir() / "dag-cbor"
MISSING = pytest.mark.skip(reason=f"conformance vectors not found at {DAG_CBOR_DIR} "
                                  "(set N3XUS_CONFORMANCE_DIR)")


def fixture_params() -> list[Any]:
    files = sorted(DAG_CBOR_DIR.glob("fixtures/*/*.dag-cbor"))
    if not files:
        return [pytest.param(None, id="no-fixtures", marks=MISSING)]
    return [pytest.param(path, id=path.parent.name) for path in files]


def link_fixture_params() -> list[Any]:
    """Fixtures ``cid-<text>`` whose block is the single link ``<text>``."""
    params = [
        pytest.param(path, path.parent.name.removeprefix("cid-"), id=path.parent.name)
        for path in sorted(DAG_CBOR_DIR.glob("fixtures/cid-*/*.dag-cbor"))
        if path.parent.name not in ("cid-arrayof", "cid-mapof")
    ]
    return params or [pytest.param(None, "", id="no-fixtures", marks=MISSING)]


def negative_params() -> list[Any]:
    params = []
    for path in sorted(DAG_CBOR_DIR.glob("negative/decode/*.json")):
        for entry in json.loads(path.read_text()):
            params.append(pytest.param(entry, id=f"{path.stem}/{entry['name']}"))
    return params or [pytest.param(None, id="no-negative-vectors", marks=MISSING)]


@pytest.mark.parametrize("path", fixture_params())
def test_fixture_round_trips_and_hashes_to_its_name(path: Path) -> None:
    data = path.read_bytes()
    value = decode(data)
    assert encode(value) == data
    exact = decode_exact(data)
    assert encode(exact) == data
    assert cid_of(data, hash="sha2-256") == CID(path.stem)
    assert cid_of(data, hash="sha2-256", codec="dag-cbor").codec_name == "dag-cbor"
    assert str(cid_of(data, hash="sha2-256")) == path.stem


@pytest.mark.parametrize(("path", "text"), link_fixture_params())
def test_fixture_named_after_a_cid_holds_that_link(path: Path, text: str) -> None:
    # Written by other implementations: our text parser and our binary parser must agree.
    link = decode(path.read_bytes())
    assert link == CID(text)
    if text.startswith(("b", "Qm")):
        assert str(link) == text


@pytest.mark.parametrize("entry", negative_params())
def test_negative_vector_is_refused(entry: dict[str, str]) -> None:
    data = bytes.fromhex(entry["hex"])
    for decoder in (decode, decode_exact):
        with pytest.raises((CanonDecodeError, LimitExceededError)):
            decoder(data)
