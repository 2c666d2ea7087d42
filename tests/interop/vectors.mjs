// Checks this JS implementation against the specification's own vectors: canon.md §4
// (DAG-CBOR, CIDs), specs/vectors/protocol-framing.json, protocol-hello.json (the four
// frames rebuilt and signed byte for byte, both hellos verified, the invalid ones refused
// with their codes) and protocol-blocks.json (a requester fed the invalid streams).
//
//   node tests/interop/vectors.mjs [specs/vectors]  -> one JSON line {"checked", "failures"}
import './polyfill.mjs'

import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import * as dagCbor from '@ipld/dag-cbor'
import { CID } from 'multiformats/cid'
import { fetchBlocks } from './blocks.mjs'
import { makeHello, signerFromSeed, verifyHello, peerIdOfKey } from './hello.mjs'
import { WireError, cidFor, decodeMessage, decodePrefix, encodeFrame, encodeMessage, fromHex, toHex } from './wire.mjs'

const here = path.dirname(fileURLToPath(import.meta.url))
const vectorsDir = process.argv[2] ?? path.join(here, '..', '..', 'specs', 'vectors')
const load = (name) => JSON.parse(fs.readFileSync(path.join(vectorsDir, name), 'utf8'))

let checked = 0
const failures = []
function check (name, condition, detail = '') {
  checked++
  if (!condition) failures.push(`${name}${detail === '' ? '' : ': ' + detail}`)
}
function expectCode (name, fn, code) {
  try {
    fn()
    check(name, false, `accepted; expected ${code}`)
  } catch (err) {
    check(name, err instanceof WireError && err.code === code, `got ${err.code ?? err.message}, expected ${code}`)
  }
}
async function expectCodeAsync (name, fn, code) {
  try {
    await fn()
    check(name, false, `accepted; expected ${code}`)
  } catch (err) {
    check(name, err instanceof WireError && err.code === code, `got ${err.code ?? err.message}, expected ${code}`)
  }
}

/** DAG-JSON (the vectors' form) to data-model values. */
function fromDagJson (v) {
  if (Array.isArray(v)) return v.map(fromDagJson)
  if (v !== null && typeof v === 'object') {
    const keys = Object.keys(v)
    if (keys.length === 1 && keys[0] === '/') {
      return typeof v['/'] === 'string' ? CID.parse(v['/']) : new Uint8Array(Buffer.from(v['/'].bytes, 'base64'))
    }
    return Object.fromEntries(keys.map((k) => [k, fromDagJson(v[k])]))
  }
  return v
}
const sameValue = (a, b) => toHex(dagCbor.encode(a)) === toHex(dagCbor.encode(b))

/** Sans-IO frame splitting over a byte string, as a receiver would see it. */
function splitFrames (bytes, limitOf) {
  const frames = []
  let at = 0
  while (at < bytes.length) {
    let length = null
    let end = at
    while (length === null) {
      end++
      if (end > bytes.length) throw new WireError('truncated', 'stream ends inside a prefix')
      try {
        length = decodePrefix(bytes.subarray(at, end), limitOf(frames.length))
      } catch (err) {
        if (!(err instanceof RangeError)) throw err
      }
    }
    if (end + length > bytes.length) throw new WireError('truncated', 'stream ends inside a frame')
    frames.push(bytes.subarray(end, end + length))
    at = end + length
  }
  return frames
}

/** A FramedStream stand-in reading frames from bytes (writes are dropped). */
class BytesFramed {
  constructor (bytes) { this.bytes = bytes; this.at = 0; this.stream = { abort () {} } }
  async readFrame (limit) {
    if (this.at === this.bytes.length) return null
    const [frame] = splitFrames(this.bytes.subarray(this.at), () => limit).slice(0, 1)
    this.at += frame.byteOffset - this.bytes.subarray(this.at).byteOffset + frame.length
    return frame
  }

  async writeMessage () {}
  async close () {}
  async fail () {}
}

// ---------------------------------------------------------------- canon.md §4
{
  const v1 = dagCbor.encode({ n: 1, bytes: Uint8Array.of(1, 2), list: [true, null, -1, 1.5], a: 'x' })
  check('canon V1 bytes', toHex(v1) === 'a461616178616e01646c69737484f5f620fb3ff8000000000000656279746573420102')
  check('canon V1 cid', cidFor(v1).toString() === 'bafyr4igrdegimm2vtawn7gupnd3etmoxvqsrffvjzrhtczmjl6t4dtswt4')
  check('canon V1 sha2-256 cid', cidFor(v1, 0x71, 0x12).toString() === 'bafyreif3o7cwjk57yegbn2wwu246md3ah6dwk4k42dj6cdjlpoi75vee64')
  const v2 = dagCbor.encode({ link: cidFor(v1) })
  check('canon V2 cid', cidFor(v2).toString() === 'bafyr4iexzwerzumkvozl2unyufw4vdebxrjzhj32hd4xyg5wpx55kqd72a')
  check('canon V3 raw cid', cidFor(new TextEncoder().encode('hello'), 0x55).toString() === 'bafkr4ihkr4ld3m4gqkjf4reryxsy2s5tkbxprqkow6fin2iiyvreuzzab4')
  check('canon-log §6 peer id', peerIdOfKey(fromHex('03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8')) === '12D3KooWA4Xop1JaT3MHxwYMkCepYsv4iPVopMXwCz5iHYdBfeSB')
}

// ---------------------------------------------------------------- protocol-framing.json
{
  const framing = load('protocol-framing.json')
  for (const v of framing.valid) {
    try {
      const frames = splitFrames(fromHex(v.hex), () => 1 << 20)
      check(`framing ${v.name}: frame count`, frames.length === v.frames.length)
      frames.forEach((f, i) => check(`framing ${v.name}: frame ${i}`, sameValue(decodeMessage(f), fromDagJson(v.frames[i].message))))
      check(`framing ${v.name}: re-encoded`, toHex(Buffer.concat(frames.map((f) => encodeFrame(encodeMessage(decodeMessage(f)))))) === v.hex)
    } catch (err) {
      check(`framing ${v.name}`, false, err.message)
    }
  }
  for (const v of framing.invalid) {
    expectCode(`framing invalid ${v.name}`, () => splitFrames(fromHex(v.hex), () => v.limit).forEach(decodeMessage), v.code)
  }
}

// ---------------------------------------------------------------- protocol-hello.json
{
  const hv = load('protocol-hello.json')
  const network = CID.parse(hv.network)
  const frames = hv.exchange.map((e) => splitFrames(fromHex(e.hex), () => 131072)[0])
  const session = {
    initiator: hv.initiator.peer_id,
    responder: hv.responder.peer_id,
    initiator_nonce: fromHex(hv.initiator.nonce),
    responder_nonce: fromHex(hv.responder.nonce)
  }
  check('hello keys', peerIdOfKey(fromHex(hv.initiator.public_key)) === hv.initiator.peer_id &&
    peerIdOfKey(fromHex(hv.responder.public_key)) === hv.responder.peer_id)
  // Step 1 and 4 exactly; steps 2 and 3 rebuilt from their fields and signed with the seeds.
  check('hello step 1', encodeFrame(encodeMessage({ type: 'hello-start', nonce: session.initiator_nonce })).every((b, i) => b === fromHex(hv.exchange[0].hex)[i]))
  check('hello step 4', toHex(encodeFrame(encodeMessage({ type: 'hello-accept' }))) === hv.exchange[3].hex)
  for (const [step, side] of [[1, 'responder'], [2, 'initiator']]) {
    const fields = fromDagJson(hv.exchange[step].frames[0].message)
    const signer = signerFromSeed(fromHex(hv[side].seed))
    check(`hello step ${step + 1} key`, toHex(signer.publicKey) === hv[side].public_key)
    const me = {
      signer, version: fields.version, agent: fields.agent, protocols: fields.protocols, capabilities: fields.capabilities,
      network, networks: fields.policy.networks, canon: fields.canon, ledger: fields.ledger
    }
    const built = encodeFrame(encodeMessage(makeHello(me, session, hv.time_ms)))
    check(`hello step ${step + 1} rebuilt byte for byte`, toHex(built) === hv.exchange[step].hex)
    const signingInput = hv[`${side}_signing_input_hex`]
    const unsigned = { ...makeHello(me, session, hv.time_ms) }
    delete unsigned.sig
    check(`hello step ${step + 1} signing input`, '6e337875732f68656c6c6f2f763100' + toHex(dagCbor.encode(unsigned)) === signingInput)
  }
  const verifier = { version: '0.1.0', networks: [network] }
  for (const [step, remote] of [[1, hv.responder.peer_id], [2, hv.initiator.peer_id]]) {
    try {
      const { checkpoints } = verifyHello(frames[step], { me: verifier, remote, session, now: hv.time_ms })
      check(`hello step ${step + 1} verifies (checkpoints opened)`, checkpoints.canon !== undefined && checkpoints.ledger !== undefined)
    } catch (err) {
      check(`hello step ${step + 1} verifies`, false, `${err.code}: ${err.message}`)
    }
  }
  expectCode('hello step 3 from another peer', () => verifyHello(frames[2], { me: verifier, remote: hv.responder.peer_id, session, now: hv.time_ms }), 'identity-mismatch')
  expectCode('hello step 3 an hour late', () => verifyHello(frames[2], { me: verifier, remote: hv.initiator.peer_id, session, now: hv.time_ms + 3600000 }), 'stale')
  expectCode('hello step 3 to a 1.x node', () => verifyHello(frames[2], { me: { ...verifier, version: '1.0.0' }, remote: hv.initiator.peer_id, session, now: hv.time_ms }), 'unsupported-version')
  expectCode('hello step 3 to another network', () => verifyHello(frames[2], { me: { ...verifier, networks: [cidFor(Uint8Array.of(0))] }, remote: hv.initiator.peer_id, session, now: hv.time_ms }), 'wrong-network')
  for (const v of hv.invalid) {
    const other = v.code === 'replayed'
      ? { ...session, initiator_nonce: new Uint8Array(32).fill(0x33), responder_nonce: new Uint8Array(32).fill(0x44) }
      : session
    const frame = splitFrames(fromHex(v.hex), () => 131072)[0]
    expectCode(`hello invalid ${v.name}`, () => verifyHello(frame, { me: verifier, remote: hv.initiator.peer_id, session: other, now: hv.time_ms }), v.code)
  }
}

// ---------------------------------------------------------------- protocol-blocks.json
{
  const bv = load('protocol-blocks.json')
  for (const v of bv.valid) {
    try {
      let payloadLimit = null
      const frames = splitFrames(fromHex(v.hex), (i) => (i > 0 && payloadLimit !== null ? payloadLimit : 262144))
      frames.forEach((f, i) => {
        const expected = v.frames[i]
        if (expected.message !== undefined) {
          const m = decodeMessage(f)
          check(`blocks ${v.name}: frame ${i}`, sameValue(m, fromDagJson(expected.message)))
          if (m.type === 'blocks') payloadLimit = m.sizes.reduce((a, b) => a + b, 0)
        } else {
          check(`blocks ${v.name}: payload`, toHex(f) === toHex(fromDagJson(expected.payload)))
        }
      })
    } catch (err) {
      check(`blocks ${v.name}`, false, err.message)
    }
  }
  const elsewhere = cidFor(Uint8Array.of(0xff), 0x55) // wanted, never answered by the vectors
  for (const v of bv.invalid) {
    const wanted = v.wanted.length > 0 ? v.wanted : [elsewhere.toString()]
    await expectCodeAsync(`blocks invalid ${v.name}`, () => fetchBlocks(new BytesFramed(fromHex(v.hex)), wanted), v.code)
  }
}

process.stdout.write(JSON.stringify({ checked, failures }) + '\n')
process.exit(failures.length === 0 ? 0 : 1)
