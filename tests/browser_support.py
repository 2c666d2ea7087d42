"""The one place the browser tests name their Chromium and its launch flags."""

from __future__ import annotations

import os

# Debian's chromium unless N3XUS_CHROMIUM names another build (tests/install-system-deps.sh).
CHROMIUM = os.environ.get("N3XUS_CHROMIUM", "/usr/bin/chromium")
# Headless, no sandbox (tests run as root), and none of Chromium's background connections,
# which this machine's closed network refuses many at a time.
BASE_ARGS = ["--headless=new", "--no-sandbox", "--disable-background-networking",
             "--autoplay-policy=no-user-gesture-required"]
# A camera and microphone that exist, with the permission prompt answered yes.
FAKE_MEDIA_ARGS = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
