#!/usr/bin/env bash
# Attack speed: gradleak's DLG and Inverting Gradients against the same attacks in PyTorch, same machine, same
# network (the DLG paper's sigmoid LeNet, one 28x28 image), same thread count (default 1).
# Installs PyTorch (torch==2.13.0, the version of gradleak's libtorch) into .deps/bench-venv once.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
threads=${1:-1}
bash scripts/setup-libtorch.sh
if [ ! -x .deps/bench-venv/bin/python ] || ! .deps/bench-venv/bin/python -c "import torch" 2>/dev/null; then
  python3 -m venv .deps/bench-venv
  .deps/bench-venv/bin/pip install --quiet torch==2.13.0
fi
cargo run --release --quiet --example bench_attacks -- "$threads"
.deps/bench-venv/bin/python scripts/bench_attacks_pytorch.py "$threads"
