"""The implementation switch every compiled/pure twin shares (canon/twins.py), checked
in fresh interpreters for each twin: the Merkle tree, the ledger ingest loop and the state
tree."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

TWINS = [
    pytest.param("n3xus.canon.merkle", "n3xus.canon._merkle_c", id="merkle"),
    pytest.param("n3xus.ledger.ingest", "n3xus.ledger._ingest_c", id="ingest"),
    # The ingest selector imports _ingest_c, which needs each compiled part: a missing part
    # must switch (or, under N3XUS_REQUIRE_COMPILED=1, fail) exactly like a missing _ingest_c.
    pytest.param("n3xus.ledger.ingest", "n3xus.ledger._ingest_decode_c", id="ingest-decode"),
    pytest.param("n3xus.ledger.ingest", "n3xus.ledger._ingest_verify_c", id="ingest-verify"),
    pytest.param("n3xus.ledger.smt", "n3xus.ledger._smt_c", id="smt"),
]


def _import_in_subprocess(selector: str, env_updates: dict[str, str],
                          blocked: str | None = None) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("N3XUS_PURE_PYTHON", "N3XUS_REQUIRE_COMPILED")}
    env.update(env_updates)
    prelude = "" if blocked is None else (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name == {blocked!r}:\n"
        "            raise ImportError('blocked for the test')\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    code = prelude + f"import {selector} as m; print(m.IMPLEMENTATION)"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=120)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("selector, compiled", TWINS)
def test_environment_switches(selector: str, compiled: str) -> None:
    code, out = _import_in_subprocess(selector, {"N3XUS_PURE_PYTHON": "1"})
    assert code == 0 and out.strip() == "pure"
    code, out = _import_in_subprocess(selector, {"N3XUS_REQUIRE_COMPILED": "1"}, compiled)
    assert code != 0 and "N3XUS_REQUIRE_COMPILED=1" in out and "ImportError" in out
    code, out = _import_in_subprocess(selector, {}, compiled)
    assert code == 0 and out.strip() == "pure"
    code, out = _import_in_subprocess(selector, {"N3XUS_PURE_PYTHON": "1",
                                                 "N3XUS_REQUIRE_COMPILED": "1"})
    assert code != 0 and "contradict" in out
    try:
        importlib.import_module(compiled)
    except ImportError:
        return
    code, out = _import_in_subprocess(selector, {"N3XUS_REQUIRE_COMPILED": "1"})
    assert code == 0 and out.strip() == "compiled"
