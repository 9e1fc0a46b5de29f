"""The unmodified tritonclient (HTTP and gRPC) against a real Trainyard server."""
import gzip
import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import AUTH, GRPC, HTTP, RUNTIME, reference, sample

TOL = dict(rtol=1e-5, atol=1e-5)


def http_infer(http, model, x, binary=True, **kw):
    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = httpclient.InferRequestedOutput("output", binary_data=binary)
    return http.infer(model, [inp], outputs=[out], headers=dict(AUTH), **kw).as_numpy("output")


def grpc_infer(grpc, model, x):
    inp = grpcclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return grpc.infer(model, [inp], headers=dict(AUTH)).as_numpy("output")


def raw(method, path, body=None, headers=None):
    """Plain HTTP, for what tritonclient will not send: returns (status, parsed body)."""
    req = urllib.request.Request(f"http://{HTTP}{path}", data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_health_is_open_and_true(http, grpc):
    assert http.is_server_live() and http.is_server_ready()
    assert grpc.is_server_live() and grpc.is_server_ready()
    assert raw("GET", "/v2/health/live")[0] == 200


def test_server_metadata(http, grpc):
    meta = http.get_server_metadata(headers=dict(AUTH))
    assert meta["name"] == "trainyard"
    assert {"model_repository", "statistics", "binary_tensor_data"} <= set(meta["extensions"])
    assert grpc.get_server_metadata(headers=dict(AUTH)).name == "trainyard"


@pytest.mark.parametrize("model,shape", [("mlp", [-1, 784]), ("cnn", [-1, 1, 28, 28])])
def test_model_metadata_and_config(http, grpc, model, shape):
    meta = http.get_model_metadata(model, headers=dict(AUTH))
    assert meta["name"] == model and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": shape}]
    assert meta["outputs"] == [{"name": "output", "datatype": "FP32", "shape": [-1, 10]}]
    assert meta["parameters"]["runtime"] == RUNTIME
    cfg = http.get_model_config(model, headers=dict(AUTH))
    assert cfg["max_batch_size"] == 64 and cfg["input"][0]["dims"] == shape[1:]
    g = grpc.get_model_metadata(model, headers=dict(AUTH))
    assert list(g.inputs[0].shape) == shape
    gc = grpc.get_model_config(model, headers=dict(AUTH)).config
    assert gc.max_batch_size == 64 and list(gc.input[0].dims) == shape[1:]


@pytest.mark.parametrize("model", ["mlp", "cnn"])
@pytest.mark.parametrize("binary", [True, False])
def test_http_infer_equals_onnxruntime(http, model, binary):
    for batch in (1, 3):
        x = sample(model, batch, seed=batch)
        got = http_infer(http, model, x, binary=binary)
        assert got.shape == (batch, 10)
        np.testing.assert_allclose(got, reference(model, x), **TOL)


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_grpc_infer_equals_onnxruntime(grpc, model):
    x = sample(model, 2, seed=7)
    np.testing.assert_allclose(grpc_infer(grpc, model, x), reference(model, x), **TOL)


def test_versioned_infer_and_request_id(http):
    x = sample("mlp", 1)
    inp = httpclient.InferInput("input", [1, 784], "FP32")
    inp.set_data_from_numpy(x)
    r = http.infer("mlp", [inp], model_version="1", request_id="req-42", headers=dict(AUTH))
    assert r.get_response()["id"] == "req-42"
    assert r.get_response()["model_version"] == "1"


def test_gzip_request_body(http):
    x = sample("mlp", 2, seed=3)
    got = http_infer(http, "mlp", x, request_compression_algorithm="gzip")
    np.testing.assert_allclose(got, reference("mlp", x), **TOL)


def test_concurrent_requests_are_batched_and_all_correct(http):
    before = http.get_inference_statistics("mlp", headers=dict(AUTH))["model_stats"][0]
    xs = [sample("mlp", 1 + i % 3, seed=100 + i) for i in range(64)]
    pending = []
    for x in xs:
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        pending.append(http.async_infer("mlp", [inp], headers=dict(AUTH)))
    results = [p.get_result().as_numpy("output") for p in pending]
    for x, got in zip(xs, results):
        np.testing.assert_allclose(got, reference("mlp", x), **TOL)
    after = http.get_inference_statistics("mlp", headers=dict(AUTH))["model_stats"][0]
    rows = sum(x.shape[0] for x in xs)
    assert after["inference_count"] - before["inference_count"] == rows
    assert after["inference_stats"]["queue"]["count"] - before["inference_stats"]["queue"]["count"] == len(xs)
    assert after["execution_count"] - before["execution_count"] <= len(xs)


def test_statistics_http_and_grpc(http, grpc):
    http_infer(http, "cnn", sample("cnn", 1))
    stats = http.get_inference_statistics("cnn", headers=dict(AUTH))["model_stats"]
    assert stats[0]["name"] == "cnn" and stats[0]["version"] == "1"
    s = stats[0]["inference_stats"]
    for key in ("success", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss"):
        assert set(s[key]) == {"count", "ns"}
    assert s["success"]["count"] >= 1 and s["compute_infer"]["ns"] > 0
    # What loading cost, measured; cnn's weights alone are 4.8 MB.
    assert stats[0]["memory_usage"][0]["type"] == "CPU"
    assert stats[0]["memory_usage"][0]["byte_size"] >= 4_000_000
    everything = http.get_inference_statistics(headers=dict(AUTH))["model_stats"]
    assert {"mlp", "cnn"} <= {m["name"] for m in everything}
    g = grpc.get_inference_statistics("cnn", headers=dict(AUTH))
    assert g.model_stats[0].inference_stats.success.count >= 1
    assert g.model_stats[0].memory_usage[0].byte_size >= 4_000_000


def test_unload_then_on_demand_reload(http, grpc):
    http_infer(http, "mlp", sample("mlp", 1))
    assert http.is_model_ready("mlp", headers=dict(AUTH))
    http.unload_model("mlp", headers=dict(AUTH))
    assert not http.is_model_ready("mlp", headers=dict(AUTH))
    index = {(m["name"], m.get("version")): m for m in http.get_model_repository_index(headers=dict(AUTH))}
    assert index[("mlp", "1")]["state"] == "UNAVAILABLE" and index[("mlp", "1")]["reason"] == "unloaded"
    # The next request loads it again.
    x = sample("mlp", 1, seed=9)
    np.testing.assert_allclose(http_infer(http, "mlp", x), reference("mlp", x), **TOL)
    assert http.is_model_ready("mlp", headers=dict(AUTH))
    # And over gRPC: unload, explicit load, ready.
    grpc.unload_model("mlp", headers=dict(AUTH))
    assert not grpc.is_model_ready("mlp", headers=dict(AUTH))
    grpc.load_model("mlp", headers=dict(AUTH))
    assert grpc.is_model_ready("mlp", headers=dict(AUTH))
    names = {m.name for m in grpc.get_model_repository_index(headers=dict(AUTH)).models}
    assert {"mlp", "cnn", "broken"} <= names


def test_index_ready_only_and_load_with_empty_bodies(http):
    http.load_model("cnn", headers=dict(AUTH))
    ready = http.get_model_repository_index(headers=dict(AUTH), query_params=None)
    assert any(m["name"] == "cnn" and m.get("state") == "READY" for m in ready)
    status, body = raw("POST", "/v2/repository/index", b'{"ready": true}', AUTH)
    assert status == 200 and all(m["state"] == "READY" for m in json.loads(body))
    assert raw("POST", "/v2/repository/models/cnn/load", None, AUTH)[0] == 200
    assert raw("POST", "/v2/repository/models/nosuch/unload", b"{}", AUTH)[0] == 200


def test_broken_model_is_unavailable_and_others_keep_serving(http):
    with pytest.raises(InferenceServerException) as e:
        http_infer(http, "broken", sample("mlp", 1))
    assert "broken" in str(e.value) and e.value.status() == "503"
    index = {m["name"]: m for m in http.get_model_repository_index(headers=dict(AUTH))}
    assert index["broken"]["state"] == "UNAVAILABLE" and index["broken"]["reason"]
    with pytest.raises(InferenceServerException):
        http.load_model("broken", headers=dict(AUTH))
    x = sample("cnn", 1)
    np.testing.assert_allclose(http_infer(http, "cnn", x), reference("cnn", x), **TOL)


def test_unknown_model_and_version_are_404(http, grpc):
    with pytest.raises(InferenceServerException) as e:
        http.get_model_metadata("nosuch", headers=dict(AUTH))
    assert e.value.status() == "404"
    with pytest.raises(InferenceServerException) as e:
        http_infer(http, "mlp", sample("mlp", 1), model_version="9")
    assert e.value.status() == "404"
    with pytest.raises(InferenceServerException) as e:
        grpc_infer(grpc, "nosuch", sample("mlp", 1))
    assert "StatusCode.NOT_FOUND" in str(e.value.status())
    assert raw("GET", "/v2/models/mlp/versions/x", None, AUTH) == (404, {"error": "Not Found"})


def test_bad_tensors_are_400_naming_the_tensor(http, grpc):
    cases = [
        (np.zeros((1, 783), np.float32), "FP32", "shape"),
        (np.zeros((1, 784), np.float64), "FP64", "datatype"),
        (np.zeros((65, 784), np.float32), "FP32", "batch size 65"),
    ]
    for x, dt, words in cases:
        inp = httpclient.InferInput("input", list(x.shape), dt)
        inp.set_data_from_numpy(x)
        with pytest.raises(InferenceServerException) as e:
            http.infer("mlp", [inp], headers=dict(AUTH))
        assert e.value.status() == "400" and "'input'" in str(e.value) and words in str(e.value), str(e.value)
    inp = httpclient.InferInput("wrong", [1, 784], "FP32")
    inp.set_data_from_numpy(np.zeros((1, 784), np.float32))
    with pytest.raises(InferenceServerException) as e:
        http.infer("mlp", [inp], headers=dict(AUTH))
    assert e.value.status() == "400" and "'wrong'" in str(e.value)
    g = grpcclient.InferInput("input", [1, 783], "FP32")
    g.set_data_from_numpy(np.zeros((1, 783), np.float32))
    with pytest.raises(InferenceServerException) as e:
        grpc.infer("mlp", [g], headers=dict(AUTH))
    assert "INVALID_ARGUMENT" in str(e.value.status())


def test_malformed_bodies_are_400_with_an_error_field():
    h = {**AUTH, "Content-Type": "application/json"}
    for body in [b"{not json", b'{"inputs":[{"name":"input","shape":[1,2],"datatype":"FP32","data":[1]}]}',
                 b'{"inputs":[{"name":"input","shape":[1],"datatype":"FP32","data":[NaN]}]}', b"[]"]:
        status, err = raw("POST", "/v2/models/mlp/infer", body, h)
        assert status == 400 and isinstance(err["error"], str), (body, status, err)
    # A binary size that overruns the body.
    header = b'{"inputs":[{"name":"input","shape":[1,784],"datatype":"FP32","parameters":{"binary_data_size":3136}}]}'
    status, err = raw("POST", "/v2/models/mlp/infer", header + b"\0" * 10,
                      {**AUTH, "Inference-Header-Content-Length": str(len(header))})
    assert status == 400 and "binary_data_size" in err["error"]


def test_unknown_content_encoding_is_415():
    status, err = raw("POST", "/v2/models/mlp/infer", b"\x00\x01", {**AUTH, "Content-Encoding": "br"})
    assert status == 415 and "br" in err["error"], (status, err)


def test_unparseable_grpc_request_is_invalid_argument():
    import grpc as grpclib
    with grpclib.insecure_channel(GRPC) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                   request_serializer=None, response_deserializer=None)
        with pytest.raises(grpclib.RpcError) as e:
            # A tag whose varint never ends: no prefix of it is a message.
            call(b"\xff" * 16, metadata=[(k.lower(), v) for k, v in AUTH.items()], timeout=10)
    assert e.value.code() == grpclib.StatusCode.INVALID_ARGUMENT, e.value


def test_body_over_the_limit_is_413():
    body = gzip.compress(b" " * (17 << 20))
    status, err = raw("POST", "/v2/models/mlp/infer", b"x" * (17 << 20), AUTH)
    assert status == 413 and "error" in err
    status, err = raw("POST", "/v2/models/mlp/infer", body, {**AUTH, "Content-Encoding": "gzip"})
    assert status == 400 and "limit" in err["error"]


def test_token_is_required_except_for_health(grpc):
    assert raw("GET", "/v2/models/mlp")[0] == 401
    assert raw("GET", "/v2/models/mlp", None, {"Authorization": "Bearer wrong"})[0] == 401
    assert raw("GET", "/v2/health/ready")[0] == 200
    with pytest.raises(InferenceServerException) as e:
        grpc.get_model_metadata("mlp")
    assert "UNAUTHENTICATED" in str(e.value.status())
