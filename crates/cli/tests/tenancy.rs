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
    assert_eq!((status, code(&body)), (403, "needs_owner"), "{body}");
    let (status, body) = call(
        s,
        &alice,
        None,
        Method::POST,
        "/api/v1/users",
        Some(json!({"name": "eve", "owner": true})),
    )
    .await;
    assert_eq!((status, code(&body)), (403, "needs_owner"), "{body}");
    let (status, body) = call(s, &alice, None, Method::GET, "/api/v1/audit", None).await;
    assert_eq!((status, code(&body)), (403, "needs_admin"), "{body}");
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
