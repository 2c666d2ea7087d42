// Room page: presence, chat and world edits (specs/live-signaling.md §1.5, §2, §2.2).
// Room pages join each other in a full mesh of WebRTC data channels (label "mesh"):
// presence and chat travel browser to browser directly; the node only relays the
// offers and answers over the signaling WebSocket, naming the sender itself. The node
// stays a peer of the room through its own "room" channel: world edits go to it (its
// signed world commit is authoritative and comes back to everyone as "applied") and,
// as a preview, to the mesh. Above MAX_MESH_PEERS room pages the node's roster says
// mesh:false and the whole room uses the node as the hub, as do messages sent while
// a direct link to some member is not open yet (nobody misses them, nobody gets two).
import { connectSignal, el, iceGathered, negotiate, newPeerConnection, openRoomChannel,
  roomName, status } from "./live.js";

// Mirrors webrtc/schemas.py MAX_MESH_PEERS (the reason is written there); the node
// enforces it, the page only needs it to explain the fallback.
export const MAX_MESH_PEERS = 8;
const MESH_LABEL = "mesh";
// Mirrors datachannel.MAX_DATA_MESSAGE_BYTES and the schema limits of §5.2.
const MAX_MESH_MESSAGE_BYTES = 8192;
const MAX_NAME_CHARS = 64;
const MAX_CHAT_CHARS = 2000;
const MESH_TYPES = new Set(["presence", "chat", "world-edit", "ping", "pong"]);

const room = roomName();
document.getElementById("room").textContent = room;
const presence = document.getElementById("presence");
const chatLog = document.getElementById("chat-log");
const editLog = document.getElementById("edit-log");

// peer id -> {pc, channel, member: {peer, name, role} named by the node, name}
const links = new Map();
let roster = { mesh: false, peers: [] };
let hubMembers = [];
let signal = null;
// Chat lines received per path: tests and people can see what carried them.
const received = { peer: 0, node: 0 };
const pongWaiters = new Map();

const myName = () => document.getElementById("name").value || "guest";
const isOpen = (link) => link.channel && link.channel.readyState === "open";
const openLinks = () => [...links.values()].filter(isOpen);

window.n3xusRoom = {
  received,
  openLinks: () => openLinks().map((l) => l.member.peer),
  meshRtt,
};

// The checks of specs/live-signaling.md §2.2 (MESH_MESSAGE_SCHEMA) on what another browser sent.
function parseMesh(raw) {
  if (typeof raw !== "string" || raw.length > MAX_MESH_MESSAGE_BYTES) return null;
  let msg;
  try { msg = JSON.parse(raw); } catch { return null; }
  if (!msg || typeof msg !== "object" || !MESH_TYPES.has(msg.type)) return null;
  const str = (v, max, min = 1) => typeof v === "string" && v.length >= min && v.length <= max;
  if (msg.type === "presence" && !str(msg.name, MAX_NAME_CHARS)) return null;
  if (msg.type === "chat" && !str(msg.text, MAX_CHAT_CHARS)) return null;
  if (msg.type === "world-edit" && !(str(msg.key, 256) && (msg.op === "set" || msg.op === "delete")
    && (msg.value === undefined || str(msg.value, 4096, 0)))) return null;
  if ((msg.type === "ping" || msg.type === "pong") && typeof msg.t !== "number") return null;
  return msg;
}

function renderPresence() {
  const me = signal ? { name: myName(), role: signal.welcome.role } : null;
  const members = roster.mesh
    ? [me, ...openLinks().map((l) => ({ name: l.name || l.member.name, role: l.member.role }))]
    : hubMembers;
  presence.replaceChildren(...members.filter(Boolean).map((m) => el("li", `${m.name} (${m.role})`)));
  document.body.dataset.meshLinks = String(openLinks().length);
}

function appendChat(who, text, via) {
  const line = el("div", undefined, "chat-line");
  line.dataset.via = via;
  line.append(el("span", who, "who"), el("span", text));
  chatLog.append(line);
  chatLog.scrollTop = chatLog.scrollHeight;
}

function appendEdit(who, msg, note, via) {
  const what = msg.op === "set" ? `${msg.key} = ${msg.value}` : `${msg.key} deleted`;
  const line = el("div", `${who}: ${what}${note}`, "edit-line");
  line.dataset.via = via;
  editLog.append(line);
}

// -- the node's "room" channel ----------------------------------------------------------

function onNodeMessage(msg) {
  if (msg.type === "presence") {
    hubMembers = msg.members;
    renderPresence();
  } else if (msg.type === "chat") {
    received.node += 1;
    appendChat(msg.from.name, msg.text, "node");
  } else if (msg.type === "world-edit") {
    appendEdit(msg.from.name, msg, msg.applied ? "" : " (not applied)", "node");
  } else if (msg.type === "error") {
    status(`error (${msg.code}): ${msg.message}`, true);
  }
}

// -- the mesh ---------------------------------------------------------------------------

function dropLink(peer) {
  const link = links.get(peer);
  if (!link) return;
  links.delete(peer);
  link.pc.close();
  renderPresence();
}

function newLink(member) {
  dropLink(member.peer);
  const pc = newPeerConnection(signal);
  const link = { pc, channel: null, member, name: null };
  links.set(member.peer, link);
  pc.onconnectionstatechange = () => {
    if (["failed", "closed"].includes(pc.connectionState) && links.get(member.peer) === link) {
      dropLink(member.peer);
    }
  };
  return link;
}

function wireChannel(link, channel) {
  link.channel = channel;
  channel.onopen = () => {
    channel.send(JSON.stringify({ type: "presence", name: myName() }));
    renderPresence();
  };
  channel.onclose = () => { if (links.get(link.member.peer) === link) dropLink(link.member.peer); };
  channel.onmessage = (ev) => {
    const msg = parseMesh(ev.data);
    if (!msg) return;  // a broken peer page: ignore it, never crash this one
    if (msg.type === "presence") {
      link.name = msg.name;
      renderPresence();
    } else if (msg.type === "chat") {
      received.peer += 1;
      appendChat(link.name || link.member.name, msg.text, "peer");
    } else if (msg.type === "world-edit") {
      appendEdit(link.name || link.member.name, msg, " (pending: the node's commit decides)",
        "peer");
    } else if (msg.type === "ping") {
      channel.send(JSON.stringify({ type: "pong", t: msg.t }));
    } else if (msg.type === "pong" && pongWaiters.has(msg.t)) {
      pongWaiters.get(msg.t)();
      pongWaiters.delete(msg.t);
    }
  };
}

// Offers go from the smaller peer id to the larger: one connection per pair, no glare.
async function offerTo(member) {
  const link = newLink(member);
  wireChannel(link, link.pc.createDataChannel(MESH_LABEL));
  await link.pc.setLocalDescription(await link.pc.createOffer());
  await iceGathered(link.pc);
  signal.send({ type: "peer-offer", to: member.peer, sdp: link.pc.localDescription.sdp });
}

async function answerTo(msg) {
  if (!roster.mesh) return;
  const link = newLink(msg.from);
  link.pc.ondatachannel = (ev) => {
    if (ev.channel.label === MESH_LABEL && !link.channel) wireChannel(link, ev.channel);
    else ev.channel.close();
  };
  await link.pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
  await link.pc.setLocalDescription(await link.pc.createAnswer());
  await iceGathered(link.pc);
  signal.send({ type: "peer-answer", to: msg.from.peer, sdp: link.pc.localDescription.sdp });
}

async function onAnswer(msg) {
  const link = links.get(msg.from.peer);
  if (link && link.pc.signalingState === "have-local-offer") {
    await link.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
  }
}

function onRoster(msg) {
  roster = msg;
  const me = signal.welcome.peer;
  const inRoster = new Set(msg.peers.map((p) => p.peer));
  for (const peer of [...links.keys()]) if (!inRoster.has(peer)) dropLink(peer);
  for (const member of msg.peers) {
    if (member.peer !== me && member.peer > me && !links.has(member.peer)) {
      offerTo(member).catch((err) => status(`mesh: ${err.message}`, true));
    }
  }
  renderPresence();
}

// Direct only when every other mesh member has an open link; else through the node.
function meshComplete() {
  if (!roster.mesh) return false;
  const me = signal.welcome.peer;
  return roster.peers.every((p) => p.peer === me || (links.has(p.peer) && isOpen(links.get(p.peer))));
}

// Round trips over the first open mesh link, in ms (latency probe; specs/live-signaling.md §2.2).
async function meshRtt(count = 20) {
  const link = openLinks()[0];
  if (!link) throw new Error("no open mesh link");
  const samples = [];
  for (let i = 0; i < count; i++) {
    const t = performance.now();
    await new Promise((resolve) => {
      pongWaiters.set(t, resolve);
      link.channel.send(JSON.stringify({ type: "ping", t }));
    });
    samples.push(performance.now() - t);
  }
  return samples;
}

async function main() {
  signal = await connectSignal(myName(), { mesh: true });
  signal.on("roster", onRoster);
  signal.on("peer-offer", (msg) => answerTo(msg).catch((err) => status(`mesh: ${err.message}`, true)));
  signal.on("peer-answer", (msg) => onAnswer(msg).catch((err) => status(`mesh: ${err.message}`, true)));
  const pc = newPeerConnection(signal);
  const channel = openRoomChannel(pc, onNodeMessage);
  const toNode = (message) => {
    if (channel.readyState === "open") channel.send(JSON.stringify(message));
    else status("not connected yet", true);
  };
  const toMesh = (message) => {
    for (const link of openLinks()) link.channel.send(JSON.stringify(message));
  };
  document.getElementById("chat-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = document.getElementById("chat-input");
    if (input.value) {
      const message = { type: "chat", text: input.value };
      if (meshComplete()) {
        toMesh(message);
        appendChat(myName(), message.text, "self");
      } else {
        toNode(message);  // the node echoes it back to everyone, this page included
      }
    }
    input.value = "";
  });
  document.getElementById("edit-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = document.getElementById("edit-key").value;
    const value = document.getElementById("edit-value").value;
    if (!key) return;
    const edit = value ? { type: "world-edit", world: room, op: "set", key, value }
      : { type: "world-edit", world: room, op: "delete", key };
    toNode(edit);  // authoritative: the node's signed commit
    if (roster.mesh) toMesh(edit);  // preview for the others until "applied" arrives
  });
  channel.onopen = () => status(`connected as ${signal.welcome.role}`);
  signal.on("close", () => status("signaling connection closed", true));
  await negotiate(pc, signal);
}

main().catch((err) => status(err.message, true));
