#!/usr/bin/env bash
# The whole test suite from a fresh clone: installs libtorch once, builds, fetches the real datasets the tests read
# (once; cached in data/), makes sure Chromium is there for the HTML report test, then runs every test.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/setup-libtorch.sh
cargo build --release --bin gradleak
./target/release/gradleak data fetch all --quiet
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing Debian's chromium for the HTML report test (once)" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "test.sh: the HTML report test needs Chromium; install Debian's package 'chromium' and run again" >&2
    exit 1
  fi
fi
cargo test --release "$@"
# The full-disk test mounts a small tmpfs in an unprivileged user namespace: it runs where the machine allows one,
# and is reported as ignored (in cargo's summary above) where it does not.
if [ $# -eq 0 ]; then
  if unshare -rm true 2>/dev/null; then
    cargo test --release --test audit -- --ignored a_full_disk
  else
    echo "test.sh: the full-disk test stays ignored: this machine refuses unprivileged user namespaces" >&2
  fi
fi
