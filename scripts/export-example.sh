#!/usr/bin/env bash
# Regenerates the TorchScript fixtures of tests/torchscript.rs with PyTorch (the torch==2.13.0 wheel, the version of
# gradleak's libtorch, installed into .deps/torch-venv once), then checks gradleak against them. Not a CI step: the
# fixtures are committed, and the Rust tests need no Python.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
if [ ! -x .deps/torch-venv/bin/python ] || ! .deps/torch-venv/bin/python -c "import torch, safetensors" 2>/dev/null; then
  python3 -m venv .deps/torch-venv
  .deps/torch-venv/bin/pip install --quiet torch==2.13.0 safetensors numpy
fi
.deps/torch-venv/bin/python scripts/export_example.py tests/fixtures
cargo test --release --test torchscript
