// Room page: presence, chat and world edits over the room's data channel. The node
// is a peer of the room: it stamps who sent what, checks roles, forwards chat and
// applies world edits (which then come back to everyone with "applied").
import { connectSignal, el, negotiate, newPeerConnection, openRoomChannel, roomName,
  status } from "./live.js";

const room = roomName();
document.getElementById("room").textContent = room;
const presence = document.getElementById("presence");
const chatLog = document.getElementById("chat-log");
const editLog = document.getElementById("edit-log");

function onMessage(msg) {
  if (msg.type === "presence") {
    presence.replaceChildren(...msg.members.map((m) => el("li", `${m.name} (${m.role})`)));
  } else if (msg.type === "chat") {
    const line = el("div", undefined, "chat-line");
    line.append(el("span", msg.from.name, "who"), el("span", msg.text));
    chatLog.append(line);
    chatLog.scrollTop = chatLog.scrollHeight;
  } else if (msg.type === "world-edit") {
    const what = msg.op === "set" ? `${msg.key} = ${msg.value}` : `${msg.key} deleted`;
    editLog.append(el("div", `${msg.from.name}: ${what}${msg.applied ? "" : " (not applied)"}`,
      "edit-line"));
  } else if (msg.type === "error") {
    status(`error (${msg.code}): ${msg.message}`, true);
  }
}

async function main() {
  const name = document.getElementById("name").value || "guest";
  const signal = await connectSignal(name);
  const pc = newPeerConnection(signal);
  const channel = openRoomChannel(pc, onMessage);
  const send = (message) => {
    if (channel.readyState === "open") channel.send(JSON.stringify(message));
    else status("not connected yet", true);
  };
  document.getElementById("chat-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = document.getElementById("chat-input");
    if (input.value) send({ type: "chat", text: input.value });
    input.value = "";
  });
  document.getElementById("edit-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const key = document.getElementById("edit-key").value;
    const value = document.getElementById("edit-value").value;
    if (key) send(value ? { type: "world-edit", world: room, op: "set", key, value }
      : { type: "world-edit", world: room, op: "delete", key });
  });
  channel.onopen = () => status(`connected as ${signal.welcome.role}`);
  signal.on("close", () => status("signaling connection closed", true));
  await negotiate(pc, signal);
}

main().catch((err) => status(err.message, true));
