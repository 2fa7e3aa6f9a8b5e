#!/usr/bin/env bash
# The whole test suite from a fresh clone: installs libtorch once, builds, fetches the real datasets the tests read
# (once; cached in data/), then runs every test.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/setup-libtorch.sh
cargo build --release --bin gradleak
./target/release/gradleak data fetch all --quiet
cargo test --release "$@"
