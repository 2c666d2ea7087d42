"""The console's Live panel with real rooms, in a real headless Chromium against a node
started with `n3xus node start` (fixtures and helpers from test_console).

The panel builds itself from the node's OpenAPI document, so this checks what that
discovery makes of the room routes: each room shows what GET /api/v1/rooms says (compared
with the API answer, not hard-coded text), "End" asks first (Cancel keeps the room,
Confirm ends it, as the API then says), an ended room offers no End, routes that need a
query parameter (tip-info) or a body (follow) get no button, and the browser log stays
free of errors.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, ConsoleMessage, Page
from test_console import (  # noqa: F401 (browser: a fixture, used by name)
    DESKTOP,
    LIVE_TIMEOUT_MS,
    Api,
    artifacts_dir,
    browser,
    sign_in_with_keyboard,
    texts,
    wait_for,
    wait_js,
)

from conftest import CliNode, run_cli, start_cli_node

# The state columns an operator looks at; each must show the API's value.
STATE_KEYS = ("name", "live", "ended", "peers", "viewers")


def rooms_of(api: Api) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in api.get("/rooms")["rooms"]}


def shown_cell(value: Any) -> str:
    """How the console's generic table writes a flat value (app.js cell())."""
    return value if isinstance(value, str) else json.dumps(value)


def row_of(room: str) -> str:
    return f'#live-body > .table-wrap tr[data-item="{room}"]'


def assert_row_matches_api(page: Page, room: dict[str, Any]) -> None:
    row = row_of(room["name"])
    for key in STATE_KEYS:
        assert page.inner_text(f'{row} td[data-key="{key}"]') == shown_cell(room[key]), key
    # The row's "all fields" is the API's document for the room, whole.
    assert json.loads(page.text_content(f"{row} details pre") or "null") == room


def test_live_panel_shows_rooms_and_ends_one_after_confirmation(
    tmp_path: Path, cli_nodes: list[CliNode], browser: Browser  # noqa: F811
) -> None:
    node = start_cli_node(tmp_path / "a")
    cli_nodes.append(node)
    api = Api(node)
    # One room through the CLI, one through the API.
    done = run_cli("room", "create", "gig", "--data-dir", str(node.data_dir), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["name"] == "gig"
    created = api.client.post("/rooms", json={"name": "encore"})
    assert created.status_code == 201, created.text

    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    errors: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type in ("error", "warning"):
            errors.append(f"{msg.type}: {msg.text}")

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    page.goto(node.api_url + "/")
    sign_in_with_keyboard(page, api.token)
    page.wait_for_selector("body[data-ready=true]")

    # -- each room shows what the API says ----------------------------------------------
    rooms = rooms_of(api)
    assert set(rooms) == {"gig", "encore"}
    assert not any(r["ended"] for r in rooms.values())
    page.wait_for_selector(row_of("gig"), timeout=LIVE_TIMEOUT_MS)
    assert texts(page, "#live-body > .table-wrap tr[data-item]", "data-item") == list(rooms)
    for room in rooms.values():
        assert_row_matches_api(page, room)

    # The actions discovery offers for a room: End; nothing for tip-info (it needs
    # ?account=) nor follow (it needs a body).
    buttons = [b.strip() for b in page.eval_on_selector_all(
        f"{row_of('gig')} button", "els => els.map(e => e.textContent)")]
    assert "End" in buttons, buttons
    assert not [b for b in buttons if "tip-info" in b.lower() or b == "Follow"], buttons
    assert page.query_selector('#live button:text-is("Show tip-info")') is None

    # -- End asks first: Cancel keeps the room --------------------------------------------
    end = f'{row_of("gig")} button:text-is("End")'
    page.click(end)
    page.wait_for_selector("#confirm-dialog[open]")
    assert "gig" in page.inner_text("#confirm-text")
    page.click("#confirm-cancel")
    wait_js(page, "document.getElementById('notice').textContent === 'Cancelled.'")
    assert rooms_of(api)["gig"]["ended"] is False

    # -- Confirm ends it: the API says so, and the page follows ---------------------------
    page.click(end)
    page.wait_for_selector("#confirm-dialog[open]")
    page.click("#confirm-ok")
    wait_for(lambda: rooms_of(api)["gig"]["ended"] is True)
    page.wait_for_selector(f'{row_of("gig")} td[data-key="ended"]:text-is("true")',
                           timeout=LIVE_TIMEOUT_MS)
    after = rooms_of(api)
    assert after["encore"]["ended"] is False  # only the room asked for
    for room in after.values():
        assert_row_matches_api(page, room)
    # An ended room offers no End; the other room still does.
    assert page.query_selector(end) is None
    assert page.is_visible(f'{row_of("encore")} button:text-is("End")')

    page.screenshot(path=str(artifacts_dir(tmp_path) / "console-live.png"), full_page=True)
    assert errors == [], errors
    context.close()
