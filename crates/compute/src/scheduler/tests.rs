//! Scheduling decisions against an executor in this process: the scheduler, a real SQLite
//! store and real tracking, but attempts that start and end when the test says so. The
//! real-process behaviour (supervisors, signals, restarts) is tested in `crates/cli/tests`.

use parking_lot::Mutex;
use std::collections::BTreeMap;

use async_trait::async_trait;
use tokio::sync::Notify;
use trainyard_core::JobTracking as SubmissionTracking;

use super::*;

fn capacity() -> Capacity {
    Capacity {
        cpus_milli: 2000,
        memory_mb: 1000,
        gpus: vec![0, 1],
    }
}

fn free() -> Free {
    let c = capacity();
    Free {
        cpus_milli: c.cpus_milli,
        memory_mb: c.memory_mb,
        gpus: c.gpus.into_iter().collect(),
        engine_queue: 0,
    }
}

/// What the test executor saw.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    /// `run` was called (the attempt is launching).
    Launching(String),
    /// The attempt exists (`started` was sent).
    Started(String),
    /// `cancel` reached a started attempt.
    Cancelled(String),
}

#[derive(Default)]
struct Book {
    /// Started attempts by job name: their resources, GPUs and how to end them.
    running: HashMap<String, (Resources, Vec<u32>, oneshot::Sender<ExitRecord>)>,
    /// Every start, in order, by job name.
    starts: Vec<String>,
    /// Set when a start would have gone beyond the capacity.
    overcommitted: Option<String>,
    /// Job names whose start is held until the test releases it.
    held: HashMap<String, Arc<Notify>>,
    /// Names of started jobs by id (the scheduler cancels by id).
    names: HashMap<String, String>,
}

/// Attempts that run until the test ends them. Every start is checked against the capacity.
struct TestExecutor {
    capacity: Capacity,
    /// What `engine_queue` answers (0 but in the engine-queue test).
    engine_queue: u32,
    book: Mutex<Book>,
    events: mpsc::UnboundedSender<Event>,
}

impl TestExecutor {
    fn new(capacity: Capacity) -> (Arc<Self>, mpsc::UnboundedReceiver<Event>) {
        let (events, rx) = mpsc::unbounded_channel();
        (
            Arc::new(Self {
                capacity,
                engine_queue: 0,
                book: Mutex::new(Book::default()),
                events,
            }),
            rx,
        )
    }

    /// Holds the launch of the job named `name` until `release` is notified.
    fn hold(&self, name: &str) -> Arc<Notify> {
        let release = Arc::new(Notify::new());
        self.book
            .lock()
            .held
            .insert(name.to_string(), release.clone());
        release
    }

    /// Ends the running attempt of `name` with exit code `code`.
    fn finish(&self, name: &str, code: i32) {
        let (_, _, end) = self
            .book
            .lock()
            .running
            .remove(name)
            .unwrap_or_else(|| panic!("{name} is not running"));
        let _ = end.send(exited(code));
    }

    fn starts(&self) -> Vec<String> {
        self.book.lock().starts.clone()
    }

    fn running(&self) -> Vec<String> {
        let mut names: Vec<_> = self.book.lock().running.keys().cloned().collect();
        names.sort();
        names
    }
}

fn exited(code: i32) -> ExitRecord {
    ExitRecord {
        exit_code: Some(code),
        signal: None,
        reason: ExitReason::Exited,
        message: format!("exited with code {code}"),
        finished_at_ms: now_ms(),
    }
}

#[async_trait]
impl Executor for TestExecutor {
    fn kind(&self) -> &'static str {
        "test"
    }

    fn capacity(&self) -> &Capacity {
        &self.capacity
    }

    fn engine_queue(&self) -> u32 {
        self.engine_queue
    }

    fn host(&self) -> &str {
        "test"
    }

    async fn run(&self, attempt: Attempt, started: oneshot::Sender<()>) -> ExitRecord {
        let name = attempt.job.name.clone();
        let _ = self.events.send(Event::Launching(name.clone()));
        let held = self.book.lock().held.remove(&name);
        if let Some(release) = held {
            release.notified().await;
        }
        let (end, ended) = oneshot::channel();
        {
            let mut book = self.book.lock();
            let r = &attempt.job.resources;
            let cpus: u64 = book.running.values().map(|(r, _, _)| r.cpus_milli()).sum();
            let memory: u64 = book
                .running
                .values()
                .map(|(r, _, _)| r.memory_mb.unwrap_or(0))
                .sum();
            let gpus_in_use: HashSet<u32> = book
                .running
                .values()
                .flat_map(|(_, g, _)| g.iter().copied())
                .collect();
            if cpus + r.cpus_milli() > self.capacity.cpus_milli
                || memory + r.memory_mb.unwrap_or(0) > self.capacity.memory_mb
                || attempt.gpus.len() != r.gpus as usize
                || attempt.gpus.iter().any(|g| gpus_in_use.contains(g))
            {
                book.overcommitted = Some(format!(
                    "{name} started over {} running attempts",
                    book.running.len()
                ));
            }
            book.starts.push(name.clone());
            book.names.insert(attempt.job.id.clone(), name.clone());
            book.running
                .insert(name.clone(), (r.clone(), attempt.gpus.clone(), end));
        }
        let _ = started.send(());
        let _ = self.events.send(Event::Started(name));
        ended.await.unwrap_or_else(|_| exited(0))
    }

    async fn adopt(&self, _job: &Job, _attempt: u32) -> ExitRecord {
        exited(0)
    }

    async fn cancel(&self, job_id: &str, _attempt: u32) -> bool {
        let mut book = self.book.lock();
        let Some(name) = book.names.get(job_id).cloned() else {
            return false; // still launching: nothing to ask yet
        };
        let Some((_, _, end)) = book.running.remove(&name) else {
            return false;
        };
        let _ = self.events.send(Event::Cancelled(name));
        let _ = end.send(ExitRecord {
            exit_code: None,
            signal: Some(15),
            reason: ExitReason::Cancelled,
            message: "cancelled".into(),
            finished_at_ms: now_ms(),
        });
        true
    }

    async fn cleanup(&self, _job_id: &str) {}
}

struct Harness {
    _dir: tempfile::TempDir,
    handle: SchedulerHandle,
    task: tokio::task::JoinHandle<()>,
    executor: Arc<TestExecutor>,
    events: mpsc::UnboundedReceiver<Event>,
}

async fn harness(capacity: Capacity, options: SchedulerOptions) -> Harness {
    harness_with(capacity, options, 0, None).await
}

async fn harness_with(
    capacity: Capacity,
    options: SchedulerOptions,
    engine_queue: u32,
    preempt: Option<crate::fair_share::PreemptRules>,
) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &trainyard_store::Db::sqlite_url(&dir.path().join("meta.db")),
        &format!("file://{}", dir.path().join("blobs").display()),
    )
    .await
    .unwrap();
    let tracking = trainyard_tracking::Tracking::new(store.db.clone(), store.blobs.clone());
    let (mut executor, events) = TestExecutor::new(capacity);
    Arc::get_mut(&mut executor).unwrap().engine_queue = engine_queue;
    let background = Background::new();
    let leadership = Leadership::start(
        store.db.clone(),
        LeaseOptions::new("in-process".into(), true),
        &background,
    )
    .await
    .unwrap();
    let (handle, mut tasks) = Scheduler::start_pools(
        store,
        vec![Pool {
            name: "local".into(),
            executor: executor.clone(),
            preempt,
        }],
        JobTracking {
            tracking,
            tracking_uri: "http://127.0.0.1:1".into(),
            ca_cert: None,
            secrets_key: None,
        },
        options,
        &background,
        leadership,
    )
    .await
    .unwrap();
    let task = tasks.remove(0);
    Harness {
        _dir: dir,
        handle,
        task,
        executor,
        events,
    }
}

fn cpus(n: u64) -> Capacity {
    Capacity {
        cpus_milli: n * 1000,
        memory_mb: 1000,
        gpus: Vec::new(),
    }
}

fn submission(name: &str, resources: Resources, priority: i32) -> JobSubmission {
    JobSubmission {
        name: Some(name.to_string()),
        command: vec!["true".into()],
        task: None,
        env: BTreeMap::new(),
        secrets: BTreeMap::new(),
        working_dir: None,
        resources,
        priority,
        max_retries: 0,
        timeout_s: None,
        labels: BTreeMap::new(),
        tracking: SubmissionTracking::default(),
        pool: None,
    }
}

fn cpu_job(n: f64) -> Resources {
    Resources {
        cpus: n,
        memory_mb: None,
        gpus: 0,
        workers: 1,
    }
}

const WAIT: Duration = Duration::from_secs(10);

impl Harness {
    async fn submit(&self, name: &str, resources: Resources, priority: i32) -> Job {
        self.handle
            .submit("default", submission(name, resources, priority))
            .await
            .unwrap()
    }

    /// The next event, skipping launches unless `launches`.
    async fn next(&mut self, launches: bool) -> Event {
        loop {
            let event = tokio::time::timeout(WAIT, self.events.recv())
                .await
                .expect("the scheduler did nothing for 10 s")
                .expect("the executor is gone");
            if launches || !matches!(event, Event::Launching(_)) {
                return event;
            }
        }
    }

    /// The name of the next job that starts.
    async fn started(&mut self) -> String {
        match self.next(false).await {
            Event::Started(name) => name,
            other => panic!("expected a start, got {other:?}"),
        }
    }

    /// Nothing starts for a while (each message the loop gets is followed by a pass, and a
    /// usage query goes through the loop, so once it answers, the pass has happened).
    async fn nothing_starts(&mut self) {
        self.handle.usage().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        while let Ok(event) = self.events.try_recv() {
            assert!(
                !matches!(event, Event::Started(_)),
                "unexpected start: {event:?}"
            );
        }
    }

    async fn wait_state(&self, job: &Job, state: JobState) -> Job {
        self.wait_state_in("default", job, state).await
    }
}

#[tokio::test]
async fn the_best_queued_job_starts_first_by_priority_then_age() {
    let mut h = harness(cpus(1), SchedulerOptions::default()).await;
    h.submit("blocker", cpu_job(1.0), 0).await;
    assert_eq!(h.started().await, "blocker");
    h.submit("low", cpu_job(1.0), 0).await;
    h.submit("high-old", cpu_job(1.0), 5).await;
    h.submit("high-new", cpu_job(1.0), 5).await;
    h.nothing_starts().await;
    for (ends, next) in [
        ("blocker", "high-old"),
        ("high-old", "high-new"),
        ("high-new", "low"),
    ] {
        h.executor.finish(ends, 0);
        assert_eq!(h.started().await, next, "after {ends} ended");
    }
}

#[tokio::test]
async fn capacity_is_never_exceeded_under_a_mixed_load() {
    let mut h = harness(capacity(), SchedulerOptions::default()).await;
    // 24 jobs of varied shapes: CPUs, memory, GPUs; some need all of one resource.
    let shapes = [
        (0.5, Some(100), 0),
        (1.0, None, 1),
        (2.0, Some(1000), 0),
        (0.25, Some(300), 2),
        (1.5, Some(500), 1),
        (0.1, None, 0),
    ];
    let mut jobs = Vec::new();
    for i in 0..24 {
        let (c, memory_mb, gpus) = shapes[i % shapes.len()];
        let resources = Resources {
            cpus: c,
            memory_mb,
            gpus,
            workers: 1,
        };
        jobs.push(
            h.submit(&format!("job-{i}"), resources, (i % 3) as i32)
                .await,
        );
    }
    let mut peak = 0;
    while h.executor.starts().len() < jobs.len() || !h.executor.running().is_empty() {
        // Let the loop start what fits, then end the oldest running attempt.
        h.handle.usage().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let running = h.executor.running();
        peak = peak.max(running.len());
        if let Some(first) = running.first() {
            h.executor.finish(first, 0);
        }
    }
    assert_eq!(h.executor.book.lock().overcommitted, None);
    assert!(peak > 1, "jobs that fit together ran together");
    for job in &jobs {
        h.wait_state(job, JobState::Succeeded).await;
    }
    let usage = h.handle.usage().await.unwrap();
    assert_eq!(usage.free, usage.capacity, "everything was given back");
    while h.events.try_recv().is_ok() {}
}

#[tokio::test]
async fn smaller_jobs_pass_a_big_one_only_within_the_backfill_window() {
    // Within the window: the small job behind the big one starts in the gap.
    let mut h = harness(cpus(2), SchedulerOptions::default()).await;
    h.submit("blocker", cpu_job(1.0), 0).await;
    assert_eq!(h.started().await, "blocker");
    h.submit("big", cpu_job(2.0), 1).await;
    h.submit("small", cpu_job(1.0), 0).await;
    assert_eq!(h.started().await, "small");

    // Past the window (zero here): nothing passes the big job, so what it needs drains.
    let mut h = harness(
        cpus(2),
        SchedulerOptions {
            backfill_window: Duration::ZERO,
        },
    )
    .await;
    h.submit("blocker", cpu_job(1.0), 0).await;
    assert_eq!(h.started().await, "blocker");
    h.submit("big", cpu_job(2.0), 1).await;
    h.submit("small", cpu_job(1.0), 0).await;
    h.nothing_starts().await;
    h.executor.finish("blocker", 0);
    assert_eq!(h.started().await, "big");
    h.nothing_starts().await;
    h.executor.finish("big", 0);
    assert_eq!(h.started().await, "small");
}

#[tokio::test]
async fn a_cancel_during_the_launch_reaches_the_attempt_once_it_exists() {
    let mut h = harness(cpus(1), SchedulerOptions::default()).await;
    let release = h.executor.hold("slow");
    let job = h.submit("slow", cpu_job(1.0), 0).await;
    assert_eq!(h.next(true).await, Event::Launching("slow".into()));
    // The attempt does not exist yet: the cancel is remembered, not lost.
    h.handle.cancel("default", &job.id).await.unwrap();
    release.notify_one();
    assert_eq!(h.next(false).await, Event::Started("slow".into()));
    assert_eq!(h.next(false).await, Event::Cancelled("slow".into()));
    let ended = h.wait_state(&job, JobState::Cancelled).await;
    assert_eq!(ended.exit_reason, Some(ExitReason::Cancelled));
    // Its CPU is free again.
    h.submit("next", cpu_job(1.0), 0).await;
    assert_eq!(h.started().await, "next");
}

#[tokio::test]
async fn a_cancelled_queued_job_never_starts() {
    let mut h = harness(cpus(1), SchedulerOptions::default()).await;
    h.submit("blocker", cpu_job(1.0), 0).await;
    assert_eq!(h.started().await, "blocker");
    let queued = h.submit("queued", cpu_job(1.0), 0).await;
    h.handle.cancel("default", &queued.id).await.unwrap();
    h.wait_state(&queued, JobState::Cancelled).await;
    h.executor.finish("blocker", 0);
    h.nothing_starts().await;
    assert_eq!(h.executor.starts(), ["blocker"]);
}

#[tokio::test]
async fn a_failed_attempt_is_retried_until_it_succeeds() {
    let mut h = harness(cpus(1), SchedulerOptions::default()).await;
    let mut flaky = submission("flaky", cpu_job(1.0), 0);
    flaky.max_retries = 2;
    let job = h.handle.submit("default", flaky).await.unwrap();
    assert_eq!(h.started().await, "flaky");
    h.executor.finish("flaky", 1);
    assert_eq!(h.started().await, "flaky", "retried");
    h.executor.finish("flaky", 0);
    let done = h.wait_state(&job, JobState::Succeeded).await;
    assert_eq!(done.attempt, 2);
}

#[tokio::test]
async fn a_request_beyond_the_executor_capacity_is_refused_at_submit() {
    let h = harness(capacity(), SchedulerOptions::default()).await;
    let too_big = Resources {
        cpus: 1.0,
        memory_mb: None,
        gpus: 3,
        workers: 1,
    };
    let refused = h
        .handle
        .submit("default", submission("big", too_big, 0))
        .await;
    assert!(matches!(refused, Err(ComputeError::Unschedulable(_))));
}

#[tokio::test]
async fn a_dead_loop_is_seen_by_its_handle() {
    let h = harness(capacity(), SchedulerOptions::default()).await;
    assert!(h.handle.loop_running());
    // A panic unwinds the loop's future the way an abort drops it.
    h.task.abort();
    let _ = h.task.await;
    assert!(!h.handle.loop_running());
}

#[test]
fn gpus_are_handed_out_exclusively() {
    let mut free = free();
    let one_gpu = Resources {
        cpus: 0.5,
        memory_mb: None,
        gpus: 1,
        workers: 1,
    };
    let a = free.reserve(&one_gpu).unwrap();
    let b = free.reserve(&one_gpu).unwrap();
    assert_ne!(a, b);
    assert!(free.reserve(&one_gpu).is_none(), "no third GPU");
    free.release(&one_gpu, &a, &capacity());
    assert_eq!(free.reserve(&one_gpu).unwrap(), a);
}

#[test]
fn never_over_commits_cpus_or_memory() {
    let mut free = free();
    let job = Resources {
        cpus: 1.0,
        memory_mb: Some(400),
        gpus: 0,
        workers: 1,
    };
    assert!(free.reserve(&job).is_some());
    assert!(free.reserve(&job).is_some());
    assert!(free.reserve(&job).is_none());
    let mut free = self::free();
    let big_memory = Resources {
        cpus: 0.1,
        memory_mb: Some(600),
        gpus: 0,
        workers: 1,
    };
    assert!(free.reserve(&big_memory).is_some());
    assert!(free.reserve(&big_memory).is_none());
}

#[test]
fn queue_orders_by_priority_then_age() {
    let key = |p, t, id: &str| QueueKey {
        priority: Reverse(p),
        created_at_ms: t,
        id: id.into(),
    };
    let mut keys = [
        key(0, 1, "a"),
        key(5, 3, "b"),
        key(5, 2, "c"),
        key(-1, 0, "d"),
    ];
    keys.sort();
    let order: Vec<_> = keys.iter().map(|k| k.id.as_str()).collect();
    assert_eq!(order, ["c", "b", "a", "d"]);
}

/// Two pools, each on its own executor: a job runs in the pool it names (the first by
/// default), is refused at submit against that pool's capacity, and a pool that does not
/// exist is named in the refusal.
#[tokio::test]
async fn jobs_run_in_the_pool_they_name_and_only_there() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &trainyard_store::Db::sqlite_url(&dir.path().join("meta.db")),
        &format!("file://{}", dir.path().join("blobs").display()),
    )
    .await
    .unwrap();
    let tracking = trainyard_tracking::Tracking::new(store.db.clone(), store.blobs.clone());
    let (small, mut small_events) = TestExecutor::new(cpus(1));
    let (big, mut big_events) = TestExecutor::new(cpus(8));
    let background = Background::new();
    let leadership = Leadership::start(
        store.db.clone(),
        LeaseOptions::new("test".into(), true),
        &background,
    )
    .await
    .unwrap();
    let (handle, _loops) = Scheduler::start_pools(
        store,
        vec![
            Pool {
                name: "small".into(),
                executor: small.clone(),
                preempt: None,
            },
            Pool {
                name: "big".into(),
                executor: big.clone(),
                preempt: None,
            },
        ],
        JobTracking {
            tracking,
            tracking_uri: "http://127.0.0.1:1".into(),
            ca_cert: None,
            secrets_key: None,
        },
        SchedulerOptions::default(),
        &background,
        leadership,
    )
    .await
    .unwrap();
    let mut to_big = submission("wide", cpu_job(4.0), 0);
    to_big.pool = Some("big".into());
    let wide = handle.submit("default", to_big.clone()).await.unwrap();
    assert_eq!(wide.pool.as_deref(), Some("big"));
    let plain = handle
        .submit("default", submission("plain", cpu_job(1.0), 0))
        .await
        .unwrap();
    assert_eq!(
        plain.pool.as_deref(),
        Some("small"),
        "the first pool is the default"
    );
    let started = |events: &mut mpsc::UnboundedReceiver<Event>| {
        let mut names = Vec::new();
        while let Ok(e) = events.try_recv() {
            if let Event::Started(n) = e {
                names.push(n);
            }
        }
        names
    };
    tokio::time::timeout(WAIT, async {
        while big.starts().is_empty() || small.starts().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(started(&mut big_events), ["wide"]);
    assert_eq!(started(&mut small_events), ["plain"]);

    // 4 CPUs fit the big pool but never the small one.
    let mut too_wide = submission("too-wide", cpu_job(4.0), 0);
    too_wide.pool = Some("small".into());
    match handle.submit("default", too_wide).await {
        Err(ComputeError::Unschedulable(why)) => assert_eq!(why.field, "resources.cpus"),
        other => panic!("{other:?}"),
    }
    to_big.pool = Some("nowhere".into());
    match handle.submit("default", to_big).await {
        Err(ComputeError::Invalid(why)) => {
            assert_eq!(why.field, "pool");
            assert!(why.message.contains("small, big"), "{}", why.message);
        }
        other => panic!("{other:?}"),
    }
    let usage = handle.usage().await.unwrap();
    let names: Vec<_> = usage.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["small", "big"]);
    assert_eq!(usage.pools[1].free.cpus, 4.0);
    assert_eq!(usage.free.cpus, 0.0, "the top level is the default pool");
    assert!(handle.cancel("default", &wide.id).await.is_ok());
}

fn gpu_job(gpus: u32) -> Resources {
    Resources {
        cpus: 1.0,
        memory_mb: None,
        gpus,
        workers: 1,
    }
}

impl Harness {
    /// Makes workspace `name` with this weight and quota.
    async fn workspace(&self, name: &str, weight: f64, quota: crate::fair_share::Quota) {
        self.handle
            .store()
            .db
            .create_workspace(name, name, 0)
            .await
            .unwrap();
        self.handle
            .set_workspace_policy(name, crate::fair_share::WorkspacePolicy { weight, quota })
            .await
            .unwrap();
    }

    async fn wait_state_in(&self, workspace: &str, job: &Job, state: JobState) -> Job {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let now = self.handle.get(workspace, &job.id).await.unwrap();
            if now.state == state {
                return now;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} stayed {:?}, expected {state:?}",
                job.name,
                now.state
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn submit_in(&self, workspace: &str, name: &str, resources: Resources) -> Job {
        self.handle
            .submit(workspace, submission(name, resources, 0))
            .await
            .unwrap()
    }

    /// The job's message once it is `want` (or a panic after a while).
    async fn message(&self, workspace: &str, job: &Job, want: Option<&str>) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let now = self.handle.get(workspace, &job.id).await.unwrap();
            if now.message.as_deref() == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{}: message {:?}, expected {want:?}",
                job.name,
                now.message
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// When workspaces contend, each next start goes to the one furthest below its weighted
/// dominant share; a workspace's quota caps it even when the pool has room.
#[tokio::test]
async fn contended_gpus_go_by_weighted_fair_share_within_quotas() {
    let mut h = harness(
        Capacity {
            cpus_milli: 16_000,
            memory_mb: 16_000,
            gpus: vec![0, 1, 2],
        },
        SchedulerOptions::default(),
    )
    .await;
    h.workspace("a", 1.0, Default::default()).await;
    h.workspace(
        "b",
        2.0,
        crate::fair_share::Quota {
            gpus: Some(2),
            ..Default::default()
        },
    )
    .await;
    // The pool is full while both queue, a first.
    h.submit("blocker", gpu_job(3), 0).await;
    assert_eq!(h.started().await, "blocker");
    for name in ["a1", "a2", "a3"] {
        h.submit_in("a", name, gpu_job(1)).await;
    }
    let mut b = Vec::new();
    for name in ["b1", "b2", "b3"] {
        b.push(h.submit_in("b", name, gpu_job(1)).await);
    }
    h.nothing_starts().await;
    h.executor.finish("blocker", 0);
    // Shares 0 and 0: the older job, a1 (a: 1/3). Then b, at 0: b1 (b: 1/3 over weight 2
    // = 1/6), and b again, at 1/6 < 1/3: b2. The pool is full.
    let mut first = vec![h.started().await, h.started().await, h.started().await];
    first.sort();
    assert_eq!(first, ["a1", "b1", "b2"]);
    // b holds its quota (2 GPUs): b3 waits with the reason shown, even once GPUs free up.
    h.message("b", &b[2], Some("waiting: workspace gpu quota 2/2 in use"))
        .await;
    h.executor.finish("a1", 0);
    assert_eq!(h.started().await, "a2");
    h.nothing_starts().await;
    // b gives one back: b3 may start, and its reason is gone.
    h.executor.finish("b1", 0);
    assert_eq!(h.started().await, "b3");
    h.message("b", &b[2], None).await;
    assert!(h.executor.book.lock().overcommitted.is_none());
}

/// A job that can never fit its workspace's quota is refused at submit, naming it; a full
/// queued-jobs quota refuses more submissions; lowering a quota below what is in use ends
/// nothing that runs.
#[tokio::test]
async fn quotas_refuse_at_submit_and_never_stop_running_jobs() {
    let mut h = harness(
        Capacity {
            cpus_milli: 16_000,
            memory_mb: 16_000,
            gpus: vec![0, 1, 2, 3],
        },
        SchedulerOptions::default(),
    )
    .await;
    h.workspace(
        "t",
        1.0,
        crate::fair_share::Quota {
            gpus: Some(2),
            queued_jobs: Some(1),
            ..Default::default()
        },
    )
    .await;
    match h.handle.submit("t", submission("big", gpu_job(3), 0)).await {
        Err(ComputeError::OverQuota(f)) => {
            assert_eq!(f.field, "resources.gpus");
            assert!(f.message.contains("gpu quota is 2"), "{}", f.message);
        }
        other => panic!("{other:?}"),
    }
    h.submit_in("t", "t1", gpu_job(2)).await;
    assert_eq!(h.started().await, "t1");
    let t2 = h.submit_in("t", "t2", gpu_job(1)).await;
    h.message("t", &t2, Some("waiting: workspace gpu quota 2/2 in use"))
        .await;
    match h.handle.submit("t", submission("t3", gpu_job(1), 0)).await {
        Err(ComputeError::QuotaFull(why)) => {
            assert!(why.contains("queued-jobs quota 1/1"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    // Below what is in use: t1 keeps running, t2 keeps waiting.
    h.handle
        .set_workspace_policy(
            "t",
            crate::fair_share::WorkspacePolicy {
                weight: 1.0,
                quota: crate::fair_share::Quota {
                    gpus: Some(0),
                    ..Default::default()
                },
            },
        )
        .await
        .unwrap();
    h.nothing_starts().await;
    assert_eq!(h.executor.running(), ["t1"]);
    let listed = h.handle.workspaces().await.unwrap();
    let t = listed.iter().find(|w| w.name == "t").unwrap();
    assert_eq!(
        (t.in_use.gpus, t.in_use.running_jobs, t.queued_jobs),
        (2, 1, 1)
    );
    // Bad policies are refused, naming the field.
    for (weight, cpus, field) in [(0.0, None, "weight"), (1.0, Some(f64::NAN), "quota.cpus")] {
        let err = h
            .handle
            .set_workspace_policy(
                "t",
                crate::fair_share::WorkspacePolicy {
                    weight,
                    quota: crate::fair_share::Quota {
                        cpus,
                        ..Default::default()
                    },
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ComputeError::Invalid(f) if f.field == field),
            "{err:?}"
        );
    }
    assert!(matches!(
        h.handle
            .set_workspace_policy("nowhere", Default::default())
            .await,
        Err(ComputeError::WorkspaceNotFound(_))
    ));
}

/// A cluster pool hands the engine one attempt beyond what fits, to wait in the engine's
/// queue; when resources free up, that attempt takes them (the engine starts it) and the
/// next waiting job takes its place in the engine's queue.
#[tokio::test]
async fn an_engine_queue_slot_keeps_one_attempt_waiting_at_the_engine() {
    let mut h = harness_with(cpus(1), SchedulerOptions::default(), 1, None).await;
    for name in ["j1", "j2", "j3"] {
        h.submit(name, cpu_job(1.0), 0).await;
    }
    // j1 on the CPU, j2 in the engine's queue; j3 waits here.
    let mut first = vec![h.started().await, h.started().await];
    first.sort();
    assert_eq!(first, ["j1", "j2"]);
    h.nothing_starts().await;
    // j1 ends: j2 takes its CPU, j3 takes the engine-queue slot.
    h.executor.finish("j1", 0);
    assert_eq!(h.started().await, "j3");
    h.nothing_starts().await;
    // j2 ends: j3 takes the CPU; nothing is left to hand over.
    h.executor.finish("j2", 0);
    h.nothing_starts().await;
    let usage = h.handle.usage().await.unwrap();
    assert_eq!(usage.free.cpus, 0.0, "{usage:?}");
    h.executor.finish("j3", 0);
    h.nothing_starts().await;
    let usage = h.handle.usage().await.unwrap();
    assert_eq!(usage.free.cpus, 1.0, "{usage:?}");
}

/// With preemption on, a workspace below its entitled share gets its job started by
/// ending one of a workspace above its share (queued again, its retries untouched); the
/// loser keeps its share, and the same job is not preempted twice within the cool-down.
#[tokio::test]
async fn preemption_ends_an_over_share_job_once_and_queues_it_again() {
    let rules = crate::fair_share::PreemptRules {
        min_run_ms: 0,
        cooldown_ms: 3_600_000,
    };
    let mut h = harness_with(
        Capacity {
            cpus_milli: 8000,
            memory_mb: 8000,
            gpus: vec![0, 1],
        },
        SchedulerOptions::default(),
        0,
        Some(rules),
    )
    .await;
    h.workspace("a", 1.0, Default::default()).await;
    h.workspace("b", 1.0, Default::default()).await;
    let a1 = h.submit_in("a", "a1", gpu_job(1)).await;
    let a2 = h.submit_in("a", "a2", gpu_job(1)).await;
    let mut first = vec![h.started().await, h.started().await];
    first.sort();
    assert_eq!(first, ["a1", "a2"]);
    // b arrives: entitled to half, it holds nothing; a holds all.
    h.submit_in("b", "b1", gpu_job(1)).await;
    let preempted = match h.next(false).await {
        Event::Cancelled(name) => name,
        other => panic!("expected a preemption, got {other:?}"),
    };
    assert_eq!(h.started().await, "b1");
    let victim = if preempted == "a1" { &a1 } else { &a2 };
    let queued = h.wait_state_in("a", victim, JobState::Queued).await;
    assert!(
        queued
            .message
            .as_deref()
            .unwrap_or("")
            .contains("preempted"),
        "{queued:?}"
    );
    // a keeps its half; nothing else is preempted, and b's next job waits its turn.
    h.submit_in("b", "b2", gpu_job(1)).await;
    h.nothing_starts().await;
    assert_eq!(h.executor.running().len(), 2);
    // When b1 ends, b (which has used less) starts b2; when a's other job ends, the
    // preempted one runs again: its second attempt, with its retries untouched
    // (`max_retries` is 0).
    h.executor.finish("b1", 0);
    assert_eq!(h.started().await, "b2");
    let other = if preempted == "a1" { "a2" } else { "a1" };
    h.executor.finish(other, 0);
    assert_eq!(h.started().await, preempted);
    h.executor.finish(&preempted, 0);
    let done = h.wait_state_in("a", victim, JobState::Succeeded).await;
    assert_eq!(done.attempt, 2);
}
