"""``n3xus agent``: IMVU agents on the running node (specs/imvu.md, node/api/agents.py).

The creator's key stays here: ``create`` and ``upgrade`` sign the manifest with a local
wallet (``--creator WALLET``), ``approve`` signs the approval; the node gets signed blocks.
The agent's own key is made and kept by the node (it signs for the agent). Commands that
only read or steer use the standard-library client; only the signing ones import nacl and
the manifest codec.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final

import click

from .app import client_for, data_dir_of, data_dir_option, echo, emit, json_option
from .client import API_PREFIX, ApiClient, path_of

if TYPE_CHECKING:
    from n3xus.imvu.manifest import Manifest

# A turn waits for the model (loaded on first use: seconds) and for turns queued before it.
ASK_TIMEOUT_S: Final = 600.0
# An approval is valid this long unless --expires-in says otherwise.
DEFAULT_APPROVAL_S: Final = 3600
ACTION_KINDS: Final = ("reply", "tip", "pay", "read_world", "propose_world_edit", "read_balance",
                       "write_memory", "message_agent")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _pairs(values: tuple[str, ...], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        name, sep, target = value.partition("=")
        if not sep or not name or not target:
            raise click.BadParameter(f"{value!r}: expected NAME=VALUE", param_hint=what)
        out[name] = target
    return out


def manifest_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The manifest settings of ``create`` (defaults) and ``upgrade`` (unset: kept).

    A repeatable option given to ``upgrade`` (``--contact``, ``--payee``, ``--world``,
    ``--action``, ``--rate``, ``--refuse``, ``--tool``) replaces the previous version's
    whole list: an upgrade states what the agent may do, so a dropped contact is gone (and
    the action grammar no longer lets the model name it), never silently kept."""
    options = [
        click.option("--persona", default=None, help="The system text of every prompt."),
        click.option("--action", "actions", multiple=True, type=click.Choice(ACTION_KINDS),
                     help="An action kind the agent may take (repeatable; default: reply)."),
        click.option("--tool", "tools", multiple=True, help="A tool it may use (repeatable; "
                     "default: the tools its actions need)."),
        click.option("--payee", "payees", multiple=True, metavar="NAME=WALLET|ACCOUNT",
                     help="Who it may pay or tip (repeatable)."),
        click.option("--contact", "contacts", multiple=True, metavar="NAME=ADDRESS",
                     help="An agent it may message: AGENT (this node) or PEER_ID/AGENT."),
        click.option("--world", "worlds", multiple=True, help="A world it may read and edit."),
        click.option("--spend-limit", type=click.IntRange(0), default=None,
                     help="Total of tips and payments per spend period (default 0)."),
        click.option("--spend-period-ms", type=click.IntRange(1), default=None,
                     help="The spend period (default one day)."),
        click.option("--escalate-above", type=click.IntRange(0), default=None,
                     help="One payment above this waits for the creator (default: the limit)."),
        click.option("--rate", "rates", multiple=True, metavar="KIND[,KIND]:COUNT:PERIOD_MS",
                     help="At most COUNT of these actions per period (repeatable)."),
        click.option("--refuse", "refusals", multiple=True, metavar="ID:SCOPE:PHRASE[,PHRASE]",
                     help="Refuse requests/outputs with a phrase; SCOPE request|output|both "
                          "(repeatable; default: the secrets and override rules)."),
        click.option("--max-tokens", type=click.IntRange(1, 512), default=None,
                     help="Tokens one action may take (default 64)."),
        click.option("--memory-tokens", type=click.IntRange(0), default=None,
                     help="Token budget of recalled memory (default 256)."),
        click.option("--context-tokens", type=click.IntRange(256), default=None,
                     help="The context the agent needs (default 2048)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _build_manifest(dd: Any, creator: str, name: str, agent: bytes, model: Any,
                    previous: Manifest | None, o: dict[str, Any]) -> Manifest:
    from n3xus.imvu.actions import TOOL_OF, Kind
    from n3xus.imvu.manifest import (
        DEFAULT_REFUSALS,
        Generation,
        RateLimit,
        RefuseRule,
        make_primitives,
        normalize_text,
        sign_manifest,
    )

    from ..services.wallets import parse_account, wallet_key

    old = previous.primitives if previous is not None else None
    actions = list(o["actions"]) or (list(old.actions) if old else ["reply"])
    tools = list(o["tools"]) or sorted({t.value for k in actions if (t := TOOL_OF[Kind(k)]) is not None})
    payees = ({n: parse_account(dd, a) for n, a in _pairs(o["payees"], "--payee").items()}
              if o["payees"] or not old else dict(old.payees))
    contacts = _pairs(o["contacts"], "--contact") if o["contacts"] or not old else dict(old.contacts)
    worlds = list(o["worlds"]) if o["worlds"] or not old else list(old.worlds)
    rates = []
    for text in o["rates"]:
        kinds, _, rest = text.partition(":")
        count, _, period = rest.partition(":")
        if not kinds or not count.isdigit() or not period.isdigit():
            raise click.BadParameter(f"{text!r}: expected KIND[,KIND]:COUNT:PERIOD_MS", param_hint="--rate")
        rates.append(RateLimit(tuple(kinds.split(",")), int(count), int(period)))
    refuse = []
    for text in o["refusals"]:
        rule_id, _, rest = text.partition(":")
        scope, _, phrases = rest.partition(":")
        if not rule_id or not phrases:
            raise click.BadParameter(f"{text!r}: expected ID:SCOPE:PHRASE[,PHRASE]", param_hint="--refuse")
        refuse.append(RefuseRule(rule_id, tuple(normalize_text(p) for p in phrases.split(",")), scope))

    def pick(key: str, old_value: Any, default: Any) -> Any:
        return o[key] if o[key] is not None else old_value if previous is not None else default

    spend_limit = pick("spend_limit", old.spend_limit if old else 0, 0)
    primitives = make_primitives(
        actions=actions, payees=payees, contacts=contacts, worlds=worlds, spend_limit=spend_limit,
        spend_period_ms=pick("spend_period_ms", old.spend_period_ms if old else 0, 24 * 3600 * 1000),
        escalate_above=pick("escalate_above", old.escalate_above if old else 0, spend_limit),
        rates=rates if rates or not old else old.rates,
        refuse=refuse if refuse else old.refuse if old else DEFAULT_REFUSALS)
    gen = previous.generation if previous is not None else Generation(64, 2048, 256)
    generation = Generation(o["max_tokens"] or gen.max_tokens, o["context_tokens"] or gen.context_tokens,
                            gen.memory_tokens if o["memory_tokens"] is None else o["memory_tokens"])
    persona = o["persona"] if o["persona"] is not None else previous.persona if previous else ""
    return sign_manifest(wallet_key(dd, creator), name=name, persona=persona, agent=agent,
                         model=model, generation=generation, tools=tools, primitives=primitives,
                         time=_now_ms(), previous=previous)


def _summary(view: dict[str, Any]) -> Callable[[], None]:
    def human() -> None:
        state = "running" if view["enabled"] else "stopped"
        echo(f"{view['name']}  v{view['version']}  {state}  turns {view['turns']}")
        echo(f"  account  {view['account']}")
        echo(f"  creator  {view['creator']}")
        echo(f"  manifest {view['manifest']}")
        echo(f"  state    {view['state']}  (CAR root: n3xus canon export --car FILE {view['state']})")
        echo(f"  model    {view['model']['name']} {view['model']['cid']}")
        for pending in view.get("pending_actions", []):
            echo(f"  pending  {pending['decision']}  {json.dumps(pending['action'])}  ({pending['reason']})")

    return human


@click.group()
def agent() -> None:
    """IMVU agents: create, ask, upgrade, roll back, approve, audit their decisions."""


@agent.command("create")
@click.argument("name")
@click.option("--creator", required=True, metavar="WALLET", help="The creator's wallet: it "
              "signs the manifest and approves escalations.")
@manifest_options
@data_dir_option
@json_option
def agent_create(name: str, creator: str, data_dir: str | None, as_json: bool, **o: Any) -> None:
    """Create agent NAME: the node makes its key, WALLET signs its manifest."""
    from n3xus.canon.cid import CID
    from n3xus.imvu.manifest import ModelRef

    dd = data_dir_of(data_dir)
    client = client_for(data_dir)
    made = client.post("/agents/keys", json={})
    model = ModelRef(CID(made["model"]["cid"]), made["model"]["name"], made["model"]["size"])
    manifest = _build_manifest(dd, creator, name, bytes.fromhex(made["agent"]), model, None, o)
    view = client.post("/agents", json={"manifest": manifest.to_block().hex()})
    emit(as_json, view, _summary(view))


@agent.command("upgrade")
@click.argument("name")
@click.option("--creator", required=True, metavar="WALLET", help="The creator's wallet.")
@manifest_options
@data_dir_option
@json_option
def agent_upgrade(name: str, creator: str, data_dir: str | None, as_json: bool, **o: Any) -> None:
    """Sign and activate the next manifest version of NAME (unset options are kept; a
    repeatable option, e.g. --contact, replaces its whole previous list)."""
    from n3xus.imvu.manifest import decode_manifest

    dd = data_dir_of(data_dir)
    client = client_for(data_dir)
    current = client.get(path_of("/agents/{}", name))
    active = decode_manifest(bytes.fromhex(current["manifest_view"]["block"]))
    manifest = _build_manifest(dd, creator, active.name, active.agent, active.model, active, o)
    view = client.post(path_of("/agents/{}/upgrade", name), json={"manifest": manifest.to_block().hex()})
    emit(as_json, view, _summary(view))


def _simple(verb: str, summary: str) -> None:
    @agent.command(verb, help=summary)
    @click.argument("name")
    @data_dir_option
    @json_option
    def command(name: str, data_dir: str | None, as_json: bool) -> None:
        view = client_for(data_dir).post(path_of("/agents/{}/" + verb, name), json={})
        emit(as_json, view, _summary(view))


_simple("start", "Let NAME take turns again (the node loads its model if needed).")
_simple("stop", "Stop NAME: it takes no new turns.")
_simple("rollback", "Make the previous manifest version of NAME active again.")


@agent.command("list")
@data_dir_option
@json_option
def agent_list(data_dir: str | None, as_json: bool) -> None:
    """The agents this node hosts."""
    data = client_for(data_dir).get("/agents")

    def human() -> None:
        for a in data["agents"]:
            echo(f"{a['name']:<20} v{a['version']:<3} {'running' if a['enabled'] else 'stopped':<8} "
                 f"turns {a['turns']:<5} {a['account']}")

    emit(as_json, data, human)


@agent.command("show")
@click.argument("name")
@data_dir_option
@json_option
def agent_show(name: str, data_dir: str | None, as_json: bool) -> None:
    """State, active manifest, pending escalations and telemetry of NAME."""
    view = client_for(data_dir).get(path_of("/agents/{}", name))
    emit(as_json, view, _summary(view))


def _events(client: ApiClient, path: str, body: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    """Server-sent events of a POST, as (event, data) pairs, as they arrive."""
    payload = json.dumps(body).encode()
    response = client._send("POST", API_PREFIX + path, None, payload,
                            {"Content-Type": "application/json", "Accept": "text/event-stream"})
    event, data = "message", ""
    try:
        while line := response.readline():
            text = line.decode("utf-8").rstrip("\r\n")
            if text.startswith("event:"):
                event = text[6:].strip()
            elif text.startswith("data:"):
                data += text[5:].strip()
            elif not text and data:
                yield event, json.loads(data)
                event, data = "message", ""
    finally:
        client.close()  # the stream ended the connection's use


@agent.command("ask")
@click.argument("name")
@click.argument("text")
@click.option("--context", "context", multiple=True, help="Quoted data for the agent (a world "
              "value, a message): never instructions (repeatable, at most 8).")
@click.option("--sender", default="user:cli", show_default=True, help="Who asks (its memory "
              "records it).")
@data_dir_option
@json_option
def agent_ask(name: str, text: str, context: tuple[str, ...], sender: str, data_dir: str | None,
              as_json: bool) -> None:
    """Ask NAME: its output streams live, then the decision (verdict, action, result)."""
    client = client_for(data_dir, ASK_TIMEOUT_S)
    result: dict[str, Any] | None = None
    streamed = False
    for event, data in _events(client, path_of("/agents/{}/ask", name),
                               {"text": text, "context": list(context), "sender": sender}):
        if event == "token" and not as_json:
            sys.stdout.write(data["text"])
            sys.stdout.flush()
            streamed = True
        elif event == "result":
            result = data
        elif event == "error":
            raise click.ClickException(f"{data['message']} ({data['code']})")
    if result is None:
        raise click.ClickException("the node ended the answer without a result")
    if streamed:
        echo()

    def human() -> None:
        assert result is not None
        action = json.dumps(result["action"]) if result["action"] else "-"
        done = "executed" if result["executed"] else "not executed"
        echo(f"{result['verdict']} {result['primitive'] or ''}".rstrip() + f": {action} {done}")
        echo(f"  result   {result['result']}")
        echo(f"  decision {result['decision']}  (log entry {result['entry']})")

    emit(as_json, result, human)


@agent.command("memory")
@click.argument("name")
@click.option("--limit", type=click.IntRange(1, 256), default=50, show_default=True)
@data_dir_option
@json_option
def agent_memory(name: str, limit: int, data_dir: str | None, as_json: bool) -> None:
    """NAME's memory items (turns and facts), newest first."""
    data = client_for(data_dir).get(path_of("/agents/{}/memory", name), params={"limit": limit})

    def human() -> None:
        for item in data["items"]:
            echo(f"#{item['seq']:<4} {item['kind']:<5} {item['who']}: {item['text']}")

    emit(as_json, data, human)


@agent.command("decisions")
@click.argument("name")
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@data_dir_option
@json_option
def agent_decisions(name: str, limit: int, data_dir: str | None, as_json: bool) -> None:
    """NAME's decisions (agent-decision log entries), newest first, with their manifest."""
    data = client_for(data_dir).get(path_of("/agents/{}/decisions", name), params={"limit": limit})

    def human() -> None:
        for d in data["decisions"]:
            verdict = f"{d['verdict']}/{d['primitive']}" if d["primitive"] else d["verdict"]
            echo(f"{d['index']:<6} {d['entry']}  {verdict:<22} manifest {d['manifest']}"
                 + ("  executed: " + d["result"] if d["executed"] else f"  ({d['reason'][:80]})"))

    emit(as_json, data, human)


@agent.command("approve")
@click.argument("name")
@click.argument("decision", required=False)
@click.option("--creator", required=True, metavar="WALLET", help="The creator's wallet.")
@click.option("--expires-in", type=click.IntRange(1), default=DEFAULT_APPROVAL_S, show_default=True,
              help="Seconds the approval stays valid.")
@data_dir_option
@json_option
def agent_approve(name: str, decision: str | None, creator: str, expires_in: int,
                  data_dir: str | None, as_json: bool) -> None:
    """Approve NAME's escalated DECISION (default: its only pending one) as its creator."""
    from n3xus.canon.cid import CID
    from n3xus.imvu.approval import sign_approval

    from ..services.wallets import wallet_key

    client = client_for(data_dir, ASK_TIMEOUT_S)
    view = client.get(path_of("/agents/{}", name))
    pending = view["pending_actions"]
    if decision is None:
        if len(pending) != 1:
            raise click.UsageError(f"{name} has {len(pending)} pending escalations: name the DECISION")
        decision = pending[0]["decision"]
    chosen = next((p for p in pending if p["decision"] == decision), None)
    if chosen is None:
        raise click.ClickException(f"decision {decision} is not waiting for approval")
    approval = sign_approval(wallet_key(data_dir_of(data_dir), creator), agent=bytes.fromhex(view["agent"]),
                             manifest=CID(view["manifest"]), action=CID(chosen["action_cid"]),
                             decision=CID(decision), expires=_now_ms() + expires_in * 1000)
    result = client.post(path_of("/agents/{}/approve", name), json={"approval": approval.to_block().hex()})

    def human() -> None:
        done = "executed" if result["executed"] else "not executed"
        echo(f"{result['verdict']}/{result['primitive']}: {json.dumps(result['action'])} {done}")
        echo(f"  result   {result['result']}")
        echo(f"  decision {result['decision']}")

    emit(as_json, result, human)
