//! Jobs end to end: a real server process, real HTTP over loopback, real child processes,
//! a real SQLite file (or PostgreSQL when TRAINYARD_TEST_DATABASE_URL is set).

mod common;

use std::time::{Duration, Instant};

use common::{job, peak_rss_kb, pid_alive, rss_kb, Server, ServerOptions};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread")]
async fn run_streams_output_and_exits_with_the_jobs_code() {
    let server = Server::start().await;
    let out = server.cli(&["run", "--cpus", "1", "--", "sh", "-c", "echo hi; exit 3"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let listed = server.cli(&["jobs", "ls", "-o", "json"]);
    let page: Value = serde_json::from_slice(&listed.stdout).unwrap();
    let id = page["jobs"][0]["id"].as_str().unwrap().to_string();
    let shown = server.cli(&["jobs", "show", &id]);
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(text.contains("state:       failed"), "{text}");
    assert!(text.contains("exit code:   3"), "{text}");
    let job = server.job(&id).await;
    assert_eq!(job["exit_code"], 3);
    assert_eq!(job["exit_reason"], "exited");
    assert_eq!(job["attempt"], 1);
    assert!(job["host"].as_str().is_some());

    let ok = server.cli(&["run", "--", "true"]);
    assert_eq!(ok.status.code(), Some(0));
}

/// Start and end times as the processes themselves saw them (nanoseconds).
fn own_interval(log: &str) -> (u128, u128) {
    let field = |name: &str| -> u128 {
        log.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no `{name}` in {log:?}"))
            .trim()
            .parse()
            .unwrap()
    };
    (field("start="), field("end="))
}

fn max_overlap(intervals: &[(u128, u128)]) -> usize {
    let mut events: Vec<(u128, i32)> = Vec::new();
    for (s, e) in intervals {
        events.push((*s, 1));
        events.push((*e, -1));
    }
    // At equal times, ends come before starts.
    events.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, d) in events {
        now += d;
        most = most.max(now);
    }
    most as usize
}

#[tokio::test(flavor = "multi_thread")]
async fn forty_one_cpu_jobs_never_exceed_two_cpus() {
    let server = Server::start_with(ServerOptions {
        cpus: 2.0,
        ..Default::default()
    })
    .await;
    let script = "echo start=$(date +%s%N); sleep 0.2; echo end=$(date +%s%N)";
    let submits = (0..40).map(|i| {
        let server = &server;
        async move {
            server
                .submit(json!({"name": format!("c{i}"), "command": ["sh", "-c", script], "resources": {"cpus": 1}}))
                .await
        }
    });
    let jobs: Vec<Value> = futures::future::join_all(submits).await;
    let mut intervals = Vec::new();
    let mut api_intervals = Vec::new();
    for j in &jobs {
        let id = j["id"].as_str().unwrap();
        let done = server.wait_done(id, LONG).await;
        assert_eq!(done["state"], "succeeded", "{done}");
        intervals.push(own_interval(&server.logs(id, "").await));
        api_intervals.push((
            done["started_at_ms"].as_u64().unwrap() as u128,
            done["finished_at_ms"].as_u64().unwrap() as u128,
        ));
    }
    assert_eq!(max_overlap(&intervals), 2, "processes' own timestamps");
    assert!(max_overlap(&api_intervals) <= 2, "recorded timestamps");
}

#[tokio::test(flavor = "multi_thread")]
async fn fake_gpus_are_handed_out_exclusively() {
    let server = Server::start_with(ServerOptions {
        cpus: 8.0,
        gpus: 2,
        ..Default::default()
    })
    .await;
    let script = "echo gpu=$CUDA_VISIBLE_DEVICES; echo start=$(date +%s%N); sleep 0.3; echo end=$(date +%s%N)";
    let mut ids = Vec::new();
    for _ in 0..6 {
        let j = server
            .submit(json!({"command": ["sh", "-c", script], "resources": {"cpus": 0.5, "gpus": 1}}))
            .await;
        ids.push(j["id"].as_str().unwrap().to_string());
    }
    let cpu_only = server
        .submit(json!({"command": ["sh", "-c", "echo gpu=[$CUDA_VISIBLE_DEVICES]"]}))
        .await;
    let mut by_gpu: std::collections::HashMap<String, Vec<(u128, u128)>> = Default::default();
    for id in &ids {
        let done = server.wait_done(id, LONG).await;
        assert_eq!(done["state"], "succeeded");
        let log = server.logs(id, "").await;
        let gpu = log
            .lines()
            .find_map(|l| l.strip_prefix("gpu="))
            .unwrap()
            .to_string();
        assert!(gpu == "0" || gpu == "1", "one fake GPU each, got {gpu:?}");
        assert_eq!(done["gpus"], json!([gpu.parse::<u32>().unwrap()]));
        by_gpu.entry(gpu).or_default().push(own_interval(&log));
    }
    for (gpu, intervals) in &by_gpu {
        assert_eq!(max_overlap(intervals), 1, "GPU {gpu} shared");
    }
    server
        .wait_done(cpu_only["id"].as_str().unwrap(), LONG)
        .await;
    assert_eq!(
        server.logs(cpu_only["id"].as_str().unwrap(), "").await,
        "gpu=[]\n"
    );

    let r = server
        .post("/api/v1/jobs")
        .json(&json!({"command": ["true"], "resources": {"gpus": 3}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unschedulable");
    assert_eq!(body["error"]["field"], "resources.gpus");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_leaves_no_process_of_the_tree_alive() {
    let server = Server::start().await;
    let script =
        "sleep 300 & echo child=$!; setsid sleep 301 & echo escaped=$!; echo main=$$; wait";
    let j = server.submit(job(&["sh", "-c", script])).await;
    let id = j["id"].as_str().unwrap();
    let deadline = Instant::now() + LONG;
    let log = loop {
        let log = server.logs(id, "").await;
        if log.contains("main=") && log.contains("escaped=") {
            break log;
        }
        assert!(
            Instant::now() < deadline,
            "job never printed its pids: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let pids: Vec<u32> = log
        .lines()
        .filter_map(|l| l.split_once('=').and_then(|(_, p)| p.trim().parse().ok()))
        .collect();
    assert_eq!(pids.len(), 3, "{log}");
    assert!(pids.iter().all(|p| pid_alive(*p)));

    let r = server
        .post(&format!("/api/v1/jobs/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let done = server.wait_done(id, LONG).await;
    assert_eq!(done["state"], "cancelled", "{done}");
    assert_eq!(done["exit_reason"], "cancelled");
    for pid in pids {
        assert!(!pid_alive(pid), "pid {pid} survived the cancel");
    }
    // A finished job cannot be cancelled again.
    let r = server
        .post(&format!("/api/v1/jobs/{id}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_of_a_queued_job_is_immediate() {
    let server = Server::start_with(ServerOptions {
        cpus: 1.0,
        ..Default::default()
    })
    .await;
    let blocker = server.submit(job(&["sleep", "30"])).await;
    let waiting = server.submit(job(&["echo", "never"])).await;
    let id = waiting["id"].as_str().unwrap();
    assert_eq!(server.job(id).await["state"], "queued");
    let r: Value = server
        .post(&format!("/api/v1/jobs/{id}/cancel"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["state"], "cancelled");
    assert_eq!(r["attempt"], 0);
    server
        .post(&format!(
            "/api/v1/jobs/{}/cancel",
            blocker["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    server
        .wait_done(blocker["id"].as_str().unwrap(), LONG)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn timeouts_end_the_job() {
    let server = Server::start_with(ServerOptions {
        kill_grace_s: 1.0,
        ..Default::default()
    })
    .await;
    let started = Instant::now();
    let j = server
        .submit(json!({"command": ["sh", "-c", "trap '' TERM; echo waiting; sleep 30"], "timeout_s": 1}))
        .await;
    let done = server.wait_done(j["id"].as_str().unwrap(), LONG).await;
    assert_eq!(done["state"], "failed");
    assert_eq!(done["exit_reason"], "timeout");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    let log = server.logs(j["id"].as_str().unwrap(), "").await;
    assert!(
        log.contains("waiting") && log.contains("timed out after 1 s"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_attempts_are_retried_per_policy() {
    let server = Server::start().await;
    let j = server
        .submit(json!({"command": ["sh", "-c", "echo try; exit 1"], "max_retries": 2}))
        .await;
    let id = j["id"].as_str().unwrap();
    let done = server.wait_done(id, LONG).await;
    assert_eq!(done["state"], "failed");
    assert_eq!(done["attempt"], 3);
    assert_eq!(done["exit_code"], 1);
    let log = server.logs(id, "").await;
    assert_eq!(log.matches("try\n").count(), 3, "{log}");
    assert!(log.contains("--- trainyard: attempt 3 ---"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_program_fails_with_a_clear_reason() {
    let server = Server::start().await;
    let j = server.submit(job(&["/no/such/program", "x"])).await;
    let id = j["id"].as_str().unwrap();
    let done = server.wait_done(id, LONG).await;
    assert_eq!(done["state"], "failed");
    assert_eq!(done["exit_reason"], "spawn_failed");
    assert_eq!(done["exit_code"], 127);
    let log = server.logs(id, "").await;
    assert!(log.contains("cannot start `/no/such/program`"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_read_whole_from_an_offset_by_tail_and_followed() {
    let server = Server::start().await;
    // 3 MB in lines, then a pause, so following sees output arrive while the job runs.
    let script = "i=0; while [ $i -lt 30000 ]; do echo line-$i-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; i=$((i+1)); done; sleep 1; echo last";
    let j = server.submit(job(&["sh", "-c", script])).await;
    let id = j["id"].as_str().unwrap();
    let followed = server.logs(id, "follow=true").await;
    let lines: Vec<&str> = followed.lines().collect();
    assert_eq!(lines.len(), 30001);
    assert!(lines[0].starts_with("line-0-") && lines[29999].starts_with("line-29999-"));
    assert_eq!(lines[30000], "last");
    let done = server.wait_done(id, LONG).await;
    assert_eq!(done["state"], "succeeded");

    let whole = server.logs(id, "").await;
    assert_eq!(whole, followed);
    let from = server
        .logs(id, &format!("offset={}", whole.len() - 5))
        .await;
    assert_eq!(from, "last\n");
    let tail = server.logs(id, "tail=2").await;
    assert!(
        tail.starts_with("line-29999-") && tail.ends_with("last\n"),
        "{tail}"
    );
    // The log lives in blobs, in several chunks, and the spool is gone.
    let chunks = std::fs::read_dir(server.data_dir.join(format!("blobs/jobs/{id}/log")))
        .unwrap()
        .count();
    assert!(chunks >= 1);
    server.wait_spool_removed(id).await;
    let cli = server.cli(&["jobs", "logs", id, "--tail", "1"]);
    assert_eq!(String::from_utf8_lossy(&cli.stdout), "last\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_filters_by_state_and_label_and_pages_newest_first() {
    let server = Server::start().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let j = server
            .submit(json!({"command": ["true"], "labels": {"team": if i % 2 == 0 { "a" } else { "b" }}}))
            .await;
        ids.push(j["id"].as_str().unwrap().to_string());
    }
    for id in &ids {
        server.wait_done(id, LONG).await;
    }
    let page: Value = server
        .get("/api/v1/jobs?limit=2")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["jobs"].as_array().unwrap().len(), 2);
    assert_eq!(page["jobs"][0]["id"], ids[4].as_str());
    let cursor = page["next_cursor"].as_str().unwrap();
    let page2: Value = server
        .get(&format!("/api/v1/jobs?limit=2&cursor={cursor}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page2["jobs"][0]["id"], ids[2].as_str());
    let team_a: Value = server
        .get("/api/v1/jobs?label=team=a&state=succeeded")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(team_a["jobs"].as_array().unwrap().len(), 3);
    assert!(team_a["next_cursor"].is_null());
    let running: Value = server
        .get("/api/v1/jobs?state=running")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(running["jobs"].as_array().unwrap().is_empty());
}

async fn expect_error(r: reqwest::Response, status: u16, code: &str, field: Option<&str>) {
    let got = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    assert_eq!(got, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    if let Some(field) = field {
        assert_eq!(body["error"]["field"], field, "{body}");
    }
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_4xx_naming_the_field() {
    let server = Server::start().await;
    // (body, status, code, field)
    let cases: &[(&str, u16, &str, Option<&str>)] = &[
        (
            r#"{"command": ["true"]"#,
            400,
            "malformed_json",
            Some("body"),
        ),
        (
            r#"{"command": ["true"], "resources": {"cpus": "x"}}"#,
            400,
            "invalid_field",
            Some("resources.cpus"),
        ),
        (
            r#"{"command": ["true"], "resources": {"cpus": 0}}"#,
            400,
            "invalid_field",
            Some("resources.cpus"),
        ),
        (
            r#"{"command": ["true"], "resources": {"cpus": -1}}"#,
            400,
            "invalid_field",
            Some("resources.cpus"),
        ),
        (
            r#"{"command": ["true"], "resources": {"gpus": -1}}"#,
            400,
            "invalid_field",
            Some("resources.gpus"),
        ),
        (
            r#"{"command": ["true"], "resources": {"memory_mb": 0}}"#,
            400,
            "invalid_field",
            Some("resources.memory_mb"),
        ),
        (r#"{"command": []}"#, 400, "invalid_field", Some("command")),
        (
            r#"{"command": ["true"], "pool": "nowhere"}"#,
            400,
            "invalid_field",
            Some("pool"),
        ),
        (
            r#"{"command": ["true"], "pool": "../etc"}"#,
            400,
            "invalid_field",
            Some("pool"),
        ),
        (r#"{"name": "x"}"#, 400, "invalid_field", Some("command")),
        // A built-in task is one of the platform's own, never its supervisor or a path, and
        // never together with a command.
        (
            r#"{"task": {"kind": "shim", "args": ["--dir", "/"]}}"#,
            400,
            "invalid_field",
            None,
        ),
        (
            r#"{"task": {"kind": "/bin/sh"}}"#,
            400,
            "invalid_field",
            None,
        ),
        (
            r#"{"command": ["true"], "task": {"kind": "train"}}"#,
            400,
            "invalid_field",
            Some("task"),
        ),
        (
            r#"{"task": {"kind": "eval", "args": ["a\u0000b"]}}"#,
            400,
            "invalid_field",
            Some("task.args[0]"),
        ),
        (
            r#"{"command": "true"}"#,
            400,
            "invalid_field",
            Some("command"),
        ),
        (
            r#"{"command": ["true"], "timeout_s": 0}"#,
            400,
            "invalid_field",
            Some("timeout_s"),
        ),
        (
            r#"{"command": ["true"], "timeout_s": 18446744073709551615}"#,
            400,
            "invalid_field",
            Some("timeout_s"),
        ),
        (
            r#"{"command": ["true"], "name": "a\u0000b"}"#,
            400,
            "invalid_field",
            Some("name"),
        ),
        (
            r#"{"command": ["true"], "bogus": 1}"#,
            400,
            "invalid_field",
            None,
        ),
        ("[1, 2]", 400, "invalid_field", None),
        (
            r#"{"command": ["true"], "resources": {"cpus": 64}}"#,
            422,
            "unschedulable",
            Some("resources.cpus"),
        ),
    ];
    let post = |body: String| {
        server
            .post("/api/v1/jobs")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    for (body, status, code, field) in cases {
        expect_error(post(body.to_string()).await.unwrap(), *status, code, *field).await;
    }
    // The server closes a connection whose body it refused to read: use one of its own,
    // so the pooled connection of the requests below is not the one being closed.
    let huge = format!("{{\"command\": [\"{}\"]}}", "a".repeat((1 << 20) + 1024));
    let r = reqwest::Client::new()
        .post(server.url("/api/v1/jobs"))
        .bearer_auth(&server.token)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    expect_error(r, 413, "body_too_large", None).await;
    let r = server.post("/api/v1/jobs").body("{}").send().await.unwrap();
    expect_error(r, 415, "unsupported_media_type", None).await;

    // (method, path, status, code, field)
    let cases: &[(&str, &str, u16, &str, Option<&str>)] = &[
        ("GET", "/api/v1/jobs/nope", 404, "job_not_found", Some("id")),
        (
            "POST",
            "/api/v1/jobs/nope/cancel",
            404,
            "job_not_found",
            Some("id"),
        ),
        (
            "GET",
            "/api/v1/jobs/nope/logs",
            404,
            "job_not_found",
            Some("id"),
        ),
        (
            "GET",
            "/api/v1/jobs?state=sleeping",
            400,
            "invalid_field",
            Some("state"),
        ),
        (
            "GET",
            "/api/v1/jobs?limit=0",
            400,
            "invalid_field",
            Some("limit"),
        ),
        (
            "GET",
            "/api/v1/jobs?limit=-3",
            400,
            "invalid_query",
            Some("limit"),
        ),
        (
            "GET",
            "/api/v1/jobs?label=nolabel",
            400,
            "invalid_field",
            Some("label"),
        ),
        (
            "GET",
            "/api/v1/jobs?cursor=%00",
            400,
            "invalid_field",
            Some("cursor"),
        ),
        ("GET", "/api/v1/jobs/%00", 404, "job_not_found", Some("id")),
        ("GET", "/api/v1/nothing", 404, "route_not_found", None),
        ("DELETE", "/api/v1/jobs", 405, "method_not_allowed", None),
        // A path parameter that is not UTF-8 once decoded (was a plain-text 400).
        ("GET", "/api/v1/jobs/%ff", 400, "invalid_field", Some("id")),
        (
            "GET",
            "/api/v1/runs/%ff%fe",
            400,
            "invalid_field",
            Some("id"),
        ),
        // A known route called with a method it does not take.
        ("DELETE", "/api/v1/studies", 405, "method_not_allowed", None),
    ];
    for (method, path, status, code, field) in cases {
        let request = match *method {
            "GET" => server.get(path),
            "POST" => server.post(path),
            _ => server.delete(path),
        };
        expect_error(request.send().await.unwrap(), *status, code, *field).await;
    }

    // Names and label values are printed in other members' terminals: no control
    // characters (a newline faked log lines, an escape drove the terminal).
    for (body, field) in [
        (
            json!({"command": ["true"], "name": "evil\nINFO fake \u{1b}[31mRED\r"}),
            "name",
        ),
        (
            json!({"command": ["true"], "labels": {"k": "v\n\u{1b}]0;title\u{7}"}}),
            "labels.k",
        ),
    ] {
        let r = server
            .post("/api/v1/jobs")
            .json(&body)
            .send()
            .await
            .unwrap();
        expect_error(r, 400, "invalid_field", Some(field)).await;
    }

    // A built-in task whose arguments its worker would refuse is refused at submit.
    let r = server
        .post("/api/v1/jobs")
        .json(&serde_json::json!({"task": {"kind": "compress", "args": [
            "--model", "nope:1", "--eval", "x", "--max-accuracy-drop", "0.01", "--prune", "1.5"]}}))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "invalid_field", Some("task.args")).await;
    let r = server
        .post("/api/v1/jobs")
        .json(&serde_json::json!({"task": {"kind": "eval", "args": ["--bogus"]}}))
        .send()
        .await
        .unwrap();
    expect_error(r, 400, "invalid_field", Some("task.args")).await;

    // The same on an MLflow route (was 403 `needs_owner` from the access table): MLflow's
    // router and error shape answer it.
    let r = server
        .post("/api/2.0/mlflow/runs/get")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error_code"], "ENDPOINT_NOT_FOUND", "{body}");
    // A path parameter that is not UTF-8 on an MLflow route: MLflow's error shape.
    let r = server
        .get("/api/2.0/mlflow/logged-models/%ff")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error_code"], "INVALID_PARAMETER_VALUE", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("UTF-8"),
        "{body}"
    );

    let anonymous = reqwest::Client::new();
    expect_error(
        anonymous
            .get(server.url("/api/v1/jobs"))
            .send()
            .await
            .unwrap(),
        401,
        "unauthorized",
        None,
    )
    .await;
    expect_error(
        anonymous
            .get(server.url("/api/v1/jobs"))
            .bearer_auth("ty_wrong")
            .send()
            .await
            .unwrap(),
        401,
        "unauthorized",
        None,
    )
    .await;
    expect_error(
        anonymous.get(server.url("/metrics")).send().await.unwrap(),
        401,
        "unauthorized",
        None,
    )
    .await;
    assert_eq!(
        anonymous
            .get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // Nothing above created a job, and the server is still fine.
    let page: Value = server
        .get("/api/v1/jobs")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(page["jobs"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn health_readiness_metrics_and_openapi() {
    let server = Server::start().await;
    let j = server.submit(job(&["true"])).await;
    server.wait_done(j["id"].as_str().unwrap(), LONG).await;
    let anonymous = reqwest::Client::new();
    let ready: Value = anonymous
        .get(server.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    let metrics = server
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "trainyard_jobs{state=\"succeeded\"} 1",
        "trainyard_queue_length 0",
        "trainyard_job_submit_to_start_seconds_count 1",
        "trainyard_http_request_duration_seconds_count{method=\"POST\",route=\"/api/v1/jobs\",status=\"201\"} 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }
    let doc: Value = anonymous
        .get(server.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/jobs",
        "/api/v1/jobs/{id}",
        "/api/v1/jobs/{id}/cancel",
        "/api/v1/jobs/{id}/logs",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the OpenAPI document"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_and_restart_reconciles_every_job() {
    let mut server = Server::start_with(ServerOptions {
        cpus: 2.0,
        ..Default::default()
    })
    .await;
    // a: ends while the server is down; b: still running at restart; c: queued behind them.
    let a = server
        .submit(job(&[
            "sh",
            "-c",
            "echo a-start; sleep 2; echo a-end; exit 4",
        ]))
        .await;
    let b = server
        .submit(job(&["sh", "-c", "echo b-start; sleep 6; echo b-end"]))
        .await;
    let c = server.submit(job(&["sh", "-c", "echo c-ran"])).await;
    let id = |v: &Value| v["id"].as_str().unwrap().to_string();
    let (a, b, c) = (id(&a), id(&b), id(&c));
    server.wait_log(&a, "a-start").await;
    server.wait_log(&b, "b-start").await;
    assert_eq!(server.job(&c).await["state"], "queued");
    server.kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.restart().await;

    let a_done = server.wait_done(&a, LONG).await;
    assert_eq!(a_done["state"], "failed", "{a_done}");
    assert_eq!(a_done["exit_code"], 4);
    assert_eq!(server.logs(&a, "").await, "a-start\na-end\n");
    let b_running = server.job(&b).await;
    assert_eq!(
        b_running["state"], "running",
        "b was re-adopted: {b_running}"
    );
    let b_done = server.wait_done(&b, LONG).await;
    assert_eq!(b_done["state"], "succeeded", "{b_done}");
    assert_eq!(b_done["attempt"], 1);
    assert_eq!(server.logs(&b, "").await, "b-start\nb-end\n");
    let c_done = server.wait_done(&c, LONG).await;
    assert_eq!(c_done["state"], "succeeded");
    assert_eq!(server.logs(&c, "").await, "c-ran\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vanished_supervisor_is_failed_as_lost_and_retried() {
    let mut server = Server::start().await;
    let j = server
        .submit(json!({"command": ["sh", "-c", "echo attempt-$TRAINYARD_JOB_ATTEMPT; sleep 3"], "max_retries": 1}))
        .await;
    let id = j["id"].as_str().unwrap().to_string();
    // Wait until the command itself runs (its supervisor is then certainly up).
    server.wait_log(&id, "attempt-1").await;
    server.kill9();
    // Simulate a machine reboot: the supervisor and its whole tree are gone, no outcome recorded.
    let pid_file = server
        .data_dir
        .join(format!("executor/{id}/attempt-1.pid.json"));
    let pid: Value = serde_json::from_slice(&std::fs::read(&pid_file).unwrap()).unwrap();
    let shim = pid["pid"].as_u64().unwrap() as u32;
    let children = trainyard_compute::shim::children_of(shim);
    assert_eq!(children.len(), 1, "the supervisor runs the command");
    unsafe {
        libc::kill(shim as i32, libc::SIGKILL);
        // The command's process group (the command leads it).
        libc::kill(-(children[0] as i32), libc::SIGKILL);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.restart().await;
    let done = server.wait_done(&id, LONG).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempt"], 2);
    let log = server.logs(&id, "").await;
    assert!(log.contains("attempt-2"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_server_and_leaves_jobs_to_be_readopted() {
    let mut server = Server::start().await;
    let j = server
        .submit(job(&["sh", "-c", "echo before; sleep 9; echo after"]))
        .await;
    let id = j["id"].as_str().unwrap().to_string();
    server.wait_log(&id, "before").await;
    // `trainyard run`-style followers must neither hold the server open nor lose output.
    let cli = std::process::Command::new(common::BIN)
        .args(["jobs", "logs", "--follow", &id])
        .env("TRAINYARD_SERVER", &server.base)
        .env("TRAINYARD_TOKEN", &server.token)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let follower = server
        .get(&format!("/api/v1/jobs/{id}/logs?follow=true"))
        .send()
        .await
        .unwrap();
    let stopping = Instant::now();
    let status = server.terminate();
    assert!(status.success(), "graceful exit, got {status}");
    assert!(
        stopping.elapsed() < Duration::from_secs(10),
        "took {:?}",
        stopping.elapsed()
    );
    drop(follower);
    let mut cli = cli;
    let _ = cli.kill();
    let _ = cli.wait();
    server.restart().await;
    let done = server.wait_done(&id, LONG).await;
    assert_eq!(done["state"], "succeeded");
    assert_eq!(server.logs(&id, "").await, "before\nafter\n");
}

fn start_expecting_failure(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let started = Instant::now();
    let mut cmd = std::process::Command::new(common::BIN);
    cmd.args([
        "up",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ])
    .args(args)
    .env_remove("TRAINYARD_DATABASE_URL")
    .env_remove("TRAINYARD_BLOBS_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "start-up should fail");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn unreachable_database_or_blobs_stop_start_up_with_a_reason() {
    let err = start_expecting_failure(
        &[
            "--database",
            "postgres://trainyard:s3cret@127.0.0.1:1/trainyard",
        ],
        &[],
    );
    assert!(
        err.contains("cannot reach the database at postgres://trainyard:***@127.0.0.1:1/trainyard"),
        "{err}"
    );
    assert!(!err.contains("s3cret"), "password leaked: {err}");

    let err = start_expecting_failure(
        &["--blobs", "s3://no-bucket/prefix"],
        &[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
            ("AWS_ACCESS_KEY_ID", "x"),
            ("AWS_SECRET_ACCESS_KEY", "y"),
        ],
    );
    assert!(
        err.contains("cannot use the blob store at s3://no-bucket/prefix"),
        "{err}"
    );

    let err = start_expecting_failure(&["--blobs", "ftp://host/x"], &[]);
    assert!(err.contains("unsupported blobs URL"), "{err}");
}

/// A pool whose engine cannot be reached stops the start, naming the pool and the URL.
#[test]
fn unreachable_engines_stop_start_up_naming_pool_and_url() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("trainyard.toml");
    let key = dir.path().join("jwt.key");
    std::fs::write(&key, b"0123456789abcdef0123456789abcdef").unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\ncurrent-context: ci\n\
         clusters: [{name: ci, cluster: {server: \"http://127.0.0.1:1\"}}]\n\
         users: [{name: ci, user: {token: not-a-real-token}}]\n\
         contexts: [{name: ci, context: {cluster: ci, user: ci, namespace: ci}}]\n",
    )
    .unwrap();
    for (pool, expect) in [
        (
            "[[pools]]\nname = \"ray\"\nexecutor = \"ray\"\n[pools.ray]\nurl = \"http://127.0.0.1:1\"\n",
            vec!["pool \"ray\"", "the Ray dashboard at http://127.0.0.1:1 cannot be reached"],
        ),
        (
            &format!(
                "[[pools]]\nname = \"hpc\"\nexecutor = \"slurm\"\n[pools.slurm]\nurl = \"http://127.0.0.1:1\"\njwt_key_file = \"{}\"\n",
                key.display()
            ),
            vec!["pool \"hpc\"", "slurmrestd at http://127.0.0.1:1 cannot be reached"],
        ),
        (
            "[[pools]]\nname = \"ray\"\nexecutor = \"ray\"\n",
            vec!["pool \"ray\"", "needs [pools.ray]"],
        ),
        (
            &format!(
                "[[pools]]\nname = \"k8s\"\nexecutor = \"kubernetes\"\n[pools.kubernetes]\n\
                 image = \"trainyard:1\"\nkubeconfig = \"{}\"\n",
                kubeconfig.display()
            ),
            vec!["pool \"k8s\"", "the Kubernetes API at http://127.0.0.1:1/ cannot be used"],
        ),
        (
            "[[pools]]\nname = \"k8s\"\nexecutor = \"kubernetes\"\n",
            vec!["pool \"k8s\"", "needs [pools.kubernetes]"],
        ),
        (
            "[[pools]]\nname = \"k8s\"\nexecutor = \"nomad\"\n",
            vec!["unknown variant `nomad`"],
        ),
    ] {
        std::fs::write(&config, pool).unwrap();
        let err = start_expecting_failure(&["--config", config.to_str().unwrap()], &[]);
        for e in expect {
            assert!(err.contains(e), "{e:?} not in {err}");
        }
    }
}

/// Needs an S3 API endpoint and an existing bucket (`.ci/run` starts moto for it).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs TRAINYARD_TEST_S3_ENDPOINT and TRAINYARD_TEST_S3_BUCKET (run by .ci/run)"]
async fn s3_blobs_hold_job_logs() {
    let endpoint = std::env::var("TRAINYARD_TEST_S3_ENDPOINT").expect("TRAINYARD_TEST_S3_ENDPOINT");
    let bucket = std::env::var("TRAINYARD_TEST_S3_BUCKET").expect("TRAINYARD_TEST_S3_BUCKET");
    let prefix = trainyard_core::new_id();
    let mut server = Server::start_with(ServerOptions {
        blobs: Some(format!("s3://{bucket}/{prefix}")),
        env: vec![
            ("AWS_ENDPOINT_URL".into(), endpoint),
            ("AWS_ACCESS_KEY_ID".into(), "test".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "test".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ],
        ..Default::default()
    })
    .await;
    let ready: Value = server
        .get("/readyz")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["blobs"], "ok", "{ready}");
    // 6 MB of output: more than one shipped chunk.
    let j = server
        .submit(job(&[
            "sh",
            "-c",
            "head -c 6000000 /dev/zero | tr '\\0' x; echo; echo done",
        ]))
        .await;
    let id = j["id"].as_str().unwrap().to_string();
    let done = server.wait_done(&id, LONG).await;
    assert_eq!(done["state"], "succeeded");
    assert!(
        !server.data_dir.join("blobs").exists(),
        "nothing may land in the local folder"
    );
    // The spool goes just after the outcome is stored: the log below comes from S3.
    server.wait_spool_removed(&id).await;
    let log = server.logs(&id, "").await;
    assert_eq!(log.len(), 6_000_000 + 1 + 5);
    assert!(log.ends_with("\ndone\n"));
    assert_eq!(server.logs(&id, "tail=1").await, "done\n");
    // And after a restart, from S3 alone.
    server.kill9();
    server.restart().await;
    assert_eq!(server.logs(&id, "offset=6000001").await, "done\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn higher_priority_runs_first_then_older() {
    let server = Server::start_with(ServerOptions {
        cpus: 1.0,
        ..Default::default()
    })
    .await;
    let blocker = server.submit(job(&["sleep", "1"])).await;
    server
        .wait_state(blocker["id"].as_str().unwrap(), |s| s == "running", LONG)
        .await;
    let mut ids = Vec::new();
    for (name, priority) in [("low-old", 0), ("high", 5), ("low-new", 0), ("lowest", -1)] {
        let j = server
            .submit(json!({"name": name, "command": ["true"], "priority": priority}))
            .await;
        ids.push((name, j["id"].as_str().unwrap().to_string()));
    }
    let mut order = Vec::new();
    for (name, id) in &ids {
        let done = server.wait_done(id, LONG).await;
        order.push((done["started_at_ms"].as_i64().unwrap(), *name));
    }
    order.sort();
    let names: Vec<&str> = order.iter().map(|(_, n)| *n).collect();
    assert_eq!(names, ["high", "low-old", "low-new", "lowest"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn trainyard_run_survives_a_server_restart() {
    let mut server = Server::start().await;
    let run = std::process::Command::new(common::BIN)
        .args([
            "run",
            "--name",
            "survivor",
            "--",
            "sh",
            "-c",
            "echo one; sleep 4; echo two; exit 5",
        ])
        .env("TRAINYARD_SERVER", &server.base)
        .env("TRAINYARD_TOKEN", &server.token)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + LONG;
    let id = loop {
        let page: Value = server
            .get("/api/v1/jobs")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(id) = page["jobs"][0]["id"].as_str() {
            break id.to_string();
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    server.wait_log(&id, "one").await;
    server.kill9();
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.restart().await;
    let out = tokio::task::spawn_blocking(move || run.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one\ntwo\n");
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_big_job_is_not_starved_by_a_stream_of_small_ones() {
    let server = Server::start_with(ServerOptions {
        cpus: 2.0,
        backfill_window_s: Some(1.0),
        ..Default::default()
    })
    .await;
    let small = json!({"command": ["sleep", "0.5"], "resources": {"cpus": 1}});
    for _ in 0..2 {
        server.submit(small.clone()).await;
    }
    let big = server
        .submit(json!({"command": ["true"], "resources": {"cpus": 2}}))
        .await;
    let big_id = big["id"].as_str().unwrap().to_string();
    // Keep one small job arriving every 0.2 s: with unlimited backfill one CPU would always
    // be taken before the second frees up, and the 2-CPU job would never start.
    let submitted = Instant::now();
    let mut started = None;
    while submitted.elapsed() < Duration::from_secs(12) {
        server.submit(small.clone()).await;
        let job = server.job(&big_id).await;
        if job["state"] != "queued" {
            started = Some(submitted.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let waited = started.expect("the 2-CPU job starved behind 1-CPU jobs");
    // 1 s window + at most one 0.5 s small job to drain (+ slack for a loaded machine).
    assert!(waited < Duration::from_secs(6), "waited {waited:?}");
    let done = server.wait_done(&big_id, LONG).await;
    assert_eq!(done["state"], "succeeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_log_is_shipped_and_served_in_bounded_memory() {
    let server = Server::start().await;
    // 200 MB with no newline at all: the worst case for anything line-buffered.
    let j = server
        .submit(job(&[
            "sh",
            "-c",
            "head -c 200000000 /dev/zero | tr '\\0' z",
        ]))
        .await;
    let id = j["id"].as_str().unwrap().to_string();
    let done = server.wait_done(&id, LONG).await;
    assert_eq!(done["state"], "succeeded");
    let r = server
        .get(&format!("/api/v1/jobs/{id}/logs"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-log-size"], "200000000");
    let mut body = r.bytes_stream();
    let mut total = 0usize;
    use futures::StreamExt;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        assert!(chunk.iter().all(|b| *b == b'z'));
        total += chunk.len();
    }
    assert_eq!(total, 200_000_000);
    let peak_mb = peak_rss_kb(server.pid()) / 1024;
    assert!(
        peak_mb < 100,
        "server peaked at {peak_mb} MB for a 200 MB log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn resources_show_capacity_and_what_is_free() {
    let server = Server::start_with(ServerOptions {
        cpus: 2.0,
        gpus: 2,
        ..Default::default()
    })
    .await;
    let j = server
        .submit(json!({"command": ["sleep", "30"], "resources": {"cpus": 1.5, "gpus": 1}}))
        .await;
    let id = j["id"].as_str().unwrap();
    server.wait_state(id, |s| s == "running", LONG).await;
    let usage: Value = server
        .get("/api/v1/resources")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        usage["capacity"],
        json!({"cpus": 2.0, "memory_mb": usage["capacity"]["memory_mb"], "gpus": [0, 1]})
    );
    assert_eq!(usage["free"]["cpus"], 0.5);
    assert_eq!(usage["free"]["gpus"].as_array().unwrap().len(), 1);
    assert_eq!(usage["running"], 1);
    assert_eq!(usage["queued"], 0);
    let table = server.cli(&["status"]);
    let text = String::from_utf8_lossy(&table.stdout);
    // One pool (this machine): half a CPU and one GPU free, one job running, none queued.
    let pool_row = text
        .lines()
        .find(|l| l.starts_with("local"))
        .unwrap_or_else(|| panic!("{text}"));
    let cells: Vec<&str> = pool_row.split_whitespace().collect();
    assert_eq!(cells[..2], ["local", "local"], "{text}");
    assert_eq!(cells[2], "0.5/2.0", "{text}");
    assert_eq!(cells[4], "1/2", "{text}");
    assert_eq!(cells[5..], ["1", "0"], "{text}");
    assert_eq!(usage["pools"][0]["name"], "local");
    assert_eq!(usage["pools"][0]["nodes"][0]["free_cpus"], 0.5, "{usage}");
    server
        .post(&format!("/api/v1/jobs/{id}/cancel"))
        .send()
        .await
        .unwrap();
    server.wait_done(id, LONG).await;
    let usage: Value = server
        .get("/api/v1/resources")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(usage["free"]["cpus"], 2.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn followed_log_streams_give_their_memory_back() {
    let server = Server::start().await;
    let j = server
        .submit(job(&[
            "sh",
            "-c",
            "for i in $(seq 24); do echo line $i; sleep 0.25; done",
        ]))
        .await;
    let id = j["id"].as_str().unwrap().to_string();
    let before = rss_kb(server.pid());
    // Each follower on a connection of its own, closed after (as `curl` or a CLI would).
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let followers: Vec<_> = (0..200)
        .map(|_| {
            let request = http
                .get(server.url(&format!("/api/v1/jobs/{id}/logs?follow=true")))
                .bearer_auth(&server.token);
            tokio::spawn(async move { request.send().await.unwrap().text().await.unwrap() })
        })
        .collect();
    for f in followers {
        assert!(f.await.unwrap().contains("line 24"));
    }
    // The streams' buffers go back to the system when the last one ends on the server (a
    // moment after the clients have read their end); before, +70 MB for 200 streams stayed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = rss_kb(server.pid());
    while after >= before + 24 * 1024 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        after = rss_kb(server.pid());
    }
    assert!(
        after < before + 24 * 1024,
        "resident memory {before} kB before 200 followed streams, {after} kB after they ended"
    );
}

/// SQLite is single-server: a second `trainyard up` on the same database is refused at
/// start, naming the server that runs; once that one is gone (even by kill -9), a new one
/// starts at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_server_on_one_sqlite_file_is_refused() {
    if std::env::var("TRAINYARD_TEST_DATABASE_URL").is_ok() {
        return; // PostgreSQL takes several servers (tests/clusters.rs shows the handover).
    }
    let mut server = Server::start().await;
    let second = std::process::Command::new(common::BIN)
        .args([
            "up",
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(&server.data_dir)
        .env_remove("TRAINYARD_DATABASE_URL")
        .output()
        .unwrap();
    assert!(!second.status.success());
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(
        err.contains(&format!("another trainyard server ({})", server.base))
            && err.contains("SQLite is single-server"),
        "{err}"
    );
    server.kill9();
    server.restart().await;
    let usage = server.get_json("/api/v1/resources").await;
    assert_eq!(usage["leading"], true, "{usage}");
}

/// A 2-worker gang on this machine: both start, see their ranks and rank 0's address,
/// and meet there; when one fails, the other is stopped and the gang is retried whole.
#[tokio::test(flavor = "multi_thread")]
async fn a_gang_starts_whole_meets_at_rank_0_and_is_retried_whole() {
    let server = Server::start_with(ServerOptions {
        cpus: 2.0,
        gpus: 2,
        ..Default::default()
    })
    .await;
    let script = std::path::Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("tests/fixtures/gang_worker.py")
    .display()
    .to_string();
    let gang = server
        .submit(json!({
            "command": ["python3", script],
            "resources": {"cpus": 1, "gpus": 1, "workers": 2},
            "env": {"GANG_FAIL_FIRST": "1"},
            "max_retries": 1,
        }))
        .await;
    assert_eq!(gang["resources"]["workers"], 2);
    let done = server.wait_done(gang["id"].as_str().unwrap(), LONG).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        done["attempt"], 2,
        "the failed gang ran again whole: {done}"
    );
    let log = server.logs(gang["id"].as_str().unwrap(), "").await;
    for want in [
        "rank=0 world=2 local=0 node=0 master=127.0.0.1:",
        "rank=1 world=2 local=1 node=0",
        "worker 1 ended with exit status: 3; stopping the other 1",
        "rank 0 heard from 127.0.0.1: hello from rank 1",
        "rank 1 reached 127.0.0.1:",
    ] {
        assert!(log.contains(want), "{want:?} not in:\n{log}");
    }
    // Two workers of one CPU and one GPU each: the whole machine.
    let r = server
        .post("/api/v1/jobs")
        .json(&json!({"command": ["true"], "resources": {"cpus": 1, "workers": 3}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["field"], "resources.cpus", "{body}");
    let r = server
        .post("/api/v1/jobs")
        .json(&json!({"command": ["true"], "resources": {"workers": 0}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_finished_job_runs_again_as_a_new_job_and_a_running_one_is_refused() {
    let server = Server::start().await;
    let first = server
        .submit(json!({
            "name": "counts",
            "command": ["sh", "-c", "echo run $MARK; exit 3"],
            "env": {"MARK": "again"},
            "labels": {"team": "vision"},
            "resources": {"cpus": 1},
        }))
        .await;
    let id = first["id"].as_str().unwrap().to_string();
    let done = server.wait_done(&id, LONG).await;
    assert_eq!(done["state"], "failed");
    // Running or unknown: refused, and no job is made.
    let sleeper = server.submit(job(&["sleep", "30"])).await;
    let sleeper = sleeper["id"].as_str().unwrap().to_string();
    let r = server
        .post(&format!("/api/v1/jobs/{sleeper}/retry"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "job_not_finished", "{e}");
    let r = server
        .post(&format!("/api/v1/jobs/{}/retry", "0".repeat(32)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The finished one again: a new job, the same command, environment and labels.
    let out = server.cli(&["jobs", "retry", &id]);
    let printed = common::ok(out);
    let again = printed.split_whitespace().nth(1).unwrap().to_string();
    assert_ne!(again, id);
    let redo = server.wait_done(&again, LONG).await;
    assert_eq!(redo["state"], "failed");
    assert_eq!(redo["exit_code"], 3);
    assert_eq!(redo["name"], "counts");
    assert_eq!(redo["labels"]["team"], "vision");
    assert_eq!(redo["labels"]["retry_of"], id.as_str());
    assert!(server.logs(&again, "").await.contains("run again"));
    let listed = server.get_json("/api/v1/jobs").await;
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 3, "{listed}");
    // Runs `labels` on `true` to its end, then asks to run it again.
    let finish_and_retry = |labels: Value| {
        let server = &server;
        async move {
            let done = server
                .submit(json!({"command": ["true"], "labels": labels}))
                .await;
            let id = done["id"].as_str().unwrap().to_string();
            server.wait_done(&id, LONG).await;
            server
                .post(&format!("/api/v1/jobs/{id}/retry"))
                .send()
                .await
                .unwrap()
        }
    };
    // A job with the most labels allowed can still be run again (`retry_of` is extra).
    let labels: serde_json::Map<String, Value> =
        (0..64).map(|i| (format!("l{i:02}"), json!("x"))).collect();
    let r = finish_and_retry(Value::Object(labels)).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    // A study's trial is its study's to run again: a copy would report into an ended trial.
    let r = finish_and_retry(json!({"trainyard.study_id": "s1"})).await;
    assert_eq!(r.status(), 409);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "job_of_study", "{e}");
    server
        .post(&format!("/api/v1/jobs/{sleeper}/cancel"))
        .send()
        .await
        .unwrap();
    server.wait_done(&sleeper, LONG).await;
}
