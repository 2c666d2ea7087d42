// /n3xus/blocks/1.0.0 written from specs/protocol-blocks.md: a requester (want-block in
// batches within a window, every block verified against its CID) and a responder.

import { CID } from 'multiformats/cid'
import { Uint8ArrayList } from 'uint8arraylist'
import { WireError, PeerError, decodeMessage, isUint, blockMatches } from './wire.mjs'

export const BLOCKS_PROTOCOL = '/n3xus/blocks/1.0.0'

// §6, table blocks-limits
export const MAX_CONTROL_FRAME_BYTES = 262144
export const MAX_PAYLOAD_BYTES = 1048576
export const MAX_CID_BYTES = 128
export const MAX_CIDS_PER_MESSAGE = 1024
export const MAX_OUTSTANDING_WANTS = 4096
export const MAX_BYTES_IN_FLIGHT = 16777216
export const PROGRESS_TIMEOUT_S = 30.0
export const IDLE_TIMEOUT_S = 60.0
// §6: the window before the first block is MAX_BYTES_IN_FLIGHT / 256 KiB.
const FIRST_MEAN_BLOCK_BYTES = 256 * 1024
// lpStream buffers what arrives until it is read: room for a full window and one batch.
export const BLOCKS_READ_BUFFER_BYTES = MAX_BYTES_IN_FLIGHT + 2 * MAX_PAYLOAD_BYTES

const REQUESTER_SENDS = new Set(['want-block', 'want-have', 'cancel'])
const RESPONDER_SENDS = new Set(['have', 'dont-have', 'blocks'])

/** §3: `cids` of a message: 1..1024 links of at most 128 bytes each. */
function cidsOf (message) {
  const cids = message.cids
  if (!Array.isArray(cids) || cids.length < 1 || cids.length > MAX_CIDS_PER_MESSAGE) {
    throw new WireError('malformed', `${message.type}: cids must hold 1..${MAX_CIDS_PER_MESSAGE} links`)
  }
  return cids.map((c) => {
    const cid = CID.asCID(c)
    if (cid === null || cid.bytes.length > MAX_CID_BYTES) throw new WireError('malformed', `${message.type}: a cid is not a link of at most 128 bytes`)
    return cid
  })
}

function peerErrorOf (m) {
  if (!isUint(m.code) || typeof m.message !== 'string') return new WireError('malformed', 'error message schema')
  return new PeerError(Number(m.code), m.message)
}

/**
 * Requester: fetch `cids` over one stream. Returns {blocks: Map(cidText -> bytes),
 * dontHave: [cidText], bytes}. Every block is verified before it is reported; a breach is
 * answered with `error` and a reset, then thrown. `onBlock(cid, bytes)` may return more
 * CIDs to want on the same stream (a DAG walk).
 */
export async function fetchBlocks (framed, cids, { progressTimeoutS = PROGRESS_TIMEOUT_S, onBlock } = {}) {
  const queue = cids.map((c) => CID.asCID(c) ?? CID.parse(String(c)))
  const outstanding = new Map()
  const blocks = new Map()
  const dontHave = []
  let received = 0
  let receivedBytes = 0
  const windowSize = () => {
    const mean = received === 0 ? FIRST_MEAN_BLOCK_BYTES : Math.max(1, receivedBytes / received)
    return Math.max(1, Math.min(MAX_OUTSTANDING_WANTS, Math.floor(MAX_BYTES_IN_FLIGHT / mean)))
  }
  const answer = (cid) => {
    const key = cid.toString()
    if (!outstanding.has(key)) throw new WireError('unexpected-block', `an answer for ${key}, which is not wanted`)
    outstanding.delete(key)
    return key
  }
  try {
    while (queue.length > 0 || outstanding.size > 0) {
      while (queue.length > 0 && outstanding.size < windowSize()) {
        const room = Math.min(MAX_CIDS_PER_MESSAGE, windowSize() - outstanding.size)
        const batch = []
        while (batch.length < room && queue.length > 0) {
          const cid = queue.shift()
          const key = cid.toString()
          if (outstanding.has(key) || blocks.has(key)) continue // §4 rule 2: never want twice
          outstanding.set(key, cid)
          batch.push(cid)
        }
        if (batch.length > 0) await framed.writeMessage({ type: 'want-block', cids: batch })
      }
      if (outstanding.size === 0) break
      const signal = AbortSignal.timeout(progressTimeoutS * 1000)
      const body = await framed.readFrame(MAX_CONTROL_FRAME_BYTES, { signal })
      if (body === null) throw new WireError('truncated', `the stream ended with ${outstanding.size} wants outstanding`)
      const m = decodeMessage(body)
      if (m.type === 'error') throw peerErrorOf(m)
      if (REQUESTER_SENDS.has(m.type)) throw new WireError('unexpected-message', `a responder does not send ${m.type}`)
      if (!RESPONDER_SENDS.has(m.type)) throw new WireError('unsupported', `unknown message type ${m.type}`)
      const answered = cidsOf(m)
      if (m.type === 'dont-have') {
        for (const cid of answered) dontHave.push(answer(cid))
      } else if (m.type === 'have') {
        throw new WireError('unexpected-block', 'a have for a CID whose block was wanted')
      } else { // blocks, then its payload frame (§3.1)
        const sizes = m.sizes
        if (!Array.isArray(sizes) || sizes.length !== answered.length || !sizes.every(isUint)) {
          throw new WireError('malformed', 'blocks: one size per cid')
        }
        const total = sizes.reduce((sum, s) => sum + Number(s), 0)
        if (sizes.some((s) => Number(s) > MAX_PAYLOAD_BYTES) || total > MAX_PAYLOAD_BYTES) {
          throw new WireError('frame-too-large', `blocks: ${total} payload bytes, over ${MAX_PAYLOAD_BYTES}`)
        }
        const keys = answered.map(answer)
        const payload = await framed.readFrame(total, { signal: AbortSignal.timeout(progressTimeoutS * 1000) })
        if (payload === null) throw new WireError('truncated', 'the stream ended before the payload frame')
        if (payload.length !== total) throw new WireError('malformed', `payload of ${payload.length} bytes, sizes say ${total}`)
        let at = 0
        answered.forEach((cid, i) => {
          const bytes = payload.subarray(at, at + Number(sizes[i]))
          at += bytes.length
          if (!blockMatches(cid, bytes)) throw new WireError('block-mismatch', `the bytes sent for ${cid} do not hash to it`)
          blocks.set(keys[i], bytes)
          received++
          receivedBytes += bytes.length
          if (onBlock !== undefined) queue.push(...onBlock(cid, bytes))
        })
      }
    }
    await framed.close()
    return { blocks, dontHave, bytes: receivedBytes }
  } catch (err) {
    if (err instanceof WireError) await framed.fail(err.code, err.message)
    else if (err instanceof PeerError) await framed.close()
    else framed.stream.abort(err)
    throw err
  }
}

/**
 * Responder: answers wants from `getBlock(cid) -> bytes | undefined` until the requester
 * closes, breaches the protocol, or stays idle for IDLE_TIMEOUT_S.
 */
export async function serveBlocks (framed, getBlock, { idleTimeoutS = IDLE_TIMEOUT_S } = {}) {
  try {
    while (true) {
      let body
      try {
        body = await framed.readFrame(MAX_CONTROL_FRAME_BYTES, { signal: AbortSignal.timeout(idleTimeoutS * 1000) })
      } catch (err) {
        if (err instanceof WireError && err.code === 'timeout') break // idle: close (§6)
        throw err
      }
      if (body === null) break
      const m = decodeMessage(body)
      if (m.type === 'error') throw peerErrorOf(m)
      if (RESPONDER_SENDS.has(m.type)) throw new WireError('unexpected-message', `a requester does not send ${m.type}`)
      if (!REQUESTER_SENDS.has(m.type)) throw new WireError('unsupported', `unknown message type ${m.type}`)
      const cids = cidsOf(m)
      if (m.type === 'cancel') continue // every want is answered at once: nothing pending to drop
      const missing = []
      if (m.type === 'want-have') {
        const have = cids.filter((c) => getBlock(c) !== undefined)
        if (have.length > 0) await framed.writeMessage({ type: 'have', cids: have })
        missing.push(...cids.filter((c) => getBlock(c) === undefined))
      } else {
        let batch = []
        let batchBytes = 0
        const flush = async () => {
          if (batch.length === 0) return
          await framed.writeMessage({ type: 'blocks', cids: batch.map((b) => b.cid), sizes: batch.map((b) => b.bytes.length) })
          await framed.writeRaw(new Uint8ArrayList(...batch.map((b) => b.bytes)))
          batch = []
          batchBytes = 0
        }
        for (const cid of cids) {
          const bytes = getBlock(cid)
          if (bytes === undefined) { missing.push(cid); continue }
          if (batchBytes + bytes.length > MAX_PAYLOAD_BYTES || batch.length === MAX_CIDS_PER_MESSAGE) await flush()
          batch.push({ cid, bytes })
          batchBytes += bytes.length
        }
        await flush()
      }
      if (missing.length > 0) await framed.writeMessage({ type: 'dont-have', cids: missing })
    }
    await framed.close()
  } catch (err) {
    if (err instanceof WireError) await framed.fail(err.code, err.message)
    else if (err instanceof PeerError) await framed.close()
    else framed.stream.abort(err)
  }
}
