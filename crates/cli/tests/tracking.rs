//! Tracking end to end: jobs as runs, metrics from output and from the MLflow client,
//! durability across kill -9, downsampling, and the MLflow API's answers to bad input —
//! a real server process over loopback, on SQLite (or PostgreSQL when
//! TRAINYARD_TEST_DATABASE_URL is set).

mod common;

use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::Server;
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(60);

impl Server {
    async fn mlflow(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .post(&format!("/api/2.0/mlflow/{path}"))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn mlflow_get(&self, path: &str, query: &[(&str, &str)]) -> (u16, Value) {
        let r = self
            .get(&format!("/api/2.0/mlflow/{path}"))
            .query(query)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn new_run(&self) -> String {
        let (status, body) = self
            .mlflow("runs/create", json!({"experiment_id": "0"}))
            .await;
        assert_eq!(status, 200, "{body}");
        body["run"]["info"]["run_id"].as_str().unwrap().to_string()
    }

    /// Every point of a metric, following pages.
    async fn history(&self, run: &str, key: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let mut q = vec![
                ("run_id", run),
                ("metric_key", key),
                ("max_results", "25000"),
            ];
            if !token.is_empty() {
                q.push(("page_token", &token));
            }
            let (status, body) = self.mlflow_get("metrics/get-history", &q).await;
            assert_eq!(status, 200, "{body}");
            out.extend(body["metrics"].as_array().cloned().unwrap_or_default());
            match body["next_page_token"].as_str() {
                Some(t) => token = t.to_string(),
                None => return out,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_is_a_run_with_metrics_read_from_its_output() {
    let server = Server::start().await;
    let script = "for i in $(seq 0 99); do echo \"step=$i loss=$((100 - i)).5 other=1\"; done; \
                  printf 'loss=0.25'";
    let out = server.cli(&[
        "run",
        "--experiment",
        "stdout-demo",
        "--metric",
        "loss",
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jobs: Value = server.get_json("/api/v1/jobs").await;
    let id = jobs["jobs"][0]["id"].as_str().unwrap().to_string();

    let run: Value = server.get_json(&format!("/api/v1/runs/{id}")).await;
    assert_eq!(run["job_id"], id.as_str(), "{run}");
    assert_eq!(run["status"], "FINISHED", "{run}");
    assert!(run["end_time"].as_i64().is_some());
    assert!(
        run["metrics"].get("other").is_none(),
        "undeclared names are ignored: {run}"
    );
    // The last line had no newline and no step: it still counts, one step after 99.
    assert_eq!(run["metrics"]["loss"]["step"], 100, "{run}");
    assert_eq!(run["metrics"]["loss"]["value"], 0.25, "{run}");

    let experiments: Value = server.get_json("/api/v1/experiments").await;
    let exp = experiments["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "stdout-demo")
        .expect("the experiment was created for the job");
    assert_eq!(run["experiment_id"], exp["experiment_id"]);

    let history = server.history(&id, "loss").await;
    assert_eq!(history.len(), 101);
    for (i, point) in history.iter().take(100).enumerate() {
        assert_eq!(point["step"], i as i64);
        assert_eq!(point["value"], (100 - i) as f64 + 0.5);
    }

    // A failing job's run fails; a cancelled one is killed.
    let out = server.cli(&["run", "--", "sh", "-c", "exit 2"]);
    assert_eq!(out.status.code(), Some(2));
    let failed = server
        .submit(json!({"command": ["sh", "-c", "exit 2"]}))
        .await;
    let fid = failed["id"].as_str().unwrap();
    server.wait_done(fid, LONG).await;
    let run: Value = server.get_json(&format!("/api/v1/runs/{fid}")).await;
    assert_eq!(run["status"], "FAILED");
    let sleeper = server.submit(json!({"command": ["sleep", "600"]})).await;
    let sid = sleeper["id"].as_str().unwrap();
    server.wait_state(sid, |s| s == "running", LONG).await;
    let (_, run) = server.mlflow_get("runs/get", &[("run_id", sid)]).await;
    assert_eq!(run["run"]["info"]["status"], "RUNNING");
    server
        .post(&format!("/api/v1/jobs/{sid}/cancel"))
        .send()
        .await
        .unwrap();
    server.wait_done(sid, LONG).await;
    let (_, run) = server.mlflow_get("runs/get", &[("run_id", sid)]).await;
    assert_eq!(run["run"]["info"]["status"], "KILLED");

    // The job's MLflow variables name its run; its token reaches tracking only, and dies
    // with the attempt.
    let sleeper = server
        .submit(json!({"command": ["sh", "-c", "echo \"token $MLFLOW_TRACKING_TOKEN\"; sleep 5"]}))
        .await;
    let sid2 = sleeper["id"].as_str().unwrap();
    server.wait_log(sid2, "token ").await;
    let line = server.logs(sid2, "").await;
    let token = line.split_whitespace().nth(1).unwrap().to_string();
    let http = reqwest::Client::new();
    let jobs = http
        .get(server.url("/api/v1/jobs"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        jobs.status(),
        403,
        "a job's token cannot list or submit jobs"
    );
    let own = http
        .get(server.url("/api/2.0/mlflow/runs/get"))
        .query(&[("run_id", sid2)])
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200, "but it reaches tracking");
    // A token never used while its job ran is refused as soon as the job has ended.
    let printer = server
        .submit(json!({"command": ["sh", "-c",
            "echo \"$MLFLOW_RUN_ID $MLFLOW_EXPERIMENT_ID $MLFLOW_TRACKING_URI $MLFLOW_TRACKING_TOKEN\""]}))
        .await;
    let pid = printer["id"].as_str().unwrap();
    server.wait_done(pid, LONG).await;
    let line = server.logs(pid, "").await;
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields.len(), 4, "{line}");
    assert_eq!(fields[0], pid);
    assert_eq!(fields[1], "0", "the Default experiment");
    assert_eq!(fields[2], server.url(""));
    let r = reqwest::Client::new()
        .get(server.url("/api/2.0/mlflow/runs/get"))
        .query(&[("run_id", pid)])
        .bearer_auth(fields[3])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a finished job's token is revoked");

    // A bad regex or experiment name is refused at submit, naming the field.
    let r = server
        .post("/api/v1/jobs")
        .json(&json!({"command": ["true"], "tracking": {"metric_regex": "(no-groups)"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["field"], "tracking.metric_regex", "{body}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs TRAINYARD_TEST_MLFLOW_PYTHON, a python with mlflow-skinny (scripts/test sets it)"]
async fn the_mlflow_client_in_a_job_logs_into_its_run_with_no_configuration() {
    let python = std::env::var("TRAINYARD_TEST_MLFLOW_PYTHON")
        .expect("TRAINYARD_TEST_MLFLOW_PYTHON names a python that has mlflow");
    let server = Server::start().await;
    let script = "import mlflow\n\
                  for i in range(20):\n    mlflow.log_metric('acc', i / 20, step=i)\n\
                  mlflow.log_param('lr', '0.01')\n\
                  mlflow.set_tag('phase', 'test')\n";
    let job = server
        .submit(
            json!({"command": [python, "-c", script], "tracking": {"experiment": "client-demo"}}),
        )
        .await;
    let id = job["id"].as_str().unwrap();
    let done = server.wait_done(id, Duration::from_secs(120)).await;
    assert_eq!(done["state"], "succeeded", "{}", server.logs(id, "").await);
    let (_, run) = server.mlflow_get("runs/get", &[("run_id", id)]).await;
    let data = &run["run"]["data"];
    assert_eq!(data["params"], json!([{"key": "lr", "value": "0.01"}]));
    assert!(data["tags"]
        .as_array()
        .unwrap()
        .contains(&json!({"key": "phase", "value": "test"})));
    assert_eq!(data["metrics"][0]["key"], "acc");
    assert_eq!(data["metrics"][0]["step"], 19);
    assert_eq!(server.history(id, "acc").await.len(), 20);
    assert_eq!(run["run"]["info"]["status"], "FINISHED");
    // The token the job was given is not in the job's stored environment.
    let stored = server.job(id).await;
    assert!(
        stored["env"].get("MLFLOW_TRACKING_TOKEN").is_none(),
        "{stored}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_metric_writes_survive_kill_9() {
    let mut server = Server::start().await;
    let run = server.new_run().await;
    let acked = Arc::new(AtomicUsize::new(0));
    let writer = {
        let http = reqwest::Client::new();
        let url = server.url("/api/2.0/mlflow/runs/log-batch");
        let token = server.token.clone();
        let run = run.clone();
        let acked = acked.clone();
        tokio::spawn(async move {
            for batch in 0.. {
                let metrics: Vec<Value> = (0..100)
                    .map(|i| json!({"key": "m", "value": i, "timestamp": 1, "step": batch * 100 + i}))
                    .collect();
                let sent = http
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&json!({"run_id": run, "metrics": metrics}))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 200 => acked.store(batch + 1, Ordering::SeqCst),
                    _ => return,
                }
            }
        })
    };
    while acked.load(Ordering::SeqCst) < 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill9();
    let _ = writer.await;
    let acked = acked.load(Ordering::SeqCst);
    server.restart().await;
    let points = server.history(&run, "m").await;
    assert!(
        points.len() >= acked * 100,
        "{} batches acknowledged, {} points after restart",
        acked,
        points.len()
    );
    let (_, got) = server.mlflow_get("runs/get", &[("run_id", &run)]).await;
    let latest = got["run"]["data"]["metrics"][0]["step"].as_i64().unwrap();
    assert!(
        latest >= acked as i64 * 100 - 1,
        "latest step {latest}, acked {acked}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn long_histories_are_downsampled_keeping_extremes() {
    let server = Server::start().await;
    let run = server.new_run().await;
    let n = 50_000;
    for start in (0..n).step_by(1000) {
        let metrics: Vec<Value> = (start..start + 1000)
            .map(|s| {
                let v = match s {
                    31_337 => 1000.0,
                    40_001 => -1000.0,
                    _ => (s as f64 / 300.0).sin(),
                };
                json!({"key": "wave", "value": v, "timestamp": 1_000 + s, "step": s})
            })
            .collect();
        let (status, body) = server
            .mlflow("runs/log-batch", json!({"run_id": run, "metrics": metrics}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let view: Value = server
        .get_json(&format!("/api/v1/runs/{run}/metrics/wave?max_points=500"))
        .await;
    assert_eq!(view["total_points"], n);
    assert_eq!(view["sampled"], true);
    let points = view["points"].as_array().unwrap();
    assert!(
        points.len() <= 500 && points.len() >= 200,
        "{}",
        points.len()
    );
    assert!(points.contains(&json!({"step": 31_337, "timestamp": 32_337, "value": 1000.0})));
    assert!(points.contains(&json!({"step": 40_001, "timestamp": 41_001, "value": -1000.0})));
    let steps: Vec<i64> = points.iter().map(|p| p["step"].as_i64().unwrap()).collect();
    assert!(
        steps.windows(2).all(|w| w[0] < w[1]),
        "points in step order"
    );
    // A short history comes back whole.
    let whole: Value = server
        .get_json(&format!(
            "/api/v1/runs/{run}/metrics/wave?max_points=100000"
        ))
        .await;
    assert_eq!(whole["sampled"], false);
    assert_eq!(whole["points"].as_array().unwrap().len(), n as usize);
    // Logged without steps (all step 0): cut along time, the spike still shows.
    for start in (0..5_000).step_by(1000) {
        let metrics: Vec<Value> = (start..start + 1000)
            .map(|i| {
                json!({"key": "flat", "value": if i == 2_345 { 7.0 } else { 0.5 },
                            "timestamp": 10_000 + i, "step": 0})
            })
            .collect();
        let (status, body) = server
            .mlflow("runs/log-batch", json!({"run_id": run, "metrics": metrics}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let flat = server
        .get_json(&format!("/api/v1/runs/{run}/metrics/flat?max_points=100"))
        .await;
    assert_eq!(flat["sampled"], true);
    let points = flat["points"].as_array().unwrap();
    assert!(
        points.len() <= 100 && points.len() >= 50,
        "{}",
        points.len()
    );
    assert!(points.contains(&json!({"step": 0, "timestamp": 12_345, "value": 7.0})));
    for (path, code) in [
        (format!("/api/v1/runs/{run}/metrics/nope"), 404),
        (format!("/api/v1/runs/{run}/metrics/wave?max_points=1"), 400),
        ("/api/v1/runs/zzz/metrics/wave".to_string(), 404),
    ] {
        let r = server.get(&path).send().await.unwrap();
        assert_eq!(r.status().as_u16(), code, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mlflow_caller_errors_are_4xx_with_mlflow_codes() {
    let server = Server::start().await;
    let run = server.new_run().await;
    let too_many: Vec<Value> = (0..1001)
        .map(|i| json!({"key": "k", "value": 1, "timestamp": 1, "step": i}))
        .collect();
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "runs/log-batch",
            json!({"run_id": run, "metrics": too_many}),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "runs/log-metric",
            json!({"run_id": run, "key": "a", "value": "x", "timestamp": 1}),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "runs/log-metric",
            json!({"run_id": run, "key": "../a", "value": 1, "timestamp": 1}),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "runs/log-metric",
            json!({"run_id": run, "key": "a", "value": 1}),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "runs/log-metric",
            json!({"run_id": "0123456789abcdef0123456789abcdef", "key": "a", "value": 1, "timestamp": 1}),
            404,
            "RESOURCE_DOES_NOT_EXIST",
        ),
        (
            "runs/log-parameter",
            json!({"run_id": run, "key": "p", "value": "1"}),
            200,
            "",
        ),
        (
            "runs/log-parameter",
            json!({"run_id": run, "key": "p", "value": "2"}),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "runs/search",
            json!({"experiment_ids": ["0"], "filter": "metrics.a > 1 OR metrics.b > 1"}),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "runs/search",
            json!({"experiment_ids": ["0"], "page_token": "garbage"}),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "runs/search",
            json!({"experiment_ids": ["0"], "max_results": 50001}),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "experiments/create",
            json!({"name": "Default"}),
            400,
            "RESOURCE_ALREADY_EXISTS",
        ),
        (
            "experiments/create",
            json!({"name": ""}),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "experiments/create",
            json!({"name": 5}),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "registered-models/create",
            json!({"name": "a/b"}),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        (
            "model-versions/transition-stage",
            json!({"name": "x", "version": "1", "stage": "Nope", "archive_existing_versions": false}),
            400,
            "INVALID_PARAMETER_VALUE",
        ),
        ("no/such/endpoint", json!({}), 404, "ENDPOINT_NOT_FOUND"),
    ];
    for (path, body, status, code) in cases {
        let (got, answer) = server.mlflow(path, body.clone()).await;
        assert_eq!(got, status, "{path} {body}: {answer}");
        if !code.is_empty() {
            assert_eq!(answer["error_code"], code, "{path}: {answer}");
            assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }
    let (_, answer) = server
        .mlflow(
            "runs/log-parameter",
            json!({"run_id": run, "key": "p", "value": "2"}),
        )
        .await;
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .starts_with("Changing param values is not allowed. Param with key='p' was already logged with value='1'"),
        "{answer}"
    );
    // Body-level mistakes.
    let raw = |ct: Option<&str>, body: &'static str| {
        let mut r = server.post("/api/2.0/mlflow/experiments/create").body(body);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r.send()
    };
    for (ct, body) in [
        (Some("application/json"), "{not json"),
        (None, "{\"name\": \"x\"}"),
        (Some("text/plain"), "{\"name\": \"x\"}"),
        (Some("application/json"), "[1, 2]"),
    ] {
        let r = raw(ct, body).await.unwrap();
        assert_eq!(r.status(), 400, "{ct:?} {body}");
        let answer: Value = r.json().await.unwrap();
        assert!(answer["error_code"].is_string(), "{answer}");
    }
    // A deleted run refuses writes with 400.
    server.mlflow("runs/delete", json!({"run_id": run})).await;
    let (got, answer) = server
        .mlflow(
            "runs/log-metric",
            json!({"run_id": run, "key": "a", "value": 1, "timestamp": 1}),
        )
        .await;
    assert_eq!(
        (got, answer["error_code"].as_str()),
        (400, Some("INVALID_PARAMETER_VALUE"))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn artifacts_stay_inside_the_root_and_cut_uploads_leave_nothing() {
    let server = Server::start().await;
    let base = "/api/2.0/mlflow-artifacts/artifacts";
    let put = |path: String, body: &'static [u8]| {
        server.http_put(&format!("{base}/{path}")).body(body).send()
    };
    assert_eq!(
        put("0/r/artifacts/a/b.txt".into(), b"hello")
            .await
            .unwrap()
            .status(),
        200
    );
    let got = server
        .get(&format!("{base}/0/r/artifacts/a/b.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(
        got.headers()["content-disposition"],
        "attachment; filename=b.txt"
    );
    assert_eq!(got.text().await.unwrap(), "hello");
    let ranged = server
        .get(&format!("{base}/0/r/artifacts/a/b.txt"))
        .header("range", "bytes=1-3")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.text().await.unwrap(), "ell");
    let list: Value = server
        .get(base)
        .query(&[("path", "0/r/artifacts")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list, json!({"files": [{"path": "a", "is_dir": true}]}));

    // Escapes, spelled every way, are refused with 400 before anything is stored. Sent
    // over a raw socket: HTTP clients normalise `..` away before sending.
    for path in [
        "0/../../etc/passwd",
        "0/%2e%2e/%2e%2e/x",
        "0/%252e%252e/x",
        "0/a%5c..%5cb",
        "%2Fetc%2Fpasswd",
        "C:/x",
    ] {
        let (status, body) = server.raw_request("PUT", &format!("{base}/{path}"), b"x", None);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body.contains("INVALID_PARAMETER_VALUE") || body.contains("Invalid path"),
            "{body}"
        );
    }

    // A body cut off mid-way: the upload fails and no file (or folder) appears.
    let (status, _) = server.raw_request(
        "PUT",
        &format!("{base}/0/r/artifacts/cut/big.bin"),
        &[7u8; 1000],
        Some(100_000),
    );
    assert_ne!(status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = server
        .get(&format!("{base}/0/r/artifacts/cut/big.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 404);
    let answer: Value = got.json().await.unwrap();
    assert_eq!(answer["error_code"], "RESOURCE_DOES_NOT_EXIST");
    let list: Value = server
        .get(base)
        .query(&[("path", "0/r/artifacts")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        list,
        json!({"files": [{"path": "a", "is_dir": true}]}),
        "no `cut` folder"
    );
}

impl Server {
    /// One HTTP/1.1 request over a plain socket, exactly as written; with
    /// `claimed_length`, the header promises more than is sent and the socket is closed.
    /// Returns the status (0 when the server answered nothing) and the body text.
    fn raw_request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        claimed_length: Option<usize>,
    ) -> (u16, String) {
        let addr = self.url("").trim_start_matches("http://").to_string();
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.token,
            claimed_length.unwrap_or(body.len())
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        if claimed_length.is_some() {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer);
        let text = String::from_utf8_lossy(&answer).to_string();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn histories_page_in_timestamp_order_whatever_the_steps() {
    let server = Server::start().await;
    let run = server.new_run().await;
    // Steps go up while timestamps go down (and one step repeats): not the primary key's
    // order, so pages come from the sorted path; a second key is ordinary.
    let odd: Vec<Value> = (0..30)
        .map(|i| json!({"key": "odd", "value": i, "timestamp": 1000 - i, "step": i / 2}))
        .collect();
    let plain: Vec<Value> = (0..30)
        .map(|i| json!({"key": "plain", "value": i, "timestamp": 1000 + i, "step": i}))
        .collect();
    for batch in [odd, plain] {
        let (status, body) = server
            .mlflow("runs/log-batch", json!({"run_id": run, "metrics": batch}))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    for (key, expect_ts) in [
        ("odd", (971..=1000).collect::<Vec<i64>>()),
        ("plain", (1000..1030).collect()),
    ] {
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let mut q = vec![
                ("run_id", run.as_str()),
                ("metric_key", key),
                ("max_results", "7"),
            ];
            if !token.is_empty() {
                q.push(("page_token", &token));
            }
            let (status, body) = server.mlflow_get("metrics/get-history", &q).await;
            assert_eq!(status, 200, "{body}");
            let page = body["metrics"].as_array().unwrap();
            assert!(page.len() <= 7);
            seen.extend(page.iter().map(|m| m["timestamp"].as_i64().unwrap()));
            match body["next_page_token"].as_str() {
                Some(t) => token = t.to_string(),
                None => break,
            }
        }
        assert_eq!(seen, expect_ts, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn multipart_uploads_become_visible_only_when_complete() {
    let server = Server::start().await;
    let mpu = "/api/2.0/mlflow-artifacts/mpu";
    let folder = "0/r/artifacts/model";
    let path = format!("{folder}/weights.bin");
    let created: Value = server
        .post(&format!("{mpu}/create/{folder}"))
        .json(&json!({"path": "/local/weights.bin", "num_parts": 3}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["upload_id"].as_str().unwrap().to_string();
    let credentials = created["credentials"].as_array().unwrap();
    assert_eq!(credentials.len(), 3);
    // Parts arrive in any order, authorised by the headers the server handed out.
    let http = reqwest::Client::new();
    for (i, body) in [(2, "bbb"), (3, "cc"), (1, "aaaa")] {
        let cred = &credentials[i - 1];
        assert_eq!(cred["part_number"], i);
        let mut req = http.put(cred["url"].as_str().unwrap()).body(body);
        for (k, v) in cred["headers"].as_object().unwrap() {
            req = req.header(k.as_str(), v.as_str().unwrap());
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.headers().contains_key("etag"));
    }
    let file = format!("/api/2.0/mlflow-artifacts/artifacts/{path}");
    assert_eq!(
        server.get(&file).send().await.unwrap().status(),
        404,
        "not before complete"
    );
    // Completing with a part that was never sent fails and publishes nothing.
    let r = server
        .post(&format!("{mpu}/complete/{folder}"))
        .json(&json!({"upload_id": id, "path": "/local/weights.bin",
                      "parts": [{"part_number": 1}, {"part_number": 4}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(server.get(&file).send().await.unwrap().status(), 404);
    let parts: Vec<Value> = (1..=3)
        .map(|n| json!({"part_number": n, "etag": "x"}))
        .collect();
    let r = server
        .post(&format!("{mpu}/complete/{folder}"))
        .json(&json!({"upload_id": id, "path": "/local/weights.bin", "parts": parts}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = server.get(&file).send().await.unwrap();
    assert_eq!(got.text().await.unwrap(), "aaaabbbcc");
    // The upload is gone once complete; unknown ids are 404s.
    let r = server
        .post(&format!("{mpu}/complete/{folder}"))
        .json(&json!({"upload_id": id, "path": "/local/weights.bin", "parts": parts}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = server
        .post(&format!("{mpu}/create/../escape"))
        .json(&json!({"num_parts": 1}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
}
