#!/usr/bin/env python3
"""Builds gradleak's embedded dataset: a stratified subset of Fashion-MNIST (MIT licence).

Input: the Debian package `dataset-fashion-mnist` (get it with `apt-get download dataset-fashion-mnist`), given
either as the .deb file itself or as the folder holding its four IDX files (`/usr/share/datasets/fashion-mnist`
when the package is installed). The four files are checked against their SHA-256 sums.

Selection (no randomness): the first 500 images of each class, in file order, of the official training set, and
the first 100 of each class of the official test set, kept in file order: 5,000 train and 1,000 test images.

Output: four gzip IDX files in assets/fashion-mnist-subset/ (gzip level 9, no file name, time stamp 0, so the
bytes are reproducible with the same zlib).

Standard library only. Usage: scripts/make-embedded-subset.py DEB_OR_FOLDER [OUTPUT_FOLDER]
"""

import gzip
import hashlib
import io
import lzma  # noqa: F401  (tarfile needs it for the .deb's data.tar.xz)
import os
import struct
import sys
import tarfile

SOURCES = {
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
PER_CLASS = {"train": 500, "t10k": 100}


def read_deb(path):
    """The four IDX .gz files of the .deb: an ar archive whose data.tar.* member holds them."""
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(b"!<arch>\n"):
        sys.exit(f"{path}: not a .deb (ar) archive")
    pos, files = 8, {}
    while pos + 60 <= len(data):
        name = data[pos:pos + 16].decode().strip().rstrip("/")
        size = int(data[pos + 48:pos + 58].decode().strip())
        body = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size % 2)
        if name.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(body)) as tar:
                for member in tar.getmembers():
                    base = os.path.basename(member.name)
                    if "fashion-mnist" in member.name and base in SOURCES:
                        files[base] = tar.extractfile(member).read()
    return files


def read_folder(path):
    files = {}
    for name in SOURCES:
        with open(os.path.join(path, name), "rb") as f:
            files[name] = f.read()
    return files


def parse_idx(raw, ndims):
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != 0x0800 | ndims:
        sys.exit(f"bad IDX magic number 0x{magic:08x}")
    dims = struct.unpack(">" + "I" * ndims, raw[4:4 + 4 * ndims])
    return dims, raw[4 + 4 * ndims:]


def idx_bytes(dims, data):
    return struct.pack(">I", 0x0800 | len(dims)) + struct.pack(">" + "I" * len(dims), *dims) + data


def write_gz(path, data):
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as g:
        g.write(data)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    source = sys.argv[1]
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(here, "..", "assets", "fashion-mnist-subset")
    files = read_folder(source) if os.path.isdir(source) else read_deb(source)
    for name, sha in SOURCES.items():
        if name not in files:
            sys.exit(f"{source}: no {name}")
        got = hashlib.sha256(files[name]).hexdigest()
        if got != sha:
            sys.exit(f"{source}: {name} has sha256 {got}, expected {sha}")
    os.makedirs(out, exist_ok=True)
    for split, per_class in PER_CLASS.items():
        (n, h, w), pixels = parse_idx(gzip.decompress(files[f"{split}-images-idx3-ubyte.gz"]), 3)
        (m,), labels = parse_idx(gzip.decompress(files[f"{split}-labels-idx1-ubyte.gz"]), 1)
        assert n == m, "image and label counts differ"
        taken, keep = [0] * 10, []
        for i, label in enumerate(labels):
            if taken[label] < per_class:
                taken[label] += 1
                keep.append(i)
        size = h * w
        images = b"".join(pixels[i * size:(i + 1) * size] for i in keep)
        kept_labels = bytes(labels[i] for i in keep)
        write_gz(os.path.join(out, f"{split}-images-idx3-ubyte.gz"), idx_bytes((len(keep), h, w), images))
        write_gz(os.path.join(out, f"{split}-labels-idx1-ubyte.gz"), idx_bytes((len(keep),), kept_labels))
        print(f"{split}: kept {len(keep)} of {n} images ({per_class} per class)")
    for name in sorted(os.listdir(out)):
        with open(os.path.join(out, name), "rb") as f:
            data = f.read()
        print(f"{hashlib.sha256(data).hexdigest()}  {len(data):>9}  {name}")


if __name__ == "__main__":
    main()
