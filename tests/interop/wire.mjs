// n3xus wire basics, written from specs/protocol.md and specs/canon.md alone: frames
// (varint length prefix), strict DAG-CBOR message bodies, the error message and its code
// registry, and block verification against CIDs (specs/protocol-blocks.md §5).
//
// No code is shared with the Python implementation; the specs are the only source.

import * as dagCbor from '@ipld/dag-cbor'
import { lpStream, UnexpectedEOFError } from '@libp2p/utils'
import { blake3 } from '@noble/hashes/blake3.js'
import crypto from 'node:crypto'
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'

// protocol.md §2, §5 (table framing-limits)
export const MAX_PREFIX_BYTES = 9
export const MAX_TYPE_CHARS = 64
export const MAX_ERROR_MESSAGE_CHARS = 1024
// protocol.md §4 rule 1: how long an error frame's sender waits for the peer to read it
export const ERROR_LINGER_MS = 1000

// protocol.md §4: the error code registry (name -> number).
export const ERROR_CODES = Object.freeze({
  malformed: 1,
  'frame-too-large': 2,
  truncated: 3,
  'unexpected-message': 4,
  timeout: 5,
  internal: 6,
  busy: 7,
  unsupported: 8,
  'wrong-network': 16,
  'unsupported-version': 17,
  'bad-signature': 18,
  'identity-mismatch': 19,
  replayed: 20,
  stale: 21,
  'policy-denied': 22,
  'bad-checkpoint': 23,
  'block-mismatch': 32,
  'too-many-wants': 33,
  'unexpected-block': 34,
  'split-view': 48,
  'inconsistent-proof': 49,
  'unknown-agent': 64,
  'agent-stopped': 65
})
const CODE_NAMES = new Map(Object.entries(ERROR_CODES).map(([name, code]) => [code, name]))

export function codeName (code) {
  return CODE_NAMES.get(code) ?? `unknown-${code}`
}

/** The peer breached a protocol: we send `error` with `code` and reset (protocol.md §4). */
export class WireError extends Error {
  constructor (code, message) {
    super(message)
    this.name = 'WireError'
    this.code = code // a name of ERROR_CODES
  }
}

/** The peer sent us an `error` message: never answered, only reported. */
export class PeerError extends Error {
  constructor (code, message) {
    super(`peer sent error ${code} (${codeName(code)}): ${message}`)
    this.name = 'PeerError'
    this.code = code // the number as received (unknown codes are accepted)
    this.peerMessage = message
  }
}

// ---------------------------------------------------------------- varints and prefixes

export function encodeVarint (n) {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError(`varint of ${n}`)
  const out = []
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80)
    n = Math.floor(n / 0x80)
  }
  out.push(n)
  return Uint8Array.from(out)
}

/**
 * Decode a frame's length prefix from the bytes read so far (protocol.md §2). Returns the
 * length, or throws RangeError('incomplete') when more bytes are needed (the contract of
 * lpStream's lengthDecoder), or a WireError for a prefix that is non-minimal or over 9
 * bytes (`malformed`) or whose value already exceeds `limit` (`frame-too-large`, checked
 * on every byte so that an over-limit frame is refused before its body is read).
 */
export function decodePrefix (bytes, limit) {
  let value = 0n
  for (let i = 0; i < bytes.length; i++) {
    if (i >= MAX_PREFIX_BYTES) throw new WireError('malformed', 'length prefix longer than 9 bytes')
    const byte = bytes[i]
    value |= BigInt(byte & 0x7f) << BigInt(7 * i)
    if (value > BigInt(limit)) {
      throw new WireError('frame-too-large', `frame of at least ${value} bytes, over the limit ${limit}`)
    }
    if ((byte & 0x80) === 0) {
      if (byte === 0 && i > 0) throw new WireError('malformed', 'non-minimal length prefix')
      if (i + 1 !== bytes.length) throw new WireError('malformed', 'bytes after the prefix')
      return Number(value)
    }
  }
  if (bytes.length >= MAX_PREFIX_BYTES) throw new WireError('malformed', 'length prefix longer than 9 bytes')
  throw new RangeError('incomplete length prefix')
}

export function encodeFrame (body) {
  const prefix = encodeVarint(body.length)
  const out = new Uint8Array(prefix.length + body.length)
  out.set(prefix, 0)
  out.set(body, prefix.length)
  return out
}

// ---------------------------------------------------------------- framed libp2p streams

/**
 * Frames over a libp2p stream with lpStream (@libp2p/utils), given a strict length
 * decoder whose limit is set per read. `readFrame` returns the body, or null when the
 * stream ended cleanly between frames; a stream that ends inside a frame is `truncated`.
 */
export class FramedStream {
  constructor (stream, { maxBufferSize } = {}) {
    this.stream = stream
    this.limit = 0
    this.prefixBytes = 0
    this.lp = lpStream(stream, {
      maxBufferSize: maxBufferSize ?? 4 * 1024 * 1024,
      maxLengthLength: MAX_PREFIX_BYTES + 1, // ours is stricter (decodePrefix)
      lengthDecoder: (list) => {
        this.prefixBytes = list.byteLength
        return decodePrefix(list.subarray(), this.limit)
      }
    })
  }

  async readFrame (limit, { signal } = {}) {
    this.limit = limit
    this.prefixBytes = 0
    try {
      const body = await this.lp.read({ signal })
      return body.subarray()
    } catch (err) {
      if (err instanceof UnexpectedEOFError) {
        if (this.prefixBytes === 0) return null
        throw new WireError('truncated', 'the stream ended inside a frame')
      }
      if (err?.name === 'AbortError' || err?.name === 'TimeoutError') {
        throw new WireError('timeout', 'no frame before the deadline')
      }
      throw err
    }
  }

  async readMessage (limit, options) {
    const body = await this.readFrame(limit, options)
    if (body === null) return null
    const message = decodeMessage(body)
    if (message.type === 'error') throw peerErrorOf(message)
    return message
  }

  async writeMessage (message) {
    await this.lp.write(encodeMessage(message))
  }

  async writeRaw (body) {
    await this.lp.write(body)
  }

  /**
   * protocol.md §4 rule 1: one `error` frame, our write side closed so that the frame is
   * read, then a reset once the peer closes or ERROR_LINGER_MS pass. Never throws.
   */
  async fail (code, text) {
    try {
      await this.lp.write(encodeMessage(errorMessage(code, text)))
      await this.stream.close()
      if (this.stream.remoteWriteStatus !== 'closed' && this.stream.status === 'open') {
        await new Promise((resolve) => {
          const timer = setTimeout(resolve, ERROR_LINGER_MS)
          const done = () => { clearTimeout(timer); resolve() }
          this.stream.addEventListener('remoteCloseWrite', done, { once: true })
          this.stream.addEventListener('close', done, { once: true })
        })
      }
    } catch {
      // the stream may already be gone; the reset below is what matters
    }
    this.stream.abort(new Error(`n3xus error ${code}: ${text}`))
  }

  async close () {
    try {
      await this.stream.close()
    } catch {
      this.stream.abort(new Error('close failed'))
    }
  }
}

// ---------------------------------------------------------------- messages

export function errorMessage (codeNameOrNumber, text) {
  const code = typeof codeNameOrNumber === 'number' ? codeNameOrNumber : ERROR_CODES[codeNameOrNumber]
  return { type: 'error', code, message: [...String(text)].slice(0, MAX_ERROR_MESSAGE_CHARS).join('') }
}

function peerErrorOf (message) {
  if (!isUint(message.code) || message.code > 65535 || typeof message.message !== 'string') {
    throw new WireError('malformed', 'an error message that does not match its schema')
  }
  return new PeerError(message.code, message.message)
}

export function encodeMessage (message) {
  return dagCbor.encode(message)
}

/** A message frame's body: one strict DAG-CBOR map with a text `type` (protocol.md §2). */
export function decodeMessage (body) {
  checkCanonical(body)
  let value
  try {
    value = dagCbor.decode(body)
  } catch (err) {
    throw new WireError('malformed', `not DAG-CBOR: ${err.message}`)
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value) || value instanceof Uint8Array ||
      CID.asCID(value) !== null) {
    throw new WireError('malformed', 'a message must be a map')
  }
  const type = value.type
  if (typeof type !== 'string' || type.length === 0 || [...type].length > MAX_TYPE_CHARS) {
    throw new WireError('malformed', 'a message needs a text type of 1..64 characters')
  }
  return value
}

export function isUint (v) {
  return (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0) || (typeof v === 'bigint' && v >= 0n)
}

// ---------------------------------------------------------------- strict DAG-CBOR scan

/**
 * Checks the rules of canon.md §2.2/§2.3 that the generic decoder does not (cborg, under
 * @ipld/dag-cbor, already refuses non-minimal heads, indefinite lengths, undefined, NaN,
 * infinities, duplicate keys and tags other than 42): map keys in canonical order, 64-bit
 * floats only, one item with nothing after it, nesting at most 128.
 */
export function checkCanonical (bytes) {
  let end
  try {
    end = skipItem(bytes, 0, 1)
  } catch (err) {
    if (err instanceof WireError) throw err
    throw new WireError('malformed', `not canonical DAG-CBOR: ${err.message}`)
  }
  if (end !== bytes.length) throw new WireError('malformed', 'bytes after the value')
}

const MAX_NESTING_DEPTH = 128

function readHead (bytes, offset) {
  if (offset >= bytes.length) throw new WireError('malformed', 'truncated value')
  const initial = bytes[offset]
  const major = initial >> 5
  const info = initial & 0x1f
  let arg
  let next = offset + 1
  if (info < 24) {
    arg = info
  } else if (info <= 27) {
    const size = 1 << (info - 24)
    if (next + size > bytes.length) throw new WireError('malformed', 'truncated head')
    arg = 0n
    for (let i = 0; i < size; i++) arg = (arg << 8n) | BigInt(bytes[next + i])
    next += size
    if (major !== 7) {
      const min = [24n, 0x100n, 0x10000n, 0x100000000n][info - 24]
      if (arg < min) throw new WireError('malformed', 'non-minimal head')
    }
    arg = arg <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(arg) : arg
  } else {
    throw new WireError('malformed', 'reserved or indefinite-length head')
  }
  return { major, info, arg, next }
}

function skipItem (bytes, offset, depth) {
  const { major, info, arg, next } = readHead(bytes, offset)
  switch (major) {
    case 0: case 1:
      return next
    case 2: case 3: {
      const end = next + Number(arg)
      if (end > bytes.length) throw new WireError('malformed', 'truncated string')
      return end
    }
    case 4: {
      if (depth > MAX_NESTING_DEPTH) throw new WireError('malformed', 'nesting deeper than 128')
      let at = next
      for (let i = 0; i < arg; i++) at = skipItem(bytes, at, depth + 1)
      return at
    }
    case 5: {
      if (depth > MAX_NESTING_DEPTH) throw new WireError('malformed', 'nesting deeper than 128')
      let at = next
      let previous = null
      for (let i = 0; i < arg; i++) {
        const keyHead = readHead(bytes, at)
        if (keyHead.major !== 3) throw new WireError('malformed', 'a map key that is not text')
        const keyEnd = skipItem(bytes, at, depth + 1)
        const key = bytes.subarray(at, keyEnd)
        if (previous !== null && compareEncodedKeys(previous, key) >= 0) {
          throw new WireError('malformed', 'map keys not in canonical order')
        }
        previous = key
        at = skipItem(bytes, keyEnd, depth + 1)
      }
      return at
    }
    case 6: {
      if (arg !== 42) throw new WireError('malformed', 'a tag other than 42')
      return skipItem(bytes, next, depth)
    }
    default: // 7
      if (info === 27) return next // 64-bit float (NaN/infinity refused by the decoder)
      if (info === 20 || info === 21 || info === 22) return next // false, true, null
      throw new WireError('malformed', 'a float narrower than 64 bits or a simple value')
  }
}

/** Canonical key order: shorter encoded key first, then bytewise (canon.md §2.2 rule 6). */
function compareEncodedKeys (a, b) {
  if (a.length !== b.length) return a.length - b.length
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] - b[i]
  return 0
}

/**
 * The body of a top-level map with the pair of key `name` removed, every other pair kept
 * byte for byte (known or not): how a verifier rebuilds signed bytes (protocol-hello.md §4).
 */
export function mapWithout (body, name) {
  const head = readHead(body, 0)
  if (head.major !== 5) throw new WireError('malformed', 'not a map')
  const kept = []
  let at = head.next
  let removed = 0
  for (let i = 0; i < head.arg; i++) {
    const keyEnd = skipItem(body, at, 2)
    const valueEnd = skipItem(body, keyEnd, 2)
    const key = dagCbor.decode(body.subarray(at, keyEnd))
    if (key === name) removed++
    else kept.push(body.subarray(at, valueEnd))
    at = valueEnd
  }
  const count = head.arg - removed
  const mapHead = count < 24 ? Uint8Array.of(0xa0 | count) : encodeMapHead(count)
  return concat([mapHead, ...kept])

  function encodeMapHead (n) {
    if (n < 0x100) return Uint8Array.of(0xb8, n)
    return Uint8Array.of(0xb9, n >> 8, n & 0xff)
  }
}

export function concat (parts) {
  const total = parts.reduce((sum, p) => sum + p.length, 0)
  const out = new Uint8Array(total)
  let at = 0
  for (const p of parts) {
    out.set(p, at)
    at += p.length
  }
  return out
}

// ---------------------------------------------------------------- CIDs and blocks

export const STORABLE_CODECS = new Set([0x55, 0x71, 0x70]) // raw, dag-cbor, dag-pb
export const BLAKE3 = 0x1e
export const SHA2_256 = 0x12

/** The multihash digest of `bytes` under `code` (canon.md §3.4), or null if not computable. */
export function hashBytes (code, bytes) {
  if (code === BLAKE3) return blake3(bytes)
  if (code === SHA2_256) return new Uint8Array(crypto.createHash('sha256').update(bytes).digest()) // native
  return null
}

/** A CIDv1 of `codec` over `bytes` (BLAKE3 unless told), built with multiformats. */
export function cidFor (bytes, codec = dagCbor.code, hashCode = BLAKE3) {
  return CID.createV1(codec, Digest.create(hashCode, hashBytes(hashCode, bytes)))
}

/** protocol-blocks.md §5: does `bytes` hash to `cid`? Fails closed. */
export function blockMatches (cid, bytes) {
  if (!STORABLE_CODECS.has(cid.code)) return false
  const { code, digest } = cid.multihash
  if (digest.length !== 32) return false
  const computed = hashBytes(code, bytes)
  if (computed === null) return false
  return computed.length === 32 && computed.every((b, i) => b === digest[i])
}

export function toHex (bytes) {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex')
}

export function fromHex (hex) {
  return new Uint8Array(Buffer.from(hex, 'hex'))
}
