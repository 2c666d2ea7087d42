"""The one place the browser tests name their Chromium, its launch flags and the steps
every live test takes on the performer page."""

from __future__ import annotations

import os

from playwright.sync_api import Page

# Debian's chromium unless N3XUS_CHROMIUM names another build (tests/install-system-deps.sh).
CHROMIUM = os.environ.get("N3XUS_CHROMIUM", "/usr/bin/chromium")
# Headless, no sandbox (tests run as root), and none of Chromium's background connections,
# which this machine's closed network refuses many at a time.
BASE_ARGS = ["--headless=new", "--no-sandbox", "--disable-background-networking",
             "--autoplay-policy=no-user-gesture-required"]
# A camera and microphone that exist, with the permission prompt answered yes.
FAKE_MEDIA_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


def go_live(performer: Page, timeout_ms: float) -> None:
    """Press the performer page's **Go live** once its camera is ready (the button is
    enabled then) and wait until the page says ``live``."""
    performer.wait_for_function("!document.getElementById('go-live').disabled",
                                timeout=timeout_ms)
    performer.get_by_role("button", name="Go live").click()
    performer.wait_for_function("document.getElementById('status').textContent === 'live'",
                                timeout=timeout_ms)
