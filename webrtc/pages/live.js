// n3xus live rooms: shared browser code of the room, performer and audience pages.
// No build step, no CDN: served as is by the node from webrtc/pages/.
// The room token comes from the URL fragment (#token=...), which the browser never
// sends to any server; it travels only inside the signaling WebSocket's first message.

export const SIGNAL_PATH = (room) => `/api/v1/rooms/${encodeURIComponent(room)}/signal`;
// ICE gathering of host candidates finishes in milliseconds; give up after this.
const ICE_GATHER_TIMEOUT_MS = 3000;

export function roomName() {
  const parts = location.pathname.split("/").filter(Boolean);
  const i = parts.indexOf("rooms");
  return i >= 0 && parts.length > i + 1 ? decodeURIComponent(parts[i + 1]) : "";
}

export function roomToken() {
  const params = new URLSearchParams(location.hash.replace(/^#/, ""));
  return params.get("token") || "";
}

export function status(text, isError = false) {
  const el = document.getElementById("status");
  if (el) {
    el.textContent = text;
    el.classList.toggle("error", isError);
  }
}

// One signaling connection: resolves with {ws, welcome, request, on}. `hello` may add
// fields to the hello message (the room page sends {mesh: true}, specs/live-signaling.md §1.5).
export function connectSignal(name, hello = {}) {
  return new Promise((resolve, reject) => {
    const room = roomName();
    const token = roomToken();
    if (!token) {
      reject(new Error("this link has no room token (#token=...)"));
      return;
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}${SIGNAL_PATH(room)}`);
    const handlers = {};
    let pending = null;
    const signal = {
      ws,
      welcome: null,
      on(type, fn) { handlers[type] = fn; },
      send(message) { ws.send(JSON.stringify(message)); },
      // Send a message and wait for the reply of the given type (or an error).
      request(message, replyType) {
        return new Promise((res, rej) => {
          pending = { replyType, res, rej };
          ws.send(JSON.stringify(message));
        });
      },
    };
    ws.onopen = () => ws.send(JSON.stringify({ type: "hello", v: 1, token, name, ...hello }));
    ws.onerror = () => reject(new Error("signaling connection failed"));
    ws.onclose = (ev) => {
      if (handlers.close) handlers.close(ev);
    };
    ws.onmessage = (ev) => {
      const msg = JSON.parse(ev.data);
      if (msg.type === "welcome") {
        signal.welcome = msg;
        resolve(signal);
        return;
      }
      if (msg.type === "error") {
        status(`error (${msg.code}): ${msg.message}`, true);
        if (!signal.welcome) reject(new Error(msg.message));
        if (pending) { pending.rej(new Error(msg.message)); pending = null; }
        return;
      }
      if (pending && msg.type === pending.replyType) {
        pending.res(msg);
        pending = null;
        return;
      }
      if (handlers[msg.type]) handlers[msg.type](msg);
    };
  });
}

export function newPeerConnection(signal) {
  return new RTCPeerConnection({ iceServers: signal.welcome.ice_servers || [] });
}

export function iceGathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === "complete") {
        pc.removeEventListener("icegatheringstatechange", done);
        resolve();
      }
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, ICE_GATHER_TIMEOUT_MS);
  });
}

// Offer/answer with the node: the offer carries all candidates (no trickle).
export async function negotiate(pc, signal) {
  await pc.setLocalDescription(await pc.createOffer());
  await iceGathered(pc);
  const answer = await signal.request({ type: "offer", sdp: pc.localDescription.sdp }, "answer");
  await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
}

// Prefer VP8, the only video codec the node's relay forwards.
export function preferVp8(transceiver) {
  if (!transceiver.setCodecPreferences || !RTCRtpReceiver.getCapabilities) return;
  const codecs = RTCRtpReceiver.getCapabilities("video").codecs;
  const vp8 = codecs.filter((c) => c.mimeType.toLowerCase() === "video/vp8");
  const rtx = codecs.filter((c) => c.mimeType.toLowerCase() === "video/rtx");
  if (vp8.length) transceiver.setCodecPreferences([...vp8, ...rtx]);
}

// The room data channel (label "room"): JSON messages, see specs/live-signaling.md §2.
export function openRoomChannel(pc, onMessage) {
  const channel = pc.createDataChannel("room");
  channel.onmessage = (ev) => onMessage(JSON.parse(ev.data));
  return channel;
}

export function el(tag, text, cls) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (cls) node.className = cls;
  return node;
}
