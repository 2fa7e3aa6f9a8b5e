#!/usr/bin/env bash
# Fuzzes the readers of user arrays (.npy, safetensors, CSV) with libFuzzer through cargo fuzz (nightly Rust).
# Usage: scripts/fuzz.sh [SECONDS]   (default 600). A finding is written to fuzz/artifacts/arrays/ and the script
# exits non-zero; the corpus grows in fuzz/corpus/arrays/ (both git-ignored).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
seconds=${1:-600}
bash scripts/setup-libtorch.sh
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz.sh: cargo fuzz needs a nightly toolchain: rustup toolchain install nightly" >&2
  exit 1
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
# cargo fuzz sets its own RUSTFLAGS, which replace the rpath of .cargo/config.toml: libtorch is found this way.
export LD_LIBRARY_PATH="$root/.deps/libtorch/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# Seeds: one valid file of each kind (the first byte picks the reader: 0 npy, 1 safetensors, 2 CSV).
corpus=fuzz/corpus/arrays
mkdir -p "$corpus"
header="{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"
printf '\x00\x93NUMPY\x01\x00%b%s\n' "\\x$(printf '%02x' $((${#header} + 1)))\\x00" "$header" > "$corpus/seed-npy"
head -c 24 /dev/zero >> "$corpus/seed-npy"
{ printf '\x01'; cat tests/fixtures/example_cnn_reference.safetensors; } > "$corpus/seed-safetensors"
printf '\x02a,b\n1,2\n3.5,-4e2\n' > "$corpus/seed-csv"
# ASan is off: libtorch is not built with it, and its allocator then trips false reports. Panics and aborts
# (what this target looks for) are caught either way.
cargo +nightly fuzz run --sanitizer none arrays "$corpus" -- \
  -max_total_time="$seconds" -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1
