#!/usr/bin/env bash
# The chat page in a real browser: installs headless Chromium, its driver and Selenium
# (in a virtual environment under .build/), starts a private redis-server, and runs
# Tests/Browser/test_page.py, which starts and stops its own chatroom instances (and, for
# the outbox tests, a redis-server of its own that it stops and starts by its PID; for the
# compatibility-mode test, an nginx on a spare port, stopped by its PID).
# Screenshots go to .build/browser-screenshots/. Arguments go to the test runner
# (e.g. ChatPageTests.test_4_markup_in_a_message_renders_as_text_and_runs_nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_swift
# Fonts: the screenshots show Chinese words and emoji reactions as they look in a desktop browser.
ensure_build_packages redis-server redis-tools chromium chromium-driver python3-venv fonts-wqy-microhei fonts-noto-color-emoji
# The compatibility-mode test puts a real nginx, without the upgrade headers, in front of an instance.
command -v nginx >/dev/null || PATH="$PATH:/usr/sbin" command -v nginx >/dev/null || ensure_packages nginx-light
export NGINX="${NGINX:-$(PATH="$PATH:/usr/sbin" command -v nginx)}"

venv=.build/browser-venv
if ! "$venv/bin/python" -c "import selenium" 2>/dev/null; then
  say "Selenium into $venv"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "selenium==4.51.0"
fi

swift build --product chatroom
export CHATROOM_BINARY="$(swift build --show-bin-path)/chatroom"
export CHATROOM_SCREENSHOTS="${CHATROOM_SCREENSHOTS:-.build/browser-screenshots}"
export SE_AVOID_STATS=true

start_private_redis
trap stop_private_redis EXIT
export CHATROOM_TEST_REDIS_URL="redis://127.0.0.1:$REDIS_PORT"

say "browser tests (Chromium $(chromium --version 2>/dev/null | awk '{print $2}'))"
"$venv/bin/python" Tests/Browser/test_page.py -v "$@"
