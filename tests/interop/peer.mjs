// A js-libp2p 3.x peer that speaks the n3xus protocols, for the interop test and bench.
//
//   node tests/interop/peer.mjs --network <genesis CID> [--listen MA] [--no-dht]
//
// Prints one JSON object per line on stdout: events ({"event": ...}) and answers to the
// commands it reads, one JSON object per line, on stdin ({"id", "cmd", ...} ->
// {"id", "ok", ...}). It runs the hello on every connection (as the initiator when it
// dialed), serves /n3xus/blocks/1.0.0 from an in-memory store, identify, ping and a
// Kademlia DHT in server mode on /ipfs/kad/1.0.0. Written from specs/ alone.
import './polyfill.mjs'

import crypto from 'node:crypto'
import readline from 'node:readline'
import { parseArgs } from 'node:util'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import * as dagCbor from '@ipld/dag-cbor'
import { privateKeyFromRaw } from '@libp2p/crypto/keys'
import { identify } from '@libp2p/identify'
import { kadDHT, passthroughMapper } from '@libp2p/kad-dht'
import { peerIdFromString } from '@libp2p/peer-id'
import { ping } from '@libp2p/ping'
import { tcp } from '@libp2p/tcp'
import { byteStream, UnexpectedEOFError } from '@libp2p/utils'
import { multiaddr } from '@multiformats/multiaddr'
import { createLibp2p } from 'libp2p'
import { CID } from 'multiformats/cid'
import { BLOCKS_PROTOCOL, BLOCKS_READ_BUFFER_BYTES, fetchBlocks, serveBlocks } from './blocks.mjs'
import { HELLO_PROTOCOL, HELLO_TIMEOUT_S, runHello, signerFromSeed } from './hello.mjs'
import { FramedStream, WireError, blockMatches, cidFor, codeName, fromHex, hashBytes, toHex } from './wire.mjs'

const AGENT = 'n3xus-interop-js/0.1.0 (js-libp2p 3)'
// protocol-hello.md §3: `version` is semver and §5 check 6 compares its MAJOR with the
// verifier's; this peer implements the version-1 protocols of n3xus 0.x.
const VERSION = '0.1.0'
const KAD_PROTOCOL = '/ipfs/kad/1.0.0'
const PING_PROTOCOL = '/ipfs/ping/1.0.0'
const PING_BYTES = 32 // the ping protocol echoes 32-byte payloads
const PING_IDLE_S = 30 // an idle inbound ping stream is closed after this
const SLOW_MACHINE_TIMEOUT_MS = 30000
const CLOSED_HELLO_KEPT_S = 60 // a closed connection's hello outcome stays readable this long

const { values: args } = parseArgs({
  options: {
    network: { type: 'string' },
    listen: { type: 'string', default: '/ip4/127.0.0.1/tcp/0' },
    seed: { type: 'string' },
    'no-dht': { type: 'boolean', default: false }
  }
})
if (args.network === undefined) {
  process.stderr.write('usage: peer.mjs --network <genesis CID> [--listen MA] [--seed HEX] [--no-dht]\n')
  process.exit(2)
}

const emit = (obj) => process.stdout.write(JSON.stringify(obj, (_, v) => typeof v === 'bigint' ? Number(v) : v) + '\n')

const seed = args.seed !== undefined ? fromHex(args.seed) : new Uint8Array(crypto.randomBytes(32))
const signer = signerFromSeed(seed)
const privateKey = privateKeyFromRaw(Uint8Array.from([...seed, ...signer.publicKey]))
const network = CID.parse(args.network)
const me = {
  signer,
  version: VERSION,
  agent: AGENT,
  protocols: [BLOCKS_PROTOCOL, HELLO_PROTOCOL],
  capabilities: [], // it does not witness (protocol-hello.md §3: capabilities are informative)
  network,
  networks: [network]
}

const services = { identify: identify(), ping: ping() }
if (!args['no-dht']) {
  services.dht = kadDHT({ protocol: KAD_PROTOCOL, clientMode: false, peerInfoMapper: passthroughMapper })
}
const node = await createLibp2p({
  privateKey,
  addresses: { listen: [args.listen] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  nodeInfo: { userAgent: AGENT },
  // A loaded 2-core machine runs two interpreters and a test suite: js-libp2p's 6-10 s
  // defaults cut dials and negotiations that are merely slow there.
  connectionManager: {
    dialTimeout: SLOW_MACHINE_TIMEOUT_MS,
    addressDialTimeout: SLOW_MACHINE_TIMEOUT_MS,
    inboundUpgradeTimeout: SLOW_MACHINE_TIMEOUT_MS,
    outboundStreamProtocolNegotiationTimeout: SLOW_MACHINE_TIMEOUT_MS,
    inboundStreamProtocolNegotiationTimeout: SLOW_MACHINE_TIMEOUT_MS
  },
  // Its monitor keeps pinging every connection (ping interop, both stacks), but a pong
  // late under load must not abort the connection a test is inspecting.
  connectionMonitor: { abortConnectionOnPingFailure: false },
  services
})
const local = node.peerId.toString()

// ------------------------------------------------------------------ hello per connection

const hellos = new Map() // connection id -> {promise, result}

function helloOf (connection) {
  let entry = hellos.get(connection.id)
  if (entry === undefined) {
    const { promise, resolve } = Promise.withResolvers()
    entry = { promise, resolve, result: null, started: Date.now() }
    hellos.set(connection.id, entry)
    // protocol-hello.md §2: a connection not recognised within HELLO_TIMEOUT_S is closed.
    const timer = setTimeout(() => {
      finish(connection, { state: 'failed', code: 'timeout', message: 'no hello exchange in time', by: 'us' }, entry)
    }, HELLO_TIMEOUT_S * 1000)
    timer.unref()
  }
  return entry
}

// `entry` is the one the exchange started with: the connection may close (and leave the
// map) while a refusal's error frame lingers, and that outcome must still be reported.
function finish (connection, result, entry) {
  if (entry.result !== null) return
  entry.result = result
  entry.resolve(result)
  emit({
    event: 'hello',
    peer: connection.remotePeer.toString(),
    role: connection.direction === 'outbound' ? 'initiator' : 'responder',
    elapsed_ms: Date.now() - entry.started,
    ...result
  })
  if (result.state !== 'done') {
    connection.close().catch(() => connection.abort(new Error('hello failed')))
  }
}

async function helloAsInitiator (connection) {
  const entry = helloOf(connection)
  entry.running = true
  try {
    const stream = await connection.newStream(HELLO_PROTOCOL)
    const framed = new FramedStream(stream)
    const signal = AbortSignal.timeout(HELLO_TIMEOUT_S * 1000)
    const result = await runHello(framed, 'initiator', { me, local, remote: connection.remotePeer.toString(), signal })
    finish(connection, result, entry)
  } catch (err) {
    finish(connection, { state: 'failed', code: 'internal', message: `could not open the hello stream: ${err.message}`, by: 'us' }, entry)
  }
  return entry.promise
}

await node.handle(HELLO_PROTOCOL, async (stream, connection) => {
  const entry = helloOf(connection)
  if (connection.direction === 'outbound' || entry.result !== null || entry.running) {
    // one exchange per connection, opened by the dialer (§2): reset any other
    stream.abort(new Error('unexpected hello stream'))
    return
  }
  entry.running = true
  const framed = new FramedStream(stream)
  const signal = AbortSignal.timeout(HELLO_TIMEOUT_S * 1000)
  finish(connection, await runHello(framed, 'responder', { me, local, remote: connection.remotePeer.toString(), signal }), entry)
})

node.addEventListener('connection:open', (evt) => {
  const connection = evt.detail
  emit({ event: 'connection', peer: connection.remotePeer.toString(), direction: connection.direction, addr: connection.remoteAddr.toString() })
  helloOf(connection)
  if (connection.direction === 'outbound') void helloAsInitiator(connection)
})
node.addEventListener('connection:close', (evt) => {
  const entry = hellos.get(evt.detail.id)
  // kept a while, so that a command still waiting on this connection finds its outcome
  setTimeout(() => hellos.delete(evt.detail.id), CLOSED_HELLO_KEPT_S * 1000).unref()
  // a running exchange reports its own outcome; one that never started ends here
  if (entry !== undefined && !entry.running) {
    finish(evt.detail, { state: 'failed', code: 'truncated', message: 'the connection closed before any hello stream', by: 'us' }, entry)
  }
})

function recognisedConnection (peer) {
  const connections = node.getConnections(peerIdFromString(peer))
  return connections.find((c) => hellos.get(c.id)?.result?.state === 'done')
}

// ------------------------------------------------------------------ blocks, identify, ping

const store = new Map() // CID text -> bytes

await node.handle(BLOCKS_PROTOCOL, async (stream, connection) => {
  const framed = new FramedStream(stream)
  if (hellos.get(connection.id)?.result?.state !== 'done') {
    // protocol-hello.md §2: nothing else before the connection is recognised
    await framed.fail('unexpected-message', 'the hello exchange is not done on this connection')
    return
  }
  emit({ event: 'blocks-stream', peer: connection.remotePeer.toString() })
  await serveBlocks(framed, (cid) => store.get(cid.toString()))
}, { maxInboundStreams: 64 })

node.addEventListener('peer:identify', (evt) => {
  const { peerId, agentVersion, protocolVersion, protocols, listenAddrs } = evt.detail
  emit({ event: 'identify', peer: peerId.toString(), agent: agentVersion, protocol_version: protocolVersion, protocols, addrs: listenAddrs.map(String) })
})

// The peer's pings of us are counted by our own echo handler in place of the ping
// service's (which keeps pinging out). Not through libp2p.use(): js-libp2p 3.3.11 appends
// each inbound stream's handler to the registered middleware array, so later outbound
// ping streams ran the echo handler on themselves and the connection monitor's pings
// timed out and aborted the connection.
await node.unhandle(PING_PROTOCOL)
await node.handle(PING_PROTOCOL, async (stream, connection) => {
  const bytes = byteStream(stream)
  try {
    while (true) {
      const ping = await bytes.read({ bytes: PING_BYTES, signal: AbortSignal.timeout(PING_IDLE_S * 1000) })
      emit({ event: 'inbound-ping', peer: connection.remotePeer.toString() })
      await bytes.write(ping)
    }
  } catch (err) {
    if (err instanceof UnexpectedEOFError) await stream.close().catch(() => {}) // the peer is done
    else stream.abort(err)
  }
}, { maxInboundStreams: 4 })

// Identify requests of us, reported: the identify service's own handler answers them.
const IDENTIFY_PROTOCOL = '/ipfs/id/1.0.0'
await node.unhandle(IDENTIFY_PROTOCOL)
await node.handle(IDENTIFY_PROTOCOL, async (stream, connection) => {
  emit({ event: 'identify-request', peer: connection.remotePeer.toString() })
  await node.services.identify.handleProtocol(stream, connection)
})

// ------------------------------------------------------------------ commands

const commands = {
  async dial ({ addr }) {
    const connection = await node.dial(multiaddr(addr))
    const result = await helloOf(connection).promise
    return { peer: connection.remotePeer.toString(), hello: result }
  },
  async hello ({ peer }) {
    const connection = node.getConnections(peerIdFromString(peer))[0]
    if (connection === undefined) throw new Error(`not connected to ${peer}`)
    return { hello: await helloOf(connection).promise }
  },
  async ping ({ peer }) {
    return { rtt_ms: await node.services.ping.ping(peerIdFromString(peer)) }
  },
  async identify ({ peer }) {
    const info = await node.peerStore.get(peerIdFromString(peer))
    const agent = info.metadata.get('AgentVersion')
    return { agent: agent === undefined ? null : new TextDecoder().decode(agent), protocols: info.protocols }
  },
  async connections () {
    return {
      connections: node.getConnections().map((c) => ({
        peer: c.remotePeer.toString(), direction: c.direction, addr: c.remoteAddr.toString(), hello: hellos.get(c.id)?.result ?? null,
        streams: c.streams.map((s) => ({ id: s.id, protocol: s.protocol, direction: s.direction, status: s.status }))
      }))
    }
  },
  async encode ({ value, hash }) {
    const bytes = dagCbor.encode(fromJson(value))
    const cid = cidFor(bytes, dagCbor.code, hash === 'sha2-256' ? 0x12 : 0x1e)
    return { hex: toHex(bytes), cid: cid.toString() }
  },
  async put ({ hex, codec }) {
    const bytes = fromHex(hex)
    const cid = cidFor(bytes, codec === 'raw' ? 0x55 : dagCbor.code)
    store.set(cid.toString(), bytes)
    return { cid: cid.toString() }
  },
  async 'hash-rate' ({ mib = 16 }) {
    // what one requester spends verifying blocks (protocol-blocks.md §5), per hash
    const data = new Uint8Array(crypto.randomBytes(mib * 1024 * 1024))
    const rate = (code) => {
      const started = process.hrtime.bigint()
      for (let at = 0; at < data.length; at += 262144) hashBytes(code, data.subarray(at, at + 262144))
      return mib / (Number(process.hrtime.bigint() - started) / 1e9)
    }
    return { blake3_mib_per_s: rate(0x1e), sha256_mib_per_s: rate(0x12) }
  },
  async clear () {
    const dropped = store.size
    store.clear()
    return { dropped }
  },
  async 'put-random' ({ count, size, hash }) {
    const cids = []
    for (let i = 0; i < count; i++) {
      const bytes = new Uint8Array(crypto.randomBytes(size))
      const cid = cidFor(bytes, 0x55, hash === 'sha2-256' ? 0x12 : 0x1e)
      store.set(cid.toString(), bytes)
      cids.push(cid.toString())
    }
    return { cids }
  },
  async fetch ({ peer, cids, keep = false, hex = true }) {
    const connection = recognisedConnection(peer)
    if (connection === undefined) throw new Error(`no recognised connection to ${peer}`)
    const stream = await connection.newStream(BLOCKS_PROTOCOL)
    const framed = new FramedStream(stream, { maxBufferSize: BLOCKS_READ_BUFFER_BYTES })
    const started = process.hrtime.bigint()
    const { blocks, dontHave, bytes } = await fetchBlocks(framed, cids)
    const seconds = Number(process.hrtime.bigint() - started) / 1e9
    const out = {}
    for (const [key, block] of blocks) {
      const cid = CID.parse(key)
      if (keep) store.set(key, block)
      if (!hex) continue
      const item = { hex: toHex(block), verified: blockMatches(cid, block) }
      if (cid.code === dagCbor.code) {
        // the CID again, computed by multiformats over the bytes, and the bytes again,
        // re-encoded by @ipld/dag-cbor from the decoded value: canonical both ways
        const again = dagCbor.encode(dagCbor.decode(block))
        item.cid_recomputed = cidFor(block, dagCbor.code, cid.multihash.code).toString()
        item.reencoded_equal = toHex(again) === item.hex
        item.value = toJson(dagCbor.decode(block))
      }
      out[key] = item
    }
    return { blocks: out, dont_have: dontHave, bytes, seconds }
  },
  async 'fetch-dag' ({ peer, root, keep = true }) {
    // Everything reachable from `root` over one blocks stream: links are followed in
    // DAG-CBOR blocks (protocol-blocks.md §8); raw blocks are leaves.
    const connection = recognisedConnection(peer)
    if (connection === undefined) throw new Error(`no recognised connection to ${peer}`)
    const stream = await connection.newStream(BLOCKS_PROTOCOL)
    const framed = new FramedStream(stream, { maxBufferSize: BLOCKS_READ_BUFFER_BYTES })
    const seen = new Set([root])
    const onBlock = (cid, bytes) => {
      if (keep) store.set(cid.toString(), bytes)
      if (cid.code !== dagCbor.code) return []
      return linksOf(dagCbor.decode(bytes)).filter((link) => {
        const key = link.toString()
        if (seen.has(key) || link.multihash.code === 0x00) return false // identity: inline
        seen.add(key)
        return true
      })
    }
    const started = process.hrtime.bigint()
    const { blocks, dontHave, bytes } = await fetchBlocks(framed, [CID.parse(root)], { onBlock })
    const seconds = Number(process.hrtime.bigint() - started) / 1e9
    return { blocks: blocks.size, dont_have: dontHave, bytes, seconds }
  },
  async 'dht-find-peer' ({ peer, timeout_s: timeoutS = 30 }) {
    const info = await node.peerRouting.findPeer(peerIdFromString(peer), { signal: AbortSignal.timeout(timeoutS * 1000) })
    return { peer: info.id.toString(), addrs: info.multiaddrs.map(String) }
  },
  async 'dht-find-providers' ({ cid, timeout_s: timeoutS = 30 }) {
    const providers = []
    for await (const provider of node.contentRouting.findProviders(CID.parse(cid), { signal: AbortSignal.timeout(timeoutS * 1000) })) {
      providers.push({ peer: provider.id.toString(), addrs: provider.multiaddrs.map(String) })
      break
    }
    return { providers }
  },
  async 'dht-provide' ({ cid, timeout_s: timeoutS = 30 }) {
    await node.contentRouting.provide(CID.parse(cid), { signal: AbortSignal.timeout(timeoutS * 1000) })
    return {}
  },
  async 'dht-routing-table' () {
    const dht = node.services.dht
    return { size: dht === undefined ? 0 : [...dht.routingTable?.kb?.toIterable?.() ?? []].length, mode: dht?.getMode?.() ?? null }
  },
  async hangup ({ peer }) {
    await node.hangUp(peerIdFromString(peer))
    return {}
  },
  async stop () {
    setImmediate(async () => {
      await node.stop()
      process.exit(0)
    })
    return {}
  }
}

function linksOf (value, out = []) {
  const cid = CID.asCID(value)
  if (cid !== null) out.push(cid)
  else if (Array.isArray(value)) value.forEach((v) => linksOf(v, out))
  else if (value !== null && typeof value === 'object' && !(value instanceof Uint8Array)) Object.values(value).forEach((v) => linksOf(v, out))
  return out
}

/** DAG-JSON-like input: {"/": "cid"} links, {"/": {"bytes": b64}} bytes. */
function fromJson (v) {
  if (Array.isArray(v)) return v.map(fromJson)
  if (v !== null && typeof v === 'object') {
    const keys = Object.keys(v)
    if (keys.length === 1 && keys[0] === '/') {
      if (typeof v['/'] === 'string') return CID.parse(v['/'])
      return new Uint8Array(Buffer.from(v['/'].bytes, 'base64'))
    }
    return Object.fromEntries(keys.map((k) => [k, fromJson(v[k])]))
  }
  return v
}

function toJson (v) {
  if (v instanceof Uint8Array) return { '/': { bytes: Buffer.from(v).toString('base64').replace(/=+$/, '') } }
  if (CID.asCID(v) !== null) return { '/': v.toString() }
  if (Array.isArray(v)) return v.map(toJson)
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, toJson(x)]))
  return v
}

const lines = readline.createInterface({ input: process.stdin })
lines.on('line', async (line) => {
  if (line.trim() === '') return
  let request
  try {
    request = JSON.parse(line)
  } catch {
    emit({ ok: false, error: 'not JSON' })
    return
  }
  const handler = commands[request.cmd]
  if (handler === undefined) {
    emit({ id: request.id, ok: false, error: `unknown command ${request.cmd}` })
    return
  }
  try {
    emit({ id: request.id, ok: true, ...(await handler(request)) })
  } catch (err) {
    const code = err instanceof WireError ? err.code : (typeof err.code === 'number' ? codeName(err.code) : undefined)
    emit({ id: request.id, ok: false, error: String(err?.message ?? err), code })
  }
})
lines.on('close', async () => {
  await node.stop()
  process.exit(0)
})

emit({ event: 'listening', peer_id: local, addrs: node.getMultiaddrs().map(String), agent: AGENT })
