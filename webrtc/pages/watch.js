// Audience page: plays on open (muted autoplay, so browsers allow it), with an
// unmute control, reactions over the room data channel, and a Tip control.
import { connectSignal, el, negotiate, newPeerConnection, openRoomChannel, preferVp8, roomName,
  status } from "./live.js";
import { replay } from "./replay.js";
import { tip } from "./tip.js";

const stage = document.getElementById("stage");
const unmute = document.getElementById("unmute");
const reactions = document.getElementById("reactions");
document.getElementById("room").textContent = roomName();

unmute.addEventListener("click", () => {
  stage.muted = !stage.muted;
  unmute.textContent = stage.muted ? "Unmute" : "Mute";
  stage.play().catch(() => {});
});

// A tip is a ledger transaction signed here with the viewer's own key (tip.js). Its
// progress has a line of its own: the playback status line changes on its own schedule
// and would hide the tip's outcome.
const tipStatus = document.getElementById("tip-status");
function showTip(text, isError = false) {
  tipStatus.textContent = text;
  tipStatus.classList.toggle("error", isError);
}
document.getElementById("tip").addEventListener("click", async () => {
  const amount = Number(document.getElementById("tip-amount").value);
  if (!Number.isSafeInteger(amount) || amount <= 0) {
    showTip("a tip is a whole positive amount", true);
    return;
  }
  showTip(`signing a tip of ${amount}…`);
  try {
    const done = await tip(amount);
    showTip(`tip of ${amount} sent (${done.id})`);
  } catch (err) {
    showTip(`tip failed: ${err.message}`, true);
  }
});

async function main() {
  const signal = await connectSignal("viewer");
  const pc = newPeerConnection(signal);
  const video = pc.addTransceiver("video", { direction: "recvonly" });
  preferVp8(video);
  pc.addTransceiver("audio", { direction: "recvonly" });
  const channel = openRoomChannel(pc, (msg) => {
    if (msg.type === "reaction" || msg.type === "chat") {
      const line = el("div");
      line.append(el("span", msg.from.name, "who"), el("span", msg.emoji || msg.text));
      reactions.append(line);
    }
  });
  document.getElementById("react").addEventListener("click", () => {
    if (channel.readyState === "open") channel.send(JSON.stringify({ type: "reaction", emoji: "👏" }));
  });
  const stream = new MediaStream();
  pc.ontrack = (ev) => {
    stream.addTrack(ev.track);
    stage.srcObject = stream;
    stage.play().catch(() => {});
  };
  signal.on("live", (msg) => status(msg.live ? "live" : "the performance has ended"));
  signal.on("close", () => status("signaling connection closed", true));
  await negotiate(pc, signal);
  status(signal.welcome.live ? "live" : "waiting for the performer");
}

// #recording=<manifest CID> replays a recorded performance instead of the live one.
const recording = new URLSearchParams(location.hash.replace(/^#/, "")).get("recording");
(recording ? replay(recording, stage) : main()).catch((err) => status(err.message, true));
