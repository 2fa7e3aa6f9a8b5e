#!/usr/bin/env bash
# Per-sample gradients side by side, in one run on one machine: gradleak's full, sparse-sketched and
# Kronecker-sketched per-sample gradients against Opacus 1.6 (GradSampleModule) and torch.func (vmap of grad), for
# LeNet-5, ResNet-20 and ResNet-18, as samples/s and as multiples of a batched pass in each; then the whole
# `gradleak grads` process for 8,192 LeNet-5 updates (defaults and others, MNIST, store written) against Opacus computing the
# same per-sample gradients in memory, with peak memory; then the two streaming cases (50,000 Kronecker-sketched
# LeNet-5 updates, 5,000 ResNet-18 updates on 32x32x3 inputs), with peak memory.
# Installs PyTorch 2.13.0 and Opacus 1.6.0 into .deps/bench-venv once.
#
#   bash scripts/bench-per-sample.sh [THREADS] [MODELS] [PARTS]   (default 2 threads, all three models; PARTS: a
#   comma-separated subset of per-sample,grads,streaming)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
threads=${1:-2}
models=${2:-lenet5,resnet20,resnet18}
parts=${3:-per-sample,grads,streaming}
has() { [[ ",$parts," == *",$1,"* ]]; }
bash scripts/setup-libtorch.sh
python=${BENCH_PYTHON:-.deps/bench-venv/bin/python}
if ! "$python" -c "import torch, opacus" 2>/dev/null; then
  python3 -m venv .deps/bench-venv
  .deps/bench-venv/bin/pip install --quiet torch==2.13.0 opacus==1.6.0 numpy
  python=.deps/bench-venv/bin/python
fi
cargo build --release --quiet --bin gradleak --example bench_per_sample
if has per-sample; then
  echo "## per-sample gradients ($threads threads)"
  ./target/release/examples/bench_per_sample "$threads" "$models"
  "$python" -W ignore scripts/bench_per_sample_pytorch.py "$threads" "$models"
fi
has grads || has streaming || exit 0
./target/release/gradleak data fetch mnist --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
./target/release/gradleak --threads "$threads" --quiet train --dataset mnist --model lenet5 --epochs 1 \
  --out "$work/lenet5" >/dev/null
peak() { /usr/bin/time -f '%e s, peak %M KB' "$@" 2>&1 >/dev/null | tail -1; }

if has grads; then
  echo "## the whole grads process: 8,192 LeNet-5 updates"
  # The defaults (sparse sketch, layers above the sketch dimension as sketches only), the Kronecker sketch, and
  # both keeping every layer up to 262,144 parameters in full too (0.7's default).
  for flags in "" "--sketch kron" "--full-max-params 262144" "--sketch kron --full-max-params 262144"; do
    # shellcheck disable=SC2086
    echo "gradleak grads ${flags:-(defaults)}: $(peak ./target/release/gradleak --threads "$threads" --quiet grads \
      --run "$work/lenet5" --updates 8192 $flags --out "$work/store")"
    du -sh "$work/store" | cut -f1 | sed 's/^/  store size: /'
    rm -rf "$work/store"
  done
  echo "opacus, the whole process: $(peak "$python" -W ignore scripts/bench_per_sample_pytorch.py "$threads" \
    opacus-lenet5 8192)"
  "$python" -W ignore scripts/bench_per_sample_pytorch.py "$threads" opacus-lenet5 8192
fi

has streaming || exit 0
echo "## streaming: peak memory"
echo "50,000 LeNet-5 updates, kron, layers above 4,096 parameters as sketches only: $(peak ./target/release/gradleak \
  --threads "$threads" --quiet grads --run "$work/lenet5" --updates 50000 --sketch kron \
  --out "$work/big")"
du -sh "$work/big" | cut -f1 | sed 's/^/  store size: /'
rm -rf "$work/big"
# 6,500 colour 32x32 images of random pixels (the cost does not depend on them), 5,200 in the train split.
mkdir -p "$work/colour"
"$python" -c "import numpy as np, sys; r = np.random.default_rng(0); d = sys.argv[1]
np.save(d + '/x_train.npy', r.integers(0, 256, (6500, 3, 32, 32), dtype=np.uint8))
np.save(d + '/y_train.npy', r.integers(0, 10, 6500))" "$work/colour"
echo "5,000 ResNet-18 updates (initial weights), kron, layers above 4,096 parameters as sketches only: $(peak \
  ./target/release/gradleak --threads "$threads" --quiet grads --model resnet18 --dataset "arrays:$work/colour" \
  --updates 5000 --sketch kron --out "$work/big")"
du -sh "$work/big" | cut -f1 | sed 's/^/  store size: /'
