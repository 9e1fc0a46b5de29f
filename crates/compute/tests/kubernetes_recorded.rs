//! The Kubernetes executor's engine against recorded API exchanges: no API server can run
//! on these machines, so a loopback HTTP server answers kube-rs with bodies built from the
//! Kubernetes 1.33 API's documented shapes (`tests/fixtures/kubernetes/README.md` says
//! which, and how each was validated against the API's schema) and records what the
//! client sends. This is all the testing the Kubernetes executor has had: it has never
//! run against a live cluster.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::IntoResponse;
use parking_lot::Mutex;
use serde_json::Value;
use trainyard_compute::executor::cluster::{Engine, EngineError, EngineJob, EngineState};
use trainyard_compute::executor::kubernetes::{parse_nodes, Kubernetes, KubernetesSettings};
use trainyard_core::ExitReason;

const NAME: &str = "trainyard-0123456789abcdef0123456789abcdef-1";

/// What a (Job, pods) pair of fixtures must map to.
type Expectation = fn(&EngineState) -> bool;
const POD: &str = "trainyard-0123456789abcdef0123456789abcdef-1-x7k2p";

fn fixtures() -> PathBuf {
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("tests/fixtures/kubernetes")
}

fn fixture(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixtures().join(format!("{name}.json"))).unwrap())
        .unwrap()
}

/// The fake API server's script (which fixtures answer) and what it saw.
#[derive(Default)]
struct Api {
    job: Mutex<Option<String>>,
    pods: Mutex<String>,
    log: Mutex<Option<String>>,
    events: Mutex<Option<String>>,
    create_refusal: Mutex<Option<String>>,
    /// (method, path?query, body) of every call.
    seen: Mutex<Vec<(String, String, Value)>>,
}

async fn answer(
    State(api): State<Arc<Api>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> axum::response::Response {
    let body_json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path = uri.path().to_string();
    let with_query = uri.to_string();
    api.seen
        .lock()
        .push((method.to_string(), with_query, body_json.clone()));
    let json = |status: StatusCode, value: Value| (status, axum::Json(value)).into_response();
    let status_of = |value: Value| {
        let code = value["code"].as_u64().unwrap_or(200) as u16;
        json(StatusCode::from_u16(code).unwrap(), value)
    };
    let jobs = "/apis/batch/v1/namespaces/ci/jobs";
    let secrets = "/api/v1/namespaces/ci/secrets";
    match (method.clone(), path.as_str()) {
        (Method::GET, "/api/v1/nodes") => json(StatusCode::OK, fixture("nodes")),
        (Method::POST, p) if p == secrets => json(StatusCode::CREATED, fixture("secret_created")),
        (Method::PATCH, p) if p == format!("{secrets}/{NAME}") => {
            json(StatusCode::OK, fixture("secret_created"))
        }
        (Method::DELETE, p) if p == format!("{secrets}/{NAME}") => {
            json(StatusCode::OK, fixture("status_deleted_job"))
        }
        (Method::POST, p) if p == jobs => match api.create_refusal.lock().clone() {
            Some(refusal) => status_of(fixture(&refusal)),
            None => json(StatusCode::CREATED, fixture("job_created")),
        },
        (Method::GET, p) if p == format!("{jobs}/{NAME}") => match api.job.lock().clone() {
            Some(job) => json(StatusCode::OK, fixture(&job)),
            None => status_of(fixture("status_not_found_job")),
        },
        (Method::DELETE, p) if p == format!("{jobs}/{NAME}") => {
            *api.job.lock() = None;
            json(StatusCode::OK, fixture("status_deleted_job"))
        }
        (Method::GET, "/api/v1/namespaces/ci/pods") => {
            let pods = api.pods.lock().clone();
            json(StatusCode::OK, fixture(&pods))
        }
        (Method::GET, p) if p == format!("/api/v1/namespaces/ci/pods/{POD}/log") => {
            match api.log.lock().clone() {
                Some(_) => (
                    StatusCode::OK,
                    std::fs::read_to_string(fixtures().join("pod_log.txt")).unwrap(),
                )
                    .into_response(),
                None => status_of(fixture("status_log_waiting")),
            }
        }
        (Method::GET, "/api/v1/namespaces/ci/events") => match api.events.lock().clone() {
            Some(events) => json(StatusCode::OK, fixture(&events)),
            None => json(
                StatusCode::OK,
                serde_json::json!({"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": []}),
            ),
        },
        _ => status_of(fixture("status_not_found_job")),
    }
}

async fn fake_api_server() -> (String, Arc<Api>) {
    let api = Arc::new(Api::default());
    *api.pods.lock() = "pods_empty".into();
    let app = axum::Router::new().fallback(answer).with_state(api.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, api)
}

async fn connect(dir: &Path) -> (Kubernetes, Arc<Api>) {
    let (url, api) = fake_api_server().await;
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: ci\n\
             clusters: [{{name: ci, cluster: {{server: \"{url}\"}}}}]\n\
             users: [{{name: ci, user: {{token: recorded}}}}]\n\
             contexts: [{{name: ci, context: {{cluster: ci, user: ci, namespace: ci}}}}]\n"
        ),
    )
    .unwrap();
    let engine = Kubernetes::connect(&KubernetesSettings {
        image: "ghcr.io/example/trainyard:1.0".into(),
        kubeconfig: Some(kubeconfig),
        ..Default::default()
    })
    .await
    .unwrap();
    (engine, api)
}

fn attempt() -> EngineJob {
    EngineJob {
        name: NAME.into(),
        argv: ["python", "train.py", "--epochs", "1"]
            .map(String::from)
            .to_vec(),
        env: vec![
            ("MLFLOW_TRACKING_TOKEN".into(), "a-secret-token".into()),
            (
                "TRAINYARD_JOB_ID".into(),
                "0123456789abcdef0123456789abcdef".into(),
            ),
        ],
        working_dir: None,
        cpus: 2,
        memory_mb: Some(8000),
        gpus: 1,
        workers: 1,
        time_limit_s: Some(3600),
        output: "/unused".into(),
    }
}

#[tokio::test]
async fn a_job_is_submitted_as_a_secret_and_a_batch_job_and_followed_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let (k8s, api) = connect(dir.path()).await;

    // Nodes: what each offers, and a node that is not ready and cordoned takes no work.
    let nodes = k8s.nodes().await.unwrap();
    let by_name = |n: &str| nodes.iter().find(|x| x.name == n).unwrap().clone();
    let gpu = by_name("gpu-1");
    assert_eq!((gpu.cpus, gpu.gpus, gpu.state.as_str()), (7.91, 2, "ready"));
    assert!(gpu.memory_mb > 30_000, "{gpu:?}");
    assert_eq!(by_name("cpu-1").memory_mb, 15936);
    assert!(by_name("old-1").state.starts_with("down"), "{nodes:?}");

    let id = k8s.submit(&attempt()).await.unwrap();
    assert_eq!(id, NAME);
    let seen = api.seen.lock().clone();
    let body_of = |method: &str, path: &str| {
        seen.iter()
            .find(|(m, p, _)| m == method && p.starts_with(path))
            .unwrap_or_else(|| panic!("no {method} {path} in {seen:#?}"))
            .2
            .clone()
    };
    // The environment, token included, is in the Secret only.
    let secret = body_of("POST", "/api/v1/namespaces/ci/secrets");
    assert_eq!(
        secret["stringData"]["MLFLOW_TRACKING_TOKEN"],
        "a-secret-token"
    );
    let job = body_of("POST", "/apis/batch/v1/namespaces/ci/jobs");
    assert!(!job.to_string().contains("a-secret-token"), "{job}");
    // What was sent is what the recorded Job holds (less what the server defaults).
    let stored = fixture("job_created");
    let sent_container = &job["spec"]["template"]["spec"]["containers"][0];
    let stored_container = &stored["spec"]["template"]["spec"]["containers"][0];
    for key in ["name", "image", "command", "envFrom", "resources"] {
        assert_eq!(sent_container[key], stored_container[key], "{key}");
    }
    assert_eq!(
        job["spec"]["backoffLimit"], 0,
        "Trainyard retries, not Kubernetes"
    );
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 3600);
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
    // The Secret goes with the Job: owned by the uid the server gave it.
    let owner = body_of("PATCH", &format!("/api/v1/namespaces/ci/secrets/{NAME}"));
    assert_eq!(
        owner["metadata"]["ownerReferences"][0]["uid"],
        stored["metadata"]["uid"]
    );

    // Its life, as the API shows it.
    let cases: [(&str, &str, Expectation); 8] = [
        (
            "job_pending",
            "pods_unschedulable",
            |s| matches!(s, EngineState::Pending(w) if w.contains("Unschedulable") && w.contains("Insufficient nvidia.com/gpu")),
        ),
        (
            "job_pending",
            "pods_image_pull",
            |s| matches!(s, EngineState::Pending(w) if w.contains("ImagePullBackOff")),
        ),
        ("job_running", "pods_running", |s| {
            *s == EngineState::Running(Some("gpu-1".into()))
        }),
        ("job_deadline_terminating", "pods_running", |s| {
            matches!(s, EngineState::Running(_))
        }),
        (
            "job_complete",
            "pods_succeeded",
            |s| matches!(s, EngineState::Ended(e) if e.reason == ExitReason::Exited && e.exit_code == Some(0)),
        ),
        (
            "job_failed",
            "pods_failed_exit3",
            |s| matches!(s, EngineState::Ended(e) if e.reason == ExitReason::Exited && e.exit_code == Some(3) && e.engine_says.contains("BackoffLimitExceeded")),
        ),
        (
            "job_failed",
            "pods_oomkilled",
            |s| matches!(s, EngineState::Ended(e) if e.reason == ExitReason::Signaled && e.engine_says.contains("OOMKilled")),
        ),
        (
            "job_deadline",
            "pods_empty",
            |s| matches!(s, EngineState::Ended(e) if e.reason == ExitReason::Timeout),
        ),
    ];
    for (job, pods, expected) in cases {
        *api.job.lock() = Some(job.into());
        *api.pods.lock() = pods.into();
        let state = k8s.state(NAME).await.unwrap().unwrap();
        assert!(expected(&state), "{job} + {pods}: {state:?}");
    }
    // No pod because of a quota: the Job's warning event says so.
    *api.job.lock() = Some("job_quota_blocked".into());
    *api.pods.lock() = "pods_empty".into();
    *api.events.lock() = Some("events_quota".into());
    let state = k8s.state(NAME).await.unwrap().unwrap();
    assert!(
        matches!(&state, EngineState::Pending(w) if w.starts_with("FailedCreate") && w.contains("exceeded quota")),
        "{state:?}"
    );

    // Logs: nothing while the container waits, the pod's log once it runs.
    let spool = dir.path().join("output");
    *api.pods.lock() = "pods_running".into();
    k8s.pull_output(NAME, &spool, 0).await.unwrap();
    assert!(!spool.exists(), "no log before the container starts");
    *api.log.lock() = Some("pod_log".into());
    k8s.pull_output(NAME, &spool, 0).await.unwrap();
    let log = std::fs::read_to_string(&spool).unwrap();
    assert_eq!(
        log,
        std::fs::read_to_string(fixtures().join("pod_log.txt")).unwrap()
    );
    let len = log.len() as u64;
    k8s.pull_output(NAME, &spool, len).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&spool).unwrap(),
        log,
        "nothing twice"
    );

    // A restarted server finds it by name; a cancel deletes the Job with its pods.
    *api.job.lock() = Some("job_running".into());
    assert_eq!(k8s.find(NAME).await.unwrap().as_deref(), Some(NAME));
    k8s.stop(NAME).await.unwrap();
    let seen = api.seen.lock().clone();
    let delete = seen
        .iter()
        .find(|(m, p, _)| m == "DELETE" && p.contains("/jobs/"))
        .unwrap();
    assert!(
        delete.2["propagationPolicy"] == "Background"
            || delete.1.contains("propagationPolicy=Background"),
        "{delete:?}"
    );
    assert!(seen
        .iter()
        .any(|(m, p, _)| m == "DELETE" && p.contains("/secrets/")));
    assert_eq!(k8s.find(NAME).await.unwrap(), None, "gone");
    assert_eq!(k8s.state(NAME).await.unwrap(), None);
}

#[tokio::test]
async fn refusals_of_the_api_are_kept_word_for_word() {
    let dir = tempfile::tempdir().unwrap();
    let (k8s, api) = connect(dir.path()).await;
    for (refusal, words) in [
        ("status_forbidden", "cannot create resource \"jobs\""),
        ("status_quota", "exceeded quota"),
    ] {
        *api.create_refusal.lock() = Some(refusal.into());
        match k8s.submit(&attempt()).await {
            Err(EngineError::Rejected(why)) => assert!(why.contains(words), "{why}"),
            other => panic!("{refusal}: {other:?}"),
        }
    }
    // A refused Job leaves no Secret with the job's token behind.
    let seen = api.seen.lock().clone();
    assert!(seen
        .iter()
        .any(|(m, p, _)| m == "DELETE" && p.contains(&format!("/secrets/{NAME}"))));
}

#[test]
fn not_ready_and_cordoned_nodes_are_not_capacity() {
    let nodes: Vec<k8s_openapi::api::core::v1::Node> =
        serde_json::from_value(fixture("nodes")["items"].clone()).unwrap();
    let parsed = parse_nodes(&nodes);
    assert_eq!(parsed.len(), 3);
    let old = parsed.iter().find(|n| n.name == "old-1").unwrap();
    assert!(old.state.contains("down"), "{old:?}");
}

/// A Kubernetes pool takes its capacity from the ready nodes and refuses, at submit, what
/// no node can hold and gangs (not built for Kubernetes yet).
#[tokio::test]
async fn a_kubernetes_pool_refuses_what_it_cannot_run_at_submit() {
    use trainyard_compute::executor::cluster::{ClusterExecutor, ClusterOptions};
    use trainyard_compute::Executor;
    use trainyard_core::Resources;
    let dir = tempfile::tempdir().unwrap();
    let (k8s, _api) = connect(dir.path()).await;
    let store = trainyard_store::Store::open(
        &trainyard_store::Db::sqlite_url(&dir.path().join("t.db")),
        &format!("file://{}", dir.path().join("blobs").display()),
    )
    .await
    .unwrap();
    let tracking = trainyard_tracking::Tracking::new(store.db.clone(), store.blobs.clone());
    let executor = ClusterExecutor::connect(
        k8s,
        ClusterOptions {
            engine_queue: 0,
            pool: "k8s".into(),
            program: "/usr/local/bin/trainyard".into(),
            server_url: "http://trainyard:8080".into(),
            spool_dir: dir.path().join("spool"),
        },
        store.db.clone(),
        store.blobs.clone(),
        tracking,
    )
    .await
    .unwrap();
    // gpu-1 and cpu-1 are ready; old-1 is not.
    assert_eq!(executor.capacity().gpus.len(), 2);
    assert_eq!(executor.capacity().cpus_milli, 11_910);
    let want = |cpus: f64, gpus: u32, workers: u32| Resources {
        cpus,
        memory_mb: None,
        gpus,
        workers,
    };
    assert!(executor.never_fits(&want(2.0, 1, 1)).is_none());
    assert_eq!(
        executor.never_fits(&want(9.0, 0, 1)).unwrap().field,
        "resources.cpus",
        "more than the largest node"
    );
    let gang = executor.never_fits(&want(1.0, 0, 2)).unwrap();
    assert_eq!(gang.field, "resources.workers");
    assert!(gang.message.contains("kubernetes"), "{}", gang.message);
}
