"""``n3xus audit …``: verify ledger proofs, checkpoints and exports offline.

Nothing here talks to a node or opens a data dir: an auditor needs the files and the
log's verifier key (a C2SP vkey ``<origin>+<key id>+<base64>``, given as the string or as
a file holding it). A file that does not verify is an error naming the part that failed
(``error: proof-path: ...``), exit 1; ``--json`` prints the verified facts.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from n3xus.canon.note import NoteVerifier
from n3xus.ledger.audit import (
    ConsistencyResult,
    EntryProof,
    StateFact,
    VerifiedCheckpoint,
    load_verifier,
    parse_proof_lines,
    verify_bundle,
    verify_consistency,
)
from n3xus.ledger.export import ReplayReport, replay_export

from .app import echo, emit, json_option

# Proof and checkpoint files are small (a bundle is at most ~150 KB); reading more than
# this means the file is something else, and is refused before it fills memory.
MAX_PROOF_FILE_BYTES = 1 << 20
# A key file holds one vkey line; anything longer is not one.
MAX_KEY_FILE_BYTES = 4096


def _read(path: str, limit: int = MAX_PROOF_FILE_BYTES) -> bytes:
    try:
        if path == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from exc
    if len(data) > limit:
        raise click.ClickException(f"{path} is over {limit} bytes: not a proof file")
    return data


def _verifier(value: str | None, required: bool = True) -> NoteVerifier | None:
    if value is None:
        if required:
            raise click.UsageError("--key VERIFIER_KEY is required")
        return None
    text = value
    if Path(value).is_file():
        raw = _read(value, MAX_KEY_FILE_BYTES)
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise click.BadParameter(f"{value} does not hold a verifier key",
                                     param_hint="--key") from None
    try:
        return load_verifier(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--key") from None


key_option = click.option(
    "--key", "key", metavar="VKEY|FILE", default=None,
    help="The log's C2SP verifier key, or a file holding it.")


@click.group()
def audit() -> None:
    """Verify ledger proofs, checkpoints and exports offline (no node, no data dir)."""


def _short(hex_text: str | None) -> str:
    return "-" if hex_text is None else hex_text


def _print_checkpoint(checkpoint: VerifiedCheckpoint) -> None:
    signed = "signature verified" if checkpoint.signature_checked else "signature NOT checked"
    echo(f"  checkpoint  {checkpoint.checkpoint.origin}  size {checkpoint.size}  ({signed})")
    echo(f"  log root    {checkpoint.root.hex()}")
    echo(f"  state root  {checkpoint.state.root.hex()}  ({checkpoint.state.leaves} leaves)")


def _print_entry(result: EntryProof) -> None:
    decoded = result.decoded
    if decoded.tx is not None:
        tx = decoded.tx
        echo(f"OK  transaction {tx.cid} is entry {result.index} of the ledger log")
        echo(f"  {tx.op.value} by {tx.account.hex()} (seq {tx.seq}, time {tx.time})")
        for name, value in sorted(tx.to_json()["args"].items()):
            echo(f"    {name}: {value}")
    elif decoded.fraud is not None:
        echo(f"OK  fraud proof {decoded.fraud.cid} is entry {result.index} of the ledger log")
        echo(f"  account {decoded.fraud.account.hex()} equivocated at seq {decoded.fraud.seq}")
    else:
        assert decoded.genesis is not None
        echo(f"OK  the genesis of network {decoded.genesis.cid} is entry 0 of the ledger log")
    _print_checkpoint(result.checkpoint)


def _print_state(result: StateFact) -> None:
    fact: dict[str, Any] = result.to_json()["fact"]
    kind = fact["kind"]
    at = f"at checkpoint size {result.checkpoint.size}"
    if kind == "balance":
        echo(f"OK  balance of {fact['account']} is {fact['balance']} {at}")
    elif kind == "owner":
        owner = fact["owner"]
        what = f"is owned by {owner}" if owner is not None else "has no owner (absent)"
        echo(f"OK  edition {fact['edition']} of asset {fact['asset']} {what} {at}")
    elif kind == "supply":
        echo(f"OK  total supply is {fact['supply']} {at}")
    else:
        value = "absent" if result.value is None else result.value.hex()
        echo(f"OK  state entry {result.key.hex()} ({kind}) is {value} {at}")
        for name, item in sorted(fact.items()):
            if name != "kind":
                echo(f"    {name}: {item}")
    _print_checkpoint(result.checkpoint)


@audit.command("verify")
@click.argument("bundle", metavar="BUNDLE|-")
@key_option
@json_option
def audit_verify(bundle: str, key: str | None, as_json: bool) -> None:
    """Verify an inclusion bundle (c2sp.org/tlog-proof) or a state proof bundle."""
    verifier = _verifier(key)
    assert verifier is not None
    result = verify_bundle(_read(bundle), verifier)
    data = {"ok": True, **result.to_json()}
    emit(as_json, data, lambda: _print_entry(result) if isinstance(result, EntryProof)
         else _print_state(result))


@audit.command("consistency")
@click.argument("old", metavar="OLD")
@click.argument("new", metavar="NEW")
@key_option
@click.option("--proof", "proof_file", metavar="FILE", default=None,
              help="Consistency proof hashes (base64, one per line) when NEW is a bare checkpoint.")
@json_option
def audit_consistency(old: str, new: str, key: str | None, proof_file: str | None,
                      as_json: bool) -> None:
    """Check that checkpoint NEW extends checkpoint OLD (NEW: a consistency bundle, or a
    signed checkpoint with --proof; OLD: a signed checkpoint or any bundle holding one)."""
    verifier = _verifier(key)
    assert verifier is not None
    proof = None if proof_file is None else parse_proof_lines(_read(proof_file))
    result: ConsistencyResult = verify_consistency(_read(old), _read(new), verifier, proof)

    def human() -> None:
        echo(f"OK  the log of size {result.new.size} extends the log of size "
                     f"{result.old.size}")
        _print_checkpoint(result.old)
        _print_checkpoint(result.new)

    emit(as_json, {"ok": True, **result.to_json()}, human)


@audit.command("replay")
@click.argument("export", metavar="EXPORT.car")
@key_option
@json_option
def audit_replay(export: str, key: str | None, as_json: bool) -> None:
    """Replay an exported ledger from genesis and compare its roots with its checkpoints."""
    verifier = _verifier(key, required=False)
    try:
        stream = sys.stdin.buffer if export == "-" else open(export, "rb")  # noqa: SIM115
    except OSError as exc:
        raise click.ClickException(f"cannot read {export}: {exc.strerror}") from exc
    try:
        report: ReplayReport = replay_export(stream, verifier)
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()

    def human() -> None:
        rate = report.size / report.seconds if report.seconds > 0 else 0.0
        echo(f"OK  replayed {report.size} entries of network {report.network} "
                     f"in {report.seconds:.2f} s ({rate:,.0f} entries/s)")
        echo(f"  {report.transactions} transactions, {report.fraud_proofs} fraud proofs, "
                     f"{report.accounts} signing accounts")
        echo(f"  log root    {report.log_root.hex()}")
        echo(f"  state root  {report.state.root.hex()}  ({report.state.leaves} leaves)")
        for checkpoint in report.checkpoints:
            _print_checkpoint(checkpoint)
        if verifier is None:
            echo("  WARNING: checkpoint signatures were NOT checked (no --key)")

    emit(as_json, {"ok": True, **report.to_json()}, human)


@audit.command("split-view")
@click.argument("proof", metavar="PROOF.cbor|-")
@key_option
@json_option
def audit_split_view(proof: str, key: str | None, as_json: bool) -> None:
    """Verify a split-view proof (specs/protocol-hello.md §8.1): two checkpoints signed by
    one log's key that cannot both be true. The key comes from the log's origin (its peer
    id) unless --key pins it."""
    from n3xus.protocol.witness import verify_split_view

    verifier = _verifier(key, required=False)
    view = verify_split_view(_read(proof), key=verifier)

    def human() -> None:
        echo(f"OK  split view ({view.kind.value}): {view.origin} signed two checkpoints "
             "that cannot both be true")
        for name, checkpoint in (("first", view.first), ("second", view.second)):
            echo(f"  {name:<7} size {checkpoint.size}  root {checkpoint.root_hash.hex()}")

    emit(as_json, {"ok": True, **view.to_json()}, human)


# Largest CAR an offline decision audit reads into memory: an agent's export is its
# manifests, memory and decisions (a few KiB a turn); 1 GiB is far beyond that.
MAX_DECISION_CAR_BYTES = 1 << 30


def _car_blocks(path: str) -> Any:
    """Every block of a CARv1 file, each checked against its CID, in memory."""
    from n3xus.canon.blockstore import check_block
    from n3xus.canon.car import CarReader
    from n3xus.canon.errors import CanonError
    from n3xus.canon.world import MemoryBlockStore

    blocks = MemoryBlockStore()
    total = 0
    try:
        with open(path, "rb") as f:
            for section in CarReader(f):
                total += len(section.data)
                if total > MAX_DECISION_CAR_BYTES:
                    raise click.ClickException(f"{path} holds over {MAX_DECISION_CAR_BYTES} bytes")
                check_block(section.cid, section.data)
                blocks.blocks[section.cid] = section.data
    except OSError as exc:
        raise click.ClickException(f"cannot read {path}: {exc.strerror}") from exc
    except CanonError as exc:
        raise click.ClickException(f"{path}: {exc}") from exc
    return blocks


@audit.command("decision")
@click.argument("entry", metavar="ENTRY|DECISION")
@click.option("--car", "car_path", required=True, metavar="FILE", help="A CAR export holding "
              "the decision and its blocks (`n3xus canon export --car FILE --author AGENT` for "
              "log entries, or rooted at the agent's state block).")
@click.option("--rerun", is_flag=True, help="Also re-run the model on the recorded prompt and "
              "compare the output bytes (needs the weights).")
@click.option("--model", "model_path", type=click.Path(dir_okay=False, exists=True), default=None,
              help="The GGUF file for --rerun (default: the bundled model).")
@json_option
def audit_decision(entry: str, car_path: str, rerun: bool, model_path: str | None,
                   as_json: bool) -> None:
    """Re-check an agent decision offline (specs/imvu.md §9): the signed log entry (or the
    decision block), manifest signature, request filter, output parse and policy verdict;
    with --rerun, the model's output too."""
    from n3xus.canon.cid import CID
    from n3xus.canon.errors import CanonError
    from n3xus.canon.log import LogEntry
    from n3xus.imvu.decision import decision_of_entry, decode_decision, recheck_decision

    try:
        cid = CID(entry)
    except ValueError:
        raise click.BadParameter(f"{entry[:100]} is not a CID", param_hint="ENTRY") from None
    blocks = _car_blocks(car_path)
    try:
        data = blocks.get(cid)
    except KeyError:
        raise click.ClickException(f"{cid} is not in {car_path}") from None
    try:
        LogEntry.from_block(data)
        is_entry = True
    except (CanonError, ValueError):
        is_entry = False  # not a log entry: a decision block itself
    decision = decision_of_entry(data, blocks) if is_entry else decode_decision(data)
    report = recheck_decision(decision, blocks)
    doc: dict[str, Any] = {"ok": report.ok, "entry": str(cid) if is_entry else None,
                           "recheck": report.to_json()}
    if rerun and decision.prompt is not None:
        from n3xus.imvu.decision import rerun_decision
        from n3xus.imvu.inference import bundled_model_path

        again = rerun_decision(decision, blocks, model_path or bundled_model_path())
        doc["rerun"] = again.to_json()
        doc["ok"] = doc["ok"] and again.same
    elif rerun:
        doc["rerun"] = None  # refused before inference: there is no output to reproduce

    def human() -> None:
        verdict = f"{decision.verdict.value}/{decision.primitive}" if decision.primitive \
            else decision.verdict.value
        status = "OK " if report.ok else "BAD"
        echo(f"{status} decision {decision.cid}: {verdict} (agent {decision.agent.hex()}, "
             f"manifest {decision.manifest})")
        for problem in report.problems:
            echo(f"  problem: {problem}")
        if "rerun" in doc:
            if doc["rerun"] is None:
                echo("  re-run: nothing to re-run (refused before inference)")
            else:
                same = "same output bytes" if doc["rerun"]["same_output"] else "DIFFERENT output"
                echo(f"  re-run: {same}: {doc['rerun']['rerun']!r}")

    emit(as_json, doc, human)
    if not doc["ok"]:
        raise SystemExit(1)
