"""Shared helpers for the MLflow-client compatibility suite (imported by conftest.py and the tests).

The server under test is named only by the environment:

* ``MLFLOW_TRACKING_URI``   -- e.g. ``http://127.0.0.1:25081`` (required)
* ``MLFLOW_TRACKING_TOKEN`` -- optional bearer token (the mlflow client sends it by itself;
  the raw-HTTP helpers below send it too)
* ``TRAINYARD_UNDER_TEST``  -- set (to anything non-empty) when the server is Trainyard. When it is
  unset the server is assumed to be a real ``mlflow server``, and the few tests that check
  behaviour the spec deliberately does *not* copy from MLflow are marked xfail (non-strict).

Every test creates its own uniquely named experiments / registered models, so the suite can run
against a server that already holds data, and tests can run in any order.
"""

from __future__ import annotations

import http.client
import json
import os
import urllib.parse
import uuid

import pytest

# Fail fast: a 5xx must surface as an error at once instead of being retried for minutes
# (the client's default is 7 retries with exponential backoff). Set before mlflow is imported.
os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
# Keep the client from probing git / printing emoji links / logging system metrics.
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")

TRACKING_URI = os.environ.get("MLFLOW_TRACKING_URI", "").rstrip("/")
TOKEN = os.environ.get("MLFLOW_TRACKING_TOKEN") or None
UNDER_TRAINYARD = bool(os.environ.get("TRAINYARD_UNDER_TEST"))
# The Trainyard workspace the token acts in, when not `default` (the suite then checks that
# workspace's own Default experiment, which has an id of its own, where it checks "0").
WORKSPACE = os.environ.get("TRAINYARD_WORKSPACE_UNDER_TEST", "default")

if not TRACKING_URI.startswith(("http://", "https://")):
    raise pytest.UsageError(
        "MLFLOW_TRACKING_URI must be set to the http(s) URL of the server under test "
        f"(got {TRACKING_URI!r})"
    )

import mlflow  # noqa: E402

mlflow.set_tracking_uri(TRACKING_URI)
mlflow.set_registry_uri(TRACKING_URI)


def mlflow_quirk(reason: str):
    """xfail (non-strict) only when running against a real `mlflow server`.

    Use for behaviour the spec asks for but MLflow itself does differently (e.g. a 5xx for a
    caller error). Against Trainyard (TRAINYARD_UNDER_TEST set) the test must pass.
    """
    return pytest.mark.xfail(
        condition=not UNDER_TRAINYARD, strict=False, reason=f"real MLflow quirk: {reason}"
    )


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"

def headers_of(resp) -> dict:
    """A raw response's headers with lower-case names."""
    return {k.lower(): v for k, v in resp.headers.items()}


def service_path(artifact_uri: str) -> str:
    """Path under the artifact service of a proxied `mlflow-artifacts:` / http(s) URI."""
    if artifact_uri.startswith("mlflow-artifacts:"):
        rest = artifact_uri[len("mlflow-artifacts:") :]
        if rest.startswith("//"):
            rest = rest[2:].split("/", 1)[1]
        return rest.lstrip("/")
    marker = "/api/2.0/mlflow-artifacts/artifacts/"
    assert marker in artifact_uri, artifact_uri
    return artifact_uri.split(marker, 1)[1]



# --------------------------------------------------------------------------------------------
# Raw HTTP (http.client: sends the path byte-for-byte, no dot-segment normalisation, which
# requests/urllib3 would otherwise apply to `..`).
# --------------------------------------------------------------------------------------------


class RawResponse:
    def __init__(self, status: int, headers: dict, body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body.decode("utf-8")) if self.body else {}

    def error_code(self):
        try:
            return self.json().get("error_code")
        except Exception:
            return None

    def __repr__(self):
        return f"<RawResponse {self.status} {self.body[:300]!r}>"


class RawHttp:
    def __init__(self, base: str, token: str | None):
        u = urllib.parse.urlsplit(base)
        self.scheme = u.scheme
        self.host = u.hostname
        self.port = u.port or (443 if u.scheme == "https" else 80)
        self.prefix = u.path.rstrip("/")
        self.token = token

    def request(self, method: str, path: str, body=None, headers=None, query=None) -> RawResponse:
        """`path` is appended verbatim to the tracking URI's path (must start with '/')."""
        hdrs = {"User-Agent": "trainyard-mlflow-client-tests"}
        if self.token:
            hdrs["Authorization"] = f"Bearer {self.token}"
        data = None
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        elif isinstance(body, str):
            data = body.encode()
        elif isinstance(body, bytes):
            data = body
        if headers:
            hdrs.update(headers)
        url = self.prefix + path
        if query:
            url += "?" + urllib.parse.urlencode(query, doseq=True)
        conn_cls = (
            http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        )
        conn = conn_cls(self.host, self.port, timeout=60)
        try:
            conn.request(method, url, body=data, headers=hdrs)
            resp = conn.getresponse()
            return RawResponse(resp.status, dict(resp.getheaders()), resp.read())
        finally:
            conn.close()

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def put(self, path, body=b"", **kw):
        return self.request("PUT", path, body=body, **kw)


def error_code_of(excinfo) -> str:
    return getattr(excinfo.value, "error_code", None)
