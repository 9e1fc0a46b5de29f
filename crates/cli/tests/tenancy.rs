//! Workspaces, users, roles and personal tokens on a live server: which workspace a call
//! acts on, what each role may do there, tokens narrowed, read-only and expiring, and
//! removals that take effect at once. Each denial is checked for its status and code.

mod common;

use std::time::Duration;

use common::Server;
use reqwest::Method;
use serde_json::{json, Value};

/// One call with `token`, acting in `workspace` when given.
async fn call(
    server: &Server,
    token: &str,
    workspace: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = server
        .http()
        .request(method, server.url(path))
        .bearer_auth(token);
    if let Some(w) = workspace {
        req = req.header("X-Trainyard-Workspace", w);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A fresh token for `user`, acting in `workspace`, made by the owner.
async fn token_for(server: &Server, user: &str, workspace: &str, extra: Value) -> String {
    let mut body = json!({"name": format!("{user}-test"), "user": user});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, made) = call(
        server,
        &server.token,
        Some(workspace),
        Method::POST,
        "/api/v1/tokens",
        Some(body),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    assert!(made.get("token_sha256").is_none());
    made["token"].as_str().unwrap().to_string()
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("-")
}

#[tokio::test(flavor = "multi_thread")]
async fn roles_decide_what_each_token_may_do_in_each_workspace() {
    let server = Server::start().await;
    let s = &server;
    let owner = s.token.clone();
    // The owner makes a workspace and two users through the CLI, and gives them roles.
    common::ok(s.cli(&["workspaces", "create", "ml"]));
    common::ok(s.cli(&["users", "add", "alice"]));
    common::ok(s.cli(&["users", "add", "bob"]));
    common::ok(s.cli(&[
        "workspaces",
        "grant",
        "--workspace",
        "ml",
        "alice",
        "editor",
    ]));
    common::ok(s.cli(&["workspaces", "grant", "--workspace", "ml", "bob", "viewer"]));
    let members = common::ok(s.cli(&["workspaces", "members", "--workspace", "ml"]));
    assert!(
        members.contains("alice") && members.contains("editor"),
        "{members}"
    );
    let alice = token_for(s, "alice", "ml", json!({"narrowed": true})).await;
    let bob = token_for(s, "bob", "ml", json!({})).await;

    let (status, me) = call(s, &alice, None, Method::GET, "/api/v1/whoami", None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        (
            me["user"].as_str(),
            me["workspace"].as_str(),
            me["role"].as_str()
        ),
        (Some("alice"), Some("ml"), Some("editor"))
    );

    // An editor submits into her workspace; it is not in `default`.
    let (status, job) = call(
        s,
        &alice,
        None,
        Method::POST,
        "/api/v1/jobs",
        Some(common::job(&["true"])),
    )
    .await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["workspace"], "ml");
    let id = job["id"].as_str().unwrap();
    let (status, listed) = call(s, &owner, None, Method::GET, "/api/v1/jobs", None).await;
    assert_eq!(status, 200);
    assert!(
        !listed.to_string().contains(id),
        "a job of ml listed in default"
    );
    assert_eq!(
        call(
            s,
            &owner,
            None,
            Method::GET,
            &format!("/api/v1/jobs/{id}"),
            None
        )
        .await
        .0,
        404
    );
    let (status, listed) = call(s, &owner, Some("ml"), Method::GET, "/api/v1/jobs", None).await;
    assert_eq!(status, 200);
    assert!(listed.to_string().contains(id));

    // A viewer reads and cannot change.
    let (status, listed) = call(s, &bob, None, Method::GET, "/api/v1/jobs", None).await;
    assert!(status == 200 && listed.to_string().contains(id), "{listed}");
    let (status, body) = call(
        s,
        &bob,
        None,
        Method::POST,
        "/api/v1/jobs",
        Some(common::job(&["true"])),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "needs_editor"), "{body}");
    let (status, body) = call(
        s,
        &bob,
        None,
        Method::POST,
        &format!("/api/v1/jobs/{id}/cancel"),
        None,
    )
    .await;
    assert_eq!((status, code(&body)), (403, "needs_editor"), "{body}");
    // MLflow's clients get MLflow's shape.
    let (status, body) = call(
        s,
        &bob,
        None,
        Method::POST,
        "/api/2.0/mlflow/experiments/create",
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (403, Some("PERMISSION_DENIED")),
        "{body}"
    );
    // Where a user has no role, nothing: not even reads.
    let (status, body) = call(s, &bob, Some("default"), Method::GET, "/api/v1/jobs", None).await;
    assert_eq!((status, code(&body)), (403, "needs_viewer"), "{body}");
    // A narrowed token acts only in its workspace.
    let (status, body) = call(
        s,
        &alice,
        Some("default"),
        Method::GET,
        "/api/v1/jobs",
        None,
    )
    .await;
    assert_eq!((status, code(&body)), (403, "token_narrowed"), "{body}");
    // Admin and owner routes.
    let (status, body) = call(s, &alice, None, Method::GET, "/api/v1/members", None).await;
    assert_eq!((status, code(&body)), (403, "needs_admin"), "{body}");
    let (status, body) = call(
        s,
        &alice,
        None,
        Method::PUT,
        "/api/v1/workspaces/ml/policy",
        Some(json!({"weight": 5, "quota": {}})),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "token_narrowed"), "{body}");
    let (status, body) = call(
        s,
        &alice,
        None,
        Method::POST,
        "/api/v1/users",
        Some(json!({"name": "eve", "owner": true})),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "token_narrowed"), "{body}");
    let (status, body) = call(s, &alice, None, Method::GET, "/api/v1/audit", None).await;
    assert_eq!((status, code(&body)), (403, "needs_admin"), "{body}");
    let (status, body) = call(
        s,
        &bob,
        None,
        Method::POST,
        "/api/v1/users",
        Some(json!({"name": "eve"})),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "needs_owner"), "{body}");
    // Workspaces listed: only one's own.
    let (_, list) = call(s, &bob, None, Method::GET, "/api/v1/workspaces", None).await;
    let names: Vec<&str> = list["workspaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ml"]);

    // Tokens are never wider than their maker.
    let (status, body) = call(
        s,
        &alice,
        None,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "wide"})),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    let (status, body) = call(
        s,
        &alice,
        None,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "x", "user": "bob", "narrowed": true})),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    let (status, made) = call(
        s,
        &alice,
        None,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "ro", "narrowed": true, "read_only": true})),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let read_only = made["token"].as_str().unwrap().to_string();
    assert_eq!(
        call(s, &read_only, None, Method::GET, "/api/v1/jobs", None)
            .await
            .0,
        200
    );
    let (status, body) = call(
        s,
        &read_only,
        None,
        Method::POST,
        "/api/v1/jobs",
        Some(common::job(&["true"])),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "read_only_token"), "{body}");
    // Her listing shows both of hers, never a value.
    let (_, mine) = call(s, &alice, None, Method::GET, "/api/v1/tokens", None).await;
    assert_eq!(mine["tokens"].as_array().unwrap().len(), 2, "{mine}");
    assert!(!mine.to_string().contains(&read_only));
    // Revoked: refused at once on this server.
    let ro_id = made["id"].as_str().unwrap();
    let (status, _) = call(
        s,
        &bob,
        None,
        Method::DELETE,
        &format!("/api/v1/tokens/{ro_id}"),
        None,
    )
    .await;
    assert_eq!(status, 404, "bob revoked alice's token");
    assert_eq!(
        call(
            s,
            &alice,
            None,
            Method::DELETE,
            &format!("/api/v1/tokens/{ro_id}"),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        call(s, &read_only, None, Method::GET, "/api/v1/jobs", None)
            .await
            .0,
        401
    );

    // A read-only token makes read-only tokens; an expiring one none that outlive it.
    let (status, made) = call(
        s,
        &alice,
        None,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "ro2", "narrowed": true, "read_only": true})),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let ro2 = made["token"].as_str().unwrap().to_string();
    let (status, made) = call(
        s,
        &ro2,
        None,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "ro3", "narrowed": true, "read_only": true})),
    )
    .await;
    assert_eq!(
        status, 201,
        "a read-only token made no read-only token: {made}"
    );
    let (status, made) = call(
        s,
        &alice,
        None,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "day", "narrowed": true, "expires_in_s": 86400})),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let day = made["token"].as_str().unwrap().to_string();
    let (status, body) = call(
        s,
        &day,
        None,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "forever", "narrowed": true})),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    // Where one has no role, one makes no token (and learns nothing of the workspace).
    let (status, body) = call(
        s,
        &bob,
        Some("default"),
        Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "x"})),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "needs_viewer"), "{body}");
    // An owner's token narrowed to a workspace makes no cluster-wide change.
    let (status, made) = call(
        s,
        &owner,
        Some("ml"),
        Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "owner-ml", "narrowed": true})),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let owner_ml = made["token"].as_str().unwrap().to_string();
    let (status, body) = call(
        s,
        &owner_ml,
        None,
        Method::POST,
        "/api/v1/users",
        Some(json!({"name": "mallory", "owner": true})),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "token_narrowed"), "{body}");
    let (status, body) = call(
        s,
        &owner_ml,
        None,
        Method::GET,
        "/api/v1/audit?workspace=default",
        None,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (status, listed) = call(s, &owner_ml, None, Method::GET, "/api/v1/workspaces", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        listed["workspaces"].as_array().unwrap().len(),
        1,
        "{listed}"
    );
    // An expiring token stops at its time.
    let brief = token_for(s, "bob", "ml", json!({"expires_in_s": 1})).await;
    assert_eq!(
        call(s, &brief, None, Method::GET, "/api/v1/jobs", None)
            .await
            .0,
        200
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = call(s, &brief, None, Method::GET, "/api/v1/jobs", None).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"), "{body}");

    // A job's token is narrowed to its job's workspace.
    let (status, job) = call(
        s,
        &alice,
        None,
        Method::POST,
        "/api/v1/jobs",
        Some(json!({"command": ["sh", "-c", "echo \"token $MLFLOW_TRACKING_TOKEN\"; sleep 30"]})),
    )
    .await;
    assert_eq!(status, 201, "{job}");
    let job_id = job["id"].as_str().unwrap().to_string();
    let log = loop {
        let (_, j) = call(
            s,
            &owner,
            Some("ml"),
            Method::GET,
            &format!("/api/v1/jobs/{job_id}"),
            None,
        )
        .await;
        assert!(
            !j["state"].as_str().unwrap_or("").starts_with("fail"),
            "{j}"
        );
        let r = s
            .http()
            .get(s.url(&format!("/api/v1/jobs/{job_id}/logs")))
            .bearer_auth(&owner)
            .header("X-Trainyard-Workspace", "ml")
            .send()
            .await
            .unwrap();
        let text = r.text().await.unwrap();
        if text.contains("token ty_") {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let job_token = log.split_whitespace().nth(1).unwrap().to_string();
    let (status, body) = call(
        s,
        &job_token,
        Some("default"),
        Method::GET,
        "/api/v1/jobs",
        None,
    )
    .await;
    assert_eq!((status, code(&body)), (403, "token_narrowed"), "{body}");
    let (status, me) = call(s, &job_token, None, Method::GET, "/api/v1/whoami", None).await;
    assert_eq!((status, code(&me)), (403, "forbidden"), "{me}");
    assert_eq!(
        call(
            s,
            &owner,
            Some("ml"),
            Method::POST,
            &format!("/api/v1/jobs/{job_id}/cancel"),
            None
        )
        .await
        .0,
        200
    );

    // Bad input: clear 4xx naming the field.
    let (status, body) = call(
        s,
        &owner,
        Some("Not A Name"),
        Method::GET,
        "/api/v1/jobs",
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("X-Trainyard-Workspace")),
        "{body}"
    );
    let (status, body) = call(
        s,
        &owner,
        Some("nowhere"),
        Method::GET,
        "/api/v1/jobs",
        None,
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (404, "workspace_not_found"),
        "{body}"
    );
    // A stranger is not told whether a workspace exists.
    let (status, body) = call(s, &bob, Some("nowhere"), Method::GET, "/api/v1/jobs", None).await;
    assert_eq!((status, code(&body)), (403, "needs_viewer"), "{body}");
    for (path, body, field) in [
        ("/api/v1/users", json!({"name": "Bad Name"}), "name"),
        ("/api/v1/workspaces", json!({"name": "../x"}), "name"),
        ("/api/v1/tokens", json!({"name": ""}), "name"),
        (
            "/api/v1/tokens",
            json!({"name": "t", "expires_in_s": 0}),
            "expires_in_s",
        ),
    ] {
        let (status, answer) = call(s, &owner, None, Method::POST, path, Some(body)).await;
        assert_eq!(
            (status, answer["error"]["field"].as_str()),
            (400, Some(field)),
            "{path}: {answer}"
        );
    }
    let (status, body) = call(
        s,
        &owner,
        Some("ml"),
        Method::PUT,
        "/api/v1/members/bob",
        Some(json!({"role": "owner"})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("role")),
        "{body}"
    );
    let (status, body) = call(
        s,
        &owner,
        Some("ml"),
        Method::PUT,
        "/api/v1/members/bob",
        Some(json!({"role": "root"})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = call(
        s,
        &owner,
        Some("ml"),
        Method::PUT,
        "/api/v1/members/nobody",
        Some(json!({"role": "viewer"})),
    )
    .await;
    assert_eq!((status, code(&body)), (404, "user_not_found"), "{body}");
    let (status, body) = call(
        s,
        &owner,
        None,
        Method::POST,
        "/api/v1/users",
        Some(json!({"name": "alice"})),
    )
    .await;
    assert_eq!((status, code(&body)), (409, "already_exists"), "{body}");
    common::ok(s.cli(&["users", "add", "second-owner", "--owner"]));
    let (status, body) = call(s, &owner, None, Method::DELETE, "/api/v1/users/admin", None).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("name")),
        "removed itself: {body}"
    );
    common::ok(s.cli(&["users", "rm", "second-owner"]));
    let (status, body) = call(s, &owner, None, Method::DELETE, "/api/v1/users/admin", None).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("name")),
        "the last owner went: {body}"
    );

    // A workspace with jobs is not removed; an empty one is, with its members.
    let (status, body) = call(
        s,
        &owner,
        None,
        Method::DELETE,
        "/api/v1/workspaces/ml",
        None,
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (409, "workspace_not_empty"),
        "{body}"
    );
    common::ok(s.cli(&["workspaces", "create", "scratch"]));
    common::ok(s.cli(&[
        "workspaces",
        "grant",
        "--workspace",
        "scratch",
        "bob",
        "admin",
    ]));
    common::ok(s.cli(&["workspaces", "rm", "scratch"]));
    let (status, body) = call(
        s,
        &bob,
        Some("scratch"),
        Method::GET,
        "/api/v1/members",
        None,
    )
    .await;
    assert_eq!((status, code(&body)), (403, "needs_admin"), "{body}");
    let (status, body) = call(
        s,
        &owner,
        None,
        Method::DELETE,
        "/api/v1/workspaces/default",
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");

    // Passwords: set from standard input, exchanged for a token that expires.
    let mut passwd = std::process::Command::new(env!("CARGO_BIN_EXE_trainyard"))
        .args(["users", "passwd", "alice"])
        .env("TRAINYARD_SERVER", &s.base)
        .env("TRAINYARD_TOKEN", &owner)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    passwd
        .stdin
        .take()
        .unwrap()
        .write_all(b"a long enough password\n")
        .unwrap();
    assert!(passwd.wait().unwrap().success());
    let login =
        |user: &str, password: &str| json!({"user": user, "password": password, "workspace": "ml"});
    for (body, want) in [
        (login("alice", "a wrong password!!"), 401),
        (login("nobody", "a long enough password"), 401),
        (login("bob", "a long enough password"), 401),
        (
            json!({"user": "alice", "password": "a long enough password", "expires_in_s": 0}),
            400,
        ),
    ] {
        let r = s
            .http()
            .post(s.url("/api/v1/login"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), want, "{body}");
    }
    let r = s
        .http()
        .post(s.url("/api/v1/login"))
        .json(&login("alice", "a long enough password"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let made: Value = r.json().await.unwrap();
    assert!(made["expires_at_ms"].is_i64(), "{made}");
    let session = made["token"].as_str().unwrap().to_string();
    let (_, me) = call(s, &session, None, Method::GET, "/api/v1/whoami", None).await;
    assert_eq!(
        (me["user"].as_str(), me["role"].as_str()),
        (Some("alice"), Some("editor")),
        "{me}"
    );
    // One's own password; another's needs an owner; too short is refused.
    let (status, body) = call(
        s,
        &bob,
        None,
        Method::PUT,
        "/api/v1/users/alice/password",
        Some(json!({"password": "bob sets it now!"})),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "needs_owner"), "{body}");
    let (status, body) = call(
        s,
        &session,
        None,
        Method::PUT,
        "/api/v1/users/alice/password",
        Some(json!({"password": "short"})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("password")),
        "{body}"
    );
    // A login's token changes its own password with the current one.
    let (status, body) = call(
        s,
        &session,
        None,
        Method::PUT,
        "/api/v1/users/alice/password",
        Some(json!({
            "password": "another long password",
            "current_password": "a long enough password",
        })),
    )
    .await;
    assert_eq!(status, 204, "{body}");
    // Removing a user ends their tokens at once here.
    common::ok(s.cli(&["users", "rm", "bob"]));
    assert_eq!(
        call(s, &bob, None, Method::GET, "/api/v1/jobs", None)
            .await
            .0,
        401
    );
    let users = common::ok(s.cli(&["users", "ls"]));
    assert!(users.contains("alice") && !users.contains("bob"), "{users}");

    // The trail names who was denied, with the role they had.
    let (_, trail) = call(
        s,
        &owner,
        None,
        Method::GET,
        "/api/v1/audit?outcome=denied&limit=100&workspace=ml",
        None,
    )
    .await;
    let events = trail["events"].as_array().unwrap();
    assert!(events.iter().all(|e| e["workspace"] == "ml"), "{trail}");
    assert!(
        events.iter().any(|e| e["principal"] == "bob (bob-test)"
            && e["role"] == "viewer"
            && e["action"] == "POST /api/v1/jobs"),
        "{trail}"
    );
    // A narrowed token turned away from another workspace is named too.
    let (_, trail) = call(
        s,
        &owner,
        None,
        Method::GET,
        "/api/v1/audit?outcome=denied&limit=100&workspace=default",
        None,
    )
    .await;
    assert!(
        trail["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["principal"] == "alice (alice-test)" && e["status"] == 403),
        "{trail}"
    );
}

/// PUT the password of `user` with `token`: the answer's status, code and field.
async fn set_password(
    s: &Server,
    token: &str,
    user: &str,
    body: Value,
) -> (u16, String, Option<String>) {
    let (status, answer) = call(
        s,
        token,
        None,
        Method::PUT,
        &format!("/api/v1/users/{user}/password"),
        Some(body),
    )
    .await;
    let field = answer["error"]["field"].as_str().map(str::to_string);
    (status, code(&answer).to_string(), field)
}

/// POST a login: its status and answer.
async fn login(s: &Server, body: Value) -> (u16, Value) {
    let r = s
        .http()
        .post(s.url("/api/v1/login"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A password leads to logins as wide as its user's for 30 days at a time, so a narrowed or
/// expiring token cannot set one to widen itself (the probe's escape: a narrowed 10-minute
/// token set its user's password and logged in for 30 days, unnarrowed); and a login, like
/// a token, acts only where its user has a role.
#[tokio::test(flavor = "multi_thread")]
async fn no_token_widens_itself_through_a_password_or_a_login() {
    let server = Server::start().await;
    let s = &server;
    let owner = s.token.clone();
    common::ok(s.cli(&["workspaces", "create", "wa"]));
    common::ok(s.cli(&["workspaces", "create", "wb"]));
    common::ok(s.cli(&["users", "add", "alice"]));
    common::ok(s.cli(&["users", "add", "erin"]));
    common::ok(s.cli(&[
        "workspaces",
        "grant",
        "--workspace",
        "wa",
        "alice",
        "editor",
    ]));
    common::ok(s.cli(&[
        "workspaces",
        "grant",
        "--workspace",
        "wb",
        "alice",
        "viewer",
    ]));
    let alice = token_for(s, "alice", "wa", json!({})).await;

    // The probe's repro: alice's narrowed 10-minute token.
    let (status, made) = call(
        s,
        &alice,
        Some("wa"),
        Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "ci", "narrowed": true, "expires_in_s": 600})),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let narrowed = made["token"].as_str().unwrap().to_string();
    let (status, body) = call(s, &narrowed, Some("wb"), Method::GET, "/api/v1/jobs", None).await;
    assert_eq!((status, code(&body)), (403, "token_narrowed"), "{body}");
    let escape = json!({"password": "narrowed-escape-pw"});
    assert_eq!(
        set_password(s, &narrowed, "alice", escape.clone()).await,
        (403, "token_narrowed".into(), None)
    );
    let (status, _) = login(
        s,
        json!({"user": "alice", "password": "narrowed-escape-pw"}),
    )
    .await;
    assert_eq!(status, 401, "the password was set");
    // An owner's narrowed token sets no password either, its own or another's.
    let owner_narrowed = token_for(s, "admin", "wa", json!({"narrowed": true})).await;
    for user in ["admin", "alice"] {
        assert_eq!(
            set_password(s, &owner_narrowed, user, escape.clone()).await,
            (403, "token_narrowed".into(), None),
            "{user}"
        );
    }
    // An expiring token (not narrowed) sets no first password: it would outlive the token.
    let expiring = token_for(s, "alice", "wa", json!({"expires_in_s": 600})).await;
    assert_eq!(
        set_password(s, &expiring, "alice", escape.clone()).await,
        (403, "forbidden".into(), None)
    );

    // A token that does not expire sets alice's first password; changing it then needs it.
    let first = json!({"password": "alice's first password"});
    assert_eq!(
        set_password(s, &alice, "alice", first).await,
        (204, "-".into(), None)
    );
    assert_eq!(
        set_password(s, &alice, "alice", escape.clone()).await,
        (400, "invalid_field".into(), Some("current_password".into()))
    );
    let with_current =
        |current: &str| json!({"password": "alice's second password", "current_password": current});
    assert_eq!(
        set_password(s, &expiring, "alice", with_current("not alice's password")).await,
        (403, "forbidden".into(), Some("current_password".into()))
    );
    // Even knowing it, a narrowed token changes no password.
    assert_eq!(
        set_password(
            s,
            &narrowed,
            "alice",
            with_current("alice's first password")
        )
        .await,
        (403, "token_narrowed".into(), None)
    );
    assert_eq!(
        set_password(
            s,
            &expiring,
            "alice",
            with_current("alice's first password")
        )
        .await,
        (204, "-".into(), None)
    );
    // An owner's expiring token resets no one's password without the current one; a token
    // of the owner's that does not expire does.
    let (status, made) = call(
        s,
        &owner,
        None,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "owner-12h", "expires_in_s": 43200})),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let owner_expiring = made["token"].as_str().unwrap().to_string();
    assert_eq!(
        set_password(s, &owner_expiring, "alice", escape.clone()).await,
        (403, "forbidden".into(), Some("current_password".into()))
    );
    let admin_pw = json!({"password": "the admin's password"});
    assert_eq!(
        set_password(s, &owner_expiring, "admin", admin_pw.clone()).await,
        (403, "forbidden".into(), None)
    );
    assert_eq!(
        set_password(s, &owner, "admin", admin_pw).await,
        (204, "-".into(), None)
    );
    let (status, _) = login(
        s,
        json!({"user": "alice", "password": "alice's first password"}),
    )
    .await;
    assert_eq!(status, 401);

    // Logins: where the user has a role, as for tokens; a workspace without them is a 403
    // whether or not it exists.
    let alice_login = |workspace: Option<&str>| {
        let mut body = json!({"user": "alice", "password": "alice's second password"});
        if let Some(w) = workspace {
            body["workspace"] = json!(w);
        }
        body
    };
    for workspace in ["default", "nowhere"] {
        let (status, body) = login(s, alice_login(Some(workspace))).await;
        assert_eq!(
            (status, code(&body), body["error"]["field"].as_str()),
            (403, "needs_viewer", Some("workspace")),
            "{workspace}: {body}"
        );
    }
    let (status, body) = call(
        s,
        &alice,
        Some("default"),
        Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "elsewhere"})),
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (403, "needs_viewer"),
        "the same as tokens: {body}"
    );
    for (workspace, acts_in, role) in [
        (Some("wb"), "wb", "viewer"),
        // Without one: `default` is not hers, so the first of hers.
        (None, "wa", "editor"),
    ] {
        let (status, made) = login(s, alice_login(workspace)).await;
        assert_eq!(status, 201, "{made}");
        assert_eq!(made["workspace"], acts_in, "{made}");
        let token = made["token"].as_str().unwrap();
        let (_, me) = call(s, token, None, Method::GET, "/api/v1/whoami", None).await;
        assert_eq!(me["role"], role, "{me}");
    }
    // A user with no role anywhere gets no token; an owner gets one anywhere that exists.
    let erin = token_for(s, "erin", "default", json!({})).await;
    assert_eq!(
        set_password(s, &erin, "erin", json!({"password": "erin's own password"})).await,
        (204, "-".into(), None)
    );
    let (status, body) = login(
        s,
        json!({"user": "erin", "password": "erin's own password"}),
    )
    .await;
    assert_eq!(
        (status, code(&body), body["error"]["field"].as_str()),
        (403, "needs_viewer", Some("workspace")),
        "{body}"
    );
    let admin_login = |workspace: &str| json!({"user": "admin", "password": "the admin's password", "workspace": workspace});
    let (status, made) = login(s, admin_login("wb")).await;
    assert_eq!(
        (status, made["workspace"].as_str()),
        (201, Some("wb")),
        "{made}"
    );
    let (status, body) = login(s, admin_login("nowhere")).await;
    assert_eq!(
        (status, code(&body)),
        (404, "workspace_not_found"),
        "{body}"
    );

    // The CLI: `--current` reads the current password, then the new one.
    let passwd = |args: &[&str], stdin: &str| s.cli_as(&alice, args, stdin);
    let out = passwd(&["users", "passwd", "alice"], "alice's third password\n");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("current_password"),
        "{out:?}"
    );
    let out = passwd(
        &["users", "passwd", "alice", "--current"],
        "alice's second password\nalice's third password\n",
    );
    assert!(out.status.success(), "{out:?}");
    let out = passwd(
        &["login", "--user", "alice", "--workspace", "wb"],
        "alice's third password\n",
    );
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap();
    let (_, me) = call(s, token.trim(), None, Method::GET, "/api/v1/whoami", None).await;
    assert_eq!(
        (me["workspace"].as_str(), me["narrowed"].as_bool()),
        (Some("wb"), Some(false)),
        "{me}"
    );
    // A password change signs out the user's other logins (one made with a leaked password
    // must not keep working for 30 days); the token that changed it goes on.
    let other = token.trim().to_string();
    let (status, made) = login(
        s,
        json!({"user": "alice", "password": "alice's third password"}),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let changer = made["token"].as_str().unwrap().to_string();
    let new = json!({"password": "alice's fourth password",
                     "current_password": "alice's third password"});
    assert_eq!(
        set_password(s, &changer, "alice", new).await,
        (204, "-".into(), None)
    );
    let (status, _) = call(s, &other, None, Method::GET, "/api/v1/whoami", None).await;
    assert_eq!(status, 401, "the other login is revoked");
    let (status, _) = call(s, &changer, None, Method::GET, "/api/v1/whoami", None).await;
    assert_eq!(status, 200, "the changing token goes on");
    assert_eq!(
        call(s, &alice, None, Method::GET, "/api/v1/whoami", None)
            .await
            .0,
        200,
        "tokens made by name, not by a login, are kept"
    );
}

/// A workspace keeps an admin: nobody removes themselves, and the last admin is neither
/// removed nor given a lesser role, except by an owner.
/// Guessing a password is braked per user name: the attack is a burst of wrong logins
/// (sent at once, so none waits for another's failure to be recorded), then the right
/// password too soon, then the current-password check of a password change. Five checks
/// go through after a success; the rest are answered 429 without a check.
#[tokio::test(flavor = "multi_thread")]
async fn password_guessing_is_braked_per_user() {
    let server = Server::start().await;
    let s = &server;
    for user in ["carol", "dave"] {
        common::ok(s.cli(&["users", "add", user]));
        common::ok(s.cli(&["workspaces", "grant", user, "viewer"]));
        let password = json!({"password": format!("{user}-long-password")});
        assert_eq!(
            set_password(s, &s.token, user, password).await,
            (204, "-".into(), None)
        );
    }
    let guesses = (0..20).map(|i| {
        login(
            s,
            json!({"user": "carol", "password": format!("guess-{i}")}),
        )
    });
    let answers = futures::future::join_all(guesses).await;
    let wrong = answers.iter().filter(|(status, _)| *status == 401).count();
    let braked: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status == 429)
        .collect();
    assert_eq!((wrong, braked.len()), (5, 15), "{answers:?}");
    for (_, body) in &braked {
        assert_eq!(code(body), "too_many_attempts", "{body}");
        assert_eq!(body["error"]["field"], "password");
    }
    // The right password, too soon, is not even checked; another user is not braked.
    let right = json!({"user": "carol", "password": "carol-long-password"});
    let r = s
        .http()
        .post(s.url("/api/v1/login"))
        .json(&right)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=300).contains(&wait), "Retry-After {wait}");
    let (status, _) = login(s, json!({"user": "dave", "password": "dave-long-password"})).await;
    assert_eq!(status, 201);
    // Waiting as told lets the right password in, and a success starts the count again.
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let (status, made) = login(s, right).await;
    assert_eq!(status, 201, "{made}");
    let (status, _) = login(s, json!({"user": "carol", "password": "wrong"})).await;
    assert_eq!(status, 401);

    // The current password of a password change is braked on the same count: one wrong
    // login above and four wrong current passwords use the five checks. (Each burst is sent
    // at once, so the checks' own time cannot stretch it past the first wait.)
    let carol = token_for(s, "carol", "default", json!({})).await;
    let guesses = (0..6).map(|i| {
        let body =
            json!({"password": "carol-new-password", "current_password": format!("guess-{i}")});
        set_password(s, &carol, "carol", body)
    });
    let mut answers = futures::future::join_all(guesses).await;
    answers.sort();
    let field = Some("current_password".to_string());
    assert_eq!(
        answers,
        [
            vec![(403, "forbidden".to_string(), field.clone()); 4],
            vec![(429, "too_many_attempts".to_string(), field); 2]
        ]
        .concat()
    );

    // Names no user can have share one brake (each made-up name is not a fresh start).
    let guesses = (0..7).map(|i| {
        login(
            s,
            json!({"user": format!("Not A Name {i}"), "password": "x"}),
        )
    });
    let mut statuses: Vec<u16> = futures::future::join_all(guesses)
        .await
        .into_iter()
        .map(|(status, _)| status)
        .collect();
    statuses.sort();
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 429]);
}

/// Two servers on one PostgreSQL database: a token revoked, a role lowered and a role
/// taken through one server end on the other within seconds, though each caches tokens and
/// roles for a minute (it reads the database's access revision once a second). On SQLite
/// there is one server, which forgets at once (the tests above).
#[tokio::test(flavor = "multi_thread")]
async fn access_taken_away_through_one_server_ends_on_the_other_within_seconds() {
    let Some(database) = common::database_url().await else {
        eprintln!(
            "skipped: needs TRAINYARD_TEST_DATABASE_URL (several servers share PostgreSQL only)"
        );
        return;
    };
    let owner = "shared-owner-token-0123456789";
    let start = |database: String| async move {
        Server::start_with(common::ServerOptions {
            database_url: Some(database),
            env: vec![("TRAINYARD_ADMIN_TOKEN".into(), owner.into())],
            ..Default::default()
        })
        .await
    };
    let a = start(database.clone()).await;
    let b = start(database).await;
    common::ok(a.cli(&["workspaces", "create", "ml"]));
    common::ok(a.cli(&["users", "add", "erin"]));
    common::ok(a.cli(&["workspaces", "grant", "--workspace", "ml", "erin", "editor"]));
    let (status, made) = call(
        &a,
        owner,
        Some("ml"),
        Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "erin-laptop", "user": "erin"})),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let (erin, erin_id) = (
        made["token"].as_str().unwrap().to_string(),
        made["id"].as_str().unwrap().to_string(),
    );
    let whoami = |token: String| {
        let b = &b;
        async move { call(b, &token, None, Method::GET, "/api/v1/whoami", None).await }
    };
    // Server b learns the token and the role, and caches both.
    let (status, me) = whoami(erin.clone()).await;
    assert_eq!((status, me["role"].as_str()), (200, Some("editor")), "{me}");
    // Polls b until `done` holds; how long that took.
    let until = |what: &'static str, token: String, done: fn(u16, &Value) -> bool| {
        let whoami = &whoami;
        async move {
            let asked = std::time::Instant::now();
            loop {
                let (status, body) = whoami(token.clone()).await;
                if done(status, &body) {
                    return asked.elapsed();
                }
                assert!(
                    asked.elapsed() < Duration::from_secs(10),
                    "{what}: server b still answers {status} {body} after 10 s"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    // Lowered through a: b answers with the lesser role.
    let (status, body) = call(
        &a,
        owner,
        Some("ml"),
        Method::PUT,
        "/api/v1/members/erin",
        Some(json!({"role": "viewer"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let lowered = until("role lowered", erin.clone(), |s, me| {
        s == 200 && me["role"] == "viewer"
    })
    .await;

    // Revoked through a: b refuses the token.
    let (status, body) = call(
        &a,
        owner,
        None,
        Method::DELETE,
        &format!("/api/v1/tokens/{erin_id}"),
        None,
    )
    .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    let revoked = until("token revoked", erin.clone(), |s, _| s == 401).await;

    // Taken through a: b gives another of erin's tokens no role in ml.
    let second = token_for(&a, "erin", "ml", json!({})).await;
    let (status, me) = whoami(second.clone()).await;
    assert_eq!((status, me["role"].as_str()), (200, Some("viewer")), "{me}");
    let (status, body) = call(
        &a,
        owner,
        Some("ml"),
        Method::DELETE,
        "/api/v1/members/erin",
        None,
    )
    .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    let taken = until("role taken", second, |s, me| {
        s == 200 && me["role"].is_null()
    })
    .await;
    eprintln!(
        "seen by the other server after: lowered {lowered:?}, revoked {revoked:?}, taken {taken:?}"
    );
    for (what, took) in [("lowered", lowered), ("revoked", revoked), ("taken", taken)] {
        assert!(
            took < Duration::from_secs(3),
            "{what}: {took:?} (the caches trust for 60 s; the revision is read every second)"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workspace_keeps_its_last_admin_unless_an_owner_says() {
    let server = Server::start().await;
    let s = &server;
    common::ok(s.cli(&["workspaces", "create", "wc"]));
    common::ok(s.cli(&["users", "add", "carol"]));
    common::ok(s.cli(&["users", "add", "dave"]));
    common::ok(s.cli(&["workspaces", "grant", "--workspace", "wc", "carol", "admin"]));
    common::ok(s.cli(&["workspaces", "grant", "--workspace", "wc", "dave", "editor"]));
    let carol = token_for(s, "carol", "wc", json!({})).await;
    let dave = token_for(s, "dave", "wc", json!({})).await;
    let member = |token: &str, method: Method, user: &str, role: Option<&str>| {
        let token = token.to_string();
        let path = format!("/api/v1/members/{user}");
        let body = role.map(|r| json!({"role": r}));
        async move {
            let (status, body) = call(s, &token, None, method, &path, body).await;
            let field = body["error"]["field"].as_str().map(str::to_string);
            (status, code(&body).to_string(), field)
        }
    };
    let refused_self = (400, "invalid_field".to_string(), Some("user".to_string()));
    let last = (409, "last_admin".to_string(), None);
    // The probe's repro: the only admin removed itself.
    assert_eq!(
        member(&carol, Method::DELETE, "carol", None).await,
        refused_self
    );
    assert_eq!(
        member(&carol, Method::PUT, "carol", Some("viewer")).await,
        last
    );
    let members = common::ok(s.cli(&["workspaces", "members", "--workspace", "wc"]));
    assert!(
        members.contains("carol") && members.contains("admin"),
        "{members}"
    );
    // With a second admin, one may step down or remove the other; then that one is last.
    assert_eq!(
        member(&carol, Method::PUT, "dave", Some("admin")).await.0,
        200
    );
    assert_eq!(
        member(&carol, Method::PUT, "carol", Some("editor")).await.0,
        200
    );
    assert_eq!(
        member(&dave, Method::PUT, "dave", Some("viewer")).await,
        last
    );
    assert_eq!(
        member(&dave, Method::DELETE, "dave", None).await,
        refused_self
    );
    assert_eq!(
        member(&dave, Method::PUT, "carol", Some("admin")).await.0,
        200
    );
    assert_eq!(member(&carol, Method::DELETE, "dave", None).await.0, 204);
    assert_eq!(
        member(&carol, Method::DELETE, "carol", None).await,
        refused_self
    );
    // The CLI's revoke is refused the same way.
    let out = s.cli_as(&carol, &["workspaces", "revoke", "carol"], "");
    assert!(!out.status.success(), "{out:?}");
    assert!(common::text(&out).contains("yourself"), "{out:?}");
    // An owner's token narrowed to the workspace acts there as its members do.
    let (status, made) = call(
        s,
        &s.token,
        Some("wc"),
        Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "owner-in-wc", "narrowed": true})),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let narrowed_owner = made["token"].as_str().unwrap().to_string();
    assert_eq!(
        member(&narrowed_owner, Method::DELETE, "carol", None).await,
        last
    );
    // An owner may leave a workspace without an admin (and give it one again).
    common::ok(s.cli(&["workspaces", "revoke", "--workspace", "wc", "carol"]));
    let (status, body) = call(
        s,
        &s.token,
        Some("wc"),
        Method::GET,
        "/api/v1/members",
        None,
    )
    .await;
    assert_eq!(
        (status, body["members"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{body}"
    );
}

/// An MLflow call acting in `workspace` with the owner's token.
async fn mlflow(
    server: &Server,
    workspace: &str,
    method: Method,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let mut path = format!("/api/2.0/mlflow/{path}");
    if method == Method::GET {
        let query = body_query(&Some(body));
        if !query.is_empty() {
            path = format!("{path}?{}", query.join("&"));
        }
        return call(server, &server.token, Some(workspace), method, &path, None).await;
    }
    call(
        server,
        &server.token,
        Some(workspace),
        method,
        &path,
        Some(body),
    )
    .await
}

fn body_query(body: &Option<Value>) -> Vec<String> {
    body.as_ref()
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                v.as_str().map(str::to_string).unwrap_or(v.to_string())
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn experiments_runs_metrics_and_artifacts_stay_in_their_workspace() {
    let server = Server::start().await;
    let s = &server;
    for w in ["a", "b"] {
        common::ok(s.cli(&["workspaces", "create", w]));
    }
    // The same name in two workspaces is two experiments.
    let (status, made) = mlflow(
        s,
        "a",
        Method::POST,
        "experiments/create",
        json!({"name": "exp"}),
    )
    .await;
    assert_eq!(status, 200, "{made}");
    let exp_a = made["experiment_id"].as_str().unwrap().to_string();
    let (status, made) = mlflow(
        s,
        "b",
        Method::POST,
        "experiments/create",
        json!({"name": "exp"}),
    )
    .await;
    assert_eq!(status, 200, "{made}");
    let exp_b = made["experiment_id"].as_str().unwrap().to_string();
    assert_ne!(exp_a, exp_b);
    let (status, dup) = mlflow(
        s,
        "a",
        Method::POST,
        "experiments/create",
        json!({"name": "exp"}),
    )
    .await;
    assert_eq!(
        (status, dup["error_code"].as_str()),
        (400, Some("RESOURCE_ALREADY_EXISTS")),
        "{dup}"
    );

    // A run in a, with a param, a metric and an artifact.
    let (status, run) = mlflow(
        s,
        "a",
        Method::POST,
        "runs/create",
        json!({"experiment_id": exp_a, "start_time": 1}),
    )
    .await;
    assert_eq!(status, 200, "{run}");
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let (status, _) = mlflow(s, "a", Method::POST, "runs/log-batch", json!({"run_id": run_id, "params": [{"key": "lr", "value": "0.1"}], "metrics": [{"key": "loss", "value": 0.5, "timestamp": 1, "step": 0}]})).await;
    assert_eq!(status, 200);
    let artifact =
        format!("/api/2.0/mlflow-artifacts/artifacts/{exp_a}/{run_id}/artifacts/notes.txt");
    let put = |w: &'static str| {
        s.http()
            .put(s.url(&artifact))
            .bearer_auth(&s.token)
            .header("X-Trainyard-Workspace", w)
            .body("secret of a")
    };
    assert_eq!(put("a").send().await.unwrap().status().as_u16(), 200);

    // From b, none of it is there: not by id, not by search, not by path.
    let (status, body) = mlflow(s, "b", Method::GET, "runs/get", json!({"run_id": run_id})).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (404, Some("RESOURCE_DOES_NOT_EXIST")),
        "{body}"
    );
    let (status, body) = mlflow(
        s,
        "b",
        Method::GET,
        "experiments/get",
        json!({"experiment_id": exp_a}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = mlflow(
        s,
        "b",
        Method::POST,
        "runs/log-metric",
        json!({"run_id": run_id, "key": "loss", "value": 9.0, "timestamp": 2}),
    )
    .await;
    assert_eq!(status, 404, "b wrote into a's run: {body}");
    let (status, body) = mlflow(
        s,
        "b",
        Method::POST,
        "runs/set-tag",
        json!({"run_id": run_id, "key": "k", "value": "v"}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = mlflow(
        s,
        "b",
        Method::POST,
        "runs/delete",
        json!({"run_id": run_id}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = mlflow(
        s,
        "b",
        Method::POST,
        "experiments/delete",
        json!({"experiment_id": exp_a}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, found) = mlflow(
        s,
        "b",
        Method::POST,
        "runs/search",
        json!({"experiment_ids": [exp_a, exp_b]}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(found.get("runs").is_none(), "{found}");
    let (status, history) = mlflow(
        s,
        "b",
        Method::GET,
        "metrics/get-history",
        json!({"run_id": run_id, "metric_key": "loss"}),
    )
    .await;
    assert!(
        status == 200 && history.get("metrics").is_none(),
        "{history}"
    );
    let (_, listed) = mlflow(
        s,
        "b",
        Method::POST,
        "experiments/search",
        json!({"max_results": 100}),
    )
    .await;
    let names: Vec<&str> = listed["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["exp", "Default"], "{listed}");
    let (_, listed) = call(
        s,
        &s.token,
        Some("b"),
        Method::GET,
        &format!("/api/v1/runs?experiment_id={exp_a}"),
        None,
    )
    .await;
    assert!(!listed.to_string().contains(&run_id), "{listed}");
    for method in [Method::GET, Method::DELETE] {
        let r = s
            .http()
            .request(method.clone(), s.url(&artifact))
            .bearer_auth(&s.token)
            .header("X-Trainyard-Workspace", "b")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "{method} of a's artifact from b");
    }
    assert_eq!(
        put("b").send().await.unwrap().status().as_u16(),
        404,
        "b overwrote a's artifact"
    );
    let r = s
        .http()
        .get(s.url(&artifact))
        .bearer_auth(&s.token)
        .header("X-Trainyard-Workspace", "a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "secret of a");
    // A location naming another experiment's place is refused.
    let (status, body) = mlflow(
        s,
        "b",
        Method::POST,
        "experiments/create",
        json!({"name": "sneaky", "artifact_location": format!("mlflow-artifacts:/{exp_a}")}),
    )
    .await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (400, Some("INVALID_PARAMETER_VALUE")),
        "{body}"
    );

    // Experiment 0, where MLflow clients log by default, is each workspace's own.
    let (status, run) = mlflow(
        s,
        "b",
        Method::POST,
        "runs/create",
        json!({"experiment_id": "0"}),
    )
    .await;
    assert_eq!(status, 200, "{run}");
    let default_b = run["run"]["info"]["experiment_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(default_b, "0");
    let (_, e) = mlflow(
        s,
        "b",
        Method::GET,
        "experiments/get",
        json!({"experiment_id": "0"}),
    )
    .await;
    assert_eq!(
        (
            e["experiment"]["experiment_id"].as_str(),
            e["experiment"]["name"].as_str()
        ),
        (Some(default_b.as_str()), Some("Default")),
        "{e}"
    );
    let (_, found) = mlflow(
        s,
        "default",
        Method::POST,
        "runs/search",
        json!({"experiment_ids": ["0"]}),
    )
    .await;
    assert!(
        found.get("runs").is_none(),
        "b's run in default's experiment 0: {found}"
    );

    // A job's run is in its workspace's experiment of that name.
    let mut job = common::job(&["true"]);
    job["tracking"] = json!({"experiment": "exp"});
    let (status, job) = call(
        s,
        &s.token,
        Some("b"),
        Method::POST,
        "/api/v1/jobs",
        Some(job),
    )
    .await;
    assert_eq!(status, 201, "{job}");
    let (_, run) = mlflow(
        s,
        "b",
        Method::GET,
        "runs/get",
        json!({"run_id": job["id"]}),
    )
    .await;
    assert_eq!(
        run["run"]["info"]["experiment_id"].as_str(),
        Some(exp_b.as_str()),
        "{run}"
    );

    // Registered models too: the same name in both, each seeing only its own.
    for w in ["a", "b"] {
        let (status, body) = mlflow(
            s,
            w,
            Method::POST,
            "registered-models/create",
            json!({"name": "clf"}),
        )
        .await;
        assert_eq!(status, 200, "{w}: {body}");
    }
    let source = format!("mlflow-artifacts:/{exp_a}/{run_id}/artifacts");
    let (status, v) = mlflow(
        s,
        "a",
        Method::POST,
        "model-versions/create",
        json!({"name": "clf", "source": source, "run_id": run_id}),
    )
    .await;
    assert_eq!(
        (status, v["model_version"]["version"].as_str()),
        (200, Some("1")),
        "{v}"
    );
    let (status, _) = mlflow(
        s,
        "a",
        Method::POST,
        "registered-models/alias",
        json!({"name": "clf", "alias": "prod", "version": "1"}),
    )
    .await;
    assert_eq!(status, 200);
    let (_, b_model) = mlflow(
        s,
        "b",
        Method::GET,
        "registered-models/get",
        json!({"name": "clf"}),
    )
    .await;
    assert!(
        b_model["registered_model"].get("latest_versions").is_none()
            && b_model["registered_model"].get("aliases").is_none(),
        "{b_model}"
    );
    let (status, body) = mlflow(
        s,
        "b",
        Method::GET,
        "model-versions/get",
        json!({"name": "clf", "version": "1"}),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = mlflow(
        s,
        "b",
        Method::GET,
        "registered-models/alias",
        json!({"name": "clf", "alias": "prod"}),
    )
    .await;
    assert_ne!(status, 200, "{body}");
    // b cannot register a's run as its own version, by its artifacts or by `runs:/`.
    let (status, body) = mlflow(
        s,
        "b",
        Method::POST,
        "model-versions/create",
        json!({"name": "clf", "source": format!("runs:/{run_id}/model"), "run_id": run_id}),
    )
    .await;
    assert_eq!(status, 400, "b registered a's run: {body}");
    let (status, body) = mlflow(
        s,
        "b",
        Method::POST,
        "model-versions/create",
        json!({"name": "clf", "source": source, "run_id": run_id}),
    )
    .await;
    assert_ne!(status, 200, "b registered a's run: {body}");
    let (_, found) = mlflow(
        s,
        "b",
        Method::GET,
        "model-versions/search",
        json!({"filter": "name='clf'"}),
    )
    .await;
    assert!(found.get("model_versions").is_none(), "{found}");
    let (_, listed) = call(s, &s.token, Some("b"), Method::GET, "/api/v1/models", None).await;
    assert!(!listed.to_string().contains(&run_id), "{listed}");
    // Deleting b's model leaves a's.
    let (status, _) = mlflow(
        s,
        "b",
        Method::DELETE,
        "registered-models/delete",
        json!({"name": "clf"}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, a_model) = mlflow(
        s,
        "a",
        Method::GET,
        "registered-models/get",
        json!({"name": "clf"}),
    )
    .await;
    assert_eq!(
        (
            status,
            a_model["registered_model"]["aliases"][0]["alias"].as_str()
        ),
        (200, Some("prod")),
        "{a_model}"
    );

    // A new workspace has its Default (experiment 0) from the start, for readers too, and
    // is still empty enough to remove.
    common::ok(s.cli(&["workspaces", "create", "fresh"]));
    let (status, e) = mlflow(
        s,
        "fresh",
        Method::GET,
        "experiments/get",
        json!({"experiment_id": "0"}),
    )
    .await;
    assert_eq!(
        (status, e["experiment"]["name"].as_str()),
        (200, Some("Default")),
        "{e}"
    );
    let (status, body) = call(
        s,
        &s.token,
        None,
        Method::DELETE,
        "/api/v1/workspaces/fresh",
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}");
    // A workspace that holds experiments is not removed.
    let (status, body) = call(
        s,
        &s.token,
        None,
        Method::DELETE,
        "/api/v1/workspaces/a",
        None,
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (409, "workspace_not_empty"),
        "{body}"
    );
}

const TINY: &[u8] = include_bytes!("../../serve/tests/fixtures/repo/tiny/1/model.onnx");

#[tokio::test(flavor = "multi_thread")]
async fn a_served_model_answers_only_in_its_workspace() {
    let server = Server::start_with(common::ServerOptions {
        env: vec![("TRAINYARD_SERVE_RUNTIME".into(), "tract".into())],
        ..common::ServerOptions::default()
    })
    .await;
    let s = &server;
    for w in ["a", "b"] {
        common::ok(s.cli(&["workspaces", "create", w]));
    }
    // a registers the tiny ONNX model as `tiny`, from a run of its own.
    let (status, run) = mlflow(
        s,
        "a",
        Method::POST,
        "runs/create",
        json!({"experiment_id": "0"}),
    )
    .await;
    assert_eq!(status, 200, "{run}");
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let root = run["run"]["info"]["artifact_uri"]
        .as_str()
        .unwrap()
        .trim_start_matches("mlflow-artifacts:/")
        .to_string();
    let r = s
        .http()
        .put(s.url(&format!(
            "/api/2.0/mlflow-artifacts/artifacts/{root}/model/model.onnx"
        )))
        .bearer_auth(&s.token)
        .header("X-Trainyard-Workspace", "a")
        .body(TINY.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        mlflow(
            s,
            "a",
            Method::POST,
            "registered-models/create",
            json!({"name": "tiny"})
        )
        .await
        .0,
        200
    );
    let (status, v) = mlflow(
        s,
        "a",
        Method::POST,
        "model-versions/create",
        json!({"name": "tiny", "source": format!("runs:/{run_id}/model"), "run_id": run_id}),
    )
    .await;
    assert_eq!(status, 200, "{v}");

    let infer = json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]});
    let (status, out) = call(
        s,
        &s.token,
        Some("a"),
        Method::POST,
        "/v2/models/tiny/infer",
        Some(infer.clone()),
    )
    .await;
    assert!(out["outputs"].is_array(), "{out}");
    assert_eq!(
        (status, out["model_name"].as_str()),
        (200, Some("tiny")),
        "{out}"
    );
    let (status, meta) = call(s, &s.token, Some("a"), Method::GET, "/v2/models/tiny", None).await;
    assert_eq!(
        (status, meta["name"].as_str()),
        (200, Some("tiny")),
        "{meta}"
    );
    let (_, index) = call(
        s,
        &s.token,
        Some("a"),
        Method::POST,
        "/v2/repository/index",
        Some(json!({})),
    )
    .await;
    assert!(index.to_string().contains("\"tiny\""), "{index}");

    // Elsewhere it is not there, by its name or by the key the server keeps it under.
    for (workspace, path) in [
        (Some("b"), "/v2/models/tiny/infer"),
        (None, "/v2/models/tiny/infer"),
        (Some("b"), "/v2/models/a%2Ftiny/infer"),
        (None, "/v2/models/a%2Ftiny/infer"),
    ] {
        let (status, body) = call(
            s,
            &s.token,
            workspace,
            Method::POST,
            path,
            Some(infer.clone()),
        )
        .await;
        assert_eq!(status, 404, "{workspace:?} {path}: {body}");
    }
    let (_, index) = call(
        s,
        &s.token,
        Some("b"),
        Method::POST,
        "/v2/repository/index",
        Some(json!({})),
    )
    .await;
    assert!(!index.to_string().contains("tiny"), "{index}");
    let (_, stats) = call(
        s,
        &s.token,
        Some("b"),
        Method::GET,
        "/v2/models/stats",
        None,
    )
    .await;
    assert!(!stats.to_string().contains("tiny"), "{stats}");
    // b unloading `tiny` unloads b's (there is none), never a's.
    call(
        s,
        &s.token,
        Some("b"),
        Method::POST,
        "/v2/repository/models/tiny/unload",
        Some(json!({})),
    )
    .await;
    let (_, index) = call(
        s,
        &s.token,
        Some("a"),
        Method::POST,
        "/v2/repository/index",
        Some(json!({"ready": true})),
    )
    .await;
    assert!(
        index
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "tiny" && m["state"] == "READY"),
        "a's model went away: {index}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn datasets_and_their_shards_stay_in_their_workspace() {
    let server = Server::start().await;
    let s = &server;
    for w in ["a", "b"] {
        common::ok(s.cli(&["workspaces", "create", w]));
    }
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("points.csv");
    let mut text = String::from("x,y,label\n");
    for i in 0..200 {
        text.push_str(&format!("{i},{},{}\n", i * 2, i % 3));
    }
    std::fs::write(&csv, text).unwrap();
    let csv = csv.display().to_string();
    common::ok(s.cli(&["dataset", "import", "points", &csv, "--workspace", "a"]));
    let shown: Value = serde_json::from_str(&common::ok(s.cli(&[
        "dataset",
        "show",
        "points",
        "--workspace",
        "a",
        "-o",
        "json",
    ])))
    .unwrap();
    let manifest = shown["manifest"].clone();
    let sha = manifest["shards"][0]["sha256"]
        .as_str()
        .unwrap()
        .to_string();

    // b sees no dataset of a's, and not its shards, by name or by hash.
    let listed = common::ok(s.cli(&["dataset", "ls", "--workspace", "b", "-o", "json"]));
    assert!(!listed.contains("points"), "{listed}");
    let (status, body) = call(
        s,
        &s.token,
        Some("b"),
        Method::GET,
        "/api/v1/datasets/points",
        None,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    for method in [Method::GET, Method::HEAD] {
        let r = s
            .http()
            .request(
                method.clone(),
                s.url(&format!("/api/v1/datasets/shards/{sha}")),
            )
            .bearer_auth(&s.token)
            .header("X-Trainyard-Workspace", "b")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 404, "{method} of a's shard from b");
    }
    // Naming a's shards in a manifest of its own gets b nothing.
    let (status, body) = call(
        s,
        &s.token,
        Some("b"),
        Method::POST,
        "/api/v1/datasets/stolen/versions",
        Some(json!({"manifest": manifest})),
    )
    .await;
    assert_eq!((status, code(&body)), (409, "shard_missing"), "{body}");
    // The same data imported in b is b's own, under the same name.
    common::ok(s.cli(&["dataset", "import", "points", &csv, "--workspace", "b"]));
    let r = s
        .http()
        .get(s.url(&format!("/api/v1/datasets/shards/{sha}")))
        .bearer_auth(&s.token)
        .header("X-Trainyard-Workspace", "b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // a still reads its own.
    let r = s
        .http()
        .get(s.url(&format!("/api/v1/datasets/shards/{sha}")))
        .bearer_auth(&s.token)
        .header("X-Trainyard-Workspace", "a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let (status, body) = call(
        s,
        &s.token,
        None,
        Method::DELETE,
        "/api/v1/workspaces/b",
        None,
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (409, "workspace_not_empty"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_reaches_only_the_environment_of_the_jobs_of_its_workspace() {
    let server = Server::start().await;
    let s = &server;
    for w in ["a", "b"] {
        common::ok(s.cli(&["workspaces", "create", w]));
    }
    common::ok(s.cli(&["users", "add", "ed"]));
    common::ok(s.cli(&["workspaces", "grant", "--workspace", "a", "ed", "editor"]));
    let ed = token_for(s, "ed", "a", json!({"narrowed": true})).await;
    let value = "hf_0123456789-the-secret-value";
    // Admins set secrets; an editor cannot, nor read one back.
    let (status, body) = call(
        s,
        &ed,
        None,
        Method::PUT,
        "/api/v1/secrets/hf",
        Some(json!({"value": value})),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "needs_admin"), "{body}");
    let (status, body) = call(
        s,
        &s.token,
        Some("a"),
        Method::PUT,
        "/api/v1/secrets/hf",
        Some(json!({"value": value})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let shown = common::ok(s.cli(&["secrets", "ls", "--workspace", "a"]));
    assert!(shown.contains("hf") && !shown.contains(value), "{shown}");
    let (status, listed) = call(s, &ed, None, Method::GET, "/api/v1/secrets", None).await;
    assert_eq!(
        (status, listed["secrets"][0]["name"].as_str()),
        (200, Some("hf")),
        "{listed}"
    );
    assert!(!listed.to_string().contains(value));
    for (body, field) in [
        (json!({"value": "a\u{0}b"}), "value"),
        (json!({"value": "x".repeat(70_000)}), "value"),
    ] {
        let (status, answer) = call(
            s,
            &s.token,
            Some("a"),
            Method::PUT,
            "/api/v1/secrets/big",
            Some(body),
        )
        .await;
        assert_eq!(
            (status, answer["error"]["field"].as_str()),
            (400, Some(field)),
            "{answer}"
        );
    }
    let (status, answer) = call(
        s,
        &s.token,
        Some("a"),
        Method::PUT,
        "/api/v1/secrets/Bad%20Name",
        Some(json!({"value": "v"})),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["field"].as_str()),
        (400, Some("name")),
        "{answer}"
    );

    // A job of a that names it gets it in its environment, and only there.
    // The job prints the value's SHA-256, never the value.
    let digest = trainyard_store::hash_token(value);
    let mut job = common::job(&["sh", "-c", "printf %s \"$HF_TOKEN\" | sha256sum"]);
    job["secrets"] = json!({"HF_TOKEN": "hf"});
    let (status, job) = call(s, &ed, None, Method::POST, "/api/v1/jobs", Some(job)).await;
    assert_eq!(status, 201, "{job}");
    assert_eq!(job["secrets"]["HF_TOKEN"], "hf");
    let id = job["id"].as_str().unwrap().to_string();
    let log = loop {
        let (_, j) = call(
            s,
            &ed,
            None,
            Method::GET,
            &format!("/api/v1/jobs/{id}"),
            None,
        )
        .await;
        if j["state"] == "succeeded" || j["state"] == "failed" {
            assert_eq!(j["state"], "succeeded", "{j}");
            let r = s
                .http()
                .get(s.url(&format!("/api/v1/jobs/{id}/logs")))
                .bearer_auth(&ed)
                .send()
                .await
                .unwrap();
            break r.text().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        log.contains(&digest),
        "the job did not get the secret: {log}"
    );
    // b has no secret `hf`: a job of b naming it is refused, naming the field.
    let mut job = common::job(&["true"]);
    job["secrets"] = json!({"HF_TOKEN": "hf"});
    let (status, body) = call(
        s,
        &s.token,
        Some("b"),
        Method::POST,
        "/api/v1/jobs",
        Some(job),
    )
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("secrets.HF_TOKEN")),
        "{body}"
    );
    let mut job = common::job(&["true"]);
    job["secrets"] = json!({"HF_TOKEN": "hf"});
    job["env"] = json!({"HF_TOKEN": "plain"});
    let (status, body) = call(s, &ed, None, Method::POST, "/api/v1/jobs", Some(job)).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (400, Some("secrets.HF_TOKEN")),
        "{body}"
    );

    // Removed, it is gone for the next job; the value is nowhere at rest or in the log.
    let (status, _) = call(
        s,
        &s.token,
        Some("a"),
        Method::DELETE,
        "/api/v1/secrets/hf",
        None,
    )
    .await;
    assert_eq!(status, 204);
    let mut job = common::job(&["true"]);
    job["secrets"] = json!({"HF_TOKEN": "hf"});
    let (status, _) = call(s, &ed, None, Method::POST, "/api/v1/jobs", Some(job)).await;
    assert_eq!(status, 400);
    let mut stored = Vec::new();
    for file in ["trainyard.db", "trainyard.db-wal"] {
        stored.extend(std::fs::read(s.data_dir.join(file)).unwrap_or_default());
    }
    assert!(
        !String::from_utf8_lossy(&stored).contains(value),
        "the secret is stored in clear"
    );
    assert!(
        !s.server_log().contains(value),
        "the secret is in the server's log"
    );
    // A workspace holding only secrets is removed with them.
    let (status, _) = call(
        s,
        &s.token,
        Some("b"),
        Method::PUT,
        "/api/v1/secrets/tmp",
        Some(json!({"value": "v"})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, body) = call(
        s,
        &s.token,
        None,
        Method::DELETE,
        "/api/v1/workspaces/b",
        None,
    )
    .await;
    assert_eq!(status, 204, "{body}: {}", s.server_log());
    let key = s.data_dir.join("secrets.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// The fair-share scenario of `compute::fair_share`'s simulation, with real processes at
/// small scale: workspaces weighted 1:2 compete for 3 GPUs with 12 one-GPU jobs each; while
/// both have jobs waiting, their GPU time follows the weights.
#[tokio::test(flavor = "multi_thread")]
async fn contended_gpus_go_by_weight_with_real_processes() {
    let server = Server::start_with(common::ServerOptions {
        cpus: 8.0,
        gpus: 3,
        ..common::ServerOptions::default()
    })
    .await;
    let s = &server;
    for (w, weight) in [("light", "1"), ("heavy", "2")] {
        common::ok(s.cli(&["workspaces", "create", w]));
        common::ok(s.cli(&["workspaces", "set", w, "--weight", weight]));
    }
    // A job holding every GPU while both queues fill, so the contest starts together.
    let blocker = s
        .submit(json!({"command": ["sleep", "2"], "resources": {"gpus": 3, "cpus": 0.1}}))
        .await;
    let mut jobs = Vec::new();
    for _ in 0..12 {
        for w in ["light", "heavy"] {
            let (status, job) = call(
                s,
                &s.token,
                Some(w),
                Method::POST,
                "/api/v1/jobs",
                Some(json!({"command": ["sleep", "1.5"], "resources": {"gpus": 1, "cpus": 0.1}})),
            )
            .await;
            assert_eq!(status, 201, "{job}");
            jobs.push((w, job["id"].as_str().unwrap().to_string()));
        }
    }
    let blocker = s
        .wait_done(blocker["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    let mut spans: Vec<(&str, i64, i64)> = Vec::new();
    for (w, id) in &jobs {
        let job = loop {
            let (_, job) = call(
                s,
                &s.token,
                Some(w),
                Method::GET,
                &format!("/api/v1/jobs/{id}"),
                None,
            )
            .await;
            if job["finished_at_ms"].is_i64() {
                break job;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(job["state"], "succeeded", "{job}");
        spans.push((
            w,
            job["started_at_ms"].as_i64().unwrap(),
            job["finished_at_ms"].as_i64().unwrap(),
        ));
    }
    // The contest: from the blocker's end until one workspace has no job left to start.
    let from = blocker["finished_at_ms"].as_i64().unwrap();
    let last_start = |w: &str| {
        spans
            .iter()
            .filter(|s| s.0 == w)
            .map(|s| s.1)
            .max()
            .unwrap()
    };
    let until = last_start("light").min(last_start("heavy"));
    let gpu_ms = |w: &str| -> i64 {
        spans
            .iter()
            .filter(|s| s.0 == w)
            .map(|&(_, start, end)| (end.min(until) - start.max(from)).max(0))
            .sum()
    };
    let (light, heavy) = (gpu_ms("light"), gpu_ms("heavy"));
    let ratio = heavy as f64 / light.max(1) as f64;
    println!("fair share with real processes: light {light} GPU-ms, heavy {heavy} GPU-ms over {} ms, ratio {ratio:.2} (weights 1:2)", until - from);
    assert!(
        (1.6..=2.4).contains(&ratio),
        "GPU time heavy/light = {ratio:.2}, weights 2:1 (light {light} ms, heavy {heavy} ms)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_stop_at_a_workspaces_stored_bytes_quota() {
    let server = Server::start().await;
    let s = &server;
    for w in ["a", "b"] {
        common::ok(s.cli(&["workspaces", "create", w]));
    }
    let put = |w: &'static str, root: String, body: &'static str| {
        s.http()
            .put(s.url(&format!("/api/2.0/mlflow-artifacts/artifacts/{root}/f.txt")))
            .bearer_auth(&s.token)
            .header("X-Trainyard-Workspace", w)
            .body(body)
            .send()
    };
    let root_of = |run: &Value| {
        run["run"]["info"]["artifact_uri"]
            .as_str()
            .unwrap()
            .trim_start_matches("mlflow-artifacts:/")
            .to_string()
    };
    let (_, run_a) = mlflow(
        s,
        "a",
        Method::POST,
        "runs/create",
        json!({"experiment_id": "0"}),
    )
    .await;
    let (_, run_b) = mlflow(
        s,
        "b",
        Method::POST,
        "runs/create",
        json!({"experiment_id": "0"}),
    )
    .await;
    // a stores 100 bytes, then gets a quota of exactly that.
    let hundred: &'static str = Box::leak("x".repeat(100).into_boxed_str());
    assert_eq!(
        put("a", root_of(&run_a), hundred)
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    common::ok(s.cli(&["workspaces", "set", "a", "--stored-bytes", "100"]));
    // At its quota: artifacts refused in MLflow's shape, shards in REST's; b goes on.
    let r = put("a", root_of(&run_a), "more").await.unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error_code"], "RESOURCE_EXHAUSTED", "{body}");
    let r = s
        .http()
        .put(s.url(&format!("/api/v1/datasets/shards/{}", "0".repeat(64))))
        .bearer_auth(&s.token)
        .header("X-Trainyard-Workspace", "a")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["field"], "quota.stored_bytes", "{body}");
    assert_eq!(
        put("b", root_of(&run_b), "data")
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let listed = common::ok(s.cli(&["workspaces", "ls", "-o", "json"]));
    assert!(listed.contains("\"stored_bytes\": 100"), "{listed}");
    // The quota lifted, a stores again at once (the policy is read at each upload).
    common::ok(s.cli(&["workspaces", "set", "a", "--unset", "stored_bytes"]));
    assert_eq!(
        put("a", root_of(&run_a), "more")
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cascade_removes_a_workspace_with_everything_it_held_and_nothing_else() {
    let server = Server::start().await;
    let s = &server;
    for w in ["gone", "stays"] {
        common::ok(s.cli(&["workspaces", "create", w]));
    }
    // gone: a run with a metric and an artifact, a model version, a dataset, a finished
    // job, a secret; stays: the same dataset (a shared shard) and its own run.
    let (_, run) = mlflow(
        s,
        "gone",
        Method::POST,
        "runs/create",
        json!({"experiment_id": "0"}),
    )
    .await;
    let run_id = run["run"]["info"]["run_id"].as_str().unwrap().to_string();
    let root = run["run"]["info"]["artifact_uri"]
        .as_str()
        .unwrap()
        .trim_start_matches("mlflow-artifacts:/")
        .to_string();
    mlflow(
        s,
        "gone",
        Method::POST,
        "runs/log-metric",
        json!({"run_id": run_id, "key": "loss", "value": 1.0, "timestamp": 1}),
    )
    .await;
    let r = s
        .http()
        .put(s.url(&format!("/api/2.0/mlflow-artifacts/artifacts/{root}/f.txt")))
        .bearer_auth(&s.token)
        .header("X-Trainyard-Workspace", "gone")
        .body("data")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    mlflow(
        s,
        "gone",
        Method::POST,
        "registered-models/create",
        json!({"name": "m"}),
    )
    .await;
    let (status, v) = mlflow(
        s,
        "gone",
        Method::POST,
        "model-versions/create",
        json!({"name": "m", "source": format!("runs:/{run_id}/x"), "run_id": run_id}),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("d.csv");
    std::fs::write(&csv, "x,label\n1,0\n2,1\n").unwrap();
    let csv = csv.display().to_string();
    for w in ["gone", "stays"] {
        common::ok(s.cli(&["dataset", "import", "d", &csv, "--workspace", w]));
    }
    let shown: Value = serde_json::from_str(&common::ok(s.cli(&[
        "dataset",
        "show",
        "d",
        "--workspace",
        "stays",
        "-o",
        "json",
    ])))
    .unwrap();
    let sha = shown["manifest"]["shards"][0]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, job) = call(
        s,
        &s.token,
        Some("gone"),
        Method::POST,
        "/api/v1/jobs",
        Some(json!({"command": ["sleep", "30"]})),
    )
    .await;
    let job_id = job["id"].as_str().unwrap().to_string();
    call(
        s,
        &s.token,
        Some("gone"),
        Method::PUT,
        "/api/v1/secrets/k",
        Some(json!({"value": "v"})),
    )
    .await;

    let files_of_run = |dir: &std::path::Path| {
        let mut found = Vec::new();
        let mut dirs = vec![dir.to_path_buf()];
        while let Some(d) = dirs.pop() {
            for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.display().to_string().contains(&run_id) {
                    found.push(path);
                }
            }
        }
        found
    };
    assert!(
        !files_of_run(&s.data_dir).is_empty(),
        "the run's artifact is not in the store"
    );
    // Without cascade, refused; with it, refused while a job runs.
    let (status, body) = call(
        s,
        &s.token,
        None,
        Method::DELETE,
        "/api/v1/workspaces/gone",
        None,
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (409, "workspace_not_empty"),
        "{body}"
    );
    let (status, body) = call(
        s,
        &s.token,
        None,
        Method::DELETE,
        "/api/v1/workspaces/gone?cascade=true",
        None,
    )
    .await;
    assert_eq!(
        (status, code(&body)),
        (409, "workspace_not_empty"),
        "{body}"
    );
    assert!(body.to_string().contains("queued or running"), "{body}");
    call(
        s,
        &s.token,
        Some("gone"),
        Method::POST,
        &format!("/api/v1/jobs/{job_id}/cancel"),
        None,
    )
    .await;
    loop {
        let (_, j) = call(
            s,
            &s.token,
            Some("gone"),
            Method::GET,
            &format!("/api/v1/jobs/{job_id}"),
            None,
        )
        .await;
        if j["state"] == "cancelled" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    common::ok(s.cli(&["workspaces", "rm", "gone", "--cascade"]));

    // A new workspace of the same name starts with nothing of the old one.
    common::ok(s.cli(&["workspaces", "create", "gone"]));
    let (status, _) = mlflow(
        s,
        "gone",
        Method::GET,
        "runs/get",
        json!({"run_id": run_id}),
    )
    .await;
    assert_eq!(status, 404);
    let (_, models) = mlflow(
        s,
        "gone",
        Method::GET,
        "registered-models/search",
        json!({}),
    )
    .await;
    assert!(models.get("registered_models").is_none(), "{models}");
    let (status, _) = call(
        s,
        &s.token,
        Some("gone"),
        Method::GET,
        "/api/v1/datasets/d",
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (_, secrets) = call(
        s,
        &s.token,
        Some("gone"),
        Method::GET,
        "/api/v1/secrets",
        None,
    )
    .await;
    assert_eq!(secrets["secrets"].as_array().unwrap().len(), 0, "{secrets}");
    let (status, _) = call(
        s,
        &s.token,
        Some("gone"),
        Method::GET,
        &format!("/api/v1/jobs/{job_id}"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let r = s
        .http()
        .get(s.url(&format!("/api/2.0/mlflow-artifacts/artifacts/{root}/f.txt")))
        .bearer_auth(&s.token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        404,
        "the artifact outlived its workspace"
    );
    // Nor is any file of the run left in the store.
    let left = files_of_run(&s.data_dir);
    assert!(
        left.is_empty(),
        "files of the removed run are left: {left:?}"
    );
    // The other workspace keeps its data, the shared shard included.
    let r = s
        .http()
        .get(s.url(&format!("/api/v1/datasets/shards/{sha}")))
        .bearer_auth(&s.token)
        .header("X-Trainyard-Workspace", "stays")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        200,
        "the shared shard went with the other workspace"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workspaces_job_logs_count_toward_its_stored_bytes() {
    let server = Server::start().await;
    let s = &server;
    common::ok(s.cli(&["workspaces", "create", "chatty"]));
    let (status, job) = call(
        s,
        &s.token,
        Some("chatty"),
        Method::POST,
        "/api/v1/jobs",
        Some(json!({"command": ["sh", "-c", "head -c 3000 /dev/zero | tr '\\\\0' x"]})),
    )
    .await;
    assert_eq!(status, 201, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    // Until its log is in the blob store.
    let shipped = |dir: &std::path::Path| {
        let mut total = 0u64;
        let mut dirs = vec![dir.to_path_buf()];
        while let Some(d) = dirs.pop() {
            for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let path = entry.path();
                let text = path.display().to_string();
                if path.is_dir() {
                    dirs.push(path);
                } else if text.contains(&format!("jobs/{id}/log")) {
                    total += entry.metadata().map(|m| m.len()).unwrap_or(0);
                }
            }
        }
        total
    };
    for _ in 0..200 {
        if shipped(&s.data_dir) >= 3000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        shipped(&s.data_dir) >= 3000,
        "the job's log never reached the store"
    );
    // 3,000 bytes of log against a 1,000-byte quota: the next upload is refused.
    common::ok(s.cli(&["workspaces", "set", "chatty", "--stored-bytes", "1000"]));
    let (_, run) = mlflow(
        s,
        "chatty",
        Method::POST,
        "runs/create",
        json!({"experiment_id": "0"}),
    )
    .await;
    let root = run["run"]["info"]["artifact_uri"]
        .as_str()
        .unwrap()
        .trim_start_matches("mlflow-artifacts:/")
        .to_string();
    let r = s
        .http()
        .put(s.url(&format!("/api/2.0/mlflow-artifacts/artifacts/{root}/f.txt")))
        .bearer_auth(&s.token)
        .header("X-Trainyard-Workspace", "chatty")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
}
