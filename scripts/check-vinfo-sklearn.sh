#!/usr/bin/env bash
# Cross-check of gradleak's categorical V-information (logistic family) against scikit-learn, on the same arrays and
# the same partitions (`vinfo --split-out`): LeNet-5 trained one epoch on MNIST, 400 single-sample updates of conv1
# and fc3 at epoch 0 (initialisation) and epoch 1, target the victim's label, the default protocol (5-fold
# cross-fitting). Prints both estimates per case and fails when they differ by more than 0.2 bits
# (scripts/reference_vinfo_sklearn.py says what is refitted and how).
# Installs numpy, scikit-learn and safetensors into .deps/sklearn-venv once. Usage: check-vinfo-sklearn.sh [SEED]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
seed=${1:-0}
venv=.deps/sklearn-venv
bash scripts/setup-libtorch.sh
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import numpy, sklearn, safetensors" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet numpy scikit-learn safetensors
fi
cargo build --release --quiet --bin gradleak
gradleak=target/release/gradleak
# One libtorch thread everywhere (--threads 1): the problems are small (two threads on two busy cores made training
# 3x and the fits 5x slower), and the numbers then do not depend on the machine's core count.
"$gradleak" data fetch mnist --quiet >/dev/null

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
step() { echo "[$SECONDS s] $*" >&2; }
step "training LeNet-5 on MNIST for one epoch"
"$gradleak" train --threads 1 --quiet --dataset mnist --model lenet5 --epochs 1 --out "$work/run" >/dev/null
cases=()
for epoch in 0 1; do
  "$gradleak" grads --threads 1 --quiet --run "$work/run" --epoch "$epoch" --updates 400 --layers conv1,fc3 \
    --out "$work/store$epoch" >/dev/null
  # The same arrays for both sides: each layer's gradients and the labels as .npy.
  "$venv/bin/python" - "$work/store$epoch/gradients.safetensors" "$work/epoch$epoch" <<'PY'
import sys
import numpy as np
from safetensors.numpy import load_file
arrays = load_file(sys.argv[1])
for name in ("grad.conv1", "grad.fc3", "victim.label"):
    np.save(f"{sys.argv[2]}-{name}.npy", arrays[name])
PY
  for layer in conv1 fc3; do
    step "gradleak vinfo: $layer, epoch $epoch"
    base="$work/epoch$epoch"
    "$gradleak" vinfo --threads 1 --features "$base-grad.$layer.npy" --target "$base-victim.label.npy" \
      --kind categorical --family linear --json --seed "$seed" --split-out "$base-$layer-roles.npy" >"$base-$layer.json"
    cases+=(--case "$layer/epoch$epoch" "$base-grad.$layer.npy" "$base-victim.label.npy" "$base-$layer-roles.npy"
      "$base-$layer.json")
  done
done
step "scikit-learn"
"$venv/bin/python" scripts/reference_vinfo_sklearn.py "${cases[@]}"
step "done (seed $seed)"
