"""Choosing between a compiled extension and its pure-Python twin (same names, same
results). One rule for every twin in n3xus:

- ``N3XUS_PURE_PYTHON=1`` forces the pure twin;
- ``N3XUS_REQUIRE_COMPILED=1`` makes a missing or broken extension an ImportError
  (CI sets it, so a failed build can never silently test the slow path twice);
- otherwise the compiled twin when it imports, else the pure one.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Literal

PURE_ENV = "N3XUS_PURE_PYTHON"
REQUIRE_COMPILED_ENV = "N3XUS_REQUIRE_COMPILED"

Implementation = Literal["compiled", "pure"]


def select_twin(compiled: str, pure: str, what: str) -> tuple[ModuleType, Implementation]:
    """Import ``compiled`` or ``pure`` (dotted module names) by the rule above."""
    force_pure = os.environ.get(PURE_ENV) == "1"
    require_compiled = os.environ.get(REQUIRE_COMPILED_ENV) == "1"
    if force_pure and require_compiled:
        raise ImportError(f"{PURE_ENV}=1 and {REQUIRE_COMPILED_ENV}=1 contradict each other")
    if not force_pure:
        try:
            return importlib.import_module(compiled), "compiled"
        except ImportError as exc:
            if require_compiled:
                raise ImportError(
                    f"{REQUIRE_COMPILED_ENV}=1 but the compiled {what} extension {compiled} "
                    f"cannot be imported ({exc}); build it with "
                    "`python setup.py build_ext --inplace` or unset the variable"
                ) from exc
    return importlib.import_module(pure), "pure"
