// /n3xus/hello/1.0.0 written from specs/protocol-hello.md (and canon-log.md §4 for the
// signed checkpoint notes a hello carries). Both roles: the dialer is the initiator.

import crypto from 'node:crypto'
import { CID } from 'multiformats/cid'
import { base58btc } from 'multiformats/bases/base58'
import { base64 } from 'multiformats/bases/base64'
import * as dagCbor from '@ipld/dag-cbor'
import { WireError, PeerError, concat, mapWithout, isUint, decodeMessage } from './wire.mjs'

export const HELLO_PROTOCOL = '/n3xus/hello/1.0.0'
export const HELLO_TAG = new TextEncoder().encode('n3xus/hello/v1\0') // §4, README §3.2

// §6, table hello-limits
export const MAX_HELLO_FRAME_BYTES = 131072
export const NONCE_BYTES = 32
export const MAX_CLOCK_SKEW_MS = 300000
export const HELLO_TIMEOUT_S = 10.0
export const MAX_HELLO_NOTE_BYTES = 16384
export const MAX_PROTOCOL_IDS = 64
export const MAX_PROTOCOL_ID_CHARS = 256
export const MAX_CAPABILITIES = 32
export const MAX_CAPABILITY_CHARS = 64
export const MAX_POLICY_NETWORKS = 16
export const MAX_POLICY_PEERS = 256
export const MAX_PEER_ID_CHARS = 128
export const MAX_AGENT_CHARS = 128
export const MAX_VERSION_CHARS = 64

const SEMVER = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$/
const CAPABILITY = /^[a-z0-9]+(-[a-z0-9]+)*$/
const utf8 = new TextEncoder()

/** A hello refused by us (`by: us`) with a registered code name. */
export class HelloRefused extends WireError {}

// ---------------------------------------------------------------- ed25519 and peer ids

const SPKI_ED25519 = Buffer.from('302a300506032b6570032100', 'hex')
const PKCS8_ED25519 = Buffer.from('302e020100300506032b657004220420', 'hex')

export function signerFromSeed (seed) {
  const privateKey = crypto.createPrivateKey({ key: Buffer.concat([PKCS8_ED25519, seed]), format: 'der', type: 'pkcs8' })
  const publicKey = new Uint8Array(crypto.createPublicKey(privateKey).export({ format: 'der', type: 'spki' }).subarray(12))
  return { publicKey, sign: (data) => new Uint8Array(crypto.sign(null, data, privateKey)) }
}

export function ed25519Verify (publicKey, data, signature) {
  if (publicKey.length !== 32 || signature.length !== 64) return false
  try {
    const key = crypto.createPublicKey({ key: Buffer.concat([SPKI_ED25519, publicKey]), format: 'der', type: 'spki' })
    return crypto.verify(null, data, key, signature)
  } catch {
    return false
  }
}

/** peer id = base58btc(00 24 08 01 12 20 || key), protocol.md §1 */
export function peerIdOfKey (publicKey) {
  return base58btc.baseEncode(concat([Uint8Array.of(0x00, 0x24, 0x08, 0x01, 0x12, 0x20), publicKey]))
}

// ---------------------------------------------------------------- signed checkpoint notes

function sha256 (bytes) {
  return new Uint8Array(crypto.createHash('sha256').update(bytes).digest())
}

function strictBase64 (text) {
  const bytes = Buffer.from(text, 'base64')
  if (bytes.toString('base64') !== text) throw new Error('not canonical base64')
  return new Uint8Array(bytes)
}

/**
 * Opens a C2SP signed checkpoint note (canon-log.md §4) as a checkpoint of `origin` signed
 * by the ed25519 `publicKey` under key name `origin`. Returns {origin, size, root}; throws.
 */
export function openCheckpoint (note, origin, publicKey) {
  if (/[\u0000-\u0009\u000b-\u001f\u007f]/.test(note)) throw new Error('control character in note')
  const split = note.lastIndexOf('\n\n')
  if (split < 0) throw new Error('note without a signature block')
  const text = note.slice(0, split + 1)
  const signatures = note.slice(split + 2)
  if (!signatures.endsWith('\n')) throw new Error('signature block must end in a newline')
  const keyId = sha256(concat([utf8.encode(origin), Uint8Array.of(0x0a, 0x01), publicKey])).subarray(0, 4)
  let verified = 0
  for (const line of signatures.slice(0, -1).split('\n')) {
    if (!line.startsWith('\u2014 ')) throw new Error('a signature line must start with an em dash')
    const parts = line.slice(2).split(' ')
    if (parts.length !== 2 || parts[0] === '' || parts[0].includes('+')) throw new Error('bad signature line')
    const blob = strictBase64(parts[1])
    if (blob.length <= 4) throw new Error('signature too short')
    if (parts[0] !== origin || !blob.subarray(0, 4).every((b, i) => b === keyId[i])) continue
    if (!ed25519Verify(publicKey, utf8.encode(text), blob.subarray(4))) throw new Error('a signature by the log key does not verify')
    verified++
  }
  if (verified === 0) throw new Error('not signed by the log key')
  const lines = text.split('\n').slice(0, -1)
  if (lines.length < 3) throw new Error('a checkpoint has at least three lines')
  if (lines[0] !== origin) throw new Error(`origin ${JSON.stringify(lines[0])} is not ${origin}`)
  if (!/^(0|[1-9]\d*)$/.test(lines[1]) || BigInt(lines[1]) >= 2n ** 64n) throw new Error('bad tree size')
  const root = strictBase64(lines[2])
  if (root.length !== 32) throw new Error('root hash is not 32 bytes')
  if (lines.slice(3).some((l) => l === '')) throw new Error('empty extension line')
  return { origin, size: BigInt(lines[1]), root }
}

// ---------------------------------------------------------------- the hello message

function compareBytes (a, b) {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i]
  return a.length - b.length
}

function sortedUnique (items, key) {
  for (let i = 1; i < items.length; i++) {
    if (compareBytes(key(items[i - 1]), key(items[i])) >= 0) return false
  }
  return true
}

const chars = (s) => [...s].length
const isBytes = (v, n) => v instanceof Uint8Array && v.length === n
const isText = (v, min, max) => typeof v === 'string' && chars(v) >= min && chars(v) <= max
const isList = (v) => Array.isArray(v)
const isMap = (v) => v !== null && typeof v === 'object' && !Array.isArray(v) && !(v instanceof Uint8Array) && CID.asCID(v) === null
const asCid = (v) => CID.asCID(v)

export function sortTexts (items) {
  return [...items].sort((a, b) => compareBytes(utf8.encode(a), utf8.encode(b)))
}

/** §3: the schema check of a decoded hello (check 1 of §5). */
export function checkHelloSchema (m) {
  const bad = (why) => { throw new HelloRefused('malformed', `hello: ${why}`) }
  if (m.type !== 'hello') bad('type is not hello')
  if (m.v !== 1) throw new HelloRefused('unsupported-version', `hello format v=${m.v} is not 1`)
  if (!isBytes(m.key, 32)) bad('key is not 32 bytes')
  if (!isText(m.version, 1, MAX_VERSION_CHARS) || !SEMVER.test(m.version)) bad('version is not semver')
  if (!isText(m.agent, 0, MAX_AGENT_CHARS)) bad('agent')
  if (!isList(m.protocols) || m.protocols.length > MAX_PROTOCOL_IDS ||
      !m.protocols.every((p) => isText(p, 1, MAX_PROTOCOL_ID_CHARS) && p.startsWith('/')) ||
      !sortedUnique(m.protocols, (p) => utf8.encode(p))) bad('protocols')
  if (!isList(m.capabilities) || m.capabilities.length > MAX_CAPABILITIES ||
      !m.capabilities.every((c) => isText(c, 1, MAX_CAPABILITY_CHARS) && CAPABILITY.test(c)) ||
      !sortedUnique(m.capabilities, (c) => utf8.encode(c))) bad('capabilities')
  if (asCid(m.network) === null) bad('network is not a link')
  for (const name of ['canon', 'ledger']) {
    const note = m[name]
    if (note !== null && (typeof note !== 'string' || utf8.encode(note).length > MAX_HELLO_NOTE_BYTES)) bad(name)
  }
  const p = m.policy
  if (!isMap(p)) bad('policy')
  if (!isList(p.networks) || p.networks.length < 1 || p.networks.length > MAX_POLICY_NETWORKS ||
      !p.networks.every((n) => asCid(n) !== null) || !sortedUnique(p.networks, (n) => n.bytes)) bad('policy.networks')
  for (const name of ['allow', 'deny']) {
    const ids = p[name]
    if (!isList(ids) || ids.length > MAX_POLICY_PEERS || !ids.every((id) => isText(id, 1, MAX_PEER_ID_CHARS)) ||
        !sortedUnique(ids, (id) => utf8.encode(id))) bad(`policy.${name}`)
  }
  const s = m.session
  if (!isMap(s) || !isText(s.initiator, 1, MAX_PEER_ID_CHARS) || !isText(s.responder, 1, MAX_PEER_ID_CHARS) ||
      !isBytes(s.initiator_nonce, NONCE_BYTES) || !isBytes(s.responder_nonce, NONCE_BYTES)) bad('session')
  if (!isUint(m.time)) bad('time')
  if (!isBytes(m.sig, 64)) bad('sig is not 64 bytes')
}

/** Builds and signs our hello (§3, §4). Returns the message map (with sig). */
export function makeHello (me, session, time) {
  const unsigned = {
    type: 'hello',
    v: 1,
    key: me.signer.publicKey,
    version: me.version,
    agent: me.agent,
    protocols: sortTexts(me.protocols),
    capabilities: sortTexts(me.capabilities),
    network: me.network,
    canon: me.canon ?? null,
    ledger: me.ledger ?? null,
    policy: { networks: [...me.networks].sort((a, b) => compareBytes(a.bytes, b.bytes)), allow: [], deny: [] },
    session,
    time
  }
  const sig = me.signer.sign(concat([HELLO_TAG, dagCbor.encode(unsigned)]))
  return { ...unsigned, sig }
}

function equalBytes (a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i])
}

function majorOf (version) {
  return version.split('.')[0]
}

/**
 * §5: checks a received hello `body` in the order of the table; throws HelloRefused with the
 * first failing reason. `me` holds our version and policy, `remote` the Noise-authenticated
 * peer id text, `session` this connection's session.
 */
export function verifyHello (body, { me, remote, session, now }) {
  const m = decodeMessage(body)
  checkHelloSchema(m) // 1
  if (peerIdOfKey(m.key) !== remote) { // 2
    throw new HelloRefused('identity-mismatch', `the hello's key is ${peerIdOfKey(m.key)}, the connection's peer is ${remote}`)
  }
  const signed = concat([HELLO_TAG, mapWithout(body, 'sig')])
  if (!ed25519Verify(m.key, signed, m.sig)) throw new HelloRefused('bad-signature', 'the hello signature does not verify') // 3
  const s = m.session
  if (s.initiator !== session.initiator || s.responder !== session.responder || // 4
      !equalBytes(s.initiator_nonce, session.initiator_nonce) || !equalBytes(s.responder_nonce, session.responder_nonce)) {
    throw new HelloRefused('replayed', 'the hello is not bound to this connection')
  }
  const skew = Number(m.time) - now
  if (Math.abs(skew) > MAX_CLOCK_SKEW_MS) throw new HelloRefused('stale', `the hello's time is ${skew} ms from ours`) // 5
  if (majorOf(m.version) !== majorOf(me.version)) { // 6
    throw new HelloRefused('unsupported-version', `major versions differ: ${m.version} vs ${me.version}`)
  }
  // 7: our policy has empty allow and deny lists (it admits every peer id).
  if (!me.networks.some((n) => n.equals(m.network))) { // 8
    throw new HelloRefused('wrong-network', `network ${m.network} is not one this node accepts`)
  }
  const checkpoints = {}
  try { // 9
    if (m.canon !== null) checkpoints.canon = openCheckpoint(m.canon, `n3xus.net/canon/${remote}`, m.key)
    if (m.ledger !== null) checkpoints.ledger = openCheckpoint(m.ledger, `n3xus.net/ledger/${m.network}/${remote}`, m.key)
  } catch (err) {
    throw new HelloRefused('bad-checkpoint', `checkpoint: ${err.message}`)
  }
  return { message: m, checkpoints }
}

/** What we report of a verified hello (JSON-friendly). */
export function summarize ({ message: m, checkpoints }) {
  const cp = (c) => c === undefined ? null : { origin: c.origin, size: Number(c.size), root: Buffer.from(c.root).toString('base64') }
  return {
    key: Buffer.from(m.key).toString('hex'),
    version: m.version,
    agent: m.agent,
    protocols: m.protocols,
    capabilities: m.capabilities,
    network: m.network.toString(),
    policy_networks: m.policy.networks.map(String),
    time: Number(m.time),
    canon: cp(checkpoints.canon),
    ledger: cp(checkpoints.ledger)
  }
}

// ---------------------------------------------------------------- the exchange (§2, §6)

function unexpected (message, expected) {
  const known = ['hello-start', 'hello', 'hello-accept']
  if (!known.includes(message.type)) return new WireError('unsupported', `unknown message type ${message.type}`)
  return new WireError('unexpected-message', `${message.type} where ${expected} was expected`)
}

/**
 * Runs one side of the exchange on `framed`. Returns {state: 'done', remote} or
 * {state: 'failed' | 'refused-by-peer', code, message, by}. Never throws for the peer's
 * faults: a refusal sends `error` and resets (protocol.md §4).
 */
export async function runHello (framed, role, { me, local, remote, signal, now = Date.now }) {
  const random = () => new Uint8Array(crypto.randomBytes(NONCE_BYTES))
  const read = async (expected) => {
    const m = await framed.readFrame(MAX_HELLO_FRAME_BYTES, { signal })
    if (m === null) throw new WireError('truncated', `the stream ended where ${expected} was expected`)
    return m
  }
  try {
    let theirs
    if (role === 'initiator') {
      const nonce = random()
      await framed.writeMessage({ type: 'hello-start', nonce })
      const body = await read('hello')
      const m = decodeMessage(body)
      if (m.type === 'error') throw asPeerError(m)
      if (m.type !== 'hello') throw unexpected(m, 'hello')
      const responderNonce = isMap(m.session) && isBytes(m.session.responder_nonce, NONCE_BYTES) ? m.session.responder_nonce : new Uint8Array(NONCE_BYTES)
      const session = { initiator: local, responder: remote, initiator_nonce: nonce, responder_nonce: responderNonce }
      theirs = verifyHello(body, { me, remote, session, now: now() })
      await framed.writeMessage(makeHello(me, session, now()))
      const accept = decodeMessage(await read('hello-accept'))
      if (accept.type === 'error') throw asPeerError(accept)
      if (accept.type !== 'hello-accept') throw unexpected(accept, 'hello-accept')
      await framed.close()
    } else {
      const start = decodeMessage(await read('hello-start'))
      if (start.type === 'error') throw asPeerError(start)
      if (start.type !== 'hello-start') throw unexpected(start, 'hello-start')
      if (!isBytes(start.nonce, NONCE_BYTES)) throw new WireError('malformed', 'hello-start nonce is not 32 bytes')
      const session = { initiator: remote, responder: local, initiator_nonce: start.nonce, responder_nonce: random() }
      await framed.writeMessage(makeHello(me, session, now()))
      const body = await read('hello')
      const m = decodeMessage(body)
      if (m.type === 'error') throw asPeerError(m)
      if (m.type !== 'hello') throw unexpected(m, 'hello')
      theirs = verifyHello(body, { me, remote, session, now: now() })
      await framed.writeMessage({ type: 'hello-accept' })
      await framed.close()
    }
    return { state: 'done', remote: summarize(theirs) }
  } catch (err) {
    if (err instanceof PeerError) {
      await framed.close()
      return { state: 'refused-by-peer', code: err.code, message: err.peerMessage, by: 'peer' }
    }
    if (err instanceof WireError) {
      if (err.code !== 'truncated') await framed.fail(err.code, err.message)
      else framed.stream.abort(err)
      return { state: 'failed', code: err.code, message: err.message, by: 'us' }
    }
    framed.stream.abort(err)
    return { state: 'failed', code: 'internal', message: String(err?.message ?? err), by: 'us' }
  }
}

function asPeerError (m) {
  if (!isUint(m.code) || typeof m.message !== 'string') return new WireError('malformed', 'error message schema')
  return new PeerError(Number(m.code), m.message)
}
