//! The metadata database over a real SQLite file, or a real PostgreSQL server when
//! `TRAINYARD_TEST_DATABASE_URL` is set (a fresh database is created for each test).

use std::collections::BTreeMap;

use trainyard_core::{ExitReason, Job, JobState, Resources};
use trainyard_store::{Db, JobFilter, Outcome};

async fn open() -> (Db, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = match std::env::var("TRAINYARD_TEST_DATABASE_URL") {
        Ok(admin) => {
            use sqlx::{Connection, Executor};
            let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
            let name = format!("ty_store_{}", trainyard_core::new_id());
            conn.execute(format!("CREATE DATABASE {name}").as_str())
                .await
                .unwrap();
            format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
        }
        Err(_) => Db::sqlite_url(&dir.path().join("t.db")),
    };
    (Db::connect(&url).await.unwrap(), dir)
}

fn job(labels: &[(&str, &str)]) -> Job {
    Job {
        id: trainyard_core::new_id(),
        workspace: "default".into(),
        name: "n".into(),
        state: JobState::Queued,
        command: vec!["echo".into(), "a b".into()],
        task: None,
        env: BTreeMap::from([("K".to_string(), "V".to_string())]),
        secrets: BTreeMap::from([("TOKEN".to_string(), "hf".to_string())]),
        working_dir: Some("/tmp".into()),
        resources: Resources {
            cpus: 0.5,
            memory_mb: Some(128),
            gpus: 1,
            workers: 1,
        },
        priority: -3,
        max_retries: 2,
        timeout_s: Some(60),
        tracking: Default::default(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        attempt: 0,
        exit_code: None,
        exit_reason: None,
        message: None,
        host: None,
        gpus: vec![],
        created_at_ms: trainyard_core::time::now_ms(),
        pool: Some("local".into()),
        engine_id: None,
        started_at_ms: None,
        finished_at_ms: None,
    }
}

#[tokio::test]
async fn jobs_round_trip_and_move_only_from_the_expected_state() {
    let (db, _dir) = open().await;
    let j = job(&[("team", "a")]);
    db.insert_job(&j).await.unwrap();
    assert_eq!(db.get_job("default", &j.id).await.unwrap(), Some(j.clone()));
    assert_eq!(
        db.get_job("other", &j.id).await.unwrap(),
        None,
        "workspaces are separate"
    );

    let fence = db
        .acquire_lease("server-a", "http://a", 0, i64::MAX / 2)
        .await
        .unwrap()
        .unwrap();
    assert!(db
        .mark_running(&j.id, 1, "host-1", &[1], 10, &fence)
        .await
        .unwrap());
    assert!(
        db.mark_running(&j.id, 1, "host-1", &[1], 10, &fence)
            .await
            .unwrap(),
        "a retried write of the same start succeeds"
    );
    assert!(
        !db.mark_running(&j.id, 2, "host-1", &[1], 10, &fence)
            .await
            .unwrap(),
        "another attempt only starts from queued"
    );
    let running = db.get_job("default", &j.id).await.unwrap().unwrap();
    assert_eq!(
        (running.state, running.attempt, running.gpus.clone()),
        (JobState::Running, 1, vec![1])
    );

    let outcome = Outcome {
        state: JobState::Failed,
        exit_code: Some(3),
        exit_reason: ExitReason::Exited,
        message: Some("exited with code 3".into()),
        finished_at_ms: 20,
    };
    assert!(db.requeue_job(&j.id, &outcome).await.unwrap());
    assert!(db
        .mark_running(&j.id, 2, "host-1", &[0], 30, &fence)
        .await
        .unwrap());
    assert!(db
        .finish_job(&j.id, JobState::Running, &outcome)
        .await
        .unwrap());
    assert!(
        !db.finish_job(&j.id, JobState::Running, &outcome)
            .await
            .unwrap(),
        "only once"
    );
    let done = db.get_job("default", &j.id).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Failed);
    assert_eq!(done.exit_code, Some(3));
    assert_eq!(done.exit_reason, Some(ExitReason::Exited));
    assert_eq!(done.attempt, 2);
    assert_eq!(
        db.count_jobs_by_state().await.unwrap(),
        vec![(JobState::Failed, 1)]
    );
}

#[tokio::test]
async fn listings_filter_and_page_newest_first() {
    let (db, _dir) = open().await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let j = job(&[("parity", if i % 2 == 0 { "even" } else { "odd" })]);
        db.insert_job(&j).await.unwrap();
        ids.push(j.id);
    }
    let page = |cursor: Option<String>| JobFilter {
        limit: 3,
        cursor,
        ..Default::default()
    };
    let first = db.list_jobs("default", &page(None)).await.unwrap();
    assert_eq!(
        first.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        vec![ids[6].clone(), ids[5].clone(), ids[4].clone()]
    );
    let second = db
        .list_jobs("default", &page(Some(ids[4].clone())))
        .await
        .unwrap();
    assert_eq!(second[0].id, ids[3]);
    let even = db
        .list_jobs(
            "default",
            &JobFilter {
                label: Some(("parity".into(), "even".into())),
                state: Some(JobState::Queued),
                limit: 100,
                cursor: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(even.len(), 4);
    assert_eq!(db.jobs_in_state(JobState::Queued).await.unwrap().len(), 7);
}

#[tokio::test]
async fn tokens_are_found_by_value_and_stored_hashed() {
    use trainyard_core::Role;
    use trainyard_store::{Holder, NewToken};
    let (db, _dir) = open().await;
    assert!(db.create_user("u1", "alice", false, None, 1).await.unwrap());
    assert!(!db.create_user("u2", "alice", true, None, 1).await.unwrap());
    let new = NewToken {
        id: "t1",
        name: "laptop",
        workspace: "default",
        user_id: Some("u1"),
        narrowed: true,
        read_only: true,
        expires_at_ms: Some(99),
        created_at_ms: 1,
    };
    assert!(db.insert_token(&new, "ty_secret_value").await.unwrap());
    let again = NewToken {
        id: "t2",
        ..new.clone()
    };
    assert!(!db.insert_token(&again, "ty_secret_value").await.unwrap());
    let grant = db.find_token("ty_secret_value").await.unwrap().unwrap();
    assert_eq!(
        (
            grant.workspace.as_str(),
            grant.narrowed,
            grant.read_only,
            grant.expires_at_ms
        ),
        ("default", true, true, Some(99))
    );
    assert!(matches!(&grant.holder, Holder::User { name, owner: false, .. } if name == "alice"));
    assert!(db.find_token("ty_other").await.unwrap().is_none());
    assert_eq!(db.list_tokens(Some("u1")).await.unwrap().len(), 1);
    assert_eq!(db.count_owner_tokens().await.unwrap(), 0);

    db.set_member("default", "u1", Role::Editor).await.unwrap();
    db.set_member("default", "u1", Role::Viewer).await.unwrap();
    assert_eq!(
        db.member_role("default", "u1").await.unwrap(),
        Some(Role::Viewer)
    );
    assert_eq!(db.users().await.unwrap()[0].roles["default"], Role::Viewer);
    // Removing the user removes their tokens and roles with them.
    assert!(db.delete_user("alice").await.unwrap());
    assert!(db.find_token("ty_secret_value").await.unwrap().is_none());
    assert_eq!(db.member_role("default", "u1").await.unwrap(), None);
    assert!(!db.delete_user("alice").await.unwrap());
}

/// A workspace keeps an admin unless the change is allowed to leave it without one.
#[tokio::test]
async fn the_last_admin_stays_unless_asked() {
    use trainyard_core::Role;
    use trainyard_store::MemberChange;
    let (db, _dir) = open().await;
    assert!(db.create_user("u1", "carol", false, None, 1).await.unwrap());
    assert!(db.create_user("u2", "dave", false, None, 1).await.unwrap());
    let change = |user: &'static str, role: Option<Role>, keep: bool| {
        let db = db.clone();
        async move { db.change_member("default", user, role, keep).await.unwrap() }
    };
    assert_eq!(change("u1", None, true).await, MemberChange::NotMember);
    assert_eq!(
        change("u1", Some(Role::Admin), true).await,
        MemberChange::Done
    );
    assert_eq!(change("u1", None, true).await, MemberChange::LastAdmin);
    assert_eq!(
        change("u1", Some(Role::Editor), true).await,
        MemberChange::LastAdmin
    );
    assert_eq!(
        db.member_role("default", "u1").await.unwrap(),
        Some(Role::Admin)
    );
    // With a second admin either may go; then the other is the last.
    assert_eq!(
        change("u2", Some(Role::Admin), true).await,
        MemberChange::Done
    );
    assert_eq!(
        change("u1", Some(Role::Viewer), true).await,
        MemberChange::Done
    );
    assert_eq!(change("u2", None, true).await, MemberChange::LastAdmin);
    assert_eq!(change("u1", None, true).await, MemberChange::Done);
    // Not keeping one (an owner's call) removes the last admin too.
    assert_eq!(change("u2", None, false).await, MemberChange::Done);
    assert!(db.members("default").await.unwrap().is_empty());
}

/// Each change that takes access away moves the access revision (what other servers read to
/// forget their cached tokens and roles); changes that take nothing away leave it.
#[tokio::test]
async fn every_change_that_takes_access_away_moves_the_access_revision() {
    use trainyard_core::Role;
    use trainyard_store::NewToken;
    let (db, _dir) = open().await;
    let start = db.access_revision().await.unwrap();
    assert!(db.create_user("u1", "erin", false, None, 1).await.unwrap());
    assert!(db.create_workspace("ml", "ml", 1).await.unwrap());
    let new = NewToken {
        id: "t1",
        name: "laptop",
        workspace: "ml",
        user_id: Some("u1"),
        narrowed: false,
        read_only: false,
        expires_at_ms: None,
        created_at_ms: 1,
    };
    assert!(db.insert_token(&new, "ty_erin_1").await.unwrap());
    assert_eq!(
        db.access_revision().await.unwrap(),
        start,
        "nothing taken away yet"
    );
    let mut seen = start;
    let mut moved = |now: i64, what: &str| {
        assert!(now > seen, "{what}: the revision stayed at {now}");
        seen = now;
    };
    db.set_member("ml", "u1", Role::Editor).await.unwrap();
    moved(
        db.access_revision().await.unwrap(),
        "a role given (it may replace a wider one)",
    );
    db.change_member("ml", "u1", Some(Role::Viewer), false)
        .await
        .unwrap();
    moved(db.access_revision().await.unwrap(), "a role changed");
    assert!(db.remove_member("ml", "u1").await.unwrap());
    moved(db.access_revision().await.unwrap(), "a role taken");
    let before = db.access_revision().await.unwrap();
    assert!(!db.remove_member("ml", "u1").await.unwrap());
    assert_eq!(
        db.access_revision().await.unwrap(),
        before,
        "nothing was taken"
    );
    assert!(db.revoke_token("t1").await.unwrap());
    moved(db.access_revision().await.unwrap(), "a token revoked");
    assert!(db.delete_user("erin").await.unwrap());
    moved(db.access_revision().await.unwrap(), "a user removed");
    db.delete_workspace("ml", true).await.unwrap();
    moved(db.access_revision().await.unwrap(), "a workspace removed");
}

#[tokio::test]
async fn migrations_are_idempotent_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let url = Db::sqlite_url(&dir.path().join("again.db"));
    let db = Db::connect(&url).await.unwrap();
    db.insert_job(&job(&[])).await.unwrap();
    db.close().await;
    let db = Db::connect(&url).await.unwrap();
    assert_eq!(db.jobs_in_state(JobState::Queued).await.unwrap().len(), 1);
}

/// One server holds the scheduler lease at a time; another takes it only once it expired
/// (with a new epoch), and a start fenced by the old epoch is refused from then on.
#[tokio::test]
async fn the_lease_has_one_holder_and_fences_starts_of_the_last_one() {
    let (db, _dir) = open().await;
    let a = db
        .acquire_lease("a", "http://a", 1_000, 5_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.epoch, 1);
    assert_eq!(
        db.acquire_lease("b", "http://b", 2_000, 5_000)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        db.acquire_lease("a", "http://a", 2_000, 5_000)
            .await
            .unwrap(),
        Some(a.clone()),
        "the holder keeps its epoch"
    );
    assert!(db.renew_lease(&a, 3_000, 5_000).await.unwrap());
    let holder = db.lease_holder().await.unwrap().unwrap();
    assert_eq!((holder.holder.as_str(), holder.expires_at_ms), ("a", 8_000));

    // a stops renewing (paused, or killed): b takes over after expiry.
    assert_eq!(
        db.acquire_lease("b", "http://b", 7_999, 5_000)
            .await
            .unwrap(),
        None
    );
    let b = db
        .acquire_lease("b", "http://b", 8_001, 5_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.epoch, 2);
    assert!(
        !db.renew_lease(&a, 8_002, 5_000).await.unwrap(),
        "a learns it lost"
    );

    let j = job(&[]);
    db.insert_job(&j).await.unwrap();
    assert!(
        !db.mark_running(&j.id, 1, "host-a", &[], 9_000, &a)
            .await
            .unwrap(),
        "the old leader cannot start a job"
    );
    assert!(db
        .mark_running(&j.id, 1, "host-b", &[], 9_000, &b)
        .await
        .unwrap());

    // A clean shutdown hands over at once.
    db.release_lease(&b).await.unwrap();
    let c = db
        .acquire_lease("c", "http://c", 9_001, 5_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.epoch, 3);
}
