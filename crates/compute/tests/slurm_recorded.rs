//! The slurmrestd client against the API versions of Slurm 23.11 to 24.11 (data parsers
//! v0.0.40, v0.0.41, v0.0.42), which cannot run on these machines: a loopback HTTP server
//! answers with exchanges built from Slurm's published OpenAPI documents
//! (`tests/fixtures/slurm/README.md` says which), and checks what the client sends.
//! Slurm 22.05 (v0.0.38) runs for real in `tests/cluster`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use parking_lot::Mutex;
use serde_json::Value;
use trainyard_compute::executor::cluster::{Engine, EngineError, EngineJob, EngineState};
use trainyard_compute::executor::slurm::{SlurmRest, SlurmSettings};
use trainyard_core::ExitReason;

const KEY: &[u8] = b"a-test-key-slurmctld-would-check";

/// What a state fixture must map to.
type Expectation = Box<dyn Fn(&EngineState) -> bool>;

fn fixtures(version: &str) -> PathBuf {
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("tests/fixtures/slurm")
    .join(version)
}

fn fixture(version: &str, name: &str) -> Value {
    let path = fixtures(version).join(format!("{name}.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

/// What the fake slurmrestd saw and which job fixture it answers with.
struct Recorded {
    version: &'static str,
    job_fixture: Mutex<String>,
    submitted: Mutex<Vec<Value>>,
    callers: Mutex<Vec<(String, String)>>,
    deleted: Mutex<Vec<String>>,
}

async fn answer(
    State(rec): State<Arc<Recorded>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let header = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    rec.callers
        .lock()
        .push((header("x-slurm-user-name"), header("x-slurm-user-token")));
    let v = rec.version;
    let Some(rest) = uri.path().strip_prefix(&format!("/slurm/{v}")) else {
        // Another version than this server's: slurmrestd answers 404.
        return (StatusCode::NOT_FOUND, "Unable find requested URL").into_response();
    };
    let json = |status: StatusCode, value: Value| (status, axum::Json(value)).into_response();
    match (method, rest) {
        (Method::GET, "/ping/") => json(StatusCode::OK, fixture(v, "ping")),
        (Method::POST, "/job/submit") => {
            let body: Value = serde_json::from_slice(&body).unwrap();
            let rejected = body["job"]["name"] == "too-big";
            rec.submitted.lock().push(body);
            if rejected {
                json(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    fixture(v, "error_response"),
                )
            } else {
                json(StatusCode::OK, fixture(v, "submit_response"))
            }
        }
        (Method::GET, "/jobs/") => json(StatusCode::OK, fixture(v, "jobs_by_name")),
        (Method::GET, "/nodes/") => json(StatusCode::OK, fixture(v, "nodes")),
        (Method::GET, "/job/4242") => {
            let name = rec.job_fixture.lock().clone();
            json(StatusCode::OK, fixture(v, &name))
        }
        (Method::DELETE, "/job/4242") => {
            rec.deleted.lock().push("4242".into());
            let mut ok = fixture(v, "ping");
            ok.as_object_mut().unwrap().remove("pings");
            json(StatusCode::OK, ok)
        }
        _ => (StatusCode::NOT_FOUND, "Unable find requested URL").into_response(),
    }
}

async fn fake_slurmrestd(version: &'static str) -> (String, Arc<Recorded>) {
    let rec = Arc::new(Recorded {
        version,
        job_fixture: Mutex::new("job_pending".into()),
        submitted: Mutex::new(Vec::new()),
        callers: Mutex::new(Vec::new()),
        deleted: Mutex::new(Vec::new()),
    });
    let app = axum::Router::new().fallback(answer).with_state(rec.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rec)
}

/// The attempt that `submit_request.json` of each version was written for.
fn fixture_job(name: &str) -> EngineJob {
    EngineJob {
        name: name.into(),
        argv: vec!["sleep".into(), "1".into()],
        env: vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("TRAINYARD_JOB_ID".into(), "J".into()),
        ],
        working_dir: None,
        cpus: 2,
        memory_mb: Some(512),
        gpus: 1,
        workers: 1,
        time_limit_s: Some(300),
        output: "/shared/logs/J/output".into(),
    }
}

async fn check_version(version: &'static str) {
    let (url, rec) = fake_slurmrestd(version).await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("jwt.key");
    std::fs::write(&key, KEY).unwrap();
    let slurm = SlurmRest::connect(&SlurmSettings {
        url: Some(url),
        user: Some("trainyard".into()),
        jwt_key_file: Some(key),
        partition: Some("debug".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(slurm.version(), version, "the newest version both speak");

    // Every call names the user and carries a token slurmctld would accept for it.
    let (user, token) = rec.callers.lock().last().cloned().unwrap();
    assert_eq!(user, "trainyard");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_required_spec_claims(&["exp"]);
    let claims = jsonwebtoken::decode::<Value>(
        &token,
        &jsonwebtoken::DecodingKey::from_secret(KEY),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["sun"], "trainyard");

    // The submission is exactly the documented request.
    let id = slurm
        .submit(&fixture_job("trainyard-01JOBID-1"))
        .await
        .unwrap();
    assert_eq!(id, "4242");
    assert_eq!(
        rec.submitted.lock()[0],
        fixture(version, "submit_request"),
        "{version}: the request differs from the documented one"
    );

    // Every state maps to Trainyard's, with Slurm's words kept.
    let cases: [(&str, Expectation); 7] = [
        (
            "job_pending",
            Box::new(|s| matches!(s, EngineState::Pending(why) if why.contains("Resources"))),
        ),
        (
            "job_running",
            Box::new(|s| *s == EngineState::Running(Some("node1".into()))),
        ),
        (
            "job_failed_exit7",
            Box::new(
                |s| matches!(s, EngineState::Ended(e) if e.reason == ExitReason::Exited && e.exit_code == Some(7) && e.engine_says.contains("FAILED")),
            ),
        ),
        (
            "job_completed",
            Box::new(
                |s| matches!(s, EngineState::Ended(e) if e.reason == ExitReason::Exited && e.exit_code == Some(0)),
            ),
        ),
        (
            "job_cancelled",
            Box::new(|s| matches!(s, EngineState::Ended(e) if e.reason == ExitReason::Cancelled)),
        ),
        (
            "job_timeout",
            Box::new(
                |s| matches!(s, EngineState::Ended(e) if e.reason == ExitReason::Timeout && e.engine_says.contains("TIMEOUT")),
            ),
        ),
        (
            "job_node_fail",
            Box::new(
                |s| matches!(s, EngineState::Ended(e) if e.reason == ExitReason::Lost && e.engine_says.contains("NODE_FAIL")),
            ),
        ),
    ];
    for (name, expected) in cases {
        *rec.job_fixture.lock() = name.to_string();
        let state = slurm.state("4242").await.unwrap().unwrap();
        assert!(expected(&state), "{version} {name}: {state:?}");
    }

    // A restarted server finds its job by name; another name finds nothing.
    assert_eq!(
        slurm.find("trainyard-01JOBID-1").await.unwrap().as_deref(),
        Some("4242")
    );
    assert_eq!(slurm.find("trainyard-other-1").await.unwrap(), None);

    // Many watched jobs are asked with one list; the ones it lacks one by one.
    let ids: Vec<String> = ["4242", "4241"]
        .into_iter()
        .map(String::from)
        .chain((4300..4308).map(|n| n.to_string()))
        .collect();
    let calls_before = rec.callers.lock().len();
    let states = slurm.states(&ids).await;
    assert_eq!(states.len(), ids.len());
    assert!(
        matches!(&states[0], Ok(Some(EngineState::Running(_)))),
        "{states:?}"
    );
    assert!(
        matches!(&states[1], Ok(Some(EngineState::Running(_)))),
        "{states:?}"
    );
    assert!(
        states[2..].iter().all(|s| matches!(s, Ok(None))),
        "{states:?}"
    );
    assert_eq!(
        rec.callers.lock().len() - calls_before,
        1 + 8,
        "one list, then each unlisted"
    );

    slurm.stop("4242").await.unwrap();
    assert_eq!(*rec.deleted.lock(), ["4242"]);

    // Nodes: what is free on each, and a drained node's reason.
    let nodes = slurm.nodes().await.unwrap();
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    let n1 = &nodes[0];
    assert_eq!(
        (n1.name.as_str(), n1.cpus, n1.memory_mb, n1.gpus),
        ("node1", 8.0, 32000, 2)
    );
    assert_eq!(
        (n1.free_cpus, n1.free_memory_mb, n1.free_gpus),
        (Some(6.0), Some(28000), Some(1))
    );
    assert!(
        nodes[1].state.contains("down") && nodes[1].state.contains("disk failure"),
        "{:?}",
        nodes[1]
    );

    // A submission Slurm refuses is refused with Slurm's reason.
    match slurm.submit(&fixture_job("too-big")).await {
        Err(EngineError::Rejected(why)) => assert!(
            why.contains("Requested node configuration is not available"),
            "{why}"
        ),
        other => panic!("{version}: {other:?}"),
    }
}

#[tokio::test]
async fn slurm_23_11_data_parser_v0_0_40() {
    check_version("v0.0.40").await;
}

#[tokio::test]
async fn slurm_24_05_data_parser_v0_0_41() {
    check_version("v0.0.41").await;
}

#[tokio::test]
async fn slurm_24_11_data_parser_v0_0_42() {
    check_version("v0.0.42").await;
}

/// A token given to the server (from `scontrol token`) that has expired is named as such,
/// not sent.
#[tokio::test]
async fn an_expired_given_token_is_a_clear_error_at_start() {
    let (url, _rec) = fake_slurmrestd("v0.0.40").await;
    let dir = tempfile::tempdir().unwrap();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"exp": 1_000_000, "iat": 999_000, "sun": "trainyard"}),
        &jsonwebtoken::EncodingKey::from_secret(KEY),
    )
    .unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("SLURM_JWT={token}\n")).unwrap();
    let err = SlurmRest::connect(&SlurmSettings {
        url: Some(url.clone()),
        user: Some("trainyard".into()),
        jwt_file: Some(file),
        ..Default::default()
    })
    .await
    .err()
    .expect("an expired token cannot connect");
    let err = err.to_string();
    assert!(
        err.contains(&url) && err.contains("expired") && err.contains("scontrol token"),
        "{err}"
    );
}
