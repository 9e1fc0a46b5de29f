//! Jobs on real cluster engines: the same job suite as on this machine (exit codes, logs,
//! cancel, time limits, retries, a GPU request against fake GRES, capacity refused at
//! submit, a kill -9 of the server mid-job), then `examples/digits` training, each on
//! Slurm 22.05 through slurmrestd, on Slurm through its commands, and on a Ray head.
//!
//! `.ci/run` starts the engines (`tests/cluster/start.sh`) and names them in
//! `TRAINYARD_TEST_SLURMRESTD_URL` + `TRAINYARD_TEST_SLURM_JWT_KEY`,
//! `TRAINYARD_TEST_SLURM_COMMANDS=1` and `TRAINYARD_TEST_RAY_URL`.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{example, ok, Server, ServerOptions};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(120);

/// One engine under test: its `[[pools]]` entry, after a local pool that comes first.
struct Engine {
    pool: &'static str,
    kind: &'static str,
    config: String,
}

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("{key} is not set (see tests/cluster/start.sh)"))
}

fn slurm_rest() -> Engine {
    Engine {
        pool: "hpc",
        kind: "slurm",
        config: format!(
            "[pools.slurm]\nurl = \"{}\"\nuser = \"root\"\njwt_key_file = \"{}\"\n",
            env("TRAINYARD_TEST_SLURMRESTD_URL"),
            env("TRAINYARD_TEST_SLURM_JWT_KEY")
        ),
    }
}

fn slurm_commands() -> Engine {
    assert_eq!(env("TRAINYARD_TEST_SLURM_COMMANDS"), "1");
    Engine {
        pool: "hpc-cli",
        kind: "slurm",
        config: String::new(),
    }
}

fn ray() -> Engine {
    Engine {
        pool: "ray",
        kind: "ray",
        config: format!("[pools.ray]\nurl = \"{}\"\n", env("TRAINYARD_TEST_RAY_URL")),
    }
}

async fn server_on(engine: &Engine) -> Server {
    let cache = tempfile::tempdir().unwrap().keep();
    Server::start_with(ServerOptions {
        cpus: 2.0,
        env: vec![("TRAINYARD_CACHE_DIR".into(), cache.display().to_string())],
        config_toml: Some(format!(
            "[[pools]]\nname = \"local\"\nexecutor = \"local\"\n\n\
             [[pools]]\nname = \"{}\"\nexecutor = \"{}\"\n{}",
            engine.pool, engine.kind, engine.config
        )),
        ..Default::default()
    })
    .await
}

/// A job in the engine's pool; 100 MB each, so that Slurm (which gives a job without a
/// memory request the whole node) runs several at once.
fn on(engine: &Engine, command: &str, extra: Value) -> Value {
    let mut job = json!({
        "command": ["sh", "-c", command],
        "pool": engine.pool,
        "resources": {"cpus": 1, "memory_mb": 100},
    });
    for (k, v) in extra.as_object().unwrap() {
        job[k] = v.clone();
    }
    job
}

fn id(job: &Value) -> String {
    job["id"].as_str().unwrap().to_string()
}

/// Until the engine says the job runs (its note in `message`).
async fn wait_engine_running(server: &Server, id: &str) -> Value {
    let deadline = Instant::now() + LONG;
    loop {
        let job = server.job(id).await;
        if job["message"]
            .as_str()
            .is_some_and(|m| m.contains(": running"))
        {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "never running: {job}\n{}",
            server.server_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn the_job_suite(engine: Engine) {
    let server = server_on(&engine).await;
    let kind = engine.kind;

    let exits = server
        .submit(on(
            &engine,
            "echo out-line; echo err-line >&2; exit 3",
            json!({}),
        ))
        .await;
    assert_eq!(exits["pool"], engine.pool);
    let env_job = server
        .submit(on(
            &engine,
            "echo \"job=$TRAINYARD_JOB_ID attempt=$TRAINYARD_JOB_ATTEMPT foo=$FOO run=$MLFLOW_RUN_ID\"",
            json!({"env": {"FOO": "it's bar"}}),
        ))
        .await;
    let cancelled = server.submit(on(&engine, "sleep 300", json!({}))).await;
    let timed = server
        .submit(on(
            &engine,
            "sleep 300",
            json!({"timeout_s": 3, "max_retries": 1}),
        ))
        .await;
    let retried = server
        .submit(on(
            &engine,
            "echo attempt $TRAINYARD_JOB_ATTEMPT; [ \"$TRAINYARD_JOB_ATTEMPT\" = 2 ]",
            json!({"max_retries": 1}),
        ))
        .await;
    // A job that is a shell line becomes the batch script on Slurm: its own `#SBATCH`
    // lines must not reach sbatch as options (here a GPU the job did not ask Trainyard
    // for, which its accounting would not see).
    let directives = server
        .submit(on(
            &engine,
            "#SBATCH --gres=gpu:1\n#SBATCH --job-name=escaped\necho \"name=$SLURM_JOB_NAME gpus=$SLURM_JOB_GPUS\"",
            json!({}),
        ))
        .await;
    let gpu = server
        .submit(on(
            &engine,
            "echo gpus=$CUDA_VISIBLE_DEVICES",
            json!({"resources": {"cpus": 1, "memory_mb": 100, "gpus": 1}}),
        ))
        .await;

    // More than the engine has is refused at submit, naming the resource.
    for (resources, field) in [
        (json!({"gpus": 3}), "resources.gpus"),
        (json!({"cpus": 3}), "resources.cpus"),
    ] {
        let r = server
            .post("/api/v1/jobs")
            .json(&json!({"command": ["true"], "pool": engine.pool, "resources": resources}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unschedulable", "{body}");
        assert_eq!(body["error"]["field"], field, "{body}");
    }

    let running = wait_engine_running(&server, &id(&cancelled)).await;
    assert!(running["engine_id"].is_string(), "{running}");
    assert_eq!(running["host"], format!("{kind}:{}", engine.pool));
    let r = server
        .post(&format!("/api/v1/jobs/{}/cancel", id(&cancelled)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let done = server.wait_done(&id(&exits), LONG).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["exit_code"], 3, "{done}");
    assert_eq!(done["exit_reason"], "exited", "{done}");
    assert!(
        done["message"]
            .as_str()
            .unwrap()
            .contains(&format!("{kind} job")),
        "the engine's words are kept: {done}"
    );
    let log = server.logs(&id(&exits), "").await;
    assert!(
        log.contains("out-line") && log.contains("err-line"),
        "{log}"
    );

    let done = server.wait_done(&id(&env_job), LONG).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let log = server.logs(&id(&env_job), "").await;
    let expected = format!("job={0} attempt=1 foo=it's bar run={0}", id(&env_job));
    assert!(log.contains(&expected), "{expected:?} not in {log}");

    let done = server.wait_done(&id(&cancelled), LONG).await;
    assert_eq!(done["state"], "cancelled", "{done}");
    assert_eq!(done["exit_reason"], "cancelled", "{done}");

    let done = server.wait_done(&id(&timed), LONG).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["exit_reason"], "timeout", "{done}");
    // The retry got its own 3 s, counted from its own start.
    assert_eq!(done["attempt"], 2, "{done}");
    let ran_ms = done["finished_at_ms"].as_i64().unwrap() - done["started_at_ms"].as_i64().unwrap();
    assert!(
        (2_500..60_000).contains(&ran_ms),
        "the second attempt ran {ran_ms} ms: {done}"
    );

    let done = server.wait_done(&id(&retried), LONG).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["attempt"], 2, "{done}");
    let log = server.logs(&id(&retried), "").await;
    assert!(
        log.contains("attempt 1") && log.contains("attempt 2"),
        "{log}"
    );

    let done = server.wait_done(&id(&directives), LONG).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let log = server.logs(&id(&directives), "").await;
    let seen = log
        .lines()
        .find(|l| l.starts_with("name="))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        !seen.contains("name=escaped") && seen.ends_with(" gpus="),
        "the job's own #SBATCH lines reached sbatch: {log}"
    );

    let done = server.wait_done(&id(&gpu), LONG).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let log = server.logs(&id(&gpu), "").await;
    let seen = log
        .lines()
        .find_map(|l| l.strip_prefix("gpus="))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        !seen.is_empty() && seen.split(',').count() == 1,
        "one GPU is visible to the job: {log}"
    );

    // `trainyard status` shows the engine's nodes.
    let status = server.cli(&["status", "-o", "json"]);
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    let pool = status["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == engine.pool)
        .unwrap_or_else(|| panic!("{status}"));
    assert_eq!(pool["executor"], kind);
    assert!(
        pool["nodes"].as_array().is_some_and(|n| !n.is_empty()),
        "{pool}"
    );
    assert_eq!(
        pool["capacity"]["gpus"].as_array().unwrap().len(),
        2,
        "{pool}"
    );
    let table = String::from_utf8_lossy(&server.cli(&["status"]).stdout).to_string();
    assert!(table.contains(engine.pool), "{table}");
}

/// The server is killed mid-job and restarted: it re-adopts the engine's job by the id
/// it stored and records its true outcome and whole log.
async fn kill_9_mid_job(engine: Engine) {
    let mut server = server_on(&engine).await;
    let job = server
        .submit(on(
            &engine,
            "echo begun; sleep 6; echo ended; exit 5",
            json!({}),
        ))
        .await;
    let running = wait_engine_running(&server, &id(&job)).await;
    let engine_id = running["engine_id"].clone();
    server.kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.restart().await;
    let done = server.wait_done(&id(&job), LONG).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["exit_code"], 5, "the true outcome: {done}");
    assert_eq!(done["attempt"], 1, "not run again: {done}");
    assert_eq!(done["engine_id"], engine_id);
    let log = server.logs(&id(&job), "").await;
    assert!(log.contains("begun") && log.contains("ended"), "{log}");
}

/// A 2-worker gang on the engine: both workers start together with their ranks, meet at
/// rank 0's address; a worker failing ends the gang, which is retried whole.
async fn gang(engine: Engine) {
    let server = server_on(&engine).await;
    let script = PathBuf::from(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("tests/fixtures/gang_worker.py")
    .display()
    .to_string();
    let job = server
        .submit(json!({
            "command": ["python3", script],
            "pool": engine.pool,
            "resources": {"cpus": 1, "memory_mb": 200, "gpus": 1, "workers": 2},
            "env": {"GANG_FAIL_FIRST": "1"},
            "max_retries": 1,
        }))
        .await;
    let done = server.wait_done(&id(&job), LONG).await;
    assert_eq!(
        done["state"],
        "succeeded",
        "{done}\n{}",
        server.logs(&id(&job), "").await
    );
    assert_eq!(
        done["attempt"], 2,
        "the failed gang ran again whole: {done}"
    );
    let log = server.logs(&id(&job), "").await;
    for want in [
        "rank=0 world=2 local=0 node=0 master=",
        "rank=1 world=2 local=1 node=0",
        "rank 0 heard from ",
        "rank 1 reached ",
        "attempt=1",
        "attempt=2",
    ] {
        assert!(log.contains(want), "{want:?} not in:\n{log}");
    }
    // Three workers of one CPU never fit two CPUs: refused at submit.
    let r = server
        .post("/api/v1/jobs")
        .json(&json!({"command": ["true"], "pool": engine.pool, "resources": {"cpus": 1, "workers": 3}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
}

/// A job Slurm itself refuses (here: a pool asking for a node feature no node has) fails
/// at once with Slurm's reason in its state, not queued forever.
async fn rejected_by_slurm(mut engine: Engine) {
    if engine.config.is_empty() {
        engine.config = "[pools.slurm]\n".into();
    }
    engine.config += "constraint = \"no-such-feature\"\n";
    let server = server_on(&engine).await;
    let job = server.submit(on(&engine, "true", json!({}))).await;
    let done = server.wait_done(&id(&job), LONG).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert_eq!(done["exit_reason"], "spawn_failed", "{done}");
    let message = done["message"].as_str().unwrap();
    assert!(
        message.contains("Invalid feature specification"),
        "{message}"
    );
}

/// A 2-worker gang over Slurm's two nodes (`multi`: this host and a network namespace
/// joined by a veth pair): one worker per node, and rank 1 reaches rank 0 across that
/// network.
async fn gang_over_two_nodes(mut engine: Engine) {
    if engine.config.is_empty() {
        engine.config = "[pools.slurm]\n".into();
    }
    engine.config += "partition = \"multi\"\n";
    let server = server_on(&engine).await;
    let script = PathBuf::from(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("tests/fixtures/gang_worker.py")
    .display()
    .to_string();
    let job = server
        .submit(json!({
            "command": ["python3", script],
            "pool": engine.pool,
            // Two CPUs each: one worker per node.
            "resources": {"cpus": 2, "memory_mb": 200, "workers": 2},
        }))
        .await;
    let done = server.wait_done(&id(&job), LONG).await;
    let log = server.logs(&id(&job), "").await;
    assert_eq!(done["state"], "succeeded", "{done}\n{log}");
    for want in [
        "rank=0 world=2 local=0 node=0 master=ty-a:",
        "rank=1 world=2 local=0 node=1 master=ty-a:",
        "rank 0 heard from 10.77.0.2: hello from rank 1",
        "rank 1 reached ty-a:",
    ] {
        assert!(log.contains(want), "{want:?} not in:\n{log}");
    }
}

/// `examples/digits` as the README runs it, with the training job on the engine: its
/// data comes through the API, its model goes to the registry.
async fn digits_training(engine: Engine) {
    let server = server_on(&engine).await;
    let data = example("data/digits.csv.gz");
    ok(server.cli(&["dataset", "import", "digits", &data]));
    ok(server.cli(&[
        "dataset",
        "process",
        "digits",
        "--steps",
        &example("steps.toml"),
    ]));
    let trained = ok(server.cli(&["train", &example("mlp.toml"), "--pool", engine.pool]));
    let job_id = trained
        .lines()
        .find_map(|l| {
            l.strip_prefix("job ")
                .and_then(|r| r.strip_suffix(" queued"))
        })
        .unwrap_or_else(|| panic!("no job id in:\n{trained}"))
        .to_string();
    let job = server.job(&job_id).await;
    assert_eq!(job["pool"], engine.pool, "{job}");
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(job["engine_id"].is_string(), "{job}");
    let models = ok(server.cli(&["models", "show", "digits-mlp"]));
    assert!(
        models.contains("burnpack"),
        "a registered, trained version: {models}"
    );
}

macro_rules! engine_tests {
    ($engine:ident, $reason:literal) => {
        mod $engine {
            #[tokio::test(flavor = "multi_thread")]
            #[ignore = $reason]
            async fn the_job_suite() {
                super::the_job_suite(super::$engine()).await
            }

            #[tokio::test(flavor = "multi_thread")]
            #[ignore = $reason]
            async fn kill_9_mid_job() {
                super::kill_9_mid_job(super::$engine()).await
            }

            #[tokio::test(flavor = "multi_thread")]
            #[ignore = $reason]
            async fn digits_training() {
                super::digits_training(super::$engine()).await
            }

            #[tokio::test(flavor = "multi_thread")]
            #[ignore = $reason]
            async fn gang() {
                super::gang(super::$engine()).await
            }
        }
    };
}

engine_tests!(
    slurm_rest,
    "needs slurmrestd (TRAINYARD_TEST_SLURMRESTD_URL, run by .ci/run)"
);
engine_tests!(
    slurm_commands,
    "needs Slurm's commands (TRAINYARD_TEST_SLURM_COMMANDS, run by .ci/run)"
);
engine_tests!(
    ray,
    "needs a Ray head (TRAINYARD_TEST_RAY_URL, run by .ci/run)"
);

/// Two servers on one PostgreSQL, jobs on Slurm (both reach it; the pool's spool folder and
/// the blob store are shared, as on a real site): 50 jobs are queued, some through the
/// server that does not schedule; the leader is killed with -9 while most still wait; the
/// other takes over within seconds and every job runs exactly once, as the jobs' own
/// output file shows.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs PostgreSQL and slurmrestd (TRAINYARD_TEST_DATABASE_URL, TRAINYARD_TEST_SLURMRESTD_URL; run by .ci/run)"]
async fn two_servers_on_one_postgres_hand_over_when_the_leader_dies() {
    let engine = slurm_rest();
    let database = common::database_url()
        .await
        .expect("TRAINYARD_TEST_DATABASE_URL names a PostgreSQL server");
    let shared = tempfile::tempdir().unwrap();
    let spool = shared.path().join("spool");
    let ran = shared.path().join("ran.txt");
    let blobs = format!("file://{}", shared.path().join("blobs").display());
    let token = "shared-admin-token-0123456789";
    let config = format!(
        "[[pools]]\nname = \"{}\"\nexecutor = \"slurm\"\nspool_dir = \"{}\"\n{}",
        engine.pool,
        spool.display(),
        engine.config
    );
    // Each server in a UTS namespace with a host name of its own, as on two machines: the
    // survivor cannot see that the leader's process is gone, and waits out its lease.
    let start = |host: &str, config: String, database: String, blobs: String| {
        let host = host.to_string();
        async move {
            Server::start_with(ServerOptions {
                config_toml: Some(config),
                database_url: Some(database),
                blobs: Some(blobs),
                env: vec![("TRAINYARD_ADMIN_TOKEN".into(), token.into())],
                hostname: Some(host),
                ..Default::default()
            })
            .await
        }
    };
    let mut a = start("server-a", config.clone(), database.clone(), blobs.clone()).await;
    let b = start("server-b", config, database, blobs).await;
    let usage_a = a.get_json("/api/v1/resources").await;
    let usage_b = b.get_json("/api/v1/resources").await;
    assert_eq!(usage_a["leading"], true, "{usage_a}");
    assert_eq!(usage_b["leading"], false, "{usage_b}");
    assert_eq!(usage_b["leader"], a.base, "{usage_b}");

    let command = format!(
        "echo \"$TRAINYARD_JOB_ID\" >> {}; sleep 0.5; echo done",
        ran.display()
    );
    let mut ids = Vec::new();
    for i in 0..50 {
        // Every fifth through the server that does not schedule: the leader takes it in.
        let server = if i % 5 == 0 { &b } else { &a };
        ids.push(id(&server.submit(on(&engine, &command, json!({}))).await));
    }
    // A cancel asked of the follower is carried out by the leader.
    let extra = id(&a
        .submit(on(&engine, "sleep 300", json!({"priority": -1})))
        .await);
    let r = b
        .post(&format!("/api/v1/jobs/{extra}/cancel"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    b.wait_done(&extra, LONG).await;
    assert_eq!(b.job(&extra).await["state"], "cancelled");

    // Kill the leader once a few jobs ran and most still wait.
    let deadline = Instant::now() + LONG;
    while std::fs::read_to_string(&ran)
        .unwrap_or_default()
        .lines()
        .count()
        < 4
    {
        assert!(
            Instant::now() < deadline,
            "nothing ran:\n{}",
            a.server_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let queued = b.get_json("/api/v1/jobs?state=queued&limit=100").await;
    let waiting = queued["jobs"].as_array().map(Vec::len).unwrap_or(0);
    assert!(waiting >= 30, "most jobs still wait: {waiting}");
    a.kill9();
    let killed = Instant::now();
    loop {
        let usage = b.get_json("/api/v1/resources").await;
        if usage["leading"] == true {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "no handover: {usage}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let handover = killed.elapsed();
    eprintln!("handover after kill -9 of the leader: {handover:?} ({waiting} jobs were queued)");
    assert!(handover < Duration::from_secs(10), "{handover:?}");

    for id in &ids {
        let done = b.wait_done(id, Duration::from_secs(300)).await;
        assert_eq!(done["state"], "succeeded", "{done}");
    }
    let lines = std::fs::read_to_string(&ran).unwrap();
    let mut seen = std::collections::HashMap::new();
    for line in lines.lines() {
        *seen.entry(line.to_string()).or_insert(0) += 1;
    }
    for id in &ids {
        assert_eq!(
            seen.get(id),
            Some(&1),
            "job {id} ran {:?} times",
            seen.get(id)
        );
    }
    assert_eq!(seen.len(), ids.len(), "only these jobs ran: {seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs slurmrestd (TRAINYARD_TEST_SLURMRESTD_URL, run by .ci/run)"]
async fn a_job_slurmrestd_refuses_fails_with_slurms_reason() {
    rejected_by_slurm(slurm_rest()).await
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Slurm's commands (TRAINYARD_TEST_SLURM_COMMANDS, run by .ci/run)"]
async fn a_job_sbatch_refuses_fails_with_slurms_reason() {
    rejected_by_slurm(slurm_commands()).await
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs slurmrestd (TRAINYARD_TEST_SLURMRESTD_URL, run by .ci/run)"]
async fn a_gang_spans_two_slurm_nodes_through_slurmrestd() {
    gang_over_two_nodes(slurm_rest()).await
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Slurm's commands (TRAINYARD_TEST_SLURM_COMMANDS, run by .ci/run)"]
async fn a_gang_spans_two_slurm_nodes_through_sbatch() {
    gang_over_two_nodes(slurm_commands()).await
}
