#!/usr/bin/env bash
# What the test suite needs from outside PyPI, installed only when missing:
#  - Debian's chromium: the browser tests (console, live pages) drive it through
#    Playwright's executable_path; Playwright never downloads a browser of its own.
#    On another distribution install its Chromium package and set
#    N3XUS_CHROMIUM=/path/to/chromium.
#  - the js-libp2p interop peer's npm packages (tests/interop), exact versions from
#    its lockfile; needs Node.js >= 20 and npm.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${N3XUS_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then apt_get=(apt-get); else apt_get=(sudo apt-get); fi
  "${apt_get[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive "${apt_get[@]}" install -y -qq chromium >/dev/null
fi
if [ ! -d tests/interop/node_modules ]; then
  (cd tests/interop && npm ci --no-audit --no-fund --loglevel=error)
fi
