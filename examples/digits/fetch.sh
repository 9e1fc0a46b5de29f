#!/usr/bin/env bash
# Fetches scikit-learn's copy of the UCI handwritten digits (1,797 8×8 images, 10 classes)
# into examples/digits/data/digits.csv.gz. The file ships inside the scikit-learn wheel; pip
# downloads the wheel (no install) and the file is taken out of it.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p data
[ -s data/digits.csv.gz ] && { echo "data/digits.csv.gz is already there"; exit 0; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "scikit-learn==1.9.1"
python3 - "$tmp" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/scikit_learn-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    data = z.read("sklearn/datasets/data/digits.csv.gz")
open("data/digits.csv.gz", "wb").write(data)
print(f"data/digits.csv.gz: {len(data)} bytes from {wheel.rsplit('/', 1)[-1]}")
PY
