//! Inference inside `trainyard up`: registered model versions whose artifacts hold an ONNX
//! file are served over the Open Inference Protocol by name and version (default: alias
//! `production`, else the latest), behind the API token; the CLI's infer/load/unload.

mod common;

use std::time::{Duration, Instant};

use common::{Server, ServerOptions};
use serde_json::{json, Value};

const TINY: &[u8] = include_bytes!("../../serve/tests/fixtures/repo/tiny/1/model.onnx");

async fn post(server: &Server, path: &str, body: Value) -> (u16, Value) {
    let r = server.post(path).json(&body).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A run with `model/model.onnx` in its artifacts, registered as a new version of `name`.
async fn register(server: &Server, name: &str, file: &[u8]) -> String {
    let (s, run) = post(
        server,
        "/api/2.0/mlflow/runs/create",
        json!({"experiment_id": "0"}),
    )
    .await;
    assert_eq!(s, 200, "{run}");
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let root = run["run"]["info"]["artifact_uri"].as_str().unwrap();
    let root = root
        .strip_prefix("mlflow-artifacts:/")
        .unwrap()
        .trim_start_matches('/');
    let r = server
        .http_put(&format!(
            "/api/2.0/mlflow-artifacts/artifacts/{root}/model/model.onnx"
        ))
        .body(file.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _ = post(
        server,
        "/api/2.0/mlflow/registered-models/create",
        json!({"name": name}),
    )
    .await;
    let (s, v) = post(
        server,
        "/api/2.0/mlflow/model-versions/create",
        json!({"name": name, "source": format!("runs:/{run_id}/model"), "run_id": run_id}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v["model_version"]["version"].as_str().unwrap().to_string()
}

fn request() -> Value {
    json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
}

async fn start() -> Server {
    Server::start_with(ServerOptions {
        // tract: always there, so this test needs no ONNX Runtime library.
        env: vec![("TRAINYARD_SERVE_RUNTIME".into(), "tract".into())],
        ..ServerOptions::default()
    })
    .await
}

#[tokio::test]
async fn registered_versions_serve_by_name_and_version() {
    let server = start().await;
    assert_eq!(register(&server, "tiny", TINY).await, "1");
    assert_eq!(register(&server, "tiny", TINY).await, "2");

    let meta = server.get_json("/v2/models/tiny").await;
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 4]));
    assert_eq!(meta["parameters"]["runtime"], "tract");

    let (s, out) = post(&server, "/v2/models/tiny/infer", request()).await;
    assert_eq!(s, 200, "{out}");
    assert_eq!(
        out["model_version"], "2",
        "without an alias the latest version serves"
    );
    assert_eq!(out["outputs"][0]["data"], json!([3.0, 7.0]));
    let (s, out) = post(&server, "/v2/models/tiny/versions/1/infer", request()).await;
    assert_eq!((s, out["model_version"].clone()), (200, json!("1")));

    // The `production` alias picks the default version (within the listing's 2 s cache).
    let (s, _) = post(
        &server,
        "/api/2.0/mlflow/registered-models/alias",
        json!({"name": "tiny", "alias": "production", "version": "1"}),
    )
    .await;
    assert_eq!(s, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, out) = post(&server, "/v2/models/tiny/infer", request()).await;
        if out["model_version"] == "1" {
            break;
        }
        assert!(Instant::now() < deadline, "alias not followed: {out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let index: Value = server
        .post("/v2/repository/index")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let states: Vec<(String, String)> = index
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["version"].as_str().unwrap_or("").into(),
                e["state"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert!(states.contains(&("1".into(), "READY".into())), "{index}");
    assert!(states.contains(&("2".into(), "READY".into())), "{index}");

    let (s, err) = post(&server, "/v2/models/tiny/versions/3/infer", request()).await;
    assert_eq!(s, 404, "{err}");
    assert!(err["error"].as_str().unwrap().contains("version 3"));
    let (s, _) = post(&server, "/v2/models/nosuch/infer", request()).await;
    assert_eq!(s, 404);
    // A shape whose element count overflows is bad input, not a server error.
    let huge = json!({"inputs": [{"name": "input", "shape": [4294967296u64, 4294967296u64],
                                  "datatype": "FP32", "data": [1]}]});
    let (s, err) = post(&server, "/v2/models/tiny/infer", huge).await;
    assert_eq!(s, 400, "{err}");
    assert!(
        err["error"].as_str().unwrap().contains("too large"),
        "{err}"
    );
    // A model name that is not UTF-8 once decoded: the protocol's error body, saying so.
    let (s, err) = post(&server, "/v2/models/%ff/infer", request()).await;
    assert_eq!(s, 400, "{err}");
    assert!(err["error"].as_str().unwrap().contains("UTF-8"), "{err}");

    let metrics = server
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("trainyard_serve_model_loads_total{model=\"tiny\",version=\"1\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_version_without_onnx_is_not_served_and_inference_needs_the_token() {
    let server = start().await;
    register(&server, "notonnx", b"").await;
    // The run's artifacts hold model/model.onnx, so it is listed; an empty file fails to load.
    let (s, err) = post(&server, "/v2/models/notonnx/infer", request()).await;
    assert_eq!(s, 503, "{err}");
    assert!(err["error"].as_str().unwrap().contains("notonnx"));
    // A registered model with no ONNX at all is unknown to serving.
    let _ = post(
        &server,
        "/api/2.0/mlflow/registered-models/create",
        json!({"name": "empty"}),
    )
    .await;
    let (s, _) = post(&server, "/v2/models/empty/infer", request()).await;
    assert_eq!(s, 404);

    let anonymous = reqwest::Client::new();
    let r = anonymous
        .get(server.url("/v2/models/notonnx"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
    let r = anonymous
        .get(server.url("/v2/health/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn cli_infer_load_and_unload() {
    let server = start().await;
    register(&server, "tiny", TINY).await;
    let dir = tempfile::tempdir().unwrap();
    let req = dir.path().join("req.json");
    std::fs::write(&req, request().to_string()).unwrap();
    let out = server.cli(&["infer", "tiny", "--input", req.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("output") && text.contains("3.0, 7.0"),
        "{text}"
    );

    let out = server.cli(&["models", "unload", "tiny"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = server.get("/v2/models/tiny/ready").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let out = server.cli(&["models", "load", "tiny"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = server.get("/v2/models/tiny/ready").send().await.unwrap();
    assert_eq!(r.status(), 200);

    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, json!({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}).to_string()).unwrap();
    let out = server.cli(&["infer", "tiny", "--input", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'input'") && err.contains("HTTP 400"), "{err}");
}

#[tokio::test]
async fn a_serving_option_from_trainyard_toml_takes_effect() {
    let server = Server::start_with(ServerOptions {
        env: vec![("TRAINYARD_SERVE_RUNTIME".into(), "tract".into())],
        config_toml: Some("[serve]\nmax_body = \"1KiB\"\n".into()),
        ..ServerOptions::default()
    })
    .await;
    register(&server, "small", TINY).await;
    let (status, _) = post(&server, "/v2/models/small/infer", request()).await;
    assert_eq!(status, 200, "a small request fits");
    let big = json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
        "data": [1, 2, 3, 4]}], "parameters": {"pad": "x".repeat(2048)}});
    let r = server
        .post("/v2/models/small/infer")
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        413,
        "max_body = 1KiB from [serve] in trainyard.toml"
    );
}
