"""The signature-check twins (compiled ``_ingest_verify_c``, pure ``_ingest_verify_py``) give
the single check's verdicts for every batch and any number of threads, forged and
non-canonical signatures included.

"compiled" is skipped only when the extension is not built (never under
``N3XUS_REQUIRE_COMPILED=1``, where a missing extension fails the test).
"""

from __future__ import annotations

from types import ModuleType

import pytest
from ingest_twin_support import (
    IMPLEMENTATIONS,
    VERIFY_C,
    admitted_txs,
    load_impl,
    scripted_history,
    with_signature,
)

from n3xus.ledger import _ingest_py, _ingest_verify_py
from n3xus.ledger.tx import (
    decode_tx,
)


@pytest.fixture(params=IMPLEMENTATIONS)
def impl(request: pytest.FixtureRequest) -> ModuleType:
    if request.param == "pure":
        return _ingest_verify_py
    return load_impl("compiled", VERIFY_C)


def test_verify_signatures_matches_the_single_check(impl: ModuleType) -> None:
    """The batch check (one GIL release for the list in the compiled twin) gives exactly
    the single check's verdicts, forged and non-canonical signatures included."""
    genesis, entries = scripted_history()
    txs = admitted_txs(genesis, entries, False)
    forged = decode_tx(with_signature(txs[0].raw, bytes(64)))
    flipped = bytearray(txs[1].raw)
    flipped[-1] ^= 1
    txs += [forged, decode_tx(bytes(flipped))]
    expected = [_ingest_py.verify_signature(tx) for tx in txs]
    assert True in expected and False in expected
    assert impl.verify_signatures(txs) == expected
    assert impl.verify_signatures(iter(txs[::-1])) == expected[::-1]
    assert impl.verify_signatures([]) == []
    for threads in (0, 1, 2, 3, len(txs) + 5):  # native threads in the compiled twin
        assert impl.verify_signatures_async(txs, threads).wait() == expected
        pending = impl.verify_signatures_async(txs * 3, threads)
        assert pending.wait() == expected * 3 and pending.wait() == expected * 3
    assert impl.verify_signatures_async([], 2).wait() == []
    del pending  # dropped before waiting: joins its threads first
    impl.verify_signatures_async(txs * 5, 2)


