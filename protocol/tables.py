"""Markdown renderings of the tables that are data in the code (state transitions, error
codes, limits), for the specs. A spec embeds each one between ``<!-- table: NAME -->`` and
``<!-- end table -->``; ``tests/test_protocol_spec_tables.py`` regenerates them and compares,
so a table in the text cannot drift from the table the code runs. To update the specs after
a change: ``python -m n3xus.protocol.tables --write``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

START_MARK = "<!-- table: {name} -->"
END_MARK = "<!-- end table -->"


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _name(value: Any) -> str:
    return f"`{value.value}`" if isinstance(value, Enum) else f"`{value}`"


def transition_table(table: Mapping[tuple[Any, Any], tuple[Any, Any]]) -> str:
    """A state machine's (state, input) -> (action, next state) table, in table order."""
    rows = [(_name(state), _name(event), _name(action), _name(after))
            for (state, event), (action, after) in table.items()]
    return markdown_table(["state", "input", "action", "next state"], rows)


def limits_table(limits: Sequence[tuple[str, int | float, str]]) -> str:
    return markdown_table(["name", "value", "reason"],
                          [(f"`{name}`", f"{value:,}" if isinstance(value, int) else str(value), why)
                           for name, value, why in limits])


def spec_tables() -> dict[str, tuple[str, Callable[[], str]]]:
    """Every generated table: name -> (spec file under specs/, renderer)."""
    from .blocks import BLOCKS_LIMITS
    from .codes import error_code_table
    from .framing_limits import FRAMING_LIMITS
    from .hello import HELLO_LIMITS, INITIATOR_TRANSITIONS, RESPONDER_TRANSITIONS
    from .sync.session import LEDGER_SYNC_LIMITS, transition_rows
    from .witness_wire import (
        REQUESTER_TRANSITIONS,
        WITNESS_LIMITS,
        witness_table,
    )
    from .witness_wire import RESPONDER_TRANSITIONS as WITNESS_RESPONDER

    return {
        "error-codes": ("protocol.md", lambda: markdown_table(
            ["code", "name", "protocols", "meaning"], error_code_table())),
        "framing-limits": ("protocol.md", lambda: limits_table(FRAMING_LIMITS)),
        "hello-initiator": ("protocol-hello.md", lambda: transition_table(INITIATOR_TRANSITIONS)),
        "hello-responder": ("protocol-hello.md", lambda: transition_table(RESPONDER_TRANSITIONS)),
        "hello-limits": ("protocol-hello.md", lambda: limits_table(HELLO_LIMITS)),
        "blocks-limits": ("protocol-blocks.md", lambda: limits_table(BLOCKS_LIMITS)),
        "witness-requester": ("protocol-witness.md", lambda: markdown_table(
            ["state", "input", "next state"], _quoted(witness_table(REQUESTER_TRANSITIONS)))),
        "witness-responder": ("protocol-witness.md", lambda: markdown_table(
            ["state", "input", "next state"], _quoted(witness_table(WITNESS_RESPONDER)))),
        "witness-limits": ("protocol-witness.md", lambda: limits_table(WITNESS_LIMITS)),
        "ledger-sync-transitions": ("protocol-ledger-sync.md", lambda: markdown_table(
            ["role", "state", "received", "next state"], transition_rows())),
        "ledger-sync-limits": ("protocol-ledger-sync.md", lambda: limits_table(LEDGER_SYNC_LIMITS)),
    }


def _quoted(rows: Iterable[Sequence[str]]) -> list[list[str]]:
    return [[f"`{cell}`" for cell in row] for row in rows]


def embedded(text: str, name: str) -> str | None:
    """The table embedded in a spec's text under ``name`` (None when absent)."""
    pattern = re.escape(START_MARK.format(name=name)) + r"\n(.*?)\n" + re.escape(END_MARK)
    found = re.search(pattern, text, re.S)
    return None if found is None else found.group(1)


def rewrite(text: str, name: str, table: str) -> str:
    pattern = re.escape(START_MARK.format(name=name)) + r"\n.*?\n" + re.escape(END_MARK)
    replacement = START_MARK.format(name=name) + "\n" + table + "\n" + END_MARK
    return re.sub(pattern, lambda _match: replacement, text, count=1, flags=re.S)


def write_specs(specs_dir: Path) -> list[str]:
    """Regenerate every embedded table in place; answers the names rewritten."""
    changed = []
    for name, (filename, render) in spec_tables().items():
        path = specs_dir / filename
        text = path.read_text(encoding="utf-8")
        updated = rewrite(text, name, render())
        if updated != text:
            path.write_text(updated, encoding="utf-8")
            changed.append(name)
    return changed


if __name__ == "__main__":  # pragma: no cover - a maintainer's tool
    specs = Path(__file__).resolve().parent.parent / "specs"
    if sys.argv[1:] == ["--write"]:
        print("rewrote:", ", ".join(write_specs(specs)) or "nothing")
    else:
        for name, (filename, render) in spec_tables().items():
            print(f"## {name} ({filename})\n{render()}\n")
