"""IMVU agents: creator-owned agents with persona, canon memory, behavioral primitives
and local inference through llama-cpp-python (see :mod:`n3xus.imvu.inference`)."""
