"""Structured actions: the only thing an agent's model may produce.

The model's output is constrained by a llama.cpp grammar built from a JSON schema of the
actions its manifest allows (:func:`action_schema`), then parsed strictly here
(:func:`parse_action`): one JSON object, no duplicate keys, no floats, exactly the fields
of its kind, every value in range. Nothing parses free text. Whatever fails is an
:class:`~n3xus.imvu.errors.ActionError`; the runtime records it as a refusal and executes
nothing.

An action has the same shape in JSON (model output) and in DAG-CBOR (the action block a
decision links): ``{"action": kind, <the kind's fields>}``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from n3xus.canon.cid import CID, cid_of
from n3xus.canon.codec import encode

from ._schema import Checker
from .errors import ActionError


class Kind(StrEnum):
    """Action kinds (specs/imvu.md §4). Never renumbered or reused."""

    REPLY = "reply"
    TIP = "tip"
    PAY = "pay"
    READ_WORLD = "read_world"
    PROPOSE_WORLD_EDIT = "propose_world_edit"
    READ_BALANCE = "read_balance"
    WRITE_MEMORY = "write_memory"
    MESSAGE_AGENT = "message_agent"


class Tool(StrEnum):
    """Tools an action needs; a manifest lists the tools its agent may use."""

    LEDGER_PAY = "ledger.pay"
    LEDGER_BALANCE = "ledger.balance"
    WORLD_READ = "world.read"
    WORLD_EDIT = "world.edit"
    MEMORY_WRITE = "memory.write"
    AGENT_MESSAGE = "agent.message"


# The tool each kind uses; a reply uses none.
TOOL_OF: Final[Mapping[Kind, Tool | None]] = {
    Kind.REPLY: None,
    Kind.TIP: Tool.LEDGER_PAY,
    Kind.PAY: Tool.LEDGER_PAY,
    Kind.READ_WORLD: Tool.WORLD_READ,
    Kind.PROPOSE_WORLD_EDIT: Tool.WORLD_EDIT,
    Kind.READ_BALANCE: Tool.LEDGER_BALANCE,
    Kind.WRITE_MEMORY: Tool.MEMORY_WRITE,
    Kind.MESSAGE_AGENT: Tool.AGENT_MESSAGE,
}
# Kinds that move money: checked against payees, the spend limit and the escalation threshold.
SPENDING_KINDS: Final = frozenset({Kind.TIP, Kind.PAY})

# Fields of each kind, in the order the grammar makes the model write them (short,
# decisive fields first: a truncated output then fails on a late text, not on the amount).
FIELDS: Final[Mapping[Kind, tuple[str, ...]]] = {
    Kind.REPLY: ("text",),
    Kind.TIP: ("to", "amount"),
    Kind.PAY: ("to", "amount"),
    Kind.READ_WORLD: ("world", "key"),
    Kind.PROPOSE_WORLD_EDIT: ("world", "key", "value"),
    Kind.READ_BALANCE: (),
    Kind.WRITE_MEMORY: ("text",),
    Kind.MESSAGE_AGENT: ("to", "text"),
}

# A reply, fact or message is a few sentences; the bound keeps outputs (and the tokens the
# grammar lets the model spend) small and every text field fits a log line.
MAX_TEXT_CHARS: Final = 400
# Payee and contact names, as the manifest spells them.
NAME_PATTERN: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
MAX_NAME_CHARS: Final = 32
# World names and keys follow canon-world.md; these bounds are the world's own.
MAX_WORLD_CHARS: Final = 128
MAX_KEY_CHARS: Final = 256
WORLD_KEY_PATTERN: Final = re.compile(r"[A-Za-z0-9._/:-]{1,256}")
# Amounts are ledger amounts (ledger.md: 1 .. 2^63-1).
MAX_AMOUNT: Final = 2**63 - 1
# Model output longer than this is not parsed at all (the grammar and max_tokens keep a
# real output far shorter; this bounds the work a hostile string can cause).
MAX_OUTPUT_CHARS: Final = 4096
# Text fields may hold newlines and tabs; other control characters are refused so a value
# can never carry terminal escapes or NULs into a log or a world.
_CONTROL: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True)
class Action:
    """One proposed action. Fields a kind does not have stay at their defaults."""

    kind: Kind
    text: str = ""
    to: str = ""
    amount: int = 0
    world: str = ""
    key: str = ""
    value: str = ""

    @property
    def tool(self) -> Tool | None:
        return TOOL_OF[self.kind]

    @property
    def spends(self) -> bool:
        return self.kind in SPENDING_KINDS

    def to_map(self) -> dict[str, Any]:
        return {"action": self.kind.value, **{name: getattr(self, name) for name in FIELDS[self.kind]}}

    def to_block(self) -> bytes:
        return encode(self.to_map())

    @property
    def cid(self) -> CID:
        return cid_of(self.to_block())

    def to_json(self) -> str:
        return json.dumps(self.to_map(), ensure_ascii=False, separators=(",", ":"))

    def texts(self) -> list[str]:
        """The free-text fields: what the content rules are checked against."""
        return [getattr(self, name) for name in FIELDS[self.kind] if name in ("text", "value")]


def action_from_map(value: Any, error: type[ValueError] = ActionError) -> Action:
    """Check a decoded map (from JSON or DAG-CBOR) and build the action."""
    check = Checker(error, "action")
    if type(value) is not dict or type(value.get("action")) is not str:
        check.fail('an action is a map with a text "action"')
    try:
        kind = Kind(value["action"])
    except ValueError:
        check.fail(f"unknown action kind {value['action']!r}")
    check.mapping(value, ("action", *FIELDS[kind]), kind.value)
    fields: dict[str, Any] = {}
    for name in FIELDS[kind]:
        raw = value[name]
        if name in ("text", "value"):
            fields[name] = check.text(raw, name, MAX_TEXT_CHARS)
            check.require(_CONTROL.search(raw) is None, f"{name} holds a control character")
        elif name == "to":
            fields[name] = check.text(raw, name, MAX_NAME_CHARS, 1, NAME_PATTERN)
        elif name == "amount":
            fields[name] = check.integer(raw, name, 1, MAX_AMOUNT)
        elif name == "world":
            fields[name] = check.text(raw, name, MAX_WORLD_CHARS, 1, WORLD_KEY_PATTERN)
        else:  # key
            fields[name] = check.text(raw, name, MAX_KEY_CHARS, 1, WORLD_KEY_PATTERN)
    return Action(kind, **fields)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, item in pairs:
        if key in result:
            raise ActionError(f"action: duplicate key {key!r}")
        result[key] = item
    return result


def _no_floats(text: str) -> Any:
    raise ActionError(f"action: numbers must be integers, got {text!r}")


def parse_action(output: str) -> Action:
    """Parse model output as exactly one action, or raise :class:`ActionError`."""
    if len(output) > MAX_OUTPUT_CHARS:
        raise ActionError(f"action: output of {len(output)} characters (max {MAX_OUTPUT_CHARS})")
    try:
        # strict=False admits raw newlines and tabs inside strings: llama.cpp's JSON grammar
        # lets the model write them; every other control character is refused below.
        value = json.loads(output, object_pairs_hook=_no_duplicates, parse_float=_no_floats,
                           parse_constant=_no_floats, strict=False)
    except json.JSONDecodeError as exc:
        raise ActionError(f"action: not one JSON object: {exc}") from None
    except RecursionError:
        raise ActionError("action: nested too deeply") from None
    return action_from_map(value)


def action_schema(kinds: Iterable[str], *, payees: Iterable[str] = (), contacts: Iterable[str] = (),
                  worlds: Iterable[str] = ()) -> dict[str, Any]:
    """The JSON schema of the given action kinds, for the grammar.

    Names the manifest lists (payees, contacts, worlds) become enums, so the constrained
    model cannot even spell another payee; the policy still checks every field, since the
    schema is only a guide for the model and never a security boundary."""
    options = []
    enums = {"to_pay": sorted(payees), "to_message": sorted(contacts), "world": sorted(worlds)}
    for kind in sorted(Kind(k) for k in kinds):
        properties: dict[str, Any] = {"action": {"const": kind.value}}
        for name in FIELDS[kind]:
            if name in ("text", "value"):
                # No maxLength: llama.cpp expands it into hundreds of nested rules; max_tokens
                # bounds the text instead, and the parser enforces MAX_TEXT_CHARS.
                properties[name] = {"type": "string"}
            elif name == "amount":
                properties[name] = {"type": "integer", "minimum": 1}
            elif name == "to":
                names = enums["to_pay" if kind in SPENDING_KINDS else "to_message"]
                properties[name] = {"enum": names} if names else {"type": "string", "pattern": f"^{NAME_PATTERN.pattern}$"}
            elif name == "world":
                properties[name] = {"enum": enums["world"]} if enums["world"] else {"type": "string", "pattern": f"^{WORLD_KEY_PATTERN.pattern}$"}
            else:
                properties[name] = {"type": "string", "pattern": f"^{WORLD_KEY_PATTERN.pattern}$"}
        options.append({"type": "object", "properties": properties,
                        "required": ["action", *FIELDS[kind]], "additionalProperties": False})
    if not options:
        raise ActionError("action schema: no action kinds allowed")
    return options[0] if len(options) == 1 else {"oneOf": options}


def schema_text(schema: Mapping[str, Any]) -> str:
    """The JSON text of a schema (keys in the order built: the grammar follows the order of
    ``properties``), compact: what a prompt block records and what the grammar is compiled
    from, so a re-run compiles the same grammar from the block alone."""
    return json.dumps(schema, separators=(",", ":"), ensure_ascii=False)
