//! Attacks an adversarial probe made on a live server, each performed for real: a job's
//! token trying to change other runs and the registry, a model config that asks for 100,000
//! threads, a version source that climbs out of its run, links a job plants in the blob
//! store, a job reading the server's secrets, a shard upload that used to be buffered whole.
//! Each test passes only when the attack fails.

mod common;

use std::time::Duration;

use common::{peak_rss_kb, rss_kb, Server, ServerOptions};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(60);
const TINY: &[u8] = include_bytes!("../../serve/tests/fixtures/repo/tiny/1/model.onnx");

async fn start() -> Server {
    Server::start_with(ServerOptions {
        env: vec![("TRAINYARD_SERVE_RUNTIME".into(), "tract".into())],
        ..ServerOptions::default()
    })
    .await
}

/// A job that prints its token and stays alive; returns (job id = its run id, token).
async fn job_with_token(server: &Server) -> (String, String) {
    let job = server
        .submit(json!({"command": ["sh", "-c", "echo \"token $MLFLOW_TRACKING_TOKEN\"; sleep 60"]}))
        .await;
    let id = job["id"].as_str().unwrap().to_string();
    server.wait_log(&id, "token ").await;
    let token = server
        .logs(&id, "")
        .await
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string();
    (id, token)
}

async fn call(
    server: &Server,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let http = reqwest::Client::new();
    let mut req = http
        .request(method.clone(), server.url(path))
        .bearer_auth(token);
    if method == reqwest::Method::GET {
        let query: Vec<(String, String)> = body
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().map(str::to_string).unwrap_or(v.to_string()),
                )
            })
            .collect();
        req = req.query(&query);
    } else {
        req = req.json(&body);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn admin(server: &Server, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    call(server, &server.token.clone(), method, path, body).await
}

/// A run (made with the admin token) whose artifacts hold `model/model.onnx` and
/// `model/config.json`, registered as a version of `name`; returns (run id, artifact root).
async fn registered(server: &Server, name: &str, config: Option<&str>) -> (String, String) {
    use reqwest::Method;
    let (s, run) = admin(
        server,
        Method::POST,
        "/api/2.0/mlflow/runs/create",
        json!({"experiment_id": "0"}),
    )
    .await;
    assert_eq!(s, 200, "{run}");
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let root = run["run"]["info"]["artifact_uri"]
        .as_str()
        .unwrap()
        .trim_start_matches("mlflow-artifacts:")
        .trim_start_matches('/')
        .to_string();
    let put = |path: String, body: Vec<u8>| {
        server
            .http_put(&format!(
                "/api/2.0/mlflow-artifacts/artifacts/{root}/{path}"
            ))
            .body(body)
            .send()
    };
    assert_eq!(
        put("model/model.onnx".into(), TINY.to_vec())
            .await
            .unwrap()
            .status(),
        200
    );
    if let Some(c) = config {
        assert_eq!(
            put("model/config.json".into(), c.as_bytes().to_vec())
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let _ = admin(
        server,
        Method::POST,
        "/api/2.0/mlflow/registered-models/create",
        json!({"name": name}),
    )
    .await;
    let (s, v) = admin(
        server,
        Method::POST,
        "/api/2.0/mlflow/model-versions/create",
        json!({"name": name, "source": format!("runs:/{run_id}/model"), "run_id": run_id}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    (run_id, root)
}

fn infer_body() -> Value {
    json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
}

async fn healthy(server: &Server) {
    let r = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(
        r.status(),
        200,
        "the server must still be up:\n{}",
        server.server_log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_token_writes_only_what_its_job_owns() {
    use reqwest::Method;
    let server = start().await;
    let (victim_run, victim_root) = registered(&server, "victim", None).await;
    let (job, token) = job_with_token(&server).await;
    let t = token.as_str();
    let s = &server;

    // Every write into another run is refused with MLflow's PERMISSION_DENIED.
    let ts = json!(1_700_000_000_000i64);
    for (path, body) in [
        (
            "/api/2.0/mlflow/runs/log-metric",
            json!({"run_id": victim_run, "key": "m", "value": 1, "timestamp": ts}),
        ),
        (
            "/api/2.0/mlflow/runs/log-parameter",
            json!({"run_id": victim_run, "key": "p", "value": "x"}),
        ),
        (
            "/api/2.0/mlflow/runs/set-tag",
            json!({"run_id": victim_run, "key": "t", "value": "x"}),
        ),
        (
            "/api/2.0/mlflow/runs/delete-tag",
            json!({"run_id": victim_run, "key": "mlflow.runName"}),
        ),
        (
            "/api/2.0/mlflow/runs/log-batch",
            json!({"run_id": victim_run, "metrics": [{"key": "m", "value": 1, "timestamp": ts}]}),
        ),
        (
            "/api/2.0/mlflow/runs/update",
            json!({"run_id": victim_run, "status": "KILLED"}),
        ),
        (
            "/api/2.0/mlflow/runs/log-inputs",
            json!({"run_id": victim_run, "datasets": []}),
        ),
        (
            "/ajax-api/2.0/mlflow/runs/set-tag",
            json!({"run_id": victim_run, "key": "t", "value": "x"}),
        ),
    ] {
        let (status, body) = call(s, t, Method::POST, path, body).await;
        assert_eq!(status, 403, "{path}: {body}");
        assert_eq!(body["error_code"], "PERMISSION_DENIED", "{path}: {body}");
    }
    // Deletes, restores, renames, aliases and stages: refused whoever owns the target.
    for (method, path, body) in [
        (
            Method::POST,
            "/api/2.0/mlflow/runs/delete",
            json!({"run_id": victim_run}),
        ),
        (
            Method::POST,
            "/api/2.0/mlflow/runs/delete",
            json!({"run_id": job}),
        ),
        (
            Method::POST,
            "/api/2.0/mlflow/runs/restore",
            json!({"run_id": victim_run}),
        ),
        (
            Method::POST,
            "/api/2.0/mlflow/experiments/delete",
            json!({"experiment_id": "0"}),
        ),
        (
            Method::POST,
            "/api/2.0/mlflow/experiments/update",
            json!({"experiment_id": "0", "new_name": "x"}),
        ),
        (
            Method::POST,
            "/api/2.0/mlflow/experiments/set-experiment-tag",
            json!({"experiment_id": "0", "key": "k", "value": "v"}),
        ),
        (
            Method::DELETE,
            "/api/2.0/mlflow/registered-models/delete",
            json!({"name": "victim"}),
        ),
        (
            Method::POST,
            "/api/2.0/mlflow/registered-models/rename",
            json!({"name": "victim", "new_name": "mine"}),
        ),
        (
            Method::PATCH,
            "/api/2.0/mlflow/registered-models/update",
            json!({"name": "victim", "description": "x"}),
        ),
        (
            Method::POST,
            "/api/2.0/mlflow/registered-models/alias",
            json!({"name": "victim", "alias": "production", "version": "1"}),
        ),
        (
            Method::DELETE,
            "/api/2.0/mlflow/registered-models/alias",
            json!({"name": "victim", "alias": "production"}),
        ),
        (
            Method::POST,
            "/api/2.0/mlflow/model-versions/transition-stage",
            json!({"name": "victim", "version": "1", "stage": "Production"}),
        ),
        (
            Method::DELETE,
            "/api/2.0/mlflow/model-versions/delete",
            json!({"name": "victim", "version": "1"}),
        ),
        (
            Method::POST,
            "/api/2.0/mlflow/model-versions/set-tag",
            json!({"name": "victim", "version": "1", "key": "k", "value": "v"}),
        ),
        (
            Method::DELETE,
            &format!("/api/2.0/mlflow-artifacts/artifacts/{victim_root}/model/model.onnx"),
            json!({}),
        ),
        (Method::POST, "/api/v1/jobs", json!({"command": ["true"]})),
    ] {
        let (status, body) = call(s, t, method.clone(), path, body).await;
        assert_eq!(status, 403, "{method} {path}: {body}");
    }
    // Overwriting another run's artifacts, whole or in parts, is refused too.
    let http = reqwest::Client::new();
    let r = http
        .put(s.url(&format!(
            "/api/2.0/mlflow-artifacts/artifacts/{victim_root}/model/model.onnx"
        )))
        .bearer_auth(t)
        .body(b"evil".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let (status, _) = call(
        s,
        t,
        Method::POST,
        &format!("/api/2.0/mlflow-artifacts/mpu/create/{victim_root}/model/model.onnx"),
        json!({"path": format!("{victim_root}/model/model.onnx"), "num_parts": 1}),
    )
    .await;
    assert_eq!(status, 403);

    // The job's own run, and what it creates, stay writable.
    for (path, body) in [
        (
            "/api/2.0/mlflow/runs/log-metric",
            json!({"run_id": job, "key": "m", "value": 1, "timestamp": ts}),
        ),
        (
            "/api/2.0/mlflow/runs/set-tag",
            json!({"run_id": job, "key": "t", "value": "x"}),
        ),
        (
            "/api/2.0/mlflow/registered-models/create",
            json!({"name": "from-the-job"}),
        ),
    ] {
        let (status, body) = call(s, t, Method::POST, path, body).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, child) = call(s, t, Method::POST, "/api/2.0/mlflow/runs/create", json!({"experiment_id": "0", "tags": [{"key": "trainyard.createdByJob", "value": victim_run}]})).await;
    assert_eq!(status, 200, "{child}");
    let child_id = child["run"]["info"]["run_id"].as_str().unwrap();
    let stamped: Vec<&Value> = child["run"]["data"]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["key"] == "trainyard.createdByJob")
        .collect();
    assert_eq!(stamped.len(), 1, "{child}");
    assert_eq!(
        stamped[0]["value"],
        job.as_str(),
        "the server stamps the creator; a claimed one is dropped"
    );
    let (status, _) = call(
        s,
        t,
        Method::POST,
        "/api/2.0/mlflow/runs/log-parameter",
        json!({"run_id": child_id, "key": "p", "value": "1"}),
    )
    .await;
    assert_eq!(status, 200, "a run the job created is its own");
    let own_root = format!("0/{job}/artifacts");
    let r = http
        .put(s.url(&format!(
            "/api/2.0/mlflow-artifacts/artifacts/{own_root}/model/model.onnx"
        )))
        .bearer_auth(t)
        .body(TINY.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The UI's upload route: the job's own run yes, the victim's no.
    for (run, want) in [(victim_run.as_str(), 403), (job.as_str(), 200)] {
        let r = http
            .post(s.url("/ajax-api/2.0/mlflow/upload-artifact"))
            .query(&[("run_uuid", run), ("path", "ui/upload.txt")])
            .bearer_auth(t)
            .body(b"from the job".to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want, "upload-artifact into {run}");
    }
    // Registering a version: only from its own run (so not from the victim's).
    let (status, body) = call(s, t, Method::POST, "/api/2.0/mlflow/model-versions/create", json!({"name": "victim", "source": format!("runs:/{victim_run}/model"), "run_id": victim_run})).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = call(
        s,
        t,
        Method::POST,
        "/api/2.0/mlflow/model-versions/create",
        json!({"name": "victim", "source": format!("runs:/{job}/model"), "run_id": job}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = call(
        s,
        t,
        Method::POST,
        "/api/2.0/mlflow/model-versions/set-tag",
        json!({"name": "victim", "version": "2", "key": "k", "value": "v"}),
    )
    .await;
    assert_eq!(status, 200, "a version of its own run takes its tags");

    // Nothing of the victim changed: no metric, tags intact, the run still RUNNING, the
    // artifact the same bytes, no alias.
    let (_, run) = admin(
        s,
        Method::GET,
        "/api/2.0/mlflow/runs/get",
        json!({"run_id": victim_run}),
    )
    .await;
    assert_eq!(run["run"]["info"]["status"], "RUNNING", "{run}");
    assert!(run["run"]["data"].get("metrics").is_none(), "{run}");
    let bytes = server
        .get(&format!(
            "/api/2.0/mlflow-artifacts/artifacts/{victim_root}/model/model.onnx"
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[..], TINY);
    let (_, model) = admin(
        s,
        Method::GET,
        "/api/2.0/mlflow/registered-models/get",
        json!({"name": "victim"}),
    )
    .await;
    assert!(
        model["registered_model"].get("aliases").is_none(),
        "{model}"
    );
    // Reads stay open to the job.
    let (status, _) = call(
        s,
        t,
        Method::GET,
        "/api/2.0/mlflow/runs/get",
        json!({"run_id": victim_run}),
    )
    .await;
    assert_eq!(status, 200);

    // A metric point naming someone else's logged model writes into that model: refused.
    let (_, lm) = admin(
        s,
        Method::POST,
        "/api/2.0/mlflow/logged-models",
        json!({"experiment_id": "0", "name": "victim-lm", "source_run_id": victim_run}),
    )
    .await;
    let lm_id = lm["model"]["info"]["model_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = call(
        s,
        t,
        Method::POST,
        "/api/2.0/mlflow/runs/log-metric",
        json!({"run_id": job, "key": "accuracy", "value": 1e9, "timestamp": ts, "model_id": lm_id}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (_, got) = admin(
        s,
        Method::GET,
        &format!("/api/2.0/mlflow/logged-models/{lm_id}"),
        json!({}),
    )
    .await;
    assert!(got["model"]["data"].get("metrics").is_none(), "{got}");
    // A tag on a version that does not exist yet (numbers are predictable) is not taken.
    let (status, body) = call(
        s,
        t,
        Method::POST,
        "/api/2.0/mlflow/model-versions/set-tag",
        json!({"name": "victim", "version": "9", "key": "k", "value": "v"}),
    )
    .await;
    assert_eq!(status, 404, "{body}");

    // Datasets: a job may make its own, never add a version to someone else's.
    let table = trainyard_data::Table::new(
        vec![trainyard_data::Field::new(
            "x",
            trainyard_data::ColumnType::Int64,
        )],
        vec![trainyard_data::Column::Int64(vec![1, 2, 3])],
    )
    .unwrap();
    let shard = trainyard_data::shard::encode(&table);
    let sha = trainyard_data::shard::sha256_hex(&shard);
    let r = http
        .put(s.url(&format!("/api/v1/datasets/shards/{sha}")))
        .bearer_auth(t)
        .body(shard)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let mut writer = trainyard_data::VersionWriter::new(table.schema.clone(), 10);
    let mut sink = trainyard_data::MemStore::default();
    writer.push(table, &mut sink).unwrap();
    let manifest = writer
        .finish(trainyard_data::Lineage::default(), &mut sink)
        .unwrap();
    assert_eq!(manifest.shards[0].sha256, sha);
    let body = json!({"manifest": manifest});
    let r = server
        .post("/api/v1/datasets/victim-data/versions")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let r = http
        .post(s.url("/api/v1/datasets/victim-data/versions"))
        .bearer_auth(t)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "{}", r.text().await.unwrap());
    let r = http
        .post(s.url("/api/v1/datasets/job-output/versions"))
        .bearer_auth(t)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "a job makes its own dataset: {}",
        r.text().await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_config_asking_for_100000_instances_fails_its_load_not_the_server() {
    use reqwest::Method;
    let server = start().await;
    let evil = r#"{"instance_group":[{"count":100000,"kind":"KIND_CPU"}]}"#;
    registered(&server, "greedy", Some(evil)).await;
    let (status, body) = admin(
        &server,
        Method::POST,
        "/v2/models/greedy/infer",
        infer_body(),
    )
    .await;
    assert!(
        (400..500).contains(&status) || status == 503,
        "{status} {body}"
    );
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.contains("instance_group[0].count"), "{body}");
    healthy(&server).await;
    // The same config through the load API: 400 naming the field.
    registered(&server, "plain", None).await;
    let (status, body) = admin(
        &server,
        Method::POST,
        "/v2/repository/models/plain/load",
        json!({"parameters": {"config": evil}}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("instance_group[0].count"),
        "{body}"
    );
    healthy(&server).await;
    let (status, body) = admin(
        &server,
        Method::POST,
        "/v2/models/plain/infer",
        infer_body(),
    )
    .await;
    assert_eq!(status, 200, "other models still serve: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_source_cannot_climb_out_of_its_run() {
    use reqwest::Method;
    let server = start().await;
    let (run_id, _) = registered(&server, "good", None).await;
    for source in [
        format!("runs:/{run_id}/..%2f.."),
        format!("runs:/{run_id}/../../x"),
        format!("runs:/{run_id}/model/%2e%2e/%2e%2e"),
        format!("runs:/{run_id}/a\\..\\b"),
    ] {
        let (status, body) = admin(
            &server,
            Method::POST,
            "/api/2.0/mlflow/model-versions/create",
            json!({"name": "good", "source": source, "run_id": run_id}),
        )
        .await;
        assert_eq!(status, 400, "{source}: {body}");
        assert_eq!(body["error_code"], "INVALID_PARAMETER_VALUE");
    }
    // Serving is untouched: the index answers, the model serves.
    let (status, index) = admin(&server, Method::POST, "/v2/repository/index", json!({})).await;
    assert_eq!(status, 200, "{index}");
    let (status, _) = admin(&server, Method::POST, "/v2/models/good/infer", infer_body()).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn links_planted_in_the_blob_store_are_never_followed() {
    use reqwest::Method;
    let server = start().await;
    let (run_id, root) = registered(&server, "linked", None).await;
    let dir = server.data_dir.join("blobs/artifacts").join(&root);
    std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd")).unwrap();
    std::os::unix::fs::symlink(server.data_dir.join("trainyard.db"), dir.join("db")).unwrap();
    std::os::unix::fs::symlink(&server.data_dir, dir.join("data")).unwrap();
    std::os::unix::fs::symlink(dir.join("loop"), dir.join("loop")).unwrap();
    std::os::unix::fs::symlink(&dir, dir.join("model/up")).unwrap();
    for path in [
        "passwd",
        "db",
        "data/admin-token",
        "loop",
        "model/up/model/model.onnx",
    ] {
        for url in [
            format!("/api/2.0/mlflow-artifacts/artifacts/{root}/{path}"),
            format!("/get-artifact?run_id={run_id}&path={path}"),
        ] {
            let r = server.get(&url).send().await.unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            assert!((400..500).contains(&status), "{url}: {status}");
            assert!(
                !text.contains("root:") && !text.contains(&server.token),
                "{url} leaked: {text}"
            );
        }
    }
    for path in ["", "model", "data", "model/up"] {
        let (status, listing) = admin(
            &server,
            Method::GET,
            "/api/2.0/mlflow/artifacts/list",
            json!({"run_id": run_id, "path": path}),
        )
        .await;
        assert_eq!(status, 200, "{path}: {listing}");
        let names: Vec<&str> = listing["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f["path"].as_str())
            .collect();
        assert!(
            names.iter().all(|n| !n.ends_with("passwd")
                && !n.ends_with("loop")
                && !n.ends_with("up")
                && !n.ends_with("data")),
            "{path}: {names:?}"
        );
    }
    let (status, listing) = admin(
        &server,
        Method::GET,
        "/api/2.0/mlflow/artifacts/list",
        json!({"run_id": run_id}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        listing["files"].as_array().unwrap().len(),
        1,
        "only model/: {listing}"
    );
}

/// The job user test needs root (to become another user); CI runs as root.
fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_cannot_read_the_servers_secrets() {
    if !is_root() {
        eprintln!("skipped: running jobs as another user needs root");
        return;
    }
    let secret = "ty_this-admin-token-must-not-leak-0123456789";
    let server = Server::start_with(ServerOptions {
        job_user: Some(trainyard_compute::DEFAULT_JOB_USER.into()),
        env: vec![
            ("TRAINYARD_ADMIN_TOKEN".into(), secret.into()),
            (
                "AWS_SECRET_ACCESS_KEY".into(),
                "aws-secret-must-not-leak".into(),
            ),
            (
                "SOME_SERVER_SETTING".into(),
                "server-env-must-not-leak".into(),
            ),
        ],
        ..ServerOptions::default()
    })
    .await;
    let data = server.data_dir.display().to_string();
    let script = format!(
        "id -u; env; cat /proc/{pid}/environ; cat {data}/admin-token; cat {data}/trainyard.db | head -c 64; ls {data}; echo done",
        pid = server.pid()
    );
    let job = server
        .submit(json!({"command": ["sh", "-c", script], "working_dir": "/tmp"}))
        .await;
    let id = job["id"].as_str().unwrap();
    let done = server.wait_done(id, LONG).await;
    let log = server.logs(id, "").await;
    assert!(log.contains("done"), "{done}\n{log}");
    let uid: u32 = log.lines().next().unwrap().trim().parse().unwrap();
    assert!(
        trainyard_compute::PER_JOB_UIDS.contains(&uid),
        "a uid of its own, not root's or the server's: {log}"
    );
    for leaked in [
        secret,
        "aws-secret-must-not-leak",
        "server-env-must-not-leak",
        "SQLite format",
    ] {
        assert!(!log.contains(leaked), "the job read {leaked:?}:\n{log}");
    }
    let token_file =
        std::fs::read_to_string(server.data_dir.join("admin-token")).unwrap_or_default();
    assert!(
        token_file.is_empty() || !log.contains(token_file.trim()),
        "{log}"
    );
    assert!(
        log.contains("MLFLOW_TRACKING_TOKEN="),
        "its own variables are there: {log}"
    );
    // The job's environment (its LD_PRELOAD included) never reaches the supervisor, which
    // runs as root: read the supervisor's own environment while a job runs.
    let sleeper = server
        .submit(json!({"command": ["sleep", "30"], "working_dir": "/tmp",
                       "env": {"LD_PRELOAD": "/tmp/trainyard-no-such-preload.so"}}))
        .await;
    let sid = sleeper["id"].as_str().unwrap();
    server.wait_state(sid, |s| s == "running", LONG).await;
    let pid_file = server
        .data_dir
        .join(format!("executor/{sid}/attempt-1.pid.json"));
    let deadline = std::time::Instant::now() + LONG;
    while !pid_file.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "no supervisor pid file"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let record: Value = serde_json::from_slice(&std::fs::read(&pid_file).unwrap()).unwrap();
    let shim_env = std::fs::read(format!("/proc/{}/environ", record["pid"])).unwrap();
    let shim_env = String::from_utf8_lossy(&shim_env);
    assert!(!shim_env.contains("LD_PRELOAD"), "{shim_env}");
    assert!(!shim_env.contains("MLFLOW_TRACKING_TOKEN"), "{shim_env}");
    server
        .post(&format!("/api/v1/jobs/{sid}/cancel"))
        .send()
        .await
        .unwrap();
    // The job still logs into its run with its own token.
    let probe = server
        .submit(json!({"command": ["sh", "-c", "test -n \"$MLFLOW_TRACKING_TOKEN\" && echo ok"], "working_dir": "/tmp"}))
        .await;
    let pid = probe["id"].as_str().unwrap();
    let done = server.wait_done(pid, LONG).await;
    assert_eq!(done["state"], "succeeded", "{done}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_256_mib_shard_upload_streams_in_bounded_memory() {
    use trainyard_data::{Column, ColumnType, Field, Table};
    let server = start().await;
    let rows = 64 << 20; // 64 Mi float32 values: 256 MiB of column data
    let table = Table::new(
        vec![Field::new("x", ColumnType::Float32 { shape: vec![] })],
        vec![Column::Float32 {
            shape: vec![],
            values: vec![0.25; rows],
        }],
    )
    .unwrap();
    let bytes = trainyard_data::shard::encode(&table);
    drop(table);
    let sha = trainyard_data::shard::sha256_hex(&bytes);
    let before = rss_kb(server.pid());
    let body = bytes;
    let r = server
        .http_put(&format!("/api/v1/datasets/shards/{sha}"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let grew_mib = (peak_rss_kb(server.pid()).saturating_sub(before)) / 1024;
    // The body is 256 MiB; what the server holds at once is its write buffer.
    assert!(
        grew_mib < 96,
        "a 256 MiB upload raised the server's peak memory by {grew_mib} MiB"
    );
    let r = server
        .get(&format!("/api/v1/datasets/shards/{sha}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A wrong checksum and garbage are refused, and leave nothing behind.
    let r = server
        .http_put(&format!("/api/v1/datasets/shards/{}", "0".repeat(64)))
        .body(body[..1 << 20].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let garbage = b"definitely not a shard".to_vec();
    let gsha = trainyard_data::shard::sha256_hex(&garbage);
    let r = server
        .http_put(&format!("/api/v1/datasets/shards/{gsha}"))
        .body(garbage)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = server
        .get(&format!("/api/v1/datasets/shards/{gsha}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let staged = server.data_dir.join("blobs/datasets/uploads");
    let left = std::fs::read_dir(&staged).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0, "staged uploads are removed");
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_cannot_read_each_others_tokens() {
    if !is_root() {
        eprintln!("skipped: running jobs as other users needs root");
        return;
    }
    let server = Server::start_with(ServerOptions {
        job_user: Some(trainyard_compute::DEFAULT_JOB_USER.into()),
        ..ServerOptions::default()
    })
    .await;
    // A holds its token in its environment; B, running at the same time, goes for it.
    let a = server
        .submit(json!({"command": ["sh", "-c", "echo \"pid $$ uid $(id -u) token $MLFLOW_TRACKING_TOKEN\"; sleep 30"],
                       "working_dir": "/tmp"}))
        .await;
    let a_id = a["id"].as_str().unwrap().to_string();
    server.wait_log(&a_id, "token ").await;
    let line = server.logs(&a_id, "").await;
    let words: Vec<&str> = line.split_whitespace().collect();
    let (a_pid, a_uid, a_token) = (words[1], words[3], words[5]);
    let b = server
        .submit(json!({"command": ["sh", "-c", format!(
            "echo uid $(id -u); cat /proc/{a_pid}/environ; kill -9 {a_pid} && echo killed; echo done")],
                       "working_dir": "/tmp"}))
        .await;
    let b_id = b["id"].as_str().unwrap();
    server.wait_done(b_id, LONG).await;
    let log = server.logs(b_id, "").await;
    assert!(log.contains("done"), "{log}");
    assert!(!log.contains(a_token), "job B read job A's token:\n{log}");
    assert!(!log.contains("killed"), "job B could signal job A:\n{log}");
    assert!(
        !log.contains(&format!("uid {a_uid}\n")),
        "both jobs got uid {a_uid}:\n{log}"
    );
    assert_eq!(
        server.job(&a_id).await["state"],
        "running",
        "A is untouched"
    );
    server
        .post(&format!("/api/v1/jobs/{a_id}/cancel"))
        .send()
        .await
        .unwrap();
}

/// The audit events listed now (all pages), once at least `at_least` are there.
async fn audit_events(server: &Server, query: &str, at_least: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let page = server
            .get_json(&format!("/api/v1/audit?limit=1000{query}"))
            .await;
        let events = page["events"].as_array().cloned().unwrap_or_default();
        if events.len() >= at_least || std::time::Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every call that changes something and every denied call is in the audit trail, with who
/// made it and from where; reads are not; no token value is stored anywhere in the
/// database; only an admin reads the trail, and bad filters are 400s naming the field.
#[tokio::test]
async fn the_audit_trail_records_changes_and_denials_and_no_secret() {
    use reqwest::Method;
    let server = start().await;
    let s = &server;
    let (job, job_token) = job_with_token(s).await;
    let run_ts = json!(1_700_000_000_000i64);

    // Changes: a submission, a metric logged by the job into its own run, a cancel.
    let (status, other) = admin(s, Method::POST, "/api/v1/jobs", common::job(&["true"])).await;
    assert_eq!(status, 201, "{other}");
    let (status, body) = call(
        s,
        &job_token,
        Method::POST,
        "/api/2.0/mlflow/runs/log-metric",
        json!({"run_id": job, "key": "loss", "value": 0.5, "timestamp": run_ts}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Reads, including POSTs that only read: not recorded.
    assert_eq!(
        admin(s, Method::GET, "/api/v1/jobs", json!({})).await.0,
        200
    );
    let (status, _) = admin(
        s,
        Method::POST,
        "/api/2.0/mlflow/runs/search",
        json!({"experiment_ids": ["0"]}),
    )
    .await;
    assert_eq!(status, 200);
    // Denials: an unknown token, a job's token submitting a job and reading the trail.
    let forged = "ty_forgedforgedforgedforgedforgedforgedforge";
    assert_eq!(
        call(s, forged, Method::GET, "/api/v1/jobs", json!({}))
            .await
            .0,
        401
    );
    let (status, body) = call(
        s,
        &job_token,
        Method::POST,
        "/api/v1/jobs",
        common::job(&["true"]),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = call(s, &job_token, Method::GET, "/api/v1/audit", json!({})).await;
    assert_eq!(status, 403, "{body}");
    let (status, _) = admin(
        s,
        Method::POST,
        &format!("/api/v1/jobs/{job}/cancel"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);

    let events = audit_events(s, "", 7).await;
    let summary: Vec<String> = events
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {}",
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
                e["status"],
                e["role"].as_str().unwrap_or("-")
            )
        })
        .collect();
    // Newest first, exactly these seven.
    assert_eq!(
        summary,
        [
            "POST /api/v1/jobs/{id}/cancel ok 200 owner",
            "GET /api/v1/audit denied 403 job",
            "POST /api/v1/jobs denied 403 job",
            "GET /api/v1/jobs denied 401 -",
            "POST /api/2.0/mlflow/runs/log-metric ok 200 job",
            "POST /api/v1/jobs ok 201 owner",
            "POST /api/v1/jobs ok 201 owner",
        ],
        "{events:#?}"
    );
    let cancel = &events[0];
    assert_eq!(cancel["target"], format!("/api/v1/jobs/{job}/cancel"));
    assert!(
        cancel["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{cancel}"
    );
    assert_eq!(cancel["workspace"], "default");
    assert!(events[3]["principal"].is_null() && events[3]["token_id"].is_null());
    assert_eq!(
        events[2]["principal"],
        format!("job:{job}"),
        "{}",
        events[2]
    );

    // Filters and pages.
    let denied = audit_events(s, "&outcome=denied", 3).await;
    assert_eq!(denied.len(), 3, "{denied:#?}");
    let by_job = audit_events(
        s,
        &format!("&token_id={}", events[2]["token_id"].as_str().unwrap()),
        3,
    )
    .await;
    assert_eq!(by_job.len(), 3, "{by_job:#?}");
    let submits = audit_events(s, "&action=POST%20/api/v1/jobs", 4).await;
    assert_eq!(submits.len(), 4, "{submits:#?}");
    let first = s.get_json("/api/v1/audit?limit=2").await;
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = s
        .get_json(&format!("/api/v1/audit?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(second["events"][0]["id"], events[2]["id"]);
    for (query, field) in [
        ("outcome=maybe", "outcome"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("cursor=../x", "cursor"),
        ("since_ms=-5", "since_ms"),
    ] {
        let (status, body) =
            admin(s, Method::GET, &format!("/api/v1/audit?{query}"), json!({})).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }

    // The CLI reads the same trail.
    let out = common::ok(s.cli(&[
        "audit",
        "--outcome",
        "denied",
        "--since",
        "1h",
        "-o",
        "json",
    ]));
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["events"].as_array().unwrap().len(), 3, "{out}");

    // No token value anywhere: not in the trail, not in any byte of the database.
    let everything = s.get_json("/api/v1/audit?limit=1000").await.to_string();
    let mut database = Vec::new();
    for file in ["trainyard.db", "trainyard.db-wal"] {
        database.extend(std::fs::read(s.data_dir.join(file)).unwrap_or_default());
    }
    let database = String::from_utf8_lossy(&database);
    for secret in [s.token.as_str(), job_token.as_str(), forged] {
        assert!(!everything.contains(secret), "a token in the trail");
        assert!(!database.contains(secret), "a token in the database");
    }
}

/// A certificate that does not name the address jobs reach the server by stops start-up
/// with the reason and what to do, before anything is created (before, every job's first
/// call failed to verify instead). A public URL that is given may be a proxy's, which ends
/// TLS with its own certificate: the server starts, and warns.
#[test]
fn a_certificate_that_does_not_name_the_servers_address_stops_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = common::test_certificate_for(dir.path(), "DNS:trainyard.example");
    let up = |extra: &[&str]| {
        let mut command = std::process::Command::new(common::BIN);
        command
            .args([
                "up",
                "--listen",
                "127.0.0.1:0",
                "--grpc-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--job-user")
            .arg(trainyard_compute::JobUser::current().unwrap().name)
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .arg("--tls-ca")
            .arg(&ca)
            .args(extra)
            .env_remove("TRAINYARD_DATABASE_URL")
            .env_remove("TRAINYARD_BLOBS_URL");
        command
    };
    let out = up(&[]).output().unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("jobs reach this server at `127.0.0.1`")
            && said.contains("trainyard.example")
            && said.contains("--public-url"),
        "{said}"
    );
    assert!(!dir.path().join("data").join("trainyard.db").exists());

    // Behind a proxy: it starts, and says what would fail without one.
    let mut server = up(&["--public-url", "https://elsewhere.example:8443"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = server.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !lines.iter().any(|l: &String| l.contains("trainyard is up")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => panic!("not up: {}", lines.join("\n")),
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("fail to verify") && l.contains("proxy")),
        "{}",
        lines.join("\n")
    );
}

/// With `--tls-cert/--tls-key` both listeners speak TLS only: HTTPS answers, plain HTTP
/// does not, the gRPC listener completes a verified handshake with ALPN h2, silent
/// connections do not hold the listener up, the CLI trusts the CA through
/// `TRAINYARD_CA_CERT`, and a job reaches the server over HTTPS with the CA it is given.
#[tokio::test]
async fn tls_on_both_listeners_and_jobs_trust_the_given_ca() {
    let server = Server::start_with(ServerOptions {
        tls: true,
        ..ServerOptions::default()
    })
    .await;
    let s = &server;
    assert!(s.base.starts_with("https://"));
    assert_eq!(s.get_json("/api/v1/jobs").await["jobs"], json!([]));

    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = s.base.replace("https://", "http://");
    let answer = reqwest::Client::new()
        .get(format!("{plain}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        answer.as_ref().map_or(true, |r| !r.status().is_success()),
        "{answer:?}"
    );
    // A client that does not trust the CA refuses the server.
    assert!(reqwest::Client::new()
        .get(format!("{}/healthz", s.base))
        .send()
        .await
        .is_err());

    // Connections that never start a handshake do not stop others.
    let address = s.base.trim_start_matches("https://").to_string();
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(tokio::net::TcpStream::connect(&address).await.unwrap());
    }
    let began = std::time::Instant::now();
    let r = s.http().get(s.url("/healthz")).send().await.unwrap();
    assert!(r.status().is_success());
    assert!(
        began.elapsed() < Duration::from_secs(3),
        "{:?}",
        began.elapsed()
    );
    drop(silent);

    // gRPC: a verified TLS handshake that agrees on HTTP/2.
    let log = s.server_log();
    let grpc = log
        .lines()
        .find_map(|l| l.split("inference gRPC on ").nth(1))
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                .collect::<String>()
        })
        .expect("the gRPC address in the log");
    let ca = s.ca.clone().unwrap();
    let handshake = std::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &grpc,
            "-alpn",
            "h2",
            "-verify_return_error",
            "-CAfile",
        ])
        .arg(&ca)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&handshake.stdout);
    assert!(handshake.status.success(), "{said}");
    assert!(said.contains("ALPN protocol: h2"), "{said}");
    assert!(said.contains("Verify return code: 0 (ok)"), "{said}");

    // The CLI trusts the CA it is given, and says what is wrong without it.
    common::ok(s.cli(&["status"]));
    let untrusting = std::process::Command::new(env!("CARGO_BIN_EXE_trainyard"))
        .args(["status"])
        .env("TRAINYARD_SERVER", &s.base)
        .env("TRAINYARD_TOKEN", &s.token)
        .env_remove("TRAINYARD_CA_CERT")
        .output()
        .unwrap();
    assert!(!untrusting.status.success());
    let err = String::from_utf8_lossy(&untrusting.stderr);
    assert!(err.contains("cannot reach"), "{err}");

    // A job reaches its run over HTTPS with the CA the server hands it.
    let job = s
        .submit(json!({"command": ["sh", "-c", "case \"$MLFLOW_TRACKING_URI\" in https://*) ;; *) exit 3;; esac; \
            test \"$MLFLOW_TRACKING_SERVER_CERT_PATH\" = \"$TRAINYARD_CA_CERT\" || exit 4; \
            curl -sf --cacert \"$TRAINYARD_CA_CERT\" -H \"Authorization: Bearer $MLFLOW_TRACKING_TOKEN\" \
            \"$MLFLOW_TRACKING_URI/api/2.0/mlflow/runs/get?run_id=$MLFLOW_RUN_ID\""]}))
        .await;
    let id = job["id"].as_str().unwrap();
    let done = s.wait_done(id, LONG).await;
    let log = s.logs(id, "").await;
    assert_eq!(done["state"], "succeeded", "{done} {log}");
    assert!(log.contains(id), "{log}");
}
