// n3xus operator console. Plain JS, no framework, nothing loaded from anywhere but the node.
// The API token lives in this tab's sessionStorage only; it goes out in the Authorization
// header (never in a URL) and is never written to the console or the page.
import { drawCharts } from "./charts.js";
import { $, el, fmtBytes, fmtDuration, fmtNum, fmtTime, mono, short, sleep } from "./dom.js";

(() => {
  const API = "/api/v1";
  const TOKEN_KEY = "n3xus.console.token";
  const RECENT_ROWS = 20; // canon-log and ledger rows shown
  const STREAM_SILENCE_MS = 45000; // 3 heartbeats: the stream is dead, reconnect
  const RECONNECT_MAX_MS = 15000;
  const DESTRUCTIVE = /^(stop|end|ban|delete|remove|kill|close|unpin|rollback)$/i;

  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  let routes = {}; // OpenAPI paths of this node
  let session = 0; // bumped at sign-out: late answers of an old session are dropped
  let stream = null; // AbortController of the live-event loop
  let lastSeq = 0;
  const hist = { time: [], seq: [], series: {} };
  let latest = {};
  let worldShown = null;

  function facts(dl, rows) {
    dl.replaceChildren(...rows.map(([label, value, field]) =>
      el("div", {}, el("dt", { text: label }),
        el("dd", { "data-field": field }, value instanceof Node ? value : String(value ?? "–")))));
  }
  // Panels re-render on live updates; a keyboard user must not lose their place. The
  // focused control is found again by its row's identity (first data- attribute) and text.
  function keepFocus(container, render) {
    const active = document.activeElement;
    let key = null;
    if (active && active !== document.body && container.contains(active)) {
      const row = active.closest("tr");
      const id = row && Array.from(row.attributes).find((a) => a.name.startsWith("data-"));
      key = { row: id ? "tr[" + id.name + '="' + CSS.escape(id.value) + '"] ' : "", tag: active.tagName.toLowerCase(), text: active.textContent };
    }
    render();
    if (key && !container.contains(document.activeElement)) {
      for (const c of container.querySelectorAll(key.row + key.tag)) if (c.textContent === key.text) { c.focus(); break; }
    }
  }
  function tbody(table, rows, emptyText) {
    const body = table.tBodies[0];
    keepFocus(body, () => {
      if (!rows.length) {
        const cols = table.tHead.rows[0].cells.length;
        body.replaceChildren(el("tr", { class: "empty-row" }, el("td", { colspan: cols, class: "empty", text: emptyText })));
      } else body.replaceChildren(...rows);
    });
  }
  const lastShown = {};
  // True if this panel already shows exactly this data (nothing to redraw).
  function unchanged(name, data) {
    const text = JSON.stringify(data);
    if (lastShown[name] === text) return true;
    lastShown[name] = text;
    return false;
  }
  function notice(text, kind) {
    const n = $("notice");
    n.textContent = text;
    n.dataset.kind = kind || "info";
  }
  function panelError(panelId, text) {
    const p = document.querySelector("#" + panelId + " .panel-error");
    if (p) p.textContent = text || "";
  }

  // ---------------------------------------------------------------- API access
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }
  class SignedOut extends Error {}
  async function api(path, opts = {}) {
    const mine = session;
    const headers = Object.assign({ Authorization: "Bearer " + token }, opts.headers || {});
    let body = opts.body;
    if (opts.json !== undefined) { body = JSON.stringify(opts.json); headers["Content-Type"] = "application/json"; }
    const res = await fetch(API + path, { method: opts.method || "GET", headers, body, cache: "no-store" });
    if (mine !== session) throw new SignedOut();
    if (res.status === 401) { signOut("The node refused the token (wrong or replaced). Sign in again."); throw new SignedOut(); }
    if (!res.ok) {
      let message = res.status + " " + res.statusText;
      try { message = (await res.json()).error.message; } catch (_) { /* not the JSON error shape */ }
      throw new ApiError(res.status, message);
    }
    if (opts.blob) return res.blob();
    const type = res.headers.get("content-type") || "";
    return type.includes("json") ? res.json() : res.text();
  }
  const has = (method, path) => Boolean(routes[API + path] && routes[API + path][method]);
  const enc = encodeURIComponent;
  async function download(path, filename) {
    const blob = await api(path, { blob: true });
    const url = URL.createObjectURL(blob);
    const a = el("a", { href: url, download: filename, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 30000);
    notice("Downloaded " + filename);
  }
  function confirmAction(text) {
    const dialog = $("confirm-dialog");
    $("confirm-text").textContent = text;
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.returnValue = "cancel";
      dialog.showModal();
      $("confirm-cancel").focus();
    });
  }
  // Runs an operator action: optional confirmation, disables the button meanwhile, reports.
  async function act(button, { confirm, run, done, refresh }) {
    if (confirm && !(await confirmAction(confirm))) { notice("Cancelled."); return; }
    if (button) button.disabled = true;
    try {
      const result = await run();
      notice(typeof done === "function" ? done(result) : done || "Done.");
      if (refresh) await refresh();
    } catch (err) {
      if (!(err instanceof SignedOut)) notice(err.message || String(err), "error");
    } finally {
      if (button) button.disabled = false;
    }
  }
  const button = (text, onclick, cls) => el("button", { type: "button", class: cls, text, onclick });

  // ---------------------------------------------------------------- sign-in
  async function tokenValid(candidate) {
    const res = await fetch(API + "/console/session", { headers: { Authorization: "Bearer " + candidate }, cache: "no-store" });
    if (!res.ok) throw new Error("the node answered " + res.status);
    return (await res.json()).signed_in === true;
  }
  function showSignIn(message) {
    $("main").hidden = true;
    $("nav").hidden = true;
    $("sign-out").hidden = true;
    $("signin").hidden = false;
    $("signin-error").textContent = message || "";
    setLive("offline");
    $("token-input").focus();
  }
  function signOut(message) {
    session++;
    for (const k of Object.keys(lastShown)) delete lastShown[k];
    token = "";
    sessionStorage.removeItem(TOKEN_KEY);
    if (stream) { stream.abort(); stream = null; }
    showSignIn(message);
  }
  async function onSignIn(event) {
    event.preventDefault();
    const input = $("token-input");
    const candidate = input.value.trim();
    input.value = "";
    try {
      if (!(await tokenValid(candidate))) { showSignIn("That token is not valid for this node."); return; }
    } catch (err) { showSignIn("Cannot reach the node: " + err.message); return; }
    token = candidate;
    sessionStorage.setItem(TOKEN_KEY, token);
    start();
  }

  // The node's routes, from its OpenAPI document: panels and actions follow what it has.
  async function loadRoutes() {
    try {
      const doc = await (await fetch(API + "/openapi.json", { cache: "no-store" })).json();
      routes = doc.paths || {};
    } catch (_) { routes = {}; }
  }
  async function start() {
    session++;
    $("signin").hidden = true;
    $("main").hidden = false;
    $("nav").hidden = false;
    $("sign-out").hidden = false;
    await loadRoutes();
    await Promise.allSettled([loadHistory(), ...Object.keys(PANELS).map(refresh)]);
    document.body.dataset.ready = "true";
    connectEvents();
  }

  // ---------------------------------------------------------------- panels
  const PANELS = { node: refreshNode, peers: refreshPeers, canon: refreshCanon, ledger: refreshLedger, agents: refreshAgents, live: refreshLive };
  const running = {}, again = {};
  async function refresh(name) {
    if (running[name]) { again[name] = true; return running[name]; }
    running[name] = (async () => {
      do {
        again[name] = false;
        try { await PANELS[name](); panelError(name, ""); }
        catch (err) { if (!(err instanceof SignedOut)) panelError(name, "Could not load: " + err.message); }
      } while (again[name]);
    })();
    try { await running[name]; } finally { running[name] = null; }
  }

  async function refreshNode() {
    const n = await api("/console/node");
    const inf = n.inference || {};
    const model = inf.model || {};
    const du = n.data_dir;
    facts($("node-info"), [
      ["Peer ID", mono(n.peer_id, true), "peer_id"],
      ["Public key", mono(n.public_key, true), "public_key"],
      ["Version", n.version, "version"],
      ["Uptime", fmtDuration(n.uptime_s), "uptime"],
      ["Started", fmtTime(n.started_at * 1000), "started_at"],
      ["Connected peers", n.peer_count, "peer_count"],
      ["Listening on", el("span", {}, ...n.listen_addrs.map((a) => [el("span", { class: "mono", text: a }), el("br")])), "listen_addrs"],
      ["Dial me at", el("span", {}, ...n.dial_addrs.map((a) => [el("span", { class: "mono", text: a }), el("br")])), "dial_addrs"],
      ["API", n.api_url + "/api/v1", "api_url"],
      ["Inference backend", inf.available ? (inf.gpu_offload ? "GPU offload" : "CPU") + " (llama.cpp " + inf.llama_cpp + ", " + inf.threads + " threads)" : "not available: " + (inf.error || "unknown"), "inference"],
      ["Model", model.file ? model.file + " (" + fmtBytes(model.bytes) + ")" : model.error || "–", "model"],
      ["Data dir", el("span", { class: "mono", text: du.path }), "data_dir"],
      ["Data dir on disk", fmtBytes(du.allocated_bytes) + " (" + du.files + " files, " + fmtBytes(du.apparent_bytes) + " apparent)", "data_dir_bytes"],
      ["Disk free", fmtBytes(du.fs_free_bytes) + " of " + fmtBytes(du.fs_total_bytes), "disk_free"],
      ["Dials (failed)", n.counters.dials + " (" + n.counters.dial_failures + ")", "dials"],
      ["API requests", fmtNum(n.counters.api_requests), "api_requests"],
      ["Runtime", "Python " + n.runtime.python + " on " + n.runtime.platform + ", pid " + n.runtime.pid, "runtime"],
    ]);
    const w = $("warnings");
    if (!n.warnings.length) w.replaceChildren(el("li", { class: "fine", text: "Nothing needs attention." }));
    else w.replaceChildren(...n.warnings.map((x) => el("li", { "data-code": x.code, text: x.message })));
  }

  function peerBanAction(peer) {
    // Ban/unban routes come with the federation work; use them when the node has them.
    const verb = peer.banned ? "unban" : "ban";
    const candidates = Object.keys(routes).filter((p) => p.startsWith(API + "/peers") && routes[p].post &&
      new RegExp("/" + verb + "(/|$)").test(p));
    if (!candidates.length) return null;
    const path = candidates[0].slice(API.length);
    const templated = /\{[^}]+\}/.test(path);
    return button(verb === "ban" ? "Ban" : "Unban", (e) => act(e.currentTarget, {
      confirm: verb === "ban" ? "Ban peer " + peer.peer_id + "? It will be disconnected and refused." : null,
      run: () => api(templated ? path.replace(/\{[^}]+\}/, enc(peer.peer_id)) : path,
        { method: "POST", json: templated ? {} : { peer_id: peer.peer_id } }),
      done: (verb === "ban" ? "Banned " : "Unbanned ") + short(peer.peer_id),
      refresh: () => refresh("peers"),
    }), verb === "ban" ? "danger" : null);
  }
  // Hello fields worth a glance; the rest is in the row's details.
  const HELLO_SKIP = new Set(["at", "cid", "elapsed_ms", "signature", "public_key", "peer_id"]);
  function helloText(hello) {
    if (!hello || typeof hello !== "object") return "–";
    const parts = [];
    if (hello.network) parts.push("network " + short(hello.network));
    if (hello.version) parts.push("v" + hello.version);
    for (const [k, v] of Object.entries(hello)) {
      if (k === "network" || k === "version" || HELLO_SKIP.has(k)) continue;
      if (Array.isArray(v)) parts.push(v.length > 3 ? v.length + " " + k : k + ": " + v.join(", "));
      else if (v === true) parts.push(k);
      else if (v !== false && v !== null && typeof v !== "object") parts.push(k + " " + v);
    }
    return parts.join(" · ") || "–";
  }
  function trafficText(t) {
    if (!t || typeof t !== "object") return "–";
    const parts = [];
    if (t.bytes_sent !== undefined) parts.push("↑ " + fmtBytes(t.bytes_sent));
    if (t.bytes_received !== undefined) parts.push("↓ " + fmtBytes(t.bytes_received));
    const penalties = Object.entries(t.penalties || {});
    if (penalties.length) parts.push("penalties: " + penalties.map(([k, n]) => k + " ×" + n).join(", "));
    return parts.join(" · ") || "–";
  }
  function peerStatus(p, connected) {
    if (p.banned) {
      const b = typeof p.banned === "object" ? p.banned : {};
      return "banned" + (b.seconds_left !== undefined ? " (" + fmtDuration(b.seconds_left) + " left)" : "") + (b.reason ? ": " + b.reason : "");
    }
    const refusal = p.refusal ? " (refused: " + (p.refusal.reason || p.refusal.message || "?") + ", by " + (p.refusal.by || "?") + ")" : "";
    return (connected ? "connected" : "not connected") + refusal;
  }
  function peerRow(p, connected) {
    const rtt = el("span", { class: "rtt" });
    return el("tr", { "data-peer": p.peer_id, "data-connected": connected ? "true" : "false", "data-banned": p.banned ? "true" : "false", class: p.banned ? "banned" : null },
      el("td", {}, mono(p.peer_id)),
      el("td", {}, ...(p.addrs || []).map((a) => [el("span", { class: "mono", text: a }), el("br")])),
      el("td", { text: helloText(p.hello) }),
      el("td", { class: "num", text: p.score === undefined || p.score === null ? "–" : fmtNum(p.score) }),
      el("td", { text: trafficText(p.traffic) }),
      el("td", { class: "status", text: peerStatus(p, connected) }),
      el("td", {},
        connected ? button("Ping", (e) => act(e.currentTarget, {
          run: () => api("/peers/ping", { method: "POST", json: { peer_id: p.peer_id } }),
          done: (r) => { rtt.textContent = r.rtt_ms + " ms"; return "Ping " + short(p.peer_id) + ": " + r.rtt_ms + " ms"; },
        })) : null, peerBanAction(p), rtt));
  }
  async function refreshPeers() {
    const res = await api("/peers");
    if (unchanged("peers", res)) return;
    const peers = res.peers || [], others = res.others || [];
    $("peer-count").textContent = "(" + peers.length + " connected" + (others.length ? ", " + others.length + " other known" : "") + ")";
    tbody($("peers-table"), [...peers.map((p) => peerRow(p, true)), ...others.map((p) => peerRow(p, false))],
      "Not connected to any peer. Paste a peer's address above to connect.");
  }

  async function refreshCanon() {
    const c = await api("/console/canon");
    facts($("canon-totals"), [
      ["Blocks", fmtNum(c.blocks), "blocks"], ["Stored", fmtBytes(c.bytes), "bytes"],
      ["Pins", fmtNum(c.pins), "pins"], ["Log entries", fmtNum(c.log_size), "log_size"],
      ["Worlds", fmtNum(c.worlds.length), "worlds"],
      ["Corrupt blocks", c.corrupt.length ? c.corrupt.join(", ") : "none", "corrupt"],
    ]);
    $("canon-checkpoint").textContent = c.checkpoint || "No checkpoint signed yet.";
    const [pins, log] = await Promise.all([
      api("/canon/pins"),
      api("/canon/log?start=" + Math.max(0, c.log_size - RECENT_ROWS) + "&limit=" + RECENT_ROWS),
    ]);
    tbody($("pins-table"), pins.pins.map((p) => el("tr", { "data-pin": p.name },
      el("td", { class: "mono", text: p.name }), el("td", {}, mono(p.cid)), el("td", { text: p.recursive ? "yes" : "no" }),
      el("td", {}, button("Unpin", (e) => act(e.currentTarget, {
        confirm: "Unpin " + p.name + "? Its blocks can then be garbage-collected.",
        run: () => api("/canon/pins/" + enc(p.name), { method: "DELETE" }),
        done: "Unpinned " + p.name, refresh: () => refresh("canon"),
      }), "danger")))), "No pins.");
    tbody($("canon-log-table"), log.entries.slice().reverse().map((e) => el("tr", { "data-index": e.index },
      el("td", { class: "num", text: e.index }), el("td", { text: e.type }), el("td", {}, mono(e.author)),
      el("td", { text: fmtTime(e.time) }), el("td", {}, mono(e.payload)),
      el("td", {}, button("Proof", (ev) => act(ev.currentTarget, {
        run: () => download("/canon/log/proof/" + e.index, "n3xus-canon-" + e.index + ".tlog-proof"), done: "Proof downloaded.",
      }))))), "The canon log is empty.");
    tbody($("worlds-table"), c.worlds.map((w) => el("tr", { "data-world": w.world },
      el("td", { text: w.world }), el("td", { class: "num", text: w.seq }), el("td", {}, mono(w.writer)),
      el("td", { text: fmtTime(w.time) }),
      el("td", {}, button("Browse", () => showWorld(w.world))))), "No worlds yet.");
    if (worldShown) await showWorld(worldShown, true);
  }
  async function showWorld(name, quiet) {
    worldShown = name;
    const prefix = $("world-prefix").value;
    const [entries, history] = await Promise.all([
      api("/worlds/" + enc(name) + "/entries?limit=200" + (prefix ? "&prefix=" + enc(prefix) : "")),
      api("/worlds/" + enc(name) + "/history?limit=" + RECENT_ROWS),
    ]);
    $("world-browser").hidden = false;
    $("world-browser-title").textContent = "World “" + name + "”";
    tbody($("world-keys-table"), entries.entries.map((e) => el("tr", { "data-key": e.key },
      el("td", { class: "mono", text: e.key }), el("td", { class: "mono", text: JSON.stringify(e.value) }))), "No keys" + (prefix ? " with that prefix." : "."));
    tbody($("world-history-table"), history.history.map((h) => el("tr", {},
      el("td", { class: "num", text: h.seq }), el("td", {}, mono(h.commit)), el("td", {}, mono(h.author)),
      el("td", { text: fmtTime(h.time) }))), "No history.");
    if (!quiet) $("world-browser-title").scrollIntoView({ block: "nearest" });
  }

  function txDetails(e) {
    const a = e.args || {};
    const parts = [];
    if (a.to) parts.push("to " + short(a.to));
    if (a.amount !== undefined) parts.push(fmtNum(a.amount) + " units");
    if (a.asset) parts.push("asset " + short(a.asset));
    if (a.edition !== undefined) parts.push("edition " + a.edition);
    if (a.price !== undefined) parts.push("price " + fmtNum(a.price));
    if (a.editions !== undefined) parts.push(a.editions + " editions");
    return parts.join(", ");
  }
  // "What changed in the last minute": now minus the newest sample at least 60 s old.
  function lastMinute(series, now) {
    const v = hist.series[series], t = hist.time;
    if (!v || !t.length) return "–";
    const cutoff = t[t.length - 1] - 60;
    let i = t.length - 1;
    while (i > 0 && (t[i] > cutoff || v[i] === null)) i--;
    const span = Math.round(t[t.length - 1] - t[i]);
    const delta = now - (v[i] ?? now);
    return "+" + fmtNum(delta) + " entr" + (delta === 1 ? "y" : "ies") + (span < 60 ? " (in the " + span + " s on record)" : "");
  }
  async function refreshLedger() {
    const [status, view, checkpoint] = await Promise.all([
      api("/ledger/status"), api("/console/ledger"), api("/ledger/checkpoint")]);
    facts($("ledger-status"), [
      ["Network", status.name, "name"], ["Network id", mono(status.network), "network"],
      ["Log entries", fmtNum(status.log_size), "log_size"],
      ["Supply", fmtNum(status.supply) + " of " + fmtNum(status.supply_cap), "supply"],
      ["State root", mono(status.state_root), "state_root"],
      ["Frozen accounts", String(status.frozen_accounts.length), "frozen"],
      ["Last minute", lastMinute("ledger_log_size", status.log_size), "last_minute"],
    ]);
    $("ledger-checkpoint").textContent = checkpoint;
    const log = await api("/ledger/log?start=" + Math.max(0, status.log_size - RECENT_ROWS) + "&limit=" + RECENT_ROWS);
    tbody($("ledger-txs-table"), log.entries.slice().reverse().map((e) => el("tr", { "data-index": e.index, "data-id": e.id },
      el("td", { class: "num", text: e.index }), el("td", { text: e.kind === "tx" ? e.op : e.kind }),
      el("td", {}, e.account ? mono(e.account) : "–"), el("td", { text: txDetails(e) }),
      el("td", { text: e.time ? fmtTime(e.time) : "–" }),
      el("td", {}, e.kind === "tx" ? button("Proof", (ev) => act(ev.currentTarget, {
        run: () => download("/ledger/proofs/tx/" + enc(e.id), "n3xus-tx-" + e.index + ".tlog-proof"),
        done: "Proof bundle downloaded: verify it offline with `n3xus audit`.",
      })) : null))), "No transactions yet.");
    tbody($("accounts-table"), view.accounts.map((a) => el("tr", { "data-account": a.account },
      el("td", {}, mono(a.account)), el("td", { class: "num", text: fmtNum(a.balance) }),
      el("td", { class: "num", text: a.txs }), el("td", { text: a.frozen ? "frozen" : "ok" }))), "No accounts yet.");
    tbody($("assets-table"), view.assets.map((a) => el("tr", { "data-asset": a.asset },
      el("td", {}, mono(a.asset)), el("td", {}, mono(a.creator)), el("td", { class: "num", text: a.editions }),
      el("td", { text: (a.royalty_bps / 100) + " %" }),
      el("td", {}, ...a.owners.map((o) => [el("span", { text: "#" + o.edition + " " }), mono(o.owner), el("br")])))), "No assets minted yet.");
    tbody($("listings-table"), view.listings.map((l) => el("tr", { "data-asset": l.asset, "data-edition": l.edition },
      el("td", {}, mono(l.asset)), el("td", { class: "num", text: l.edition }), el("td", {}, mono(l.seller)),
      el("td", { class: "num", text: fmtNum(l.price) }))), "Nothing listed.");
    tbody($("fraud-table"), view.frozen_accounts.map((acct) => el("tr", { "data-account": acct },
      el("td", {}, mono(acct)),
      el("td", {}, button("Download fraud proof", (ev) => act(ev.currentTarget, {
        run: () => download("/ledger/fraud-proofs/" + acct, "n3xus-fraud-" + acct.slice(0, 16) + ".cbor"), done: "Fraud proof downloaded.",
      }))))), "No fraud proofs: no account is frozen.");
  }

  // Agents and rooms come with later issues: render whatever the node's routes return,
  // and offer the per-item actions its OpenAPI document declares.
  // An action is offered as a button only when it needs no input (no required body field).
  function needsInput(op) {
    const content = op.requestBody && op.requestBody.content;
    if (!content) return false;
    const json = content["application/json"];
    if (!json) return true;
    const schema = json.schema || {};
    return Array.isArray(schema.required) && schema.required.length > 0;
  }
  // A route with a required query parameter (a room's tip-info needs ?account=) needs
  // input too: discovery offers no button for it (it would only ever answer 400).
  function needsQuery(op) {
    return (op.parameters || []).some((q) => q.in === "query" && q.required === true);
  }
  function itemActions(collection, id, item, refreshName) {
    const out = [];
    const re = new RegExp("^" + API + "/" + collection + "/\\{[^}]+\\}/([a-z-]+)$");
    for (const [path, ops] of Object.entries(routes)) {
      const m = re.exec(path);
      if (!m || !ops.post || needsInput(ops.post) || needsQuery(ops.post)) continue;
      if ((ops.post.responses?.["200"]?.content || {})["text/event-stream"]) continue;
      const verb = m[1];
      // An enabled item needs no Start, a disabled one no Stop; an ended room no End.
      if ((verb === "start" && item.enabled === true) || (verb === "stop" && item.enabled === false)) continue;
      if (verb === "end" && item.ended === true) continue;
      const label = verb.charAt(0).toUpperCase() + verb.slice(1);
      out.push(button(label, (e) => act(e.currentTarget, {
        confirm: DESTRUCTIVE.test(verb) ? label + " " + id + "?" : null,
        run: () => api(path.slice(API.length).replace(/\{[^}]+\}/, enc(id)), { method: "POST", json: {} }),
        done: label + ": " + id, refresh: () => refresh(refreshName),
      }), DESTRUCTIVE.test(verb) ? "danger" : null));
    }
    for (const p of ["/{name}", "/{id}"]) {
      if (!routes[API + "/" + collection + p]?.delete) continue;
      out.push(button(collection === "rooms" ? "End" : "Delete", (e) => act(e.currentTarget, {
        confirm: (collection === "rooms" ? "End performance " : "Delete ") + id + "?",
        run: () => api("/" + collection + "/" + enc(id), { method: "DELETE" }),
        done: "Done: " + id, refresh: () => refresh(refreshName),
      }), "danger"));
    }
    return out;
  }
  // Read-only sub-resources (an agent's decisions, memory; a room's viewers): a button
  // each, showing the newest entries below the table.
  function itemViews(collection, id, target) {
    const out = [];
    const re = new RegExp("^" + API + "/" + collection + "/\\{[^}]+\\}/([a-z-]+)$");
    for (const [path, ops] of Object.entries(routes)) {
      const m = re.exec(path);
      if (!m || !ops.get || needsQuery(ops.get)) continue;
      const what = m[1];
      out.push(button("Show " + what, (e) => act(e.currentTarget, {
        run: async () => {
          const limit = (ops.get.parameters || []).find((q) => q.name === "limit");
          const query = limit ? "?limit=" + Math.min(20, limit.schema?.maximum ?? 20) : "";
          const data = await api(path.slice(API.length).replace(/\{[^}]+\}/, enc(id)) + query);
          const rows = Array.isArray(data) ? data : Object.values(data).find(Array.isArray) || [];
          const box = $(target);
          box.replaceChildren(el("h3", { text: what.charAt(0).toUpperCase() + what.slice(1) + " of " + id }), genericTable(rows, what, null));
        },
        done: "Showing " + what + " of " + id,
      }), "quiet"));
    }
    return out;
  }
  function cell(v) {
    if (v === null || v === undefined) return "–";
    if (Array.isArray(v)) return v.length + " item" + (v.length === 1 ? "" : "s");
    if (typeof v === "object") {
      const flat = Object.entries(v).filter(([, x]) => x === null || typeof x !== "object");
      if (flat.length === Object.keys(v).length) return flat.map(([k, x]) => k + " " + (typeof x === "number" ? fmtNum(x) : x)).join(" · ");
      return JSON.stringify(v).slice(0, 160);
    }
    return typeof v === "string" ? short(v) : String(v);
  }
  const MAX_COLUMNS = 8;
  // Columns an operator looks at first (agents: state and telemetry; rooms: who is on).
  const FIRST_COLUMNS = ["name", "room", "enabled", "status", "state", "turns", "queued", "stats",
    "live", "ended", "performers", "peers", "viewers", "relay", "verdict", "primitive", "reason", "executed", "index", "time"];
  function genericTable(items, what, actionsFor) {
    if (!items.length) return el("p", { class: "empty", text: "No " + what + " right now." });
    const keys = [];
    for (const it of items) for (const k of Object.keys(it)) if (!keys.includes(k)) keys.push(k);
    const rank = (k) => (FIRST_COLUMNS.includes(k) ? FIRST_COLUMNS.indexOf(k) : FIRST_COLUMNS.length);
    const shown = keys.slice().sort((a, b) => rank(a) - rank(b)).slice(0, MAX_COLUMNS);
    const id = (it) => String(it.name ?? it.id ?? it.agent_id ?? it.room ?? it.decision ?? "");
    const table = el("table", {},
      el("thead", {}, el("tr", {}, ...shown.map((k) => el("th", { text: k })), el("th", { text: actionsFor ? "Actions" : "Details" }))),
      el("tbody", {}, ...items.map((it) => el("tr", { "data-item": id(it) },
        ...shown.map((k) => el("td", { "data-key": k, text: cell(it[k]), title: typeof it[k] === "string" ? it[k] : null })),
        el("td", {}, ...(actionsFor ? actionsFor(id(it), it) : []),
          el("details", {}, el("summary", { text: "all fields" }), el("pre", { class: "note", text: JSON.stringify(it, null, 2) })))))));
    return el("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": what }, table);
  }
  async function renderCollection(collection, target, refreshName, what) {
    const box = $(target);
    const unavailable = (why) => box.replaceChildren(el("p", { class: "unavailable", "data-unavailable": "true", text: what + " are not available on this node" + why }));
    if (!has("get", "/" + collection)) { unavailable(" (no /api/v1/" + collection + " route)."); return; }
    let data;
    try { data = await api("/" + collection); } catch (err) {
      if (err instanceof ApiError && err.status === 404) { unavailable("."); return; }
      throw err;
    }
    if (unchanged(collection, data)) return;
    const items = Array.isArray(data) ? data : data[collection] || [];
    const detail = $(target + "-detail") || el("div", { class: "sub-view", id: target + "-detail" });
    keepFocus(box, () => box.replaceChildren(genericTable(items, what.toLowerCase(), (id, item) => [
      ...itemActions(collection, id, item, refreshName), ...itemViews(collection, id, target + "-detail")]),
    detail));
  }
  function refreshAgents() { return renderCollection("agents", "agents-body", "agents", "Agents"); }
  function refreshLive() { return renderCollection("rooms", "live-body", "live", "Live rooms"); }

  async function loadHistory() {
    const h = await api("/console/metrics");
    hist.time = h.time; hist.seq = h.seq; hist.series = h.series;
    hist.capacity = h.capacity;
    hist.boot = h.boot;
    lastSeq = h.last_seq;
    const n = h.time.length;
    if (n) latest = Object.fromEntries(Object.entries(h.series).map(([k, v]) => [k, v[n - 1]]));
    $("charts-hint").textContent = "Sampled every " + h.interval_s + " s; the last " + fmtDuration(h.interval_s * h.capacity) + " are kept in the node's memory.";
    drawCharts(hist);
  }
  function addSample(s) {
    if (s.seq <= lastSeq) return;
    lastSeq = s.seq;
    hist.time.push(s.time); hist.seq.push(s.seq);
    for (const name of Object.keys(s.values)) if (!hist.series[name]) hist.series[name] = hist.time.slice(1).map(() => null);
    for (const [name, arr] of Object.entries(hist.series)) arr.push(s.values[name] ?? null);
    if (hist.time.length > (hist.capacity || 900)) { hist.time.shift(); hist.seq.shift(); for (const a of Object.values(hist.series)) a.shift(); }
    drawCharts(hist);
    const changed = (...names) => names.some((k) => s.values[k] !== latest[k]);
    // Peers change without changing in number (hello, score, traffic): read them every sample.
    refresh("peers");
    if (has("get", "/agents")) refresh("agents");
    if (has("get", "/rooms")) refresh("live");
    if (changed("peers")) refresh("node");
    if (changed("ledger_log_size", "ledger_supply", "ledger_frozen_accounts")) refresh("ledger");
    if (changed("canon_log_size", "worlds", "canon_blocks", "canon_pins")) refresh("canon");
    latest = s.values;
    const up = document.querySelector('#node-info [data-field="uptime"]');
    if (up && s.values.uptime_seconds !== undefined) up.textContent = fmtDuration(s.values.uptime_seconds);
  }

  // A new boot id: the node restarted, its history began again. Start over from it.
  function onHello(h) {
    if (hist.boot && h.boot !== hist.boot) {
      lastSeq = 0;
      loadHistory().catch(() => {});
      loadRoutes().then(() => Promise.allSettled(Object.keys(PANELS).map(refresh)));
    }
  }

  // ---------------------------------------------------------------- live events
  function setLive(state) {
    const p = $("live-state");
    p.dataset.state = state;
    p.textContent = { live: "live", connecting: "connecting…", reconnecting: "reconnecting…", offline: "offline" }[state] || state;
  }
  // EventSource cannot send the Authorization header, so the stream is read with fetch()
  // and parsed here (text/event-stream framing: blank-line separated fields).
  async function readEvents(body, onActivity) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      onActivity();
      buf += value;
      let cut;
      while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut).replace(/^\r?\n\r?\n/, "");
        let event = "message", data = "";
        for (const line of block.split(/\r?\n/)) {
          if (line.startsWith(":")) continue;
          const i = line.indexOf(":");
          const field = i < 0 ? line : line.slice(0, i), val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
          if (field === "event") event = val;
          else if (field === "data") data += (data ? "\n" : "") + val;
        }
        if (event === "sample" && data) addSample(JSON.parse(data));
        else if (event === "hello" && data) onHello(JSON.parse(data));
      }
    }
  }
  async function connectEvents() {
    if (stream) stream.abort();
    const ctrl = new AbortController();
    stream = ctrl;
    let delay = 1000;
    while (stream === ctrl) {
      setLive(delay === 1000 ? "connecting" : "reconnecting");
      const conn = new AbortController();
      const stop = () => conn.abort();
      ctrl.signal.addEventListener("abort", stop);
      let timer = setTimeout(stop, STREAM_SILENCE_MS);
      const alive = () => { clearTimeout(timer); timer = setTimeout(stop, STREAM_SILENCE_MS); };
      try {
        const res = await fetch(API + "/console/events?after=" + lastSeq, {
          headers: { Authorization: "Bearer " + token, Accept: "text/event-stream" }, signal: conn.signal, cache: "no-store" });
        if (res.status === 401) { signOut("The node refused the token (wrong or replaced). Sign in again."); return; }
        if (res.ok) {
          setLive("live");
          delay = 1000;
          await readEvents(res.body, alive);
        }
      } catch (_) {
        // Network error or aborted: fall through to the reconnect below.
      } finally {
        clearTimeout(timer);
        ctrl.signal.removeEventListener("abort", stop);
      }
      if (stream !== ctrl) return;
      setLive("reconnecting");
      await sleep(delay);
      delay = Math.min(delay * 2, RECONNECT_MAX_MS);
      if (stream === ctrl) Promise.allSettled(Object.keys(PANELS).map(refresh)); // catch up
    }
  }

  // ---------------------------------------------------------------- wiring
  function wire() {
    $("signin-form").addEventListener("submit", onSignIn);
    $("sign-out").addEventListener("click", () => signOut("Signed out."));
    $("connect-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const addr = $("connect-addr").value.trim();
      act(e.submitter, {
        run: () => api("/peers/connect", { method: "POST", json: { multiaddr: addr } }),
        done: (r) => "Connected to " + r.peer_id, refresh: () => refresh("peers"),
      });
    });
    $("pin-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const body = { cid: $("pin-cid").value.trim(), recursive: $("pin-recursive").checked };
      const name = $("pin-name").value.trim();
      if (name) body.name = name;
      act(e.submitter, {
        run: () => api("/canon/pins", { method: "POST", json: body }),
        done: (r) => "Pinned " + r.name + " (" + r.blocks + " blocks)", refresh: () => refresh("canon"),
      });
    });
    $("canon-sign").addEventListener("click", (e) => act(e.currentTarget, {
      run: () => api("/canon/log/checkpoint", { method: "POST" }), done: "Checkpoint signed.", refresh: () => refresh("canon"),
    }));
    $("world-filter").addEventListener("submit", (e) => {
      e.preventDefault();
      if (worldShown) showWorld(worldShown).catch((err) => notice(err.message, "error"));
    });
  }

  document.addEventListener("DOMContentLoaded", async () => {
    wire();
    drawCharts(hist);
    if (!token) { showSignIn(""); return; }
    try {
      if (await tokenValid(token)) { start(); return; }
      signOut("The stored token is no longer valid for this node (wrong or replaced). Sign in again.");
    } catch (err) { showSignIn("Cannot reach the node: " + err.message); }
  });
})();
