"""The operator console in a real headless Chromium (Debian's /usr/bin/chromium driven
by Playwright) against real nodes started with `n3xus node start`.

Every panel is checked against what the API answers (never against hard-coded text),
every action against the API after it, and the browser log must stay free of errors
(CSP violations, failed requests and script errors all land there). Screenshots at
desktop and phone width are kept under $N3XUS_TEST_ARTIFACTS (or the test's tmp dir).
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_support import BASE_ARGS, CHROMIUM
from nacl.signing import SigningKey
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from conftest import CliNode, start_cli_node
from n3xus.canon.cid import CID, cid_of
from n3xus.ledger.tx import AccountChain, Op
from n3xus.node.config import DataDir
from n3xus.node.services.wallets import ensure_genesis

CHROMIUM_ARGS = [*BASE_ARGS, "--disable-gpu", "--disable-component-update", "--disable-sync",
                 "--no-first-run"]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
# Live updates arrive with the next metrics sample (every 2 s); allow for a loaded machine.
LIVE_TIMEOUT_MS = 15_000


def artifacts_dir(tmp_path: Path) -> Path:
    env = os.environ.get("N3XUS_TEST_ARTIFACTS")
    path = Path(env) / "console" if env else tmp_path / "artifacts"
    path.mkdir(parents=True, exist_ok=True)
    return path


class Api:
    def __init__(self, node: CliNode) -> None:
        self.token = DataDir(node.data_dir).read_token()
        self.client = httpx.Client(base_url=node.api_url + "/api/v1", timeout=30,
                                   headers={"Authorization": f"Bearer {self.token}"})

    def get(self, path: str, **params: Any) -> Any:
        res = self.client.get(path, params=params)
        assert res.status_code == 200, (path, res.status_code, res.text)
        return res.json() if "json" in res.headers["content-type"] else res.text

    def post(self, path: str, **body: Any) -> Any:
        res = self.client.post(path, json=body)
        assert res.status_code == 200, (path, res.text)
        return res.json()


class Ledger:
    """Signs transactions for the node's dev network (the node's key is its issuer)."""

    def __init__(self, node: CliNode, api: Api) -> None:
        dd = DataDir(node.data_dir)
        genesis, _ = ensure_genesis(dd)
        self.api = api
        self.issuer = AccountChain(SigningKey(dd.read_identity_seed()), genesis.cid)
        alice_key = SigningKey(bytes(range(32)))
        self.alice = AccountChain(alice_key, genesis.cid)
        self.alice_account = bytes(alice_key.verify_key)
        self.bob = bytes(SigningKey(bytes(range(1, 33))).verify_key)
        self.clock = int(time.time() * 1000)

    def submit(self, chain: AccountChain, op: Op, **args: Any) -> dict[str, Any]:
        self.clock += 1
        res = self.api.client.post("/ledger/txs", content=chain.sign(op, args, time_ms=self.clock))
        assert res.status_code == 200, res.text
        return res.json()  # type: ignore[no-any-return]


def create_agent(api: Api) -> str:
    """An agent on the node, through its API: a node-held agent key, a manifest signed by
    a creator for the node's model (imvu/manifest.py), POST /agents."""
    from n3xus.imvu.manifest import Generation, ModelRef, make_primitives, sign_manifest

    keys = api.post("/agents/keys")
    model = ModelRef(CID(keys["model"]["cid"]), keys["model"]["name"], keys["model"]["size"])
    manifest = sign_manifest(
        SigningKey(bytes(range(3, 35))), name="nova", persona="You are Nova.",
        agent=bytes.fromhex(keys["agent"]), model=model, generation=Generation(16, 2048, 256),
        tools=[], primitives=make_primitives(actions=["reply"]), time=int(time.time() * 1000))
    created = api.post("/agents", manifest=manifest.to_block().hex())
    return str(created["name"])


def wait_for(predicate: Callable[[], bool], timeout_s: float = LIVE_TIMEOUT_MS / 1000) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def texts(page: Page, selector: str, attr: str) -> list[str]:
    return [str(v) for v in page.eval_on_selector_all(
        selector, f"els => els.map(e => e.getAttribute('{attr}'))")]


def wait_js(page: Page, expression: str, timeout_ms: int = LIVE_TIMEOUT_MS) -> None:
    """Poll a JS expression from Python: page.wait_for_function evaluates strings with
    eval(), which the console's CSP (rightly) forbids."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out waiting for {expression}"
        time.sleep(0.1)


def field(page: Page, panel: str, name: str) -> str:
    return page.inner_text(f'#{panel} [data-field="{name}"]')


def sign_in_with_keyboard(page: Page, token: str) -> None:
    page.wait_for_selector("#token-input:focus")
    page.keyboard.type(token)
    page.keyboard.press("Enter")


def test_console_shows_the_api_and_its_actions_work(
    tmp_path: Path, cli_nodes: list[CliNode], browser: Browser
) -> None:
    node = start_cli_node(tmp_path / "a")
    cli_nodes.append(node)
    # One network: nodes of different genesis refuse each other's hello and disconnect.
    other = start_cli_node(tmp_path / "b", genesis=tmp_path / "a" / "genesis.cbor")
    cli_nodes.append(other)
    console_lines = [line for line in node.stdout_lines if line.startswith("console ")]
    assert console_lines and node.api_url + "/" in console_lines[0]
    assert str(DataDir(node.data_dir).token_path) in console_lines[0]
    api, other_api = Api(node), Api(other)
    first_token = api.token

    # State to show: transactions, an asset listed for sale, a world with history, a block.
    ledger = Ledger(node, api)
    ledger.submit(ledger.issuer, Op.ISSUE, to=ledger.alice_account, amount=5000)
    ledger.submit(ledger.alice, Op.TRANSFER, to=ledger.bob, amount=125)
    minted = ledger.submit(ledger.alice, Op.MINT, artifact=cid_of(b"art", codec="raw"),
                           metadata={"title": "console"}, editions=2, royalty_bps=500,
                           creator_bps=8000, platform_bps=2000)
    ledger.submit(ledger.alice, Op.LIST, asset=CID(minted["id"]), price=700, edition=1)
    # Mallory signs two different transactions with one seq: the node keeps a fraud
    # proof and freezes the account.
    mallory_key = SigningKey(bytes(range(2, 34)))
    mallory = AccountChain(mallory_key, ledger.issuer.network)
    ledger.submit(ledger.issuer, Op.ISSUE, to=bytes(mallory_key.verify_key), amount=100)
    for amount in (10, 20):
        ledger.clock += 1
        api.client.post("/ledger/txs", content=mallory.sign_at(
            0, None, Op.TRANSFER, {"to": ledger.bob, "amount": amount}, time_ms=ledger.clock))
    assert api.get("/ledger/status")["frozen_accounts"] == [bytes(mallory_key.verify_key).hex()]
    api.post("/worlds/garden", set={"rose": {"colour": "red"}, "tulip": 3})
    api.post("/worlds/garden", set={"lily": "white"}, delete=["tulip"])
    block = api.client.post("/canon/blocks", content=b"console block", params={"pin": "false"}).json()

    # The page and its assets carry a CSP that allows only the node's own origin.
    page_res = httpx.get(node.api_url + "/")
    csp = page_res.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe" not in csp
    assert "frame-ancestors 'none'" in csp
    assert httpx.get(node.api_url + "/console/app.js").headers["content-security-policy"] == csp
    assert httpx.get(node.api_url + "/console/../setup.py").status_code == 404

    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    page = context.new_page()
    errors: list[str] = []
    urls: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type in ("error", "warning"):
            errors.append(f"{msg.type}: {msg.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.on("request", lambda req: urls.append(req.url))
    page.goto(node.api_url + "/")

    # A wrong token is refused and the sign-in prompt stays.
    sign_in_with_keyboard(page, "not-the-token")
    wait_js(page, "document.getElementById('signin-error').textContent.length > 0")
    assert page.is_visible("#signin") and not page.is_visible("#main")
    # The right one, typed and submitted with the keyboard alone.
    sign_in_with_keyboard(page, api.token)
    page.wait_for_selector("body[data-ready=true]")
    assert page.is_visible("#main") and not page.is_visible("#signin")

    # -- node panel --------------------------------------------------------------------
    overview = api.get("/console/node")
    assert field(page, "node", "peer_id") == api.get("/id")["peer_id"] == node.peer_id
    assert field(page, "node", "version") == overview["version"]
    assert field(page, "node", "data_dir") == overview["data_dir"]["path"]
    inference = overview["inference"]
    assert inference["available"] is True
    shown = field(page, "node", "inference")
    assert ("GPU offload" if inference["gpu_offload"] else "CPU") in shown
    assert inference["llama_cpp"] in shown
    assert inference["model"]["file"] in field(page, "node", "model")
    warnings = texts(page, "#warnings li[data-code]", "data-code")
    assert warnings == [w["code"] for w in overview["warnings"]]
    assert "no_peers" in warnings and "frozen_accounts" in warnings

    # -- peers: connect through the form, then ping ------------------------------------
    assert page.inner_text("#peers-table tbody") .startswith("Not connected")
    other_addr = other_api.get("/status")["dial_addrs"][0]
    page.fill("#connect-addr", other_addr)
    page.click("#connect-form button[type=submit]")
    wait_js(page, "document.getElementById('notice').textContent.startsWith('Connected to')")
    peers = api.get("/peers")
    assert [p["peer_id"] for p in peers["peers"]] == [other.peer_id]
    page.wait_for_selector(f'#peers-table tr[data-peer="{other.peer_id}"][data-connected=true]')
    assert texts(page, "#peers-table tr[data-peer]", "data-peer") == [
        p["peer_id"] for p in peers["peers"] + peers.get("others", [])]
    if "hello" in peers["peers"][0]:  # the federation hello: its network is shown
        wait_for(lambda: api.get("/peers")["peers"][0]["hello"] is not None)
        hello = api.get("/peers")["peers"][0]["hello"]
        wait_for(lambda: hello["network"][:10] in page.inner_text(
            f'#peers-table tr[data-peer="{other.peer_id}"]'))
    page.click(f'#peers-table tr[data-peer="{other.peer_id}"] button:text("Ping")')
    wait_js(page, "document.querySelector('#peers-table .rtt').textContent.endsWith(' ms')")
    # Live redraws keep a keyboard user's place: the focused Ping button is focused again
    # after the peers table is rebuilt (a ping through the API changes its traffic).
    ping_button = f'#peers-table tr[data-peer="{other.peer_id}"] button:text("Ping")'
    page.focus(ping_button)
    page.evaluate("document.activeElement.closest('tr').oldRow = true")
    api.post("/peers/ping", peer_id=other.peer_id)
    wait_js(page, "!document.querySelector('#peers-table tbody tr').oldRow")
    assert page.evaluate("document.activeElement.textContent") == "Ping"
    assert page.evaluate("document.activeElement.closest('tr').dataset.peer") == other.peer_id
    # The live stream brings the peer into the node panel and its warnings.
    wait_js(page, "!document.querySelector('#warnings [data-code=no_peers]')",
                timeout_ms=LIVE_TIMEOUT_MS)
    assert field(page, "node", "peer_count") == "1"
    # Ban (when the node has the route): asks first, then the API reports the ban; unban.
    if "/api/v1/peers/ban" in api.client.get("/openapi.json").json()["paths"]:
        row = f'#peers-table tr[data-peer="{other.peer_id}"]'
        page.click(f'{row} button:text("Ban")')
        page.wait_for_selector("#confirm-dialog[open]")
        page.click("#confirm-ok")
        page.wait_for_selector(f'{row}[data-banned="true"]')

        def peer_entry() -> dict[str, Any]:
            listed = api.get("/peers")
            return next(p for p in listed["peers"] + listed.get("others", [])
                        if p["peer_id"] == other.peer_id)

        assert peer_entry()["banned"]
        assert "banned" in page.inner_text(f"{row} .status")
        page.click(f'{row} button:text("Unban")')
        page.wait_for_selector(f'{row}[data-banned="false"]', state="attached")
        assert not peer_entry()["banned"]
        page.fill("#connect-addr", other_addr)  # reconnect for the rest of the test
        page.click("#connect-form button[type=submit]")
        wait_for(lambda: [p["peer_id"] for p in api.get("/peers")["peers"]] == [other.peer_id])
    else:
        assert not page.is_visible(f'#peers-table tr[data-peer="{other.peer_id}"] button:text("Ban")')

    # -- canon ---------------------------------------------------------------------------
    canon = api.get("/console/canon")
    assert field(page, "canon", "blocks") == f"{canon['blocks']:,}"
    assert field(page, "canon", "log_size") == f"{canon['log_size']:,}"
    assert texts(page, "#pins-table tr[data-pin]", "data-pin") == [p["name"] for p in api.get("/canon/pins")["pins"]]
    assert texts(page, "#worlds-table tr[data-world]", "data-world") == api.get("/worlds")["worlds"]
    log_rows = api.get("/canon/log", start=max(0, canon["log_size"] - 20), limit=20)["entries"]
    assert texts(page, "#canon-log-table tr[data-index]", "data-index") == [str(e["index"]) for e in reversed(log_rows)]
    page.click("#canon-sign")
    wait_js(page, "!document.getElementById('canon-checkpoint').textContent.startsWith('No checkpoint')")
    # Other tasks may log and sign meanwhile: the page must catch up with the API.
    wait_for(lambda: page.inner_text("#canon-checkpoint").strip()
             == api.get("/canon/log/checkpoint").strip())
    page.click('#worlds-table tr[data-world="garden"] button')
    page.wait_for_selector("#world-keys-table tr[data-key]")
    assert texts(page, "#world-keys-table tr[data-key]", "data-key") == [
        e["key"] for e in api.get("/worlds/garden/entries")["entries"]]
    assert len(page.query_selector_all("#world-history-table tbody tr")) == len(
        api.get("/worlds/garden/history")["history"]) == 2

    # Pin through the form; unpin asks first: Cancel keeps the pin, Confirm removes it.
    page.fill("#pin-cid", block["cid"])
    page.fill("#pin-name", "from-console")
    page.click("#pin-form button[type=submit]")
    page.wait_for_selector('#pins-table tr[data-pin="from-console"]')
    assert "from-console" in [p["name"] for p in api.get("/canon/pins")["pins"]]
    unpin = '#pins-table tr[data-pin="from-console"] button'
    page.click(unpin)
    page.wait_for_selector("#confirm-dialog[open]")
    page.keyboard.press("Escape")  # the dialog's default is Cancel
    wait_js(page, "document.getElementById('notice').textContent === 'Cancelled.'")
    assert "from-console" in [p["name"] for p in api.get("/canon/pins")["pins"]]
    # Keyboard only: Enter on the button, Tab from Cancel to Confirm, Enter.
    page.focus(unpin)
    page.keyboard.press("Enter")
    page.wait_for_selector("#confirm-dialog[open]")
    assert page.evaluate("document.activeElement.id") == "confirm-cancel"
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "confirm-ok"
    page.keyboard.press("Enter")
    page.wait_for_selector('#pins-table tr[data-pin="from-console"]', state="detached")
    assert "from-console" not in [p["name"] for p in api.get("/canon/pins")["pins"]]

    # -- ledger --------------------------------------------------------------------------
    status = api.get("/ledger/status")
    view = api.get("/console/ledger")
    assert field(page, "ledger", "log_size") == f"{status['log_size']:,}"
    assert field(page, "ledger", "name") == status["name"]
    assert page.inner_text("#ledger-checkpoint").strip() == api.get("/ledger/checkpoint").strip()
    entries = api.get("/ledger/log", start=0, limit=100)["entries"]
    assert texts(page, "#ledger-txs-table tr[data-index]", "data-index") == [str(e["index"]) for e in reversed(entries)]
    assert texts(page, "#accounts-table tr[data-account]", "data-account") == [a["account"] for a in view["accounts"]]
    assert len(view["accounts"]) == 4  # issuer, alice, bob, mallory
    assert [a["frozen"] for a in view["accounts"] if a["account"] == view["frozen_accounts"][0]] == [True]
    assert texts(page, "#assets-table tr[data-asset]", "data-asset") == [minted["id"]] == [a["asset"] for a in view["assets"]]
    assert texts(page, "#listings-table tr[data-asset]", "data-asset") == [x["asset"] for x in view["listings"]] == [minted["id"]]
    assert texts(page, "#fraud-table tr[data-account]", "data-account") == view["frozen_accounts"] == [
        bytes(mallory_key.verify_key).hex()]
    with page.expect_download() as dl:
        page.click("#fraud-table tr[data-account] button")
    fraud_file = tmp_path / "fraud.cbor"
    dl.value.save_as(fraud_file)
    fraud = api.client.get(f"/ledger/fraud-proofs/{view['frozen_accounts'][0]}")
    assert fraud.status_code == 200 and fraud_file.read_bytes() == fraud.content
    # "proof" downloads the offline bundle an auditor verifies with `n3xus audit`.
    transfer = entries[2]
    with page.expect_download() as dl:
        page.click(f'#ledger-txs-table tr[data-index="{transfer["index"]}"] button:text("Proof")')
    saved = tmp_path / "tx.tlog-proof"
    dl.value.save_as(saved)
    assert saved.read_text() == api.get(f"/ledger/proofs/tx/{transfer['id']}")

    # A transaction submitted elsewhere shows up live (server-sent events, no reload).
    new = ledger.submit(ledger.alice, Op.TRANSFER, to=ledger.bob, amount=1)
    page.wait_for_selector(f'#ledger-txs-table tr[data-index="{new["log_index"]}"]', timeout=LIVE_TIMEOUT_MS)

    # -- an agent (when the node has agents): start and stop from the page ---------------
    paths = api.client.get("/openapi.json").json()["paths"]
    if "/api/v1/agents/keys" in paths:
        agent_name = create_agent(api)
        row = f'#agents-body tr[data-item="{agent_name}"]'
        page.wait_for_selector(row, timeout=LIVE_TIMEOUT_MS)
        start, stop = f'{row} button:text-is("Start")', f'{row} button:text-is("Stop")'

        def stop_from_page() -> None:
            page.click(stop)
            page.wait_for_selector("#confirm-dialog[open]")
            page.click("#confirm-ok")
            wait_for(lambda: api.get(f"/agents/{agent_name}")["enabled"] is False)
            page.wait_for_selector(start)

        enabled = api.get(f"/agents/{agent_name}")["enabled"]
        assert page.is_visible(stop) == enabled and page.is_visible(start) == (not enabled)
        if enabled:
            stop_from_page()
        page.click(start)
        wait_for(lambda: api.get(f"/agents/{agent_name}")["enabled"] is True)
        # One turn, so the agent has a decision to show (real inference, bundled model).
        with api.client.stream("POST", f"/agents/{agent_name}/ask", json={"text": "Hello!"},
                               timeout=180) as answer:
            assert answer.status_code == 200
            assert "event: result" in "".join(answer.iter_text())
        page.wait_for_selector(stop)
        stop_from_page()
        page.click(f'{row} button:text-is("Show decisions")')
        page.wait_for_selector("#agents-body-detail h3")
        decisions = api.get(f"/agents/{agent_name}/decisions")["decisions"]
        assert len(decisions) >= 1
        assert texts(page, "#agents-body-detail tbody tr", "data-item") == [d["decision"] for d in decisions]

    # -- agents and live rooms: shown when the node has the routes, else said so ----------
    for collection, box in (("agents", "#agents-body"), ("rooms", "#live-body")):
        if f"/api/v1/{collection}" in paths:
            items = api.get(f"/{collection}")
            items = items if isinstance(items, list) else items[collection]
            assert len(page.query_selector_all(f"{box} > .table-wrap tr[data-item]")) == len(items)
        else:
            assert page.is_visible(f"{box} [data-unavailable]")

    # -- charts: the history the node keeps, drawn ---------------------------------------
    wait_js(page, "document.querySelector('[data-chart=peers]').dataset.latest === '1'",
                timeout_ms=LIVE_TIMEOUT_MS)
    history = api.get("/console/metrics")
    assert history["series"]["peers"][-1] == 1
    wait_js(page,
        f"document.querySelector('[data-chart=ledger]').dataset.latest === '{status['log_size'] + 1}'",
        timeout_ms=LIVE_TIMEOUT_MS)
    assert int(page.get_attribute("[data-chart=ledger]", "data-points") or 0) >= 2
    # Block totals are rescanned every 15 s (a scan reads every block): they catch up.
    wait_for(lambda: page.get_attribute("[data-chart=canon-blocks]", "data-latest")
             == str(api.get("/console/canon")["blocks"]), timeout_s=40)

    shots = artifacts_dir(tmp_path)
    page.screenshot(path=str(shots / "console-desktop.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(300)
    overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page scrolls sideways at phone width by {overflow}px"
    page.screenshot(path=str(shots / "console-phone.png"), full_page=True)
    assert (shots / "console-desktop.png").stat().st_size > 10_000
    assert (shots / "console-phone.png").stat().st_size > 10_000

    # Live updates survive a restart of the node: the page reconnects by itself. Here
    # the operator also replaced the API token while the node was down, so the page's
    # token is refused on reconnect: it asks to sign in again, then carries on with the
    # new history (a new boot id).
    page.set_viewport_size(DESKTOP)
    port = node.api_url.rsplit(":", 1)[1]
    before_restart = len(errors)
    node.stop()
    page.wait_for_selector('#live-state[data-state="reconnecting"]', timeout=LIVE_TIMEOUT_MS)
    new_token = secrets.token_urlsafe(32)
    DataDir(node.data_dir).token_path.write_text(new_token + "\n")
    restarted = start_cli_node(node.data_dir, "--api", f"127.0.0.1:{port}")
    cli_nodes.append(restarted)
    assert restarted.api_url == node.api_url
    page.wait_for_selector("#signin:not([hidden])", timeout=LIVE_TIMEOUT_MS)
    assert "refused the token" in page.inner_text("#signin-error")
    assert not page.is_visible("#main")
    sign_in_with_keyboard(page, new_token)
    api.token = new_token
    api.client.headers["Authorization"] = f"Bearer {new_token}"
    page.wait_for_selector('#live-state[data-state="live"]', timeout=LIVE_TIMEOUT_MS)
    after_restart = ledger.submit(ledger.alice, Op.TRANSFER, to=ledger.bob, amount=2)
    page.wait_for_selector(f'#ledger-txs-table tr[data-index="{after_restart["log_index"]}"]',
                           timeout=LIVE_TIMEOUT_MS)
    wait_for(lambda: page.get_attribute("[data-chart=ledger]", "data-latest")
             == str(after_restart["log_index"] + 1))
    assert field(page, "node", "peer_id") == node.peer_id
    # While the node was down the open stream broke and requests failed to connect, and
    # the old token got one 401; nothing else went wrong.
    outage = errors[before_restart:]
    del errors[before_restart:]
    expected = ("net::ERR_CONNECTION_REFUSED", "net::ERR_INCOMPLETE_CHUNKED_ENCODING",
                "the server responded with a status of 401 (Unauthorized)")
    assert all(any(e.endswith(x) for x in expected) for e in outage), outage

    # A token that stops being valid (replaced, or a stale tab) gets the sign-in prompt.
    page.evaluate("sessionStorage.setItem('n3xus.console.token', 'stale-token')")
    page.reload()
    page.wait_for_selector("#signin:not([hidden])")
    assert "no longer valid" in page.inner_text("#signin-error")
    assert not page.is_visible("#main")

    assert not [u for u in urls if first_token in u or new_token in u], "a token appeared in a URL"
    assert all(u.startswith(node.api_url) or u.startswith("blob:") for u in urls), urls
    assert errors == [], errors
    context.close()
