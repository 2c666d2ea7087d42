// The strict DAG-CBOR subset a browser needs to sign ledger transactions
// (specs/canon.md §2): null, booleans, safe integers, text, bytes, CID links (tag 42),
// arrays, and maps with keys sorted by encoded length, then bytewise. No floats.

const utf8 = new TextEncoder();

export class Link {
  // A CID as its binary form (version, codec, multihash), e.g. from cidFromText().
  constructor(bytes) { this.bytes = bytes; }
}

const BASE32 = "abcdefghijklmnopqrstuvwxyz234567";

// CIDv1 text in base32 ("b" multibase prefix) -> Link.
export function cidFromText(text) {
  if (!text || text[0] !== "b") throw new Error("only base32 CIDv1 text is supported");
  let bits = 0, value = 0;
  const out = [];
  for (const ch of text.slice(1)) {
    const v = BASE32.indexOf(ch);
    if (v < 0) throw new Error(`not base32: ${ch}`);
    value = (value << 5) | v;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((value >> bits) & 0xff);
    }
  }
  return new Link(Uint8Array.from(out));
}

export function hexToBytes(hex) {
  if (!/^([0-9a-f]{2})*$/.test(hex)) throw new Error("not lower-case hex");
  return Uint8Array.from(hex.match(/../g) || [], (h) => parseInt(h, 16));
}

export function bytesToHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function head(major, n, out) {
  if (!Number.isSafeInteger(n) || n < 0) throw new Error("integer out of range");
  const m = major << 5;
  if (n < 24) out.push(m | n);
  else if (n < 0x100) out.push(m | 24, n);
  else if (n < 0x10000) out.push(m | 25, n >> 8, n & 0xff);
  else if (n < 0x100000000) out.push(m | 26, n >>> 24, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
  else {
    const hi = Math.floor(n / 0x100000000), lo = n >>> 0;
    out.push(m | 27, hi >>> 24, (hi >> 16) & 0xff, (hi >> 8) & 0xff, hi & 0xff,
      lo >>> 24, (lo >> 16) & 0xff, (lo >> 8) & 0xff, lo & 0xff);
  }
}

function write(value, out) {
  if (value === null) out.push(0xf6);
  else if (value === true) out.push(0xf5);
  else if (value === false) out.push(0xf4);
  else if (typeof value === "number") {
    if (!Number.isInteger(value)) throw new Error("DAG-CBOR here has no floats");
    if (value >= 0) head(0, value, out);
    else head(1, -1 - value, out);
  } else if (typeof value === "string") {
    const b = utf8.encode(value);
    head(3, b.length, out);
    for (const x of b) out.push(x);
  } else if (value instanceof Uint8Array) {
    head(2, value.length, out);
    for (const x of value) out.push(x);
  } else if (value instanceof Link) {
    out.push(0xd8, 0x2a);
    head(2, value.bytes.length + 1, out);
    out.push(0x00);
    for (const x of value.bytes) out.push(x);
  } else if (Array.isArray(value)) {
    head(4, value.length, out);
    for (const v of value) write(v, out);
  } else if (typeof value === "object") {
    const keys = Object.keys(value).map((k) => [k, utf8.encode(k)]);
    keys.sort((a, b) => a[1].length - b[1].length || compareBytes(a[1], b[1]));
    head(5, keys.length, out);
    for (const [k] of keys) {
      write(k, out);
      write(value[k], out);
    }
  } else throw new Error(`cannot encode ${typeof value}`);
}

function compareBytes(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

export function encode(value) {
  const out = [];
  write(value, out);
  return Uint8Array.from(out);
}
