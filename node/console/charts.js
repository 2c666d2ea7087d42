// Hand-written SVG line charts of the node's metrics history (no chart library: a
// polyline per series is all the console needs). `hist` is the /console/metrics shape.
import { $, el, fmtBytes, fmtDuration, fmtNum, svg } from "./dom.js";

const CHARTS = [
  { id: "peers", title: "Connected peers", series: ["peers"] },
  { id: "ledger", title: "Ledger log entries", series: ["ledger_log_size"] },
  { id: "ledger-rate", title: "Ledger entries / min", series: ["ledger_log_size"], rate: 60 },
  { id: "api-rate", title: "API requests / s", series: ["n3xus_api_requests_total", "n3xus_api_requests"], rate: 1 },
  { id: "canon-blocks", title: "Canon blocks", series: ["canon_blocks", "n3xus_canon_blocks"] },
  { id: "disk", title: "Data dir on disk", series: ["data_dir_bytes"], bytes: true },
  { id: "cpu", title: "Node CPU %", series: ["process_cpu_seconds", "process_cpu_seconds_total"], rate: 100 },
  { id: "rss", title: "Node memory (RSS)", series: ["process_rss_bytes", "process_resident_memory_bytes"], bytes: true },
];
function chartPoints(def, hist) {
  const name = def.series.find((s) => hist.series[s]);
  if (!name) return [];
  const v = hist.series[name], t = hist.time, out = [];
  for (let i = 0; i < t.length; i++) {
    if (v[i] === null || v[i] === undefined) continue;
    if (def.rate) {
      let j = i - 1;
      while (j >= 0 && (v[j] === null || v[j] === undefined)) j--;
      if (j < 0 || t[i] <= t[j]) continue;
      out.push([t[i], Math.max(0, (v[i] - v[j]) / (t[i] - t[j])) * def.rate]);
    } else out.push([t[i], v[i]]);
  }
  return out;
}
export function drawCharts(hist) {
  const grid = $("chart-grid");
  if (!grid.children.length) {
    for (const def of CHARTS) {
      grid.append(el("figure", { class: "chart", id: "chart-" + def.id, "data-chart": def.id },
        el("figcaption", {}, el("span", { text: def.title }), el("span", { class: "latest", text: "–" })),
        el("div", { class: "plot" }), el("div", { class: "range" }, el("span", { class: "min" }), el("span", { class: "max" }))));
    }
  }
  const W = 300, H = 80;
  for (const def of CHARTS) {
    const fig = $("chart-" + def.id);
    const pts = chartPoints(def, hist);
    const fmt = (x) => (def.bytes ? fmtBytes(x) : fmtNum(x));
    fig.dataset.points = String(pts.length);
    fig.dataset.latest = pts.length ? String(pts[pts.length - 1][1]) : "";
    fig.querySelector(".latest").textContent = pts.length ? fmt(pts[pts.length - 1][1]) : "–";
    const plot = fig.querySelector(".plot");
    const box = svg("svg", { viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none", role: "img" });
    if (pts.length) {
      const t0 = pts[0][0], t1 = pts[pts.length - 1][0];
      const ys = pts.map((p) => p[1]);
      const lo = Math.min(0, ...ys), hi = Math.max(...ys);
      const span = hi - lo || 1, dt = t1 - t0 || 1;
      const xy = pts.map(([t, y]) => [((t - t0) / dt) * W, H - 2 - ((y - lo) / span) * (H - 4)]);
      if (xy.length === 1) xy.unshift([0, xy[0][1]]);
      const line = xy.map(([x, y]) => x.toFixed(1) + "," + y.toFixed(1)).join(" ");
      box.append(svg("polygon", { class: "area", points: "0," + H + " " + line + " " + W + "," + H }));
      box.append(svg("polyline", { class: "line", points: line }));
      fig.querySelector(".min").textContent = "min " + fmt(Math.min(...ys));
      fig.querySelector(".max").textContent = "max " + fmt(hi) + " · " + fmtDuration(t1 - t0);
      box.setAttribute("aria-label", def.title + ": now " + fmt(ys[ys.length - 1]) + ", min " + fmt(Math.min(...ys)) + ", max " + fmt(hi) + " over " + fmtDuration(t1 - t0));
    } else box.setAttribute("aria-label", def.title + ": no data yet");
    plot.replaceChildren(box);
  }
}
