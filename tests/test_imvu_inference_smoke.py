"""Smoke test of local inference: the real bundled GGUF through llama-cpp-python.

It runs in a child process: a llama.cpp build with broken CPU kernels (e.g. AMX-INT8
on these machines) dies with SIGSEGV/SIGILL on multi-token batches, and that must
show up as a clear test failure, not take the whole test run down.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from n3xus.imvu.inference import BUNDLED_MODEL_PACKAGE, bundled_model_path

CHILD = textwrap.dedent(
    """
    import json, sys
    from n3xus.imvu.inference import ModelSettings, bundled_model_path, generate, load_model
    model = load_model(ModelSettings(bundled_model_path(), context_tokens=512, batch_tokens=64, threads=2))
    prompt = "The capital of France is Paris. The capital of Italy is"
    tokens = model.tokenize(prompt.encode())
    text, n_prompt, n_out = generate(model, prompt, 8)
    again, _, _ = generate(model, prompt, 8)
    print(json.dumps({"prompt_tokens": n_prompt, "tokenized": len(tokens),
                      "completion_tokens": n_out, "text": text, "again": again}))
    """
)


def test_bundled_model_is_the_installed_gguf() -> None:
    path = bundled_model_path()
    assert path.suffix == ".gguf" and path.stat().st_size > 50_000_000
    assert "site-packages" in str(path) or BUNDLED_MODEL_PACKAGE.replace("-", "_") in str(path)
    with path.open("rb") as f:
        assert f.read(4) == b"GGUF"


def test_generates_with_a_multi_token_batch() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, (
        f"inference child died with code {proc.returncode} (negative = signal). If it is "
        "-11 or -4, llama-cpp-python was built with broken CPU kernels: reinstall it as the "
        "README says (pip install --force-reinstall --no-cache-dir llama-cpp-python with "
        f"CFLAGS/CXXFLAGS=-mno-amx-int8).\nstderr tail:\n{proc.stderr[-2000:]}"
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # The prompt is decoded as one batch of many tokens: the path that crashed.
    assert result["prompt_tokens"] == result["tokenized"] > 1
    assert result["completion_tokens"] > 0
    assert result["text"].strip(), "the model produced only whitespace"
    # Greedy decoding is deterministic: the same prompt gives the same text.
    assert result["again"] == result["text"]
