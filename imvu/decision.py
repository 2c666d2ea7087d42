"""Decision records (``agent-decision`` v2) and their offline re-check and re-run
(specs/imvu.md §6, §9).

A decision links everything it was decided from: the signed manifest version, the request,
the state snapshot the policy read, the exact prompt (with the action schema and token
limit), the model's raw output and the parsed action. So:

* :func:`recheck_decision` needs only the record and its blocks (a CAR export): it
  re-verifies the manifest signature, re-runs the request filter, re-parses the output,
  re-runs the pure policy and compares every field of the verdict;
* :func:`rerun_decision` also needs the weights: it checks the file's CID against the
  record, re-runs greedy inference on the recorded prompt and compares the output bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

from n3xus.canon.cid import CID, cid_of
from n3xus.canon.codec import encode
from n3xus.canon.entries import check_payload
from n3xus.canon.errors import CanonError

from ._schema import Checker
from .actions import action_from_map, action_schema, parse_action, schema_text
from .errors import ActionError, DecisionError, ImvuError
from .manifest import Manifest, decode_manifest, model_cid_of_file
from .policy import (
    POLICY_VERSION,
    Outcome,
    Primitive,
    Verdict,
    decide,
    decode_state,
    screen_request,
)
from .prompt import allowed_kinds, decode_prompt, decode_request
from .scheduler import GenerationRequest, GrammarCache, run_generation

DECISION_ENTRY_TYPE: Final = "agent-decision"
DECISION_VERSION: Final = 2
OUTPUT_TYPE: Final = "n3xus/imvu-output/v1"
MAX_OUTPUT_BYTES: Final = 64 * 1024
FINISH_REASONS: Final = ("stop", "length", "cancelled")
MAX_DECISION_BYTES: Final = 4096
# Texts a record carries are cut to the canon schema's limits.
MAX_REASON_CHARS: Final = 1024
MAX_RESULT_CHARS: Final = 256


class Blocks(Protocol):
    def get(self, cid: CID) -> bytes: ...


@dataclass(frozen=True)
class OutputBlock:
    output: bytes
    finish: str
    tokens: int

    def to_block(self) -> bytes:
        return encode({"type": OUTPUT_TYPE, "output": self.output, "finish": self.finish, "tokens": self.tokens})


def decode_output(data: bytes) -> OutputBlock:
    check = Checker(DecisionError, "output")
    raw = check.mapping(check.decode(data, MAX_OUTPUT_BYTES + 256), ("type", "output", "finish", "tokens"))
    check.require(raw["type"] == OUTPUT_TYPE, f"type must be {OUTPUT_TYPE!r}")
    check.require(type(raw["output"]) is bytes and len(raw["output"]) <= MAX_OUTPUT_BYTES, "output must be bytes")
    check.require(raw["finish"] in FINISH_REASONS, f"finish must be one of {list(FINISH_REASONS)}")
    block = OutputBlock(raw["output"], raw["finish"], check.integer(raw["tokens"], "tokens"))
    check.require(block.to_block() == bytes(data), "block is not canonical")
    return block


@dataclass(frozen=True)
class Decision:
    agent: bytes
    manifest: CID
    model: CID
    request: CID
    state: CID
    prompt: CID | None
    output: CID | None
    action: CID | None
    verdict: Outcome
    primitive: str
    reason: str
    executed: bool
    result: str
    prompt_tokens: int
    output_tokens: int
    inference_us: int
    total_us: int
    time: int
    policy: int = POLICY_VERSION

    def to_map(self) -> dict[str, Any]:
        return {
            "agent": self.agent, "manifest": self.manifest, "model": bytes(self.model),
            "policy": self.policy, "request": self.request, "state": self.state,
            "prompt": self.prompt, "output": self.output, "action": self.action,
            "verdict": self.verdict.value, "primitive": self.primitive,
            "reason": self.reason[:MAX_REASON_CHARS], "executed": self.executed,
            "result": self.result[:MAX_RESULT_CHARS], "prompt_tokens": self.prompt_tokens,
            "output_tokens": self.output_tokens, "inference_us": self.inference_us,
            "total_us": self.total_us, "time": self.time,
        }

    def to_block(self) -> bytes:
        return encode(self.to_map())

    @property
    def cid(self) -> CID:
        return cid_of(self.to_block())

    def to_json(self) -> dict[str, Any]:
        """A JSON view for ``n3xus agent decisions`` and the HTTP API."""
        view: dict[str, Any] = {}
        for key, value in self.to_map().items():
            view[key] = value.hex() if isinstance(value, bytes) else str(value) if isinstance(value, CID) else value
        view["model"] = str(self.model)
        return view


def decode_decision(data: bytes) -> Decision:
    """Decode an ``agent-decision`` v2 payload (schema of canon/entries.py)."""
    if len(data) > MAX_DECISION_BYTES:
        raise DecisionError(f"decision of {len(data)} bytes (max {MAX_DECISION_BYTES})")
    try:
        raw = check_payload(DECISION_ENTRY_TYPE, DECISION_VERSION, bytes(data))
        model = CID(raw["model"])
    except CanonError as exc:
        raise DecisionError(f"decision: {exc}") from exc
    if raw["policy"] > POLICY_VERSION:
        raise DecisionError(f"decision: policy version {raw['policy']} is newer than this code ({POLICY_VERSION})")
    decision = Decision(
        agent=raw["agent"], manifest=raw["manifest"], model=model, request=raw["request"],
        state=raw["state"], prompt=raw["prompt"], output=raw["output"], action=raw["action"],
        verdict=Outcome(raw["verdict"]), primitive=raw["primitive"], reason=raw["reason"],
        executed=raw["executed"], result=raw["result"], prompt_tokens=raw["prompt_tokens"],
        output_tokens=raw["output_tokens"], inference_us=raw["inference_us"],
        total_us=raw["total_us"], time=raw["time"], policy=raw["policy"],
    )
    if decision.to_block() != bytes(data):
        raise DecisionError("decision: block is not canonical")
    return decision


def decision_of_entry(entry_block: bytes, blocks: Blocks) -> Decision:
    """``n3xus audit decision ENTRY``'s first step, offline: parse the canon-log entry
    block, verify its signature, require an ``agent-decision`` v2 entry authored by the
    decision's agent, and decode its payload from ``blocks``."""
    from n3xus.canon.log import LogEntry

    try:
        entry = LogEntry.from_block(entry_block)
        entry.verify_signature()
    except CanonError as exc:
        raise DecisionError(f"log entry: {exc}") from exc
    if (entry.type, entry.version) != (DECISION_ENTRY_TYPE, DECISION_VERSION):
        raise DecisionError(f"log entry is {entry.type!r} v{entry.version}, not an agent-decision v2")
    decision = decode_decision(_get(blocks, entry.payload, "decision payload"))
    if decision.agent != entry.author:
        raise DecisionError("the decision's agent did not sign its log entry")
    return decision


# -- re-checking ------------------------------------------------------------------------------


@dataclass
class RecheckReport:
    """The result of :func:`recheck_decision`; ``ok`` when nothing disagreed."""

    decision: Decision
    verdict: Verdict | None = None  # the verdict recomputed here
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": list(self.problems),
                "recomputed": None if self.verdict is None else
                {"verdict": self.verdict.outcome.value, "primitive": self.verdict.primitive.value,
                 "reason": self.verdict.reason},
                "decision": self.decision.to_json()}


def expected_schema(manifest: Manifest) -> str:
    """The action schema text a turn under ``manifest`` gives the grammar."""
    p = manifest.primitives
    return schema_text(action_schema([k.value for k in allowed_kinds(manifest)], payees=p.payees,
                                     contacts=p.contacts, worlds=p.worlds))


def _get(blocks: Blocks, cid: CID, what: str) -> bytes:
    try:
        return blocks.get(cid)
    except (CanonError, KeyError) as exc:
        raise DecisionError(f"the {what} block {cid} is not available: {exc}") from exc


def recheck_decision(decision: Decision | bytes, blocks: Blocks) -> RecheckReport:
    """Re-run everything but the model from the record and its blocks (module doc).

    Raises DecisionError when a block is missing or malformed (nothing to compare); returns
    a report listing every disagreement otherwise."""
    if not isinstance(decision, Decision):
        decision = decode_decision(decision)
    report = RecheckReport(decision)
    problems = report.problems
    manifest = decode_manifest(_get(blocks, decision.manifest, "manifest"))
    if manifest.agent != decision.agent:
        problems.append("the manifest is of another agent")
    if manifest.model.cid != decision.model:
        problems.append("the record's model is not the manifest's model")
    request = decode_request(_get(blocks, decision.request, "request"))
    state = decode_state(_get(blocks, decision.state, "state"))
    screened = screen_request(manifest, request.texts())
    if decision.prompt is None:
        report.verdict = screened
    else:
        if not screened.allowed:
            problems.append(f"the request filter refuses this request ({screened.reason}) but it was run")
        prompt = decode_prompt(_get(blocks, decision.prompt, "prompt"))
        if prompt.schema != expected_schema(manifest):
            problems.append("the prompt's action schema is not the one the manifest gives")
        if prompt.max_tokens != manifest.generation.max_tokens:
            problems.append("the prompt's max_tokens is not the manifest's")
        assert decision.output is not None  # prompt and output are null together (schema)
        output = decode_output(_get(blocks, decision.output, "output"))
        if output.tokens != decision.output_tokens:
            problems.append("the output block's token count is not the record's")
        try:
            action = parse_action(output.output.decode("utf-8"))
        except (ActionError, UnicodeDecodeError) as exc:
            report.verdict = Verdict(Outcome.REFUSE, Primitive.SCHEMA, f"malformed action: {exc}")
            if decision.action is not None:
                problems.append("the output does not parse, yet the record names an action")
        else:
            if decision.action is None or decision.action != action.cid:
                problems.append("the record's action is not the action the output parses to")
            elif action_from_map(_decode_action_block(blocks, decision.action)) != action:
                problems.append("the action block is not the parsed action")
            report.verdict = decide(manifest, state, action, manifest_cid=decision.manifest)
    verdict = report.verdict
    if (verdict.outcome, verdict.primitive.value) != (decision.verdict, decision.primitive):
        problems.append(f"the policy now says {verdict.outcome.value}/{verdict.primitive.value or '-'} "
                        f"({verdict.reason}); the record says {decision.verdict.value}/{decision.primitive or '-'}")
    elif verdict.reason[:MAX_REASON_CHARS] != decision.reason:
        problems.append(f"same verdict, different reason: {verdict.reason!r} vs {decision.reason!r}")
    if decision.executed and not verdict.allowed:
        problems.append("the record says executed, but the policy does not allow the action")
    return report


def _decode_action_block(blocks: Blocks, cid: CID) -> Any:
    check = Checker(DecisionError, "action block")
    return check.decode(_get(blocks, cid, "action"), MAX_OUTPUT_BYTES)


# -- re-running the model ---------------------------------------------------------------------


@dataclass
class RerunReport:
    decision: Decision
    same: bool
    recorded: bytes
    rerun: bytes
    output_tokens: int
    inference_us: int

    def to_json(self) -> dict[str, Any]:
        return {"same_output": self.same, "recorded": self.recorded.decode("utf-8", "replace"),
                "rerun": self.rerun.decode("utf-8", "replace"), "output_tokens": self.output_tokens,
                "inference_us": self.inference_us}


def rerun_decision(decision: Decision | bytes, blocks: Blocks, model_path: str | Path, *,
                   model: Any = None, load: Callable[[Path], Any] | None = None) -> RerunReport:
    """Re-run greedy inference of a decision on the weights at ``model_path`` and compare
    output bytes. ``model`` may be an already loaded ``llama_cpp.Llama`` of that file;
    otherwise ``load(path)`` (default: inference.load_model with the context the prompt
    needs) loads one."""
    if not isinstance(decision, Decision):
        decision = decode_decision(decision)
    if decision.prompt is None or decision.output is None:
        raise DecisionError("this decision was refused before inference: there is nothing to re-run")
    if model_cid_of_file(model_path) != decision.model:
        raise DecisionError(f"{model_path} is not the model of this decision ({decision.model})")
    prompt = decode_prompt(_get(blocks, decision.prompt, "prompt"))
    recorded = decode_output(_get(blocks, decision.output, "output"))
    if model is None:
        model = (load or _default_load)(Path(model_path))
    try:
        result = run_generation(model, GenerationRequest(prompt.text, prompt.schema, prompt.max_tokens),
                                grammars=GrammarCache(1))
    except (RuntimeError, ValueError) as exc:
        raise ImvuError(f"re-run failed: {exc}") from exc
    return RerunReport(decision, result.output == recorded.output, recorded.output, result.output,
                       result.output_tokens, result.inference_us)


def _default_load(path: Path) -> Any:
    from .inference import ModelSettings, load_model

    return load_model(ModelSettings(path))
