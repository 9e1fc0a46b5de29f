//! The authorization matrix, generated from the server's own route table
//! (`trainyard_api::route_table`, which the token layer enforces: a route missing from it
//! is refused): every route × {no token, viewer, editor, admin of workspace A, admin of
//! workspace B, a job's token in A, owner}, each call checked for its status and for the
//! absence of A's data in what a denied caller gets. Then a second pass in which B's admin
//! calls every route with real ids and bodies of A's objects: none of A's data comes back,
//! and A's objects are unchanged afterwards. Then the audit trail: one entry per changing or
//! denied call of the matrix, and no token value in it.

mod common;

use std::time::Duration;

use common::Server;
use reqwest::Method;
use serde_json::{json, Value};
use trainyard_core::Need;

const A: &str = "team-a";
const B: &str = "team-b";

/// Values of A's data that no request names: finding one in an answer means it leaked.
const MARKERS: &[&str] = &[
    "tag-value-of-a",
    "param-value-of-a",
    "experiment-tag-of-a",
    "artifact-content-of-a",
    "description-of-a",
    "jobmarker-of-a",
    "studyparamofa",
    "columnofa",
];

/// A secret of A's: no answer to anyone, in either pass, may hold it.
const SECRET: &str = "secret-value-of-a";

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Nobody,
    Viewer,
    Editor,
    AdminA,
    AdminB,
    JobA,
    Owner,
}

const EVERYONE: [Who; 7] = [
    Who::Nobody,
    Who::Viewer,
    Who::Editor,
    Who::AdminA,
    Who::AdminB,
    Who::JobA,
    Who::Owner,
];

struct World {
    tokens: std::collections::HashMap<&'static str, String>,
    experiment: String,
    run: String,
    logged_model: String,
    job: String,
    sha: String,
    viewer_token_id: String,
    /// A file the web UI's page loads (`index-HASH.js`).
    asset: String,
}

impl World {
    fn token(&self, who: Who) -> Option<&str> {
        let key = match who {
            Who::Nobody => return None,
            Who::Viewer => "viewer",
            Who::Editor => "editor",
            Who::AdminA => "admin-a",
            Who::AdminB => "admin-b",
            Who::JobA => "job",
            Who::Owner => "owner",
        };
        Some(self.tokens[key].as_str())
    }

    /// A concrete path for `template`: A's real objects (`real`), or names nothing has, so
    /// a write that is let through changes nothing.
    fn path(&self, template: &str, real: bool) -> String {
        let artifact = format!("{}/{}/artifacts/secret.txt", self.experiment, self.run);
        let none = "00000000000000000000000000000000";
        let mut path = template.to_string();
        let pairs: Vec<(&str, String)> = if template.starts_with("/api/v1/jobs") {
            vec![("{id}", if real { self.job.clone() } else { none.into() })]
        } else if template.starts_with("/api/v1/tokens") {
            vec![(
                "{id}",
                if real {
                    self.viewer_token_id.clone()
                } else {
                    none.into()
                },
            )]
        } else if template.starts_with("/api/v1/runs") {
            vec![("{id}", self.run.clone()), ("{key}", "loss".into())]
        } else if template.starts_with("/api/v1/workspaces") {
            vec![("{name}", A.into())]
        } else if template.starts_with("/api/v1/users") || template.starts_with("/api/v1/members") {
            vec![("{name}", "nobody".into()), ("{user}", "nobody".into())]
        } else if template.starts_with("/api/v1/secrets") {
            vec![(
                "{name}",
                if real {
                    "hf".into()
                } else {
                    "no-such-secret".into()
                },
            )]
        } else if template.starts_with("/api/v1/studies") {
            vec![
                (
                    "{name}",
                    if real {
                        "study-of-a".into()
                    } else {
                        "no-such-study".into()
                    },
                ),
                ("{number}", "0".into()),
            ]
        } else if template.starts_with("/v2") {
            vec![
                ("{m}", "no-such-model".into()),
                ("{v}", "1".into()),
                ("{repo}", "r".into()),
            ]
        } else {
            vec![
                ("{name}", "data-of-a".into()),
                ("{version}", "latest".into()),
                ("{sha256}", self.sha.clone()),
                (
                    "{model_id}",
                    if real {
                        self.logged_model.clone()
                    } else {
                        none.into()
                    },
                ),
                ("{key}", "tag-key".into()),
                (
                    "{*path}",
                    if real {
                        artifact.clone()
                    } else {
                        format!("{}/{}/artifacts/matrix.txt", self.experiment, self.run)
                    },
                ),
                ("{id}", none.into()),
                ("{part}", "1".into()),
                ("{*rest}", "x".into()),
                ("{*file}", self.asset.clone()),
            ]
        };
        for (param, value) in pairs {
            path = path.replace(param, &value);
        }
        if template.starts_with("/api/v1/runs") && template == "/api/v1/runs" {
            path.push_str(&format!("?experiment_id={}", self.experiment));
        }
        path
    }

    /// A body (or query) naming A's objects, for the calls that are meant to reach them.
    fn real_body(&self) -> Value {
        json!({
            "experiment_id": self.experiment, "experiment_ids": [self.experiment],
            "run_id": self.run, "run_uuid": self.run, "run_ids": [self.run],
            "name": "model-of-a", "new_name": "stolen-by-b", "version": "1",
            "key": "tag-key", "value": "overwritten-by-b", "metric_key": "loss",
            "alias": "prod", "stage": "Archived", "model_id": self.logged_model,
            "description": "overwritten-by-b", "source": format!("runs:/{}/model", self.run),
            "path": "secret.txt", "max_results": 100, "new_value": "x",
            "tags": [{"key": "tag-key", "value": "overwritten-by-b"}],
            "params": [{"key": "param-key", "value": "overwritten-by-b"}],
            "metrics": [{"key": "loss", "value": 99.0, "timestamp": 2, "step": 1}],
            "manifest": {}, "role": "admin", "command": ["true"],
        })
    }
}

async fn send(
    server: &Server,
    token: Option<&str>,
    workspace: Option<&str>,
    method: &Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, String) {
    let mut path = path.to_string();
    // MLflow's reads take their arguments in the query; REST v1 refuses unknown ones.
    let mlflow = !path.starts_with("/api/v1") && !path.starts_with("/v2");
    if let (Some(b), true) = (
        body,
        mlflow && (*method == Method::GET || *method == Method::HEAD),
    ) {
        let query: Vec<String> = b
            .as_object()
            .unwrap()
            .iter()
            .filter_map(|(k, v)| match v {
                Value::String(s) => Some(format!("{k}={s}")),
                Value::Number(n) => Some(format!("{k}={n}")),
                _ => None,
            })
            .collect();
        path = format!(
            "{path}{}{}",
            if path.contains('?') { "&" } else { "?" },
            query.join("&")
        );
    }
    let mut req = server.http().request(method.clone(), server.url(&path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(w) = workspace {
        req = req.header("X-Trainyard-Workspace", w);
    }
    if *method != Method::GET && *method != Method::HEAD {
        req = req.json(body.unwrap_or(&json!({})));
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

async fn owner_call(
    server: &Server,
    workspace: &str,
    method: Method,
    path: &str,
    body: Value,
) -> Value {
    let (status, text) = send(
        server,
        Some(&server.token),
        Some(workspace),
        &method,
        path,
        Some(&body),
    )
    .await;
    assert!(status < 300, "{method} {path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// A's objects, made by the owner: an experiment with a tagged run (param, metric, artifact),
/// a logged model, a registered model with a version and alias, a dataset, a running job.
async fn world(s: &Server) -> World {
    for w in [A, B] {
        common::ok(s.cli(&["workspaces", "create", w]));
    }
    let mut tokens = std::collections::HashMap::new();
    tokens.insert("owner", s.token.clone());
    let mut viewer_token_id = String::new();
    for (user, workspace, role) in [
        ("viewer", A, "viewer"),
        ("editor", A, "editor"),
        ("admin-a", A, "admin"),
        ("admin-b", B, "admin"),
    ] {
        common::ok(s.cli(&["users", "add", user]));
        common::ok(s.cli(&["workspaces", "grant", "--workspace", workspace, user, role]));
        let made = owner_call(
            s,
            workspace,
            Method::POST,
            "/api/v1/tokens",
            json!({"name": "matrix", "user": user}),
        )
        .await;
        if user == "viewer" {
            viewer_token_id = made["id"].as_str().unwrap().to_string();
        }
        tokens.insert(user, made["token"].as_str().unwrap().to_string());
    }
    let m = |p: &str| format!("/api/2.0/mlflow/{p}");
    let e = owner_call(
        s,
        A,
        Method::POST,
        &m("experiments/create"),
        json!({"name": "exp-of-a", "tags": [{"key": "k", "value": "experiment-tag-of-a"}]}),
    )
    .await;
    let experiment = e["experiment_id"].as_str().unwrap().to_string();
    let r = owner_call(s, A, Method::POST, &m("runs/create"), json!({"experiment_id": experiment, "tags": [{"key": "tag-key", "value": "tag-value-of-a"}]})).await;
    let run = r["run"]["info"]["run_id"].as_str().unwrap().to_string();
    owner_call(s, A, Method::POST, &m("runs/log-batch"), json!({"run_id": run, "params": [{"key": "param-key", "value": "param-value-of-a"}], "metrics": [{"key": "loss", "value": 0.25, "timestamp": 1, "step": 0}]})).await;
    let r = s
        .http()
        .put(s.url(&format!(
            "/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run}/artifacts/secret.txt"
        )))
        .bearer_auth(&s.token)
        .header("X-Trainyard-Workspace", A)
        .body("artifact-content-of-a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let lm = owner_call(s, A, Method::POST, &m("logged-models"), json!({"experiment_id": experiment, "name": "lm", "source_run_id": run, "tags": [{"key": "k", "value": "tag-value-of-a"}]})).await;
    let logged_model = lm["model"]["info"]["model_id"]
        .as_str()
        .unwrap()
        .to_string();
    owner_call(
        s,
        A,
        Method::POST,
        &m("registered-models/create"),
        json!({"name": "model-of-a", "description": "description-of-a"}),
    )
    .await;
    owner_call(s, A, Method::POST, &m("model-versions/create"), json!({"name": "model-of-a", "source": format!("runs:/{run}/model"), "run_id": run, "description": "description-of-a"})).await;
    owner_call(
        s,
        A,
        Method::POST,
        &m("registered-models/alias"),
        json!({"name": "model-of-a", "alias": "prod", "version": "1"}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("a.csv");
    std::fs::write(&csv, "columnofa,label\n1,0\n2,1\n3,0\n").unwrap();
    common::ok(s.cli(&[
        "dataset",
        "import",
        "data-of-a",
        &csv.display().to_string(),
        "--workspace",
        A,
    ]));
    let shown: Value = serde_json::from_str(&common::ok(s.cli(&[
        "dataset",
        "show",
        "data-of-a",
        "--workspace",
        A,
        "-o",
        "json",
    ])))
    .unwrap();
    let sha = shown["manifest"]["shards"][0]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let job = owner_call(s, A, Method::POST, "/api/v1/jobs", json!({"command": ["sh", "-c", "echo \"token $MLFLOW_TRACKING_TOKEN\"; echo jobmarker-of-a; sleep 600"]})).await;
    let job = job["id"].as_str().unwrap().to_string();
    let job_token = loop {
        let (_, log) = send(
            s,
            Some(&s.token),
            Some(A),
            &Method::GET,
            &format!("/api/v1/jobs/{job}/logs"),
            None,
        )
        .await;
        if let Some(t) = log.split_whitespace().skip_while(|w| *w != "token").nth(1) {
            if t.starts_with("ty_") {
                break t.to_string();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokens.insert("job", job_token);
    // A study of A's, with one trial asked for and running.
    owner_call(s, A, Method::POST, "/api/v1/studies", json!({"name": "study-of-a", "space": {"studyparamofa": {"type": "float", "low": 0, "high": 1}}})).await;
    owner_call(
        s,
        A,
        Method::POST,
        "/api/v1/studies/study-of-a/trials",
        json!({}),
    )
    .await;
    let (status, text) = send(
        s,
        Some(&s.token),
        Some(A),
        &Method::PUT,
        "/api/v1/secrets/hf",
        Some(&json!({"value": SECRET})),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    let (_, page) = send(s, None, None, &Method::GET, "/", None).await;
    let asset = page
        .split("/assets/")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("missing.js")
        .to_string();
    World {
        asset,
        tokens,
        experiment,
        run,
        logged_model,
        job,
        sha,
        viewer_token_id,
    }
}

/// Whether `who`, acting in A, is let through to a route needing `need` (`None`: open).
fn allowed(who: Who, need: Option<Need>, method: &Method, path: &str, inference: bool) -> bool {
    // A model's readiness answers without a token; a token sent is checked as a read.
    let readiness = path.starts_with("/v2/models/") && path.ends_with("/ready");
    // Another user's password is an owner's to set (the handler's rule; `nobody` is no
    // caller's own name).
    if path.ends_with("/password") {
        return who == Who::Owner;
    }
    let need = match (need, readiness, who) {
        (None, true, Who::Nobody) | (None, false, _) => return true,
        (None, true, _) => Need::Read,
        (Some(need), _, _) => need,
    };
    match who {
        Who::Nobody => false,
        Who::Owner => true,
        // B's admin has no role in A: only the calls about itself.
        Who::AdminB => need == Need::User && !inference,
        Who::JobA => {
            !inference
                && matches!(need, Need::Read | Need::Write)
                && trainyard_api::job_may_call(method, path.split('?').next().unwrap())
        }
        Who::Viewer => matches!(need, Need::User | Need::Read),
        Who::Editor => matches!(need, Need::User | Need::Read | Need::Write),
        Who::AdminA => need != Need::Owner,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_for_every_caller_and_nothing_across_workspaces() {
    let server = Server::start().await;
    let s = &server;
    let w = world(s).await;
    let table = trainyard_api::route_table();
    // Audit entries are written after the answer: the world's own may still be landing, and
    // one that lands during the matrix would be counted as the matrix's. Wait until the
    // count holds still.
    let mut audit_before = audit_count(s).await;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = audit_count(s).await;
        if now == audit_before {
            break;
        }
        audit_before = now;
    }

    // Pass 1: the matrix, every call acting in A.
    let mut cases = 0;
    let mut audited = 0;
    let mut failures = Vec::new();
    for route in &table {
        let inference = route.template.starts_with("/v2");
        // Reads name A's real objects; writes name nothing, so what gets through changes
        // nothing and the next case sees the same world.
        let writes = trainyard_api::changes_something(&route.method, &route.template);
        let path = w.path(&route.template, !writes);
        let body = if writes { json!({}) } else { w.real_body() };
        for who in EVERYONE {
            let workspace = if who == Who::JobA { None } else { Some(A) };
            let (status, text) = send(
                s,
                w.token(who),
                workspace,
                &route.method,
                &path,
                Some(&body),
            )
            .await;
            cases += 1;
            let expect = allowed(who, route.need, &route.method, &path, inference);
            let denied = status == 401 || status == 403;
            if writes || denied {
                audited += 1;
            }
            if text.contains(SECRET) {
                failures.push(format!(
                    "{who:?} {} {path} returned a secret's value",
                    route.method
                ));
            }
            let wrong = if expect {
                // Let through: a job's writes may still be refused by ownership rules
                // inside (403), never by a missing token.
                status == 401
                    || (status == 403 && who != Who::JobA)
                    || (status == 404
                        && (text.contains("route_not_found")
                            || text.contains("ENDPOINT_NOT_FOUND")))
                    || status == 405
                    || status == 500
            } else {
                !denied || MARKERS.iter().any(|m| text.contains(m))
            };
            if wrong {
                failures.push(format!(
                    "{who:?} {} {path} -> {status} (expected {}): {}",
                    route.method,
                    if expect { "through" } else { "denied" },
                    &text[..text.len().min(200)]
                ));
            }
        }
    }

    // The trail: one entry per changing or denied call of the matrix.
    let expected = audit_before + audited;
    let mut got = audit_count(s).await;
    for _ in 0..100 {
        if got >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        got = audit_count(s).await;
    }
    assert_eq!(got - audit_before, audited, "audit events of the matrix");

    // Pass 2: B's admin, acting in B, calls every route with A's real ids and bodies.
    let mut crossings = Vec::new();
    for route in &table {
        let path = w.path(&route.template, true);
        let (status, text) = send(
            s,
            w.token(Who::AdminB),
            None,
            &route.method,
            &path,
            Some(&w.real_body()),
        )
        .await;
        cases += 1;
        if MARKERS.iter().chain([&SECRET]).any(|m| text.contains(m)) {
            crossings.push(format!(
                "read: {} {path} -> {status}: {}",
                route.method,
                &text[..text.len().min(300)]
            ));
        }
    }
    // A is as the owner left it.
    let m = |p: &str| format!("/api/2.0/mlflow/{p}");
    let run = owner_call(
        s,
        A,
        Method::GET,
        &m(&format!("runs/get?run_id={}", w.run)),
        json!({}),
    )
    .await;
    let run_text = run.to_string();
    for (what, fine) in [
        (
            "run tag",
            run_text.contains("tag-value-of-a") && !run_text.contains("overwritten-by-b"),
        ),
        ("run param", run_text.contains("param-value-of-a")),
        (
            "run alive",
            run["run"]["info"]["lifecycle_stage"] == "active",
        ),
    ] {
        if !fine {
            crossings.push(format!("write: {what}: {run}"));
        }
    }
    let exp = owner_call(
        s,
        A,
        Method::GET,
        &m(&format!("experiments/get?experiment_id={}", w.experiment)),
        json!({}),
    )
    .await;
    if exp["experiment"]["name"] != "exp-of-a" || exp["experiment"]["lifecycle_stage"] != "active" {
        crossings.push(format!("write: experiment {exp}"));
    }
    let model = owner_call(
        s,
        A,
        Method::GET,
        &m("registered-models/get?name=model-of-a"),
        json!({}),
    )
    .await;
    let model_text = model.to_string();
    if !model_text.contains("description-of-a")
        || model["registered_model"]["aliases"][0]["alias"] != "prod"
        || model_text.contains("overwritten-by-b")
    {
        crossings.push(format!("write: registered model {model}"));
    }
    let version = owner_call(
        s,
        A,
        Method::GET,
        &m("model-versions/get?name=model-of-a&version=1"),
        json!({}),
    )
    .await;
    if version["model_version"]["current_stage"] != "None" {
        crossings.push(format!("write: model version {version}"));
    }
    let lm = owner_call(
        s,
        A,
        Method::GET,
        &m(&format!("logged-models/{}", w.logged_model)),
        json!({}),
    )
    .await;
    if lm.to_string().contains("overwritten-by-b") {
        crossings.push(format!("write: logged model {lm}"));
    }
    let (_, artifact) = send(
        s,
        Some(&s.token),
        Some(A),
        &Method::GET,
        &format!(
            "/api/2.0/mlflow-artifacts/artifacts/{}/{}/artifacts/secret.txt",
            w.experiment, w.run
        ),
        None,
    )
    .await;
    if artifact != "artifact-content-of-a" {
        crossings.push(format!("write: artifact {artifact}"));
    }
    let job = owner_call(
        s,
        A,
        Method::GET,
        &format!("/api/v1/jobs/{}", w.job),
        json!({}),
    )
    .await;
    if job["state"] != "running" {
        crossings.push(format!("write: job {job}"));
    }
    let (status, _) = send(
        s,
        w.token(Who::Viewer),
        Some(A),
        &Method::GET,
        "/api/v1/jobs",
        None,
    )
    .await;
    if status != 200 {
        crossings.push("write: the viewer's token was revoked".into());
    }
    let members = owner_call(s, A, Method::GET, "/api/v1/members", json!({})).await;
    if members["members"].as_array().unwrap().len() != 3 {
        crossings.push(format!("write: members {members}"));
    }
    let study = owner_call(s, A, Method::GET, "/api/v1/studies/study-of-a", json!({})).await;
    if study["state"] != "running" || study["counts"]["running"] != 1 {
        crossings.push(format!("write: study {study}"));
    }
    let data = owner_call(s, A, Method::GET, "/api/v1/datasets/data-of-a", json!({})).await;
    if data["versions"].as_array().map(Vec::len) != Some(1) {
        crossings.push(format!("write: dataset {data}"));
    }

    println!(
        "authorization matrix: {} routes x {} callers + {} cross-workspace calls = {cases} cases; \
         {} wrong answers, {} cross-workspace reads or writes; {audited} audit events",
        table.len(),
        EVERYONE.len(),
        table.len(),
        failures.len(),
        crossings.len()
    );
    assert!(
        failures.is_empty(),
        "{} wrong answers:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        crossings.is_empty(),
        "{} crossings:\n{}",
        crossings.len(),
        crossings.join("\n")
    );

    // No token value anywhere in the trail.
    let trail = all_audit(s).await;
    for t in w.tokens.values() {
        assert!(
            !trail.contains(t.as_str()),
            "a token value in the audit trail"
        );
    }
}

/// How many audit events there are (owner, every workspace).
async fn audit_count(s: &Server) -> usize {
    all_audit_events(s).await.len()
}

async fn all_audit_events(s: &Server) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/api/v1/audit?limit=1000".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = s.get_json(&path).await;
        out.extend(page["events"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return out,
        }
    }
}

async fn all_audit(s: &Server) -> String {
    serde_json::to_string(&all_audit_events(s).await).unwrap()
}
