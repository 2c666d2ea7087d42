// Performer page: camera and microphone published to the node on "Go live",
// stopped on "End". Video is VP8 (the relay forwards VP8 only).
import { connectSignal, negotiate, newPeerConnection, preferVp8, roomName, status } from "./live.js";

const goLive = document.getElementById("go-live");
const end = document.getElementById("end");
const preview = document.getElementById("preview");
document.getElementById("room").textContent = roomName();

let signal = null;
let pc = null;
let stream = null;

// 480p at 30 fps: what the relay and its benchmark are sized for.
const CONSTRAINTS = { video: { width: 640, height: 480, frameRate: 30 }, audio: true };

async function start() {
  goLive.disabled = true;
  try {
    stream = await navigator.mediaDevices.getUserMedia(CONSTRAINTS);
    preview.srcObject = stream;
    pc = newPeerConnection(signal);
    for (const track of stream.getTracks()) {
      const transceiver = pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
      if (track.kind === "video") preferVp8(transceiver);
    }
    pc.onconnectionstatechange = () => {
      if (pc && pc.connectionState === "connected") status("live");
      if (pc && pc.connectionState === "failed") status("connection to the node failed", true);
    };
    await negotiate(pc, signal);
    end.disabled = false;
    status("going live…");
  } catch (err) {
    status(`could not go live: ${err.message}`, true);
    stop();
    goLive.disabled = false;
  }
}

function stop() {
  if (pc) { pc.close(); pc = null; }
  if (stream) { stream.getTracks().forEach((t) => t.stop()); stream = null; }
  preview.srcObject = null;
}

goLive.addEventListener("click", start);
end.addEventListener("click", () => {
  if (signal) signal.send({ type: "end" });
  stop();
  end.disabled = true;
  goLive.disabled = false;
  status("ended");
});

connectSignal("performer")
  .then((s) => {
    signal = s;
    signal.on("close", () => status("signaling connection closed", true));
    status(`ready (${s.welcome.role})`);
    goLive.disabled = false;
  })
  .catch((err) => { status(err.message, true); goLive.disabled = true; });
goLive.disabled = true;
