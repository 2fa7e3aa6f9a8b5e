#!/usr/bin/env bash
# LeNet-5 training throughput: gradleak against PyTorch on the same machine, same loop, same threads.
# Installs PyTorch (torch==2.13.0, the version of gradleak's libtorch) into .deps/bench-venv once.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
threads=${1:-2}
bash scripts/setup-libtorch.sh
if [ ! -x .deps/bench-venv/bin/python ] || ! .deps/bench-venv/bin/python -c "import torch" 2>/dev/null; then
  python3 -m venv .deps/bench-venv
  .deps/bench-venv/bin/pip install --quiet torch==2.13.0 numpy
fi
cargo run --release --quiet --example bench_train -- "$threads"
.deps/bench-venv/bin/python scripts/bench_train_pytorch.py "$threads"
