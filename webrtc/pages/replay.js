// Replay of a recorded performance on the audience page (#recording=<manifest CID>).
// A recording is a list of self-contained WebM segments (specs/live.md §4), so the
// page plays them one after another in the same <video> and seeks by choosing the
// segment that holds the time, then seeking inside it (each segment has cues).
import { roomName, status } from "./live.js";

function clock(ms) {
  const s = Math.floor(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

export async function replay(manifestCid, video) {
  const url = `/api/v1/rooms/${encodeURIComponent(roomName())}/recordings/${encodeURIComponent(manifestCid)}`;
  const response = await fetch(url);
  if (!response.ok) throw new Error(`recording not found (${response.status})`);
  const recording = await response.json();
  const segments = recording.segments;
  if (!segments.length) throw new Error("the recording is empty");
  const seek = document.getElementById("seek");
  const position = document.getElementById("position");
  document.getElementById("replay").hidden = false;
  document.getElementById("duration").textContent = clock(recording.duration_ms);
  seek.max = String(recording.duration_ms);
  let current = -1;
  let dragging = false;

  const segmentAt = (ms) => {
    for (let i = segments.length - 1; i >= 0; i--) if (ms >= segments[i].start_ms) return i;
    return 0;
  };

  async function load(index, offsetMs) {
    if (index !== current) {
      current = index;
      video.src = segments[index].url;
      await new Promise((resolve, reject) => {
        video.onloadedmetadata = resolve;
        video.onerror = () => reject(new Error("segment failed to load"));
      });
    }
    video.currentTime = offsetMs / 1000;
    await video.play().catch(() => {});
  }

  video.addEventListener("timeupdate", () => {
    if (current < 0) return;
    const ms = Math.round(segments[current].start_ms + video.currentTime * 1000);
    position.dataset.ms = String(ms);
    position.textContent = clock(ms);
    if (!dragging) seek.value = String(ms);
  });
  video.addEventListener("ended", () => {
    if (current + 1 < segments.length) load(current + 1, 0);
    else status("end of the recording");
  });
  seek.addEventListener("input", () => { dragging = true; });
  seek.addEventListener("change", () => {
    dragging = false;
    const ms = Number(seek.value);
    const index = segmentAt(ms);
    load(index, ms - segments[index].start_ms);
  });
  status("replaying");
  await load(0, 0);
}
