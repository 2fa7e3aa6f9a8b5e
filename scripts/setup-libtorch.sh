#!/usr/bin/env bash
# Installs a CPU libtorch 2.13.0 (what tch 0.26 expects) into .deps/libtorch, from PyPI wheels.
# Idempotent: a second run finds the finished folder and does nothing.
#
# Why wheels: the torch==2.13.0 wheel carries libtorch_cpu.so and the C++ headers. It is a CUDA build, so
# libtorch_cpu.so needs libcudart.so.13 and libcupti.so.13 (taken from two small NVIDIA runtime wheels; they are
# loaded but never used on a CPU-only machine), and its libtorch.so needs libtorch_cuda.so, so we replace it by an
# empty library that links only the CPU parts, which is what libtorch.so is in a CPU build.
set -euo pipefail

TORCH_VERSION=2.13.0
CUDART_VERSION=13.0.96
CUPTI_VERSION=13.0.85

root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/.deps/libtorch"

if [ -f "$dest/build-version" ] && [ "$(cat "$dest/build-version")" = "$TORCH_VERSION" ] \
  && [ -f "$dest/lib/libtorch_cpu.so" ] && [ -f "$dest/lib/libtorch.so" ]; then
  exit 0
fi

for tool in python3 gcc; do
  command -v "$tool" >/dev/null || { echo "setup-libtorch: '$tool' is needed but not installed" >&2; exit 1; }
done
python3 -m pip --version >/dev/null 2>&1 || { echo "setup-libtorch: pip for python3 is needed" >&2; exit 1; }

echo "setup-libtorch: installing libtorch $TORCH_VERSION (CPU) into .deps/libtorch (once, about 500 MB)" >&2
mkdir -p "$root/.deps"
work=$(mktemp -d "$root/.deps/libtorch-setup.XXXXXX")
trap 'rm -rf "$work"' EXIT

python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$work/wheels" \
  "torch==$TORCH_VERSION" "nvidia-cuda-runtime==$CUDART_VERSION" "nvidia-cuda-cupti==$CUPTI_VERSION"

stage="$work/libtorch"
mkdir -p "$stage/lib"
python3 - "$work/wheels" "$stage" <<'PY'
import glob, os, shutil, sys, zipfile
wheels, stage = sys.argv[1], sys.argv[2]
# CPU parts of torch/lib; CUDA and Python bindings are left out.
keep_libs = {"libc10.so", "libgomp.so.1", "libshm.so", "libtorch_cpu.so", "libtorch_global_deps.so"}
(torch_whl,) = glob.glob(os.path.join(wheels, "torch-*.whl"))
with zipfile.ZipFile(torch_whl) as z:
    for info in z.infolist():
        name = info.filename
        if name.endswith("/"):
            continue
        if name.startswith("torch/include/"):
            out = os.path.join(stage, name[len("torch/"):])
        elif name.startswith("torch/lib/") and os.path.basename(name) in keep_libs:
            out = os.path.join(stage, "lib", os.path.basename(name))
        else:
            continue
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(info) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst)
for pattern, lib in (("nvidia_cuda_runtime-*.whl", "libcudart.so.13"), ("nvidia_cuda_cupti-*.whl", "libcupti.so.13")):
    (whl,) = glob.glob(os.path.join(wheels, pattern))
    with zipfile.ZipFile(whl) as z:
        (member,) = [n for n in z.namelist() if n.endswith("/" + lib)]
        with z.open(member) as src, open(os.path.join(stage, "lib", lib), "wb") as dst:
            shutil.copyfileobj(src, dst)
PY

echo 'void gradleak_libtorch_cpu_stub(void) {}' > "$work/empty.c"
gcc -shared -fPIC -Wl,-soname,libtorch.so -Wl,--no-as-needed -L "$stage/lib" -ltorch_cpu -lc10 \
  -Wl,-rpath,'$ORIGIN' -o "$stage/lib/libtorch.so" "$work/empty.c"
echo "$TORCH_VERSION" > "$stage/build-version"

rm -rf "$dest"
mv "$stage" "$dest"
echo "setup-libtorch: done" >&2
