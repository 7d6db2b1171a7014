#!/usr/bin/env bash
# Headless Chromium and its chromedriver for the Space's browser test (tests/test_space.py), from Debian's packages.
# Idempotent: returns at once when both are installed. Needs root (or sudo) and apt-get; Selenium drives the system
# driver, so nothing is downloaded by Selenium Manager or Playwright.
set -euo pipefail
have() { command -v "$1" >/dev/null 2>&1; }
if (have chromium || have chromium-browser) && have chromedriver; then
  exit 0
fi
if ! have apt-get; then
  echo "setup_browser.sh: apt-get not found; install Chromium and a matching chromedriver by hand" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
if ! have chromium || ! have chromedriver; then
  echo "setup_browser.sh: chromium or chromedriver is still missing after apt-get install" >&2
  exit 1
fi
chromium --version 2>/dev/null || true
