// Tips from the audience page: a ledger `tip` transaction (specs/ledger.md §4-5) built
// and signed in the browser with the viewer's own Ed25519 key (WebCrypto). The private
// key is generated non-extractable and kept in this origin's IndexedDB: it never
// leaves the browser. The node only relays the signed envelope to its ledger.
import { Link, bytesToHex, cidFromText, encode, hexToBytes } from "./dagcbor.js";
import { roomName } from "./live.js";

const TX_TAG = new TextEncoder().encode("n3xus/ledger-tx/v1\0");
const DB = "n3xus-wallet";
const STORE = "keys";

function idb(mode, fn) {
  return new Promise((resolve, reject) => {
    const open = indexedDB.open(DB, 1);
    open.onupgradeneeded = () => open.result.createObjectStore(STORE);
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const tx = open.result.transaction(STORE, mode);
      const request = fn(tx.objectStore(STORE));
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    };
  });
}

// The viewer's key pair, created on first use (private key non-extractable).
export async function viewerKey() {
  let pair = await idb("readonly", (s) => s.get("viewer"));
  if (!pair) {
    pair = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
    await idb("readwrite", (s) => s.put(pair, "viewer"));
  }
  const account = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  return { pair, account };
}

// The signed envelope {"tx": T, "sig": S} of a tip (bytes, canonical DAG-CBOR).
export async function signTip(key, { network, to, amount, ref, seq, prev, time }) {
  const tx = {
    v: 1, op: "tip", seq,
    args: { to: hexToBytes(to), ref: ref ? cidFromText(ref) : null, amount },
    prev: prev ? cidFromText(prev) : null,
    time, account: key.account, network: cidFromText(network),
  };
  const signed = encode(tx);
  const message = new Uint8Array(TX_TAG.length + signed.length);
  message.set(TX_TAG);
  message.set(signed, TX_TAG.length);
  const sig = new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, key.pair.privateKey, message));
  // a2 62 "tx" T 63 "sig" 58 40 S  (specs/ledger.md §4.1)
  const head = Uint8Array.of(0xa2, 0x62, 0x74, 0x78);
  const trailer = Uint8Array.of(0x63, 0x73, 0x69, 0x67, 0x58, 0x40);
  const envelope = new Uint8Array(head.length + signed.length + trailer.length + 64);
  envelope.set(head);
  envelope.set(signed, head.length);
  envelope.set(trailer, head.length + signed.length);
  envelope.set(sig, head.length + signed.length + trailer.length);
  return envelope;
}

// Ask the node what a tip in this room needs, sign it, hand it to the node.
export async function tip(amount) {
  const key = await viewerKey();
  const room = encodeURIComponent(roomName());
  const account = bytesToHex(key.account);
  const info = await fetch(`/api/v1/rooms/${room}/tip-info?account=${account}`);
  if (!info.ok) throw new Error(`tipping is not available here (${info.status})`);
  const { network, creator, next_seq: seq, prev, ref } = await info.json();
  const envelope = await signTip(key, { network, to: creator, amount, ref, seq, prev,
    time: Date.now() });
  const sent = await fetch(`/api/v1/rooms/${room}/tips`, {
    method: "POST", body: envelope, headers: { "Content-Type": "application/octet-stream" },
  });
  const answer = await sent.json();
  if (!sent.ok) throw new Error(answer.error ? answer.error.message : `tip refused (${sent.status})`);
  return { account, ...answer };
}

