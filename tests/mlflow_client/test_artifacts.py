"""Run artifacts through the client (proxied `mlflow-artifacts` service) and the raw service."""

from __future__ import annotations

import json
import os
import urllib.parse

import pytest
from mlflow_support import unique

import mlflow

ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"


def read(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def tree(root) -> dict[str, bytes]:
    """relative path -> bytes for every file under root."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for fn in files:
            full = os.path.join(dirpath, fn)
            out[os.path.relpath(full, root).replace(os.sep, "/")] = read(full)
    return out


@pytest.fixture
def source_dir(tmp_path):
    d = tmp_path / "src"
    (d / "sub" / "deeper").mkdir(parents=True)
    (d / "a.txt").write_text("alpha\n")
    (d / "b.bin").write_bytes(bytes(range(256)) * 40)
    (d / "sub" / "c.json").write_text(json.dumps({"c": [1, 2, 3]}))
    (d / "sub" / "deeper" / "d.csv").write_text("x,y\n1,2\n")
    (d / "sub" / "empty.txt").write_text("")
    return d


def test_artifact_uri_is_served_by_tracking_server(run):
    uri = run.info.artifact_uri
    # Proxied artifacts: the client must reach them through the tracking server.
    assert uri.startswith(("mlflow-artifacts:", "http://", "https://")), uri


def test_log_artifact_file_and_download(client, run, tmp_path):
    rid = run.info.run_id
    f = tmp_path / "model-notes.txt"
    f.write_text("hello artifacts\n" * 100)
    client.log_artifact(rid, str(f))
    client.log_artifact(rid, str(f), artifact_path="nested/dir")

    root = client.list_artifacts(rid)
    by_path = {fi.path: fi for fi in root}
    assert set(by_path) == {"model-notes.txt", "nested"}
    assert by_path["model-notes.txt"].is_dir is False
    assert by_path["model-notes.txt"].file_size == f.stat().st_size
    assert by_path["nested"].is_dir is True

    sub = client.list_artifacts(rid, "nested/dir")
    assert [(fi.path, fi.is_dir, fi.file_size) for fi in sub] == [
        ("nested/dir/model-notes.txt", False, f.stat().st_size)
    ]

    dst = tmp_path / "dl"
    dst.mkdir()
    local = client.download_artifacts(rid, "model-notes.txt", str(dst))
    assert read(local) == read(f)
    local = mlflow.artifacts.download_artifacts(
        run_id=rid, artifact_path="nested/dir/model-notes.txt", dst_path=str(tmp_path / "dl2")
    )
    assert read(local) == read(f)


def test_log_artifacts_folder_with_subfolders(client, run, source_dir, tmp_path):
    rid = run.info.run_id
    client.log_artifacts(rid, str(source_dir), artifact_path="bundle")

    top = client.list_artifacts(rid)
    assert [(fi.path, fi.is_dir) for fi in top] == [("bundle", True)]
    listing = {fi.path: fi for fi in client.list_artifacts(rid, "bundle")}
    assert set(listing) == {"bundle/a.txt", "bundle/b.bin", "bundle/sub"}
    assert listing["bundle/sub"].is_dir and not listing["bundle/a.txt"].is_dir
    assert listing["bundle/b.bin"].file_size == 256 * 40
    sub = {fi.path: fi for fi in client.list_artifacts(rid, "bundle/sub")}
    assert set(sub) == {"bundle/sub/c.json", "bundle/sub/deeper", "bundle/sub/empty.txt"}
    assert sub["bundle/sub/deeper"].is_dir
    # proto3 JSON omits a zero size, so the client may see None
    assert sub["bundle/sub/empty.txt"].file_size in (0, None)

    # download a sub-folder
    local = client.download_artifacts(rid, "bundle/sub", str(tmp_path / "dl-sub"))
    assert os.path.isdir(local)
    want = {k[len("sub/") :]: v for k, v in tree(source_dir).items() if k.startswith("sub/")}
    assert tree(local) == want

    # download the whole run root
    local = mlflow.artifacts.download_artifacts(run_id=rid, dst_path=str(tmp_path / "dl-all"))
    got = tree(local)
    assert got == {f"bundle/{k}": v for k, v in tree(source_dir).items()}


def test_log_artifacts_at_root(client, run, source_dir, tmp_path):
    rid = run.info.run_id
    client.log_artifacts(rid, str(source_dir))
    assert {fi.path for fi in client.list_artifacts(rid)} == {"a.txt", "b.bin", "sub"}
    local = client.download_artifacts(rid, "", str(tmp_path / "dl"))
    assert tree(local) == tree(source_dir)


def test_log_text_and_dict(client, run, tmp_path):
    rid = run.info.run_id
    text = "line one\nline two – ünïcödé ✓\n"
    client.log_text(rid, text, "notes/readme.txt")
    data = {"a": 1, "b": [1.5, "x", None], "nested": {"k": True}}
    client.log_dict(rid, data, "config/params.json")
    client.log_dict(rid, data, "config/params.yaml")

    assert {fi.path for fi in client.list_artifacts(rid)} == {"notes", "config"}
    assert {fi.path for fi in client.list_artifacts(rid, "config")} == {
        "config/params.json",
        "config/params.yaml",
    }
    local = client.download_artifacts(rid, "notes/readme.txt", str(tmp_path / "t"))
    assert read(local).decode("utf-8") == text
    local = client.download_artifacts(rid, "config/params.json", str(tmp_path / "j"))
    assert json.loads(read(local)) == data
    assert mlflow.artifacts.load_dict(f"runs:/{rid}/config/params.json") == data
    assert mlflow.artifacts.load_text(f"runs:/{rid}/notes/readme.txt") == text


def test_fluent_artifact_logging(experiment_id, tmp_path):
    with mlflow.start_run(experiment_id=experiment_id) as r:
        mlflow.log_text("fluent", "f.txt")
        mlflow.log_dict({"x": 1}, "d.json")
    assert mlflow.artifacts.load_text(f"runs:/{r.info.run_id}/f.txt") == "fluent"
    assert mlflow.artifacts.load_dict(f"runs:/{r.info.run_id}/d.json") == {"x": 1}


def test_overwrite_artifact(client, run, tmp_path):
    rid = run.info.run_id
    client.log_text(rid, "v1", "same.txt")
    client.log_text(rid, "version two", "same.txt")
    assert mlflow.artifacts.load_text(f"runs:/{rid}/same.txt") == "version two"


def test_list_missing_dir_is_empty(client, run):
    assert client.list_artifacts(run.info.run_id, "does/not/exist") == []


def test_download_missing_artifact_fails(client, run, tmp_path):
    with pytest.raises(Exception):
        client.download_artifacts(run.info.run_id, "nope.txt", str(tmp_path))


# ------------------------------------------------------------------------------------------------
# raw artifact service
# ------------------------------------------------------------------------------------------------


def test_raw_artifact_service_roundtrip(raw):
    base = unique("raw-artifacts")
    payload = b"\x00\x01binary\xffdata" * 100
    resp = raw.put(f"{ARTIFACTS}/{base}/dir/blob.bin", payload)
    assert resp.status == 200, resp
    resp = raw.put(f"{ARTIFACTS}/{base}/top.txt", b"top")
    assert resp.status == 200, resp

    resp = raw.get(f"{ARTIFACTS}/{base}/dir/blob.bin")
    assert resp.status == 200, resp
    assert resp.body == payload

    resp = raw.get(ARTIFACTS, query={"path": base})
    assert resp.status == 200, resp
    files = sorted(resp.json()["files"], key=lambda f: f["path"])
    assert files[0] == {"path": "dir", "is_dir": True}
    assert files[1]["path"] == "top.txt" and files[1]["is_dir"] is False
    assert int(files[1]["file_size"]) == 3

    resp = raw.get(ARTIFACTS, query={"path": f"{base}/missing"})
    assert resp.status == 200 and resp.json().get("files", []) == []

    resp = raw.get(f"{ARTIFACTS}/{base}/missing.txt")
    assert resp.status == 404, resp
    assert resp.error_code() == "RESOURCE_DOES_NOT_EXIST"


def service_path(artifact_uri: str) -> str:
    """The artifact service path of a run's proxied artifact_uri."""
    u = urllib.parse.urlsplit(artifact_uri)
    if u.scheme == "mlflow-artifacts":
        return u.path.lstrip("/")
    marker = ARTIFACTS + "/"
    assert u.scheme in ("http", "https") and marker in u.path, artifact_uri
    return u.path.split(marker, 1)[1]


def _traversal_paths(x):
    return [
        f"{x}/../y",
        f"{x}/../../y",
        f"{x}/%2e%2e/y",
        f"{x}/%2E%2E/y",
        f"{x}/.%2e/y",
        f"{x}/%2e./y",
        f"{x}/%2e%2e%2fy",
        f"{x}/..%2fy",
        f"{x}%2f..%2fy",
    ]


@pytest.mark.parametrize("idx", range(9))
def test_artifact_path_traversal_rejected(raw, idx):
    x = unique("trav")
    path = _traversal_paths(x)[idx]
    resp = raw.put(f"{ARTIFACTS}/{path}", b"evil")
    assert resp.status == 400, (path, resp)
    # and nothing was written where a normalising server would have put it
    check = raw.get(f"{ARTIFACTS}/y")
    assert not (check.status == 200 and check.body == b"evil")
    resp = raw.get(f"{ARTIFACTS}/{path}")
    assert resp.status in (400, 404), (path, resp)


def test_artifact_list_path_traversal_rejected(raw):
    resp = raw.get(ARTIFACTS, query={"path": f"{unique('trav')}/../.."})
    assert resp.status == 400, resp


def test_get_artifact_download_headers(client, run, raw):
    rid = run.info.run_id
    client.log_text(rid, "plain text", "h/file.txt")
    rel = service_path(run.info.artifact_uri)
    resp = raw.get(f"{ARTIFACTS}/{rel}/h/file.txt")
    assert resp.status == 200, resp
    assert resp.body == b"plain text"
    headers = {k.lower(): v for k, v in resp.headers.items()}
    assert headers["content-type"].startswith("text/plain")
    assert "attachment" in headers.get("content-disposition", "")
    assert "file.txt" in headers.get("content-disposition", "")


def test_multipart_upload_of_a_large_file(client, run, tmp_path, monkeypatch):
    # Make a 300 KiB file "large": the client then uploads it in 64 KiB parts through
    # mpu/create, one PUT per part to the URLs the server hands out, and mpu/complete.
    # (A server that answers "Multipart upload is not supported", as `mlflow server` does
    # for a local artifact store, gets a single PUT instead; any other failure fails.)
    monkeypatch.setenv("MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD", "true")
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE", str(100 * 1024))
    monkeypatch.setenv("MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE", str(64 * 1024))
    data = os.urandom(300 * 1024)
    f = tmp_path / "weights.bin"
    f.write_bytes(data)
    rid = run.info.run_id
    client.log_artifact(rid, str(f), artifact_path="big")
    listed = {fi.path: fi.file_size for fi in client.list_artifacts(rid, "big")}
    assert listed == {"big/weights.bin": len(data)}
    out = client.download_artifacts(rid, "big/weights.bin", str(tmp_path / "dl"))
    assert read(out) == data
