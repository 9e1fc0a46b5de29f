//! What every cluster engine shares (`ClusterExecutor`), against an engine in this process
//! whose answers the test scripts: the engine's id is stored before the attempt counts as
//! started; a job the engine forgets ends `lost`; a time limit stops the engine's job and
//! ends `timeout`; a restarted server that never stored the id finds the job by its name;
//! a refusal fails the attempt with the engine's words. Real engines run the same paths in
//! `crates/cli/tests/clusters.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use trainyard_compute::executor::cluster::{
    ClusterExecutor, ClusterOptions, Ended, Engine, EngineError, EngineJob, EngineState,
};
use trainyard_compute::{Attempt, Executor, Node};
use trainyard_core::time::now_ms;
use trainyard_core::{ExitReason, Job, JobState, Resources};
use trainyard_store::Store;

/// An engine whose jobs do what the test says.
#[derive(Default)]
struct Scripted {
    /// Engine id → its current state (`None`: the engine forgot it).
    jobs: Mutex<HashMap<String, Option<EngineState>>>,
    names: Mutex<HashMap<String, String>>,
    submitted: Mutex<Vec<EngineJob>>,
    stopped: Mutex<Vec<String>>,
    refuse: Mutex<Option<String>>,
}

/// The engine the executor holds; the test keeps the `Scripted` behind it.
struct Shared(Arc<Scripted>);

impl std::ops::Deref for Shared {
    type Target = Scripted;
    fn deref(&self) -> &Scripted {
        &self.0
    }
}

#[async_trait]
impl Engine for Shared {
    fn kind(&self) -> &'static str {
        "scripted"
    }

    async fn submit(&self, job: &EngineJob) -> Result<String, EngineError> {
        if let Some(why) = self.refuse.lock().clone() {
            return Err(EngineError::Rejected(why));
        }
        let id = format!("e{}", self.submitted.lock().len() + 1);
        self.submitted.lock().push(job.clone());
        self.names.lock().insert(job.name.clone(), id.clone());
        self.jobs
            .lock()
            .insert(id.clone(), Some(EngineState::Running(Some("n1".into()))));
        Ok(id)
    }

    async fn find(&self, name: &str) -> Result<Option<String>, EngineError> {
        Ok(self.names.lock().get(name).cloned())
    }

    async fn state(&self, id: &str) -> Result<Option<EngineState>, EngineError> {
        Ok(self.jobs.lock().get(id).cloned().flatten())
    }

    async fn stop(&self, id: &str) -> Result<(), EngineError> {
        self.stopped.lock().push(id.to_string());
        self.jobs.lock().insert(
            id.to_string(),
            Some(EngineState::Ended(Ended {
                reason: ExitReason::Cancelled,
                exit_code: None,
                signal: Some(15),
                engine_says: "CANCELLED".into(),
            })),
        );
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<Node>, EngineError> {
        Ok(vec![Node {
            name: "n1".into(),
            state: "idle".into(),
            cpus: 4.0,
            memory_mb: 8000,
            gpus: 0,
            free_cpus: None,
            free_memory_mb: None,
            free_gpus: None,
        }])
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    store: Store,
    engine: Arc<Scripted>,
    executor: Arc<ClusterExecutor<Shared>>,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &trainyard_store::Db::sqlite_url(&dir.path().join("t.db")),
        &format!("file://{}", dir.path().join("blobs").display()),
    )
    .await
    .unwrap();
    let tracking = trainyard_tracking::Tracking::new(store.db.clone(), store.blobs.clone());
    let engine = Arc::new(Scripted::default());
    let executor = ClusterExecutor::connect(
        Shared(engine.clone()),
        ClusterOptions {
            engine_queue: 0,
            pool: "p".into(),
            program: "/opt/trainyard".into(),
            server_url: "http://server:8080".into(),
            spool_dir: dir.path().join("spool"),
        },
        store.db.clone(),
        store.blobs.clone(),
        tracking,
    )
    .await
    .unwrap();
    Setup {
        _dir: dir,
        store,
        engine,
        executor: Arc::new(executor),
    }
}

/// A job stored as running its first attempt (as the scheduler leaves it before `run`).
async fn running_job(store: &Store, timeout_s: Option<u64>) -> Job {
    let job = Job {
        id: trainyard_core::new_id(),
        workspace: "default".into(),
        name: "n".into(),
        state: JobState::Queued,
        command: vec!["sh".into(), "-c".into(), "echo hi".into()],
        task: None,
        env: Default::default(),
        secrets: Default::default(),
        working_dir: None,
        resources: Resources::default(),
        priority: 0,
        max_retries: 0,
        timeout_s,
        tracking: Default::default(),
        labels: Default::default(),
        attempt: 0,
        exit_code: None,
        exit_reason: None,
        message: None,
        host: None,
        gpus: vec![],
        created_at_ms: now_ms(),
        pool: Some("p".into()),
        engine_id: None,
        started_at_ms: None,
        finished_at_ms: None,
    };
    store.db.insert_job(&job).await.unwrap();
    let fence = store
        .db
        .acquire_lease("t", "t", now_ms(), 60_000)
        .await
        .unwrap()
        .unwrap();
    assert!(store
        .db
        .mark_running(&job.id, 1, "scripted:p", &[], now_ms(), &fence)
        .await
        .unwrap());
    store.db.get_job("default", &job.id).await.unwrap().unwrap()
}

fn attempt(job: &Job) -> Attempt {
    Attempt {
        job: job.clone(),
        number: 1,
        gpus: vec![],
        env: vec![("MLFLOW_TRACKING_URI".into(), "http://127.0.0.1:1".into())],
    }
}

/// Until the job's stored message contains `needle`.
async fn wait_message(store: &Store, id: &str, needle: &str) {
    for _ in 0..200 {
        let job = store.db.get_job("default", id).await.unwrap().unwrap();
        if job.message.unwrap_or_default().contains(needle) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the job's message never said {needle:?}");
}

#[tokio::test]
async fn the_engines_id_is_stored_before_the_start_and_a_forgotten_job_ends_lost() {
    let s = setup().await;
    let job = running_job(&s.store, None).await;
    let (started, on_start) = tokio::sync::oneshot::channel();
    let run = tokio::spawn({
        let executor = s.executor.clone();
        let attempt = attempt(&job);
        async move { executor.run(attempt, started).await }
    });
    on_start.await.unwrap();
    let stored = s
        .store
        .db
        .get_job("default", &job.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.engine_id.as_deref(),
        Some("e1"),
        "stored before `started`"
    );
    let sent = s.engine.submitted.lock()[0].clone();
    assert_eq!(sent.name, format!("trainyard-{}-1", job.id));
    let env: HashMap<_, _> = sent.env.into_iter().collect();
    assert_eq!(
        env["MLFLOW_TRACKING_URI"], "http://server:8080",
        "jobs reach the server by the pool's URL"
    );
    assert_eq!(env["TRAINYARD_JOB_ATTEMPT"], "1");
    wait_message(&s.store, &job.id, "scripted: running on n1").await;

    // The engine forgets the job (its controller lost its state): lost, not hung.
    s.engine.jobs.lock().insert("e1".into(), None);
    let record = run.await.unwrap();
    assert_eq!(record.reason, ExitReason::Lost, "{record:?}");
    assert!(
        record.message.contains("no longer knows job e1"),
        "{record:?}"
    );
}

#[tokio::test]
async fn a_time_limit_stops_the_engines_job_and_ends_timeout() {
    let s = setup().await;
    let job = running_job(&s.store, Some(1)).await;
    let (started, _on_start) = tokio::sync::oneshot::channel();
    let t0 = std::time::Instant::now();
    let record = s.executor.run(attempt(&job), started).await;
    assert_eq!(record.reason, ExitReason::Timeout, "{record:?}");
    assert_eq!(*s.engine.stopped.lock(), ["e1"]);
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    let sent = s.engine.submitted.lock()[0].clone();
    assert_eq!(
        sent.time_limit_s,
        Some(61),
        "the engine's own limit is a backstop"
    );
}

#[tokio::test]
async fn a_restart_finds_the_engines_job_by_name_when_its_id_was_never_stored() {
    let s = setup().await;
    let job = running_job(&s.store, None).await;
    // An earlier server submitted it, then died before storing the id.
    let name = format!("trainyard-{}-1", job.id);
    s.engine.names.lock().insert(name, "e9".into());
    s.engine.jobs.lock().insert(
        "e9".into(),
        Some(EngineState::Ended(Ended {
            reason: ExitReason::Exited,
            exit_code: Some(4),
            signal: None,
            engine_says: "FAILED".into(),
        })),
    );
    let record = s.executor.adopt(&job, 1).await;
    assert_eq!(
        (record.reason, record.exit_code),
        (ExitReason::Exited, Some(4))
    );
    assert!(
        record.message.contains("scripted job e9: FAILED"),
        "{record:?}"
    );
    let stored = s
        .store
        .db
        .get_job("default", &job.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.engine_id.as_deref(), Some("e9"));

    // Nothing by that name either: the attempt never reached the engine.
    let other = running_job(&s.store, None).await;
    let record = s.executor.adopt(&other, 1).await;
    assert_eq!(record.reason, ExitReason::Lost, "{record:?}");
}

#[tokio::test]
async fn a_refusal_fails_the_attempt_with_the_engines_words() {
    let s = setup().await;
    let job = running_job(&s.store, None).await;
    *s.engine.refuse.lock() = Some("Invalid feature specification".into());
    let (started, _on_start) = tokio::sync::oneshot::channel();
    let record = s.executor.run(attempt(&job), started).await;
    assert_eq!(record.reason, ExitReason::SpawnFailed);
    assert!(
        record
            .message
            .contains("refused the job: Invalid feature specification"),
        "{record:?}"
    );
}
