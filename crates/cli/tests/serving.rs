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

/// Who calls: a token, acting in a workspace when one is named.
#[derive(Clone, Copy)]
struct Caller<'a> {
    token: &'a str,
    workspace: Option<&'a str>,
}

impl<'a> Caller<'a> {
    fn admin(server: &'a Server) -> Self {
        Caller {
            token: &server.token,
            workspace: None,
        }
    }
}

/// One call as `who`; the body as JSON (`null` when it is not).
async fn call(
    server: &Server,
    who: Caller<'_>,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = server
        .http()
        .request(method, server.url(path))
        .bearer_auth(who.token);
    if let Some(w) = who.workspace {
        req = req.header("X-Trainyard-Workspace", w);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A run with `model/model.onnx` in its artifacts, registered as a new version of `name`.
async fn register(server: &Server, name: &str, file: &[u8]) -> String {
    register_as(server, Caller::admin(server), name, file).await
}

/// [`register`] as `who`, in its workspace.
async fn register_as(server: &Server, who: Caller<'_>, name: &str, file: &[u8]) -> String {
    use reqwest::Method;
    let (s, run) = call(
        server,
        who,
        Method::POST,
        "/api/2.0/mlflow/runs/create",
        Some(json!({"experiment_id": "0"})),
    )
    .await;
    assert_eq!(s, 200, "{run}");
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let root = run["run"]["info"]["artifact_uri"].as_str().unwrap();
    let root = root
        .strip_prefix("mlflow-artifacts:/")
        .unwrap()
        .trim_start_matches('/');
    let mut put = server
        .http()
        .put(server.url(&format!(
            "/api/2.0/mlflow-artifacts/artifacts/{root}/model/model.onnx"
        )))
        .bearer_auth(who.token);
    if let Some(w) = who.workspace {
        put = put.header("X-Trainyard-Workspace", w);
    }
    let r = put.body(file.to_vec()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let _ = call(
        server,
        who,
        Method::POST,
        "/api/2.0/mlflow/registered-models/create",
        Some(json!({"name": name})),
    )
    .await;
    let (s, v) = call(
        server,
        who,
        Method::POST,
        "/api/2.0/mlflow/model-versions/create",
        Some(json!({"name": name, "source": format!("runs:/{run_id}/model"), "run_id": run_id})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    v["model_version"]["version"].as_str().unwrap().to_string()
}

/// The tiny model with its bias 1.5, -1.5 instead of 0.5, -0.5: [1, 2, 3, 4] gives [4, 6],
/// not [3, 7] — another model with the same inputs and outputs.
fn other_tiny() -> Vec<u8> {
    let bias = [0, 0, 0, 0x3f, 0, 0, 0, 0xbf];
    let at = TINY.windows(8).position(|w| w == bias).unwrap();
    let mut file = TINY.to_vec();
    file[at..at + 8].copy_from_slice(&[0, 0, 0xc0, 0x3f, 0, 0, 0xc0, 0xbf]);
    file
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

/// What `/v2/models/{name}[/versions/{v}]/infer` answers for [1, 2, 3, 4] as `who`: the
/// status and the output's values (the error text when it failed).
async fn outputs(server: &Server, who: Caller<'_>, path: &str) -> (u16, Value) {
    let (s, out) = call(
        server,
        who,
        reqwest::Method::POST,
        &format!("{path}/infer"),
        Some(request()),
    )
    .await;
    match s {
        200 => (s, out["outputs"][0]["data"].clone()),
        _ => (s, out["error"].clone()),
    }
}

/// The repository index as `who` sees it: (name, version, state) per line.
async fn index(server: &Server, who: Caller<'_>) -> Vec<(String, String, String)> {
    let (s, index) = call(
        server,
        who,
        reqwest::Method::POST,
        "/v2/repository/index",
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 200, "{index}");
    index
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let field = |k: &str| e[k].as_str().unwrap_or("").to_string();
            (field("name"), field("version"), field("state"))
        })
        .collect()
}

/// The model versions `/v2/models/stats` has statistics of, as `who` sees them.
async fn stats(server: &Server, who: Caller<'_>) -> Vec<(String, String)> {
    let (s, stats) = call(server, who, reqwest::Method::GET, "/v2/models/stats", None).await;
    assert_eq!(s, 200, "{stats}");
    stats["model_stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["version"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn metric(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn a_deleted_model_is_unloaded_and_its_name_made_again_serves_the_new_file() {
    let server = start().await;
    let me = Caller::admin(&server);
    let other = other_tiny();
    assert_eq!(register(&server, "clf", TINY).await, "1");
    assert_eq!(
        outputs(&server, me, "/v2/models/clf").await,
        (200, json!([3.0, 7.0]))
    );
    let ready = ("clf".to_string(), "1".to_string(), "READY".to_string());
    assert!(index(&server, me).await.contains(&ready));

    // Deleted: the index (which reads the listing) no longer has it, nor do the
    // statistics, and inference is a 404.
    let (s, body) = call(
        &server,
        me,
        reqwest::Method::DELETE,
        "/api/2.0/mlflow/registered-models/delete",
        Some(json!({"name": "clf"})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let listed = index(&server, me).await;
    assert!(!listed.iter().any(|(n, _, _)| n == "clf"), "{listed:?}");
    assert!(!stats(&server, me).await.iter().any(|(n, _)| n == "clf"));
    let (s, err) = outputs(&server, me, "/v2/models/clf").await;
    assert_eq!(s, 404, "{err}");

    // Made again from another file: version 1 again, answered by the new file.
    assert_eq!(register(&server, "clf", &other).await, "1");
    assert_eq!(
        outputs(&server, me, "/v2/models/clf").await,
        (200, json!([4.0, 6.0]))
    );

    // As the probe did it: deleted and made again with no serving call between, then a
    // wait past the listing's 2 s. The old copy never answers for the new version.
    let (s, _) = call(
        &server,
        me,
        reqwest::Method::DELETE,
        "/api/2.0/mlflow/registered-models/delete",
        Some(json!({"name": "clf"})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(register(&server, "clf", TINY).await, "1");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        outputs(&server, me, "/v2/models/clf").await,
        (200, json!([3.0, 7.0]))
    );

    // One version deleted: gone from the index and a 404; the other serves on.
    assert_eq!(register(&server, "clf", &other).await, "2");
    assert_eq!(
        outputs(&server, me, "/v2/models/clf/versions/2").await,
        (200, json!([4.0, 6.0]))
    );
    let (s, body) = call(
        &server,
        me,
        reqwest::Method::DELETE,
        "/api/2.0/mlflow/model-versions/delete",
        Some(json!({"name": "clf", "version": "2"})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let listed = index(&server, me).await;
    assert!(
        !listed.iter().any(|(n, v, _)| n == "clf" && v == "2"),
        "{listed:?}"
    );
    assert!(listed.contains(&ready), "{listed:?}");
    let (s, err) = outputs(&server, me, "/v2/models/clf/versions/2").await;
    assert_eq!(s, 404, "{err}");
    assert_eq!(
        outputs(&server, me, "/v2/models/clf").await,
        (200, json!([3.0, 7.0]))
    );

    // With no request at all, a deleted model's copy goes within seconds: the memory the
    // manager counts falls to nothing.
    let (s, _) = call(
        &server,
        me,
        reqwest::Method::DELETE,
        "/api/2.0/mlflow/registered-models/delete",
        Some(json!({"name": "clf"})),
    )
    .await;
    assert_eq!(s, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = server
            .get("/metrics")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let used = metric(&text, "trainyard_serve_memory_used_bytes ");
        if used == Some(0.0) {
            assert!(
                metric(
                    &text,
                    "trainyard_serve_model_unloads_total{model=\"clf\",version=\"1\"} "
                ) >= Some(3.0),
                "{text}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "still held: {used:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_workspace_removed_and_made_again_never_serves_the_old_workspaces_model() {
    let server = start().await;
    let s = &server;
    common::ok(s.cli(&["workspaces", "create", "wb"]));
    let owner = Caller {
        token: &s.token,
        workspace: Some("wb"),
    };
    register_as(s, owner, "clf", TINY).await;
    assert_eq!(
        outputs(s, owner, "/v2/models/clf").await,
        (200, json!([3.0, 7.0]))
    );

    // Removed with everything in it, and made again; then a new member registers her own
    // `clf` version 1 from another file, with no serving call between.
    let (status, body) = call(
        s,
        Caller::admin(s),
        reqwest::Method::DELETE,
        "/api/v1/workspaces/wb?cascade=true",
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    common::ok(s.cli(&["workspaces", "create", "wb"]));
    common::ok(s.cli(&["users", "add", "vera"]));
    common::ok(s.cli(&["workspaces", "grant", "--workspace", "wb", "vera", "editor"]));
    let (status, made) = call(
        s,
        owner,
        reqwest::Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "vera-test", "user": "vera"})),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let token = made["token"].as_str().unwrap().to_string();
    let vera = Caller {
        token: &token,
        workspace: Some("wb"),
    };
    register_as(s, vera, "clf", &other_tiny()).await;

    // Her index and statistics show nothing of the removed workspace's copy.
    let listed = index(s, vera).await;
    assert!(
        !listed.iter().any(|(_, _, state)| state == "READY"),
        "{listed:?}"
    );
    assert!(stats(s, vera).await.is_empty());
    // Her inference runs on her file.
    assert_eq!(
        outputs(s, vera, "/v2/models/clf").await,
        (200, json!([4.0, 6.0]))
    );
    let listed = index(s, vera).await;
    assert!(
        listed.contains(&("clf".into(), "1".into(), "READY".into())),
        "{listed:?}"
    );

    // Messages name the model as she does, never by the server's key for it.
    let bad = json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]});
    for (method, path, body) in [
        (reqwest::Method::POST, "/v2/models/clf/infer", Some(bad)),
        (
            reqwest::Method::POST,
            "/v2/models/clf/versions/9/infer",
            Some(request()),
        ),
        (
            reqwest::Method::POST,
            "/v2/models/clf/infer",
            Some(
                json!({"inputs": [{"name": "nope", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}),
            ),
        ),
    ] {
        let (status, err) = call(s, vera, method, path, body).await;
        assert!(status == 400 || status == 404, "{status} {err}");
        let text = err["error"].as_str().unwrap();
        assert!(text.contains("'clf'") && !text.contains("wb/"), "{text}");
    }
    let (status, config) = call(s, vera, reqwest::Method::GET, "/v2/models/clf/config", None).await;
    assert_eq!(
        (status, config["name"].as_str()),
        (200, Some("clf")),
        "{config}"
    );
}
