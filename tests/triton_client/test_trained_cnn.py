"""The platform's own loop, end to end through `trainyard up`: the digits imported and
processed with the CLI, examples/digits/cnn.toml trained as a job (registered as
digits-cnn:1 with its checked model.onnx), served from the registry at /v2, and /v2's
answers (tritonclient HTTP and gRPC) compared with the engine's own from `trainyard predict`.

Inputs and the engine's outputs are read from the stored dataset versions (the shards
themselves: `dataset head` prints rounded, cut-off arrays), so nothing is recomputed here.
"""
import json
import os
import re
import struct
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from conftest import AUTH, HTTP, ROOT, RUNTIME, api, ok, wait_listed

MODEL = "digits-cnn"
PREDICTIONS = "digits-cnn-predictions"
EPOCHS = 5  # the example trains 40; the comparison needs a trained network, not the best one
MAX_BATCH = 64
REL_TOL = 1e-5  # of the output scale, max(1, max |output|), as docs/models.md states it


def read_version(name, version="latest"):
    """A dataset version's columns as numpy arrays, decoded from its shards.

    Shard layout (crates/data/src/shard.rs): b"TYSHARD1", a little-endian u32 header length,
    a JSON header {"rows", "columns": [{"name", "dtype", "offset", "len"}]}, then the column
    buffers (offsets from the header's end): float32/int64 raw little-endian; string columns
    rows + 1 little-endian u64 offsets, then the bytes.
    """
    status, meta = api(f"/api/v1/datasets/{name}/versions/{version}")
    assert status == 200, (status, meta)
    parts = {}
    for shard in meta["manifest"]["shards"]:
        req = urllib.request.Request(f"http://{HTTP}/api/v1/datasets/shards/{shard['sha256']}", headers=AUTH)
        blob = urllib.request.urlopen(req).read()
        assert blob[:8] == b"TYSHARD1", blob[:16]
        (hlen,) = struct.unpack_from("<I", blob, 8)
        header = json.loads(blob[12:12 + hlen])
        body, rows = blob[12 + hlen:], header["rows"]
        assert rows == shard["rows"], (header, shard)
        for col in header["columns"]:
            buf = body[col["offset"]:col["offset"] + col["len"]]
            kind, shape = col["dtype"]["type"], col["dtype"].get("shape", [])
            if kind in ("float32", "int64"):
                a = np.frombuffer(buf, "<f4" if kind == "float32" else "<i8").reshape(rows, *shape)
            elif kind == "string":
                offs = np.frombuffer(buf[:8 * (rows + 1)], "<u8")
                data = buf[8 * (rows + 1):]
                a = np.array([data[offs[i]:offs[i + 1]].decode() for i in range(rows)])
            else:
                continue
            parts.setdefault(col["name"], []).append(a)
    columns = {k: np.concatenate(v) for k, v in parts.items()}
    assert all(len(c) == meta["rows"] for c in columns.values()), (meta["rows"], {k: len(c) for k, c in columns.items()})
    return meta, columns


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """digits imported, processed and trained through the CLI; digits-cnn:1's predictions
    over it written by `trainyard predict`. Returns (processed columns, prediction columns)."""
    data = os.path.join(ROOT, "examples/digits")
    ok("dataset", "import", "digits", os.path.join(data, "data/digits.csv.gz"))
    ok("dataset", "process", "digits", "--steps", os.path.join(data, "steps.toml"))
    spec = open(os.path.join(data, "cnn.toml")).read()
    short, n = re.subn(r"(?m)^epochs = \d+$", f"epochs = {EPOCHS}", spec)
    assert n == 1, "cnn.toml has no `epochs = N` line to shorten"
    path = tmp_path_factory.mktemp("cnn") / "cnn.toml"
    path.write_text(short)
    out = ok("train", str(path), timeout=600)
    assert f"registered model {MODEL}:1" in out, out
    assert re.search(r"exported model/model\.onnx .*agrees with the engine", out), out
    ok("predict", f"{MODEL}:1", "--dataset", "digits", "--output", PREDICTIONS, timeout=600)
    processed_meta, processed = read_version("digits")
    pred_meta, pred = read_version(PREDICTIONS)
    assert pred_meta["parent"] == processed_meta["version"], (pred_meta["parent"], processed_meta["version"])
    return processed, pred


def infer_http(http, x):
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return http.infer(MODEL, [inp], headers=dict(AUTH)).as_numpy("output")


def infer_grpc(grpc, x):
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return grpc.infer(MODEL, [inp], headers=dict(AUTH)).as_numpy("output")


def test_predictions_are_the_processed_rows_in_order(trained):
    """What makes the engine's scores comparable row by row: predict kept the processed
    version's rows, in order, bit for bit, and scored every one."""
    processed, pred = trained
    assert processed["pixels"].shape == (1797, 1, 8, 8), processed["pixels"].shape
    assert np.array_equal(pred["pixels"], processed["pixels"]), "predict reordered or changed pixels"
    assert np.array_equal(pred["label"], processed["label"])
    assert np.array_equal(pred["split"], processed["split"])
    assert pred["scores"].shape == (1797, 10) and np.isfinite(pred["scores"]).all()
    assert np.array_equal(pred["prediction"], pred["scores"].argmax(axis=1))
    test = pred["split"] == "test"
    accuracy = (pred["prediction"][test] == pred["label"][test]).mean()
    assert accuracy >= 0.9, f"test accuracy {accuracy:.3f} after {EPOCHS} epochs"


def test_v2_metadata_of_the_trained_version(trained, http, grpc):
    meta = wait_listed(http, MODEL)
    assert meta["versions"] == ["1"] and meta["parameters"]["runtime"] == RUNTIME, meta
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}], meta
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}], meta
    assert http.is_model_ready(MODEL, headers=dict(AUTH))
    assert list(grpc.get_model_metadata(MODEL, headers=dict(AUTH)).inputs[0].shape) == [-1, 1, 8, 8]


@pytest.mark.parametrize("proto", ["http", "grpc"])
def test_v2_equals_trainyard_predict_on_the_test_rows(trained, http, grpc, proto):
    processed, pred = trained
    wait_listed(http, MODEL)
    test = np.flatnonzero(processed["split"] == "test")
    assert len(test) == 359, len(test)
    x = np.ascontiguousarray(processed["pixels"][test])
    want = pred["scores"][test]
    infer = (lambda b: infer_http(http, b)) if proto == "http" else (lambda b: infer_grpc(grpc, b))
    got = np.concatenate([infer(x[i:i + MAX_BATCH]) for i in range(0, len(x), MAX_BATCH)])
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = max(1.0, float(np.abs(want).max()))
    diff = np.abs(got - want)
    row = int(diff.max(axis=1).argmax())
    print(f"{proto} on {RUNTIME}: max |/v2 - predict| = {diff.max():.3g} at output scale {scale:.3g}")
    assert diff.max() <= REL_TOL * scale, (
        f"{proto} on {RUNTIME}: /v2 differs from `trainyard predict` by {diff.max():.3g} "
        f"> {REL_TOL} x {scale:.3g}, worst at test row {row} (dataset row {test[row]}): "
        f"{got[row]} vs {want[row]}")
