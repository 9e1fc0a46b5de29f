//! Hyper-parameter studies against a real server: bad specifications refused naming the
//! field, ask/tell through the API, trials run as real jobs (Python processes) by the
//! controller, a study that resumes after `kill -9` with exactly the trials of an
//! uninterrupted one, parallel TPE without duplicates, failing trials, median stopping,
//! ASHA promotions that resume, the CLI, and what an adversarial probe tried.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{Server, ServerOptions};
use serde_json::{json, Value};

const PYTHON: &str = "/usr/bin/python3";

/// A trial program: reads its parameters from the environment, prints `value=…` per step
/// (sleeping between), exits 3 when told to fail. With `TRAINYARD_RESUME_FROM` it says
/// which run it continues, and starts from the step that run reached.
const OBJECTIVE: &str = r#"
import os, sys, time
p = {k[len("TRAINYARD_PARAM_"):].lower(): v for k, v in os.environ.items() if k.startswith("TRAINYARD_PARAM_")}
x = float(p.get("x", 0)); y = float(p.get("y", 0))
steps = int(os.environ.get("TRAINYARD_RESOURCE") or os.environ.get("STEPS", "1"))
delay = float(os.environ.get("DELAY", "0"))
fail_above = os.environ.get("FAIL_ABOVE")
if fail_above and x > float(fail_above):
    print("x too large", file=sys.stderr); sys.exit(3)
start = 1
if os.environ.get("TRAINYARD_RESUME_FROM"):
    print("resuming from", os.environ["TRAINYARD_RESUME_FROM"])
loss = (x - 1.0) ** 2 + (y + 2.0) ** 2
for step in range(start, steps + 1):
    time.sleep(delay)
    print(f"value={loss + 10.0 / step} step={step}", flush=True)
"#;

fn script(dir: &std::path::Path) -> String {
    let path = dir.join("objective.py");
    std::fs::write(&path, OBJECTIVE).unwrap();
    path.display().to_string()
}

fn command_study(name: &str, dir: &std::path::Path, extra: Value) -> Value {
    let mut spec = json!({
        "name": name,
        "space": {
            "x": {"type": "float", "low": -4, "high": 4},
            "y": {"type": "float", "low": -4, "high": 4},
        },
        "trial": {
            "command": [PYTHON, script(dir)],
            "working_dir": dir.display().to_string(),
            "resources": {"cpus": 0.1},
        },
    });
    merge(&mut spec, extra);
    spec
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

async fn create(server: &Server, spec: &Value) -> (u16, Value) {
    let r = server
        .post("/api/v1/studies")
        .json(spec)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn wait_study(server: &Server, name: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let s = server.get_json(&format!("/api/v1/studies/{name}")).await;
        if matches!(s["state"].as_str(), Some("done" | "stopped" | "failed")) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "study {name} stuck: {s}\n{}",
            server.server_log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn trials(server: &Server, name: &str) -> Vec<Value> {
    let page = server
        .get_json(&format!("/api/v1/studies/{name}/trials?max_results=1000"))
        .await;
    page["trials"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn bad_studies_are_refused_naming_the_field_and_clients_ask_and_tell() {
    let server = Server::start().await;
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            json!({"space": {"x": {"type": "float", "low": 2, "high": 1}}}),
            "space.x.low",
        ),
        (
            json!({"space": {"x": {"type": "float", "low": 0, "high": 1, "log": true}}}),
            "space.x.low",
        ),
        (
            json!({"space": {"c": {"type": "categorical", "choices": []}}}),
            "space.c.choices",
        ),
        (
            json!({"space": {"x": {"type": "float", "low": 0, "high": 1, "step": 0.3}}}),
            "space.x.step",
        ),
        (
            json!({"space": {"n": {"type": "int", "low": 0, "high": 9, "step": 2}}}),
            "space.n.step",
        ),
        (
            json!({"space": {"x": {"type": "float", "low": 0, "high": 1}},
                "trial": {"command": [PYTHON, "-c", "print(${lr})"]}}),
            "trial.command[2]",
        ),
        (
            json!({"space": {"x": {"type": "float", "low": 0, "high": 1}}, "parallelism": 0}),
            "parallelism",
        ),
        (
            json!({"space": {"x": {"type": "float", "low": 0, "high": 1}}, "sampler": {"kind": "grid"}}),
            "space.x.step",
        ),
        (
            json!({"space": {"x": {"type": "float", "low": 0, "high": 1}},
                "pruner": {"kind": "asha", "min_resource": 9, "max_resource": 3},
                "trial": {"command": ["true"]}}),
            "pruner.max_resource",
        ),
    ];
    for (body, field) in cases {
        let mut spec = json!({"name": "bad"});
        merge(&mut spec, body.clone());
        let (status, answer) = create(&server, &spec).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_field", "{answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    // A template no trial's job could run is refused now, not trial after trial.
    for (trial, status, field) in [
        (
            json!({"command": ["true"], "resources": {"gpus": 64}}),
            422,
            "trial.resources.gpus",
        ),
        (
            json!({"command": ["true"], "secrets": {"TOKEN": "nope"}}),
            400,
            "trial.secrets.TOKEN",
        ),
        (
            json!({"command": ["true"], "pool": "nowhere"}),
            400,
            "trial.pool",
        ),
        (
            json!({"train": "name = \"x\"\n[data]\ndataset = \"nothing-here\"\n"}),
            400,
            "trial.train",
        ),
        (json!({"train": "lr = ${x} ["}), 400, "trial.train"),
    ] {
        let spec = json!({"name": "bad", "space": {"x": {"type": "float", "low": 0, "high": 1}}, "trial": trial});
        let (s, answer) = create(&server, &spec).await;
        assert_eq!(s, status, "{spec}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{spec}: {answer}");
    }
    // Unknown fields and a wrong type are refused too, never a 500.
    for body in [
        json!({"name": "bad", "space": {}, "surprise": 1}),
        json!({"name": "bad", "space": {"x": {"type": "float", "low": "a", "high": 1}}}),
        json!({"name": "bad", "space": {"x": {"type": "complex"}}}),
    ] {
        let (status, answer) = create(&server, &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
    }

    // Ask and tell: 12 trials of a quadratic, TPE.
    let spec = json!({
        "name": "quad",
        "space": {"x": {"type": "float", "low": -5, "high": 5},
                  "opt": {"type": "categorical", "choices": ["a", "b"]},
                  "m": {"type": "float", "low": 0, "high": 1, "when": {"opt": "b"}}},
        "sampler": {"kind": "tpe", "seed": 5, "startup_trials": 4},
        "pruner": {"kind": "median", "startup_trials": 1},
        "budget": {"trials": 12},
    });
    let (status, study) = create(&server, &spec).await;
    assert_eq!(status, 201, "{study}");
    assert_eq!(study["spec"]["sampler"]["seed"], 5);
    let (status, again) = create(&server, &spec).await;
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (409, Some("already_exists"))
    );
    let r = server
        .get("/api/v1/studies/quad/best")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    for n in 0..12u64 {
        let r = server
            .post("/api/v1/studies/quad/trials")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let t: Value = r.json().await.unwrap();
        assert_eq!(t["number"], n);
        let x = t["params"]["x"].as_f64().unwrap();
        assert_eq!(
            t["params"].get("m").is_some(),
            t["params"]["opt"] == "b",
            "{t}"
        );
        // Intermediate values, and the median rule's answer once a trial has finished.
        let report = server
            .post(&format!("/api/v1/studies/quad/trials/{n}/report"))
            .json(&json!({"step": 1, "value": x * x + 1.0}))
            .send()
            .await
            .unwrap();
        assert_eq!(report.status(), 200);
        let report: Value = report.json().await.unwrap();
        assert!(report["prune"].is_boolean());
        let told = server
            .http_put(&format!("/api/v1/studies/quad/trials/{n}"))
            .json(&json!({"state": "complete", "value": x * x}))
            .send()
            .await
            .unwrap();
        assert_eq!(told.status(), 200);
    }
    // The budget is spent: the study is done and asks no more.
    let study = server.get_json("/api/v1/studies/quad").await;
    assert_eq!(study["state"], "done", "{study}");
    assert_eq!(study["counts"]["complete"], 12);
    let r = server
        .post("/api/v1/studies/quad/trials")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let best = server.get_json("/api/v1/studies/quad/best").await;
    let all = trials(&server, "quad").await;
    let min = all
        .iter()
        .map(|t| t["value"].as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    assert_eq!(best["value"].as_f64().unwrap(), min);
    // Pages.
    let page = server
        .get_json("/api/v1/studies/quad/trials?max_results=5")
        .await;
    assert_eq!(page["trials"].as_array().unwrap().len(), 5);
    assert_eq!(page["next_page_token"], "4");
    let page = server
        .get_json("/api/v1/studies/quad/trials?max_results=5&page_token=9")
        .await;
    assert_eq!(page["trials"].as_array().unwrap().len(), 2);
    assert!(page["next_page_token"].is_null());

    // Bad tells and lookups.
    let spec = json!({"name": "open", "space": {"x": {"type": "float", "low": 0, "high": 1}}});
    assert_eq!(create(&server, &spec).await.0, 201);
    server
        .post("/api/v1/studies/open/trials")
        .send()
        .await
        .unwrap();
    let put = |path: &str, body: Value| {
        let r = server.http_put(path).json(&body);
        async move {
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let (s, e) = put(
        "/api/v1/studies/open/trials/0",
        json!({"state": "complete"}),
    )
    .await;
    assert_eq!((s, e["error"]["field"].as_str()), (400, Some("value")));
    let (s, e) = put("/api/v1/studies/open/trials/0", json!({"state": "running"})).await;
    assert_eq!((s, e["error"]["field"].as_str()), (400, Some("state")));
    let (s, e) = put(
        "/api/v1/studies/open/trials/0",
        json!({"state": "complete", "value": 1, "x": 1}),
    )
    .await;
    assert_eq!(s, 400, "{e}");
    let (s, e) = put("/api/v1/studies/open/trials/7", json!({"state": "failed"})).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (404, Some("trial_not_found"))
    );
    let (s, e) = put("/api/v1/studies/open/trials/x", json!({"state": "failed"})).await;
    assert_eq!((s, e["error"]["field"].as_str()), (400, Some("number")));
    let (s, e) = put("/api/v1/studies/nope/trials/0", json!({"state": "failed"})).await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (404, Some("study_not_found"))
    );
    let (s, _) = put(
        "/api/v1/studies/open/trials/0",
        json!({"state": "failed", "message": "oom"}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, e) = put(
        "/api/v1/studies/open/trials/0",
        json!({"state": "complete", "value": 1}),
    )
    .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (409, Some("trial_finished"))
    );
    let r = server
        .get("/api/v1/studies/open/trials?max_results=0")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = server
        .get("/api/v1/studies/open/trials?page_token=zz")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Stopped: no more trials.
    let stopped: Value = server
        .post("/api/v1/studies/open/stop")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stopped["state"], "stopped");
    let r = server
        .post("/api/v1/studies/open/trials")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    // A template study takes no trials through the API.
    let (status, _) = create(
        &server,
        &command_study("tmpl", dir.path(), json!({"budget": {"trials": 1}})),
    )
    .await;
    assert_eq!(status, 201);
    let r = server
        .post("/api/v1/studies/tmpl/trials")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let list = server.get_json("/api/v1/studies").await;
    assert_eq!(list["studies"].as_array().unwrap().len(), 3);
}

/// What a probe of the API found: tiny steps (a panic on ask), a deep conditional space
/// reported exhausted with most of it untried, conditions no numeric parent can meet,
/// a parameter given twice, names a URL cannot address, report steps past int64.
#[tokio::test]
async fn adversarial_studies_are_refused_and_deep_spaces_are_searched_to_the_end() {
    let server = Server::start().await;
    let refused = |body: String| {
        let r = server
            .post("/api/v1/studies")
            .header("content-type", "application/json")
            .body(body);
        async move {
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let tiny = json!({"x": {"type": "float", "low": 0, "high": 1, "step": 1e-300}});
    let wide_int = json!({"x": {"type": "int", "low": 0, "high": 10, "step": 1e300}});
    let cases = [
        (
            json!({"space": tiny, "sampler": {"kind": "grid"}}),
            "space.x.step",
        ),
        (
            json!({"space": tiny, "sampler": {"kind": "random"}}),
            "space.x.step",
        ),
        (
            json!({"space": tiny, "sampler": {"kind": "tpe"}}),
            "space.x.step",
        ),
        (
            json!({"space": wide_int, "sampler": {"kind": "random"}}),
            "space.x.step",
        ),
        (
            json!({"space": {"a": {"type": "float", "low": 0, "high": 1},
                             "b": {"type": "float", "low": 0, "high": 1, "when": {"a": 5}}}}),
            "space.b.when.a",
        ),
        (
            json!({"space": {"a": {"type": "int", "low": 0, "high": 10, "step": 2},
                             "b": {"type": "float", "low": 0, "high": 1, "when": {"a": 3}}}}),
            "space.b.when.a",
        ),
        (
            json!({"name": ".", "space": {"x": {"type": "float", "low": 0, "high": 1}}}),
            "name",
        ),
        (
            json!({"name": "..", "space": {"x": {"type": "float", "low": 0, "high": 1}}}),
            "name",
        ),
    ];
    for (body, field) in cases {
        let mut spec = json!({"name": "bad"});
        merge(&mut spec, body.clone());
        let (status, answer) = refused(spec.to_string()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_field", "{answer}");
        assert_eq!(answer["error"]["field"], field, "{body}: {answer}");
    }
    // A parameter given twice (serde would keep the last), and a condition given twice.
    for (text, field) in [
        (
            r#"{"name": "dup", "space": {"x": {"type": "float", "low": 0, "high": 1},
                                          "x": {"type": "int", "low": 0, "high": 3}}}"#,
            "space.x",
        ),
        (
            r#"{"name": "dup", "space": {"a": {"type": "int", "low": 0, "high": 3},
                "x": {"type": "float", "low": 0, "high": 1, "when": {"a": 1, "a": 2}}}}"#,
            "space.x.when.a",
        ),
    ] {
        let (status, answer) = refused(text.to_string()).await;
        assert_eq!(status, 400, "{text}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_field", "{answer}");
        assert_eq!(answer["error"]["field"], field, "{text}: {answer}");
    }
    let list = server.get_json("/api/v1/studies").await;
    assert_eq!(list["studies"].as_array().unwrap().len(), 0, "{list}");

    // A chain of 20 two-way choices, each under the previous one's "a": 21 configurations,
    // the deepest drawn once in 2^19. Random and TPE each give every one once, then the
    // space is exhausted.
    let mut chain = serde_json::Map::new();
    chain.insert(
        "p0".into(),
        json!({"type": "categorical", "choices": ["a", "b"]}),
    );
    for i in 1..20 {
        chain.insert(
            format!("p{i}"),
            json!({"type": "categorical", "choices": ["a", "b"], "when": {format!("p{}", i - 1): "a"}}),
        );
    }
    for sampler in [
        json!({"kind": "random", "seed": 1}),
        json!({"kind": "tpe", "seed": 1}),
    ] {
        let name = format!("chain-{}", sampler["kind"].as_str().unwrap());
        let spec = json!({"name": name, "space": chain, "sampler": sampler});
        let (status, study) = create(&server, &spec).await;
        assert_eq!(status, 201, "{study}");
        let mut seen = HashSet::new();
        for n in 0..21u64 {
            let r = server
                .post(&format!("/api/v1/studies/{name}/trials"))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let t: Value = r.json().await.unwrap();
            assert_eq!(status, 201, "{name}, ask {n}: {t}");
            assert!(seen.insert(t["params"].to_string()), "{name}: {t} again");
            let told = server
                .http_put(&format!("/api/v1/studies/{name}/trials/{n}"))
                .json(&json!({"state": "complete", "value": n}))
                .send()
                .await
                .unwrap();
            assert_eq!(told.status(), 200);
        }
        let r = server
            .post(&format!("/api/v1/studies/{name}/trials"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 409);
        let e: Value = r.json().await.unwrap();
        assert_eq!(e["error"]["code"], "study_closed", "{e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("every configuration"),
            "{e}"
        );
        // Nothing left to ask and nothing running: the study is done, saying why.
        let study = server.get_json(&format!("/api/v1/studies/{name}")).await;
        assert_eq!(study["state"], "done", "{study}");
        assert!(study["finished_at_ms"].is_i64(), "{study}");
    }

    // Report steps: int64 as the API describes them.
    let spec = json!({"name": "steps", "space": {"x": {"type": "float", "low": 0, "high": 1}}});
    assert_eq!(create(&server, &spec).await.0, 201);
    let ask = server
        .post("/api/v1/studies/steps/trials")
        .send()
        .await
        .unwrap();
    assert_eq!(ask.status(), 201);
    for (step, status) in [
        ("9223372036854775808", 400),
        ("18446744073709551615", 400),
        ("18446744073709551616", 400),
        ("-1", 400),
        ("9223372036854775807", 200),
    ] {
        let r = server
            .post("/api/v1/studies/steps/trials/0/report")
            .header("content-type", "application/json")
            .body(format!(r#"{{"step": {step}, "value": 1.5}}"#))
            .send()
            .await
            .unwrap();
        let got = r.status().as_u16();
        let answer: Value = r.json().await.unwrap();
        assert_eq!(got, status, "step {step}: {answer}");
        if status == 400 {
            assert_eq!(answer["error"]["field"], "step", "step {step}: {answer}");
        }
    }
}

/// The trials of a study: (number, params, state, value).
fn sequence(trials: &[Value]) -> Vec<(u64, Value, String, Option<f64>)> {
    trials
        .iter()
        .map(|t| {
            (
                t["number"].as_u64().unwrap(),
                t["params"].clone(),
                t["state"].as_str().unwrap().to_string(),
                t["value"].as_f64(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_study_killed_mid_way_finishes_with_the_trials_of_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let spec = command_study(
        "resume",
        dir.path(),
        json!({
            "sampler": {"kind": "tpe", "seed": 7, "startup_trials": 4},
            "parallelism": 2,
            "budget": {"trials": 14},
            "trial": {"env": {"DELAY": "0.4", "STEPS": "2"}},
        }),
    );
    // Uninterrupted.
    let calm = Server::start().await;
    assert_eq!(create(&calm, &spec).await.0, 201);
    let done = wait_study(&calm, "resume", Duration::from_secs(180)).await;
    assert_eq!(done["state"], "done", "{done}");
    let expected = sequence(&trials(&calm, "resume").await);
    assert_eq!(expected.len(), 14);
    assert!(expected.iter().all(|t| t.2 == "complete"), "{expected:?}");

    // Killed with trials running, then restarted.
    let mut server = Server::start().await;
    assert_eq!(create(&server, &spec).await.0, 201);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let t = trials(&server, "resume").await;
        let finished = t.iter().filter(|t| t["state"] == "complete").count();
        let running = t.iter().filter(|t| t["state"] == "running").count();
        if finished >= 5 && running > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{t:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.kill9();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.restart().await;
    let done = wait_study(&server, "resume", Duration::from_secs(180)).await;
    assert_eq!(done["state"], "done", "{done}");
    let resumed = sequence(&trials(&server, "resume").await);
    assert_eq!(resumed, expected, "the resumed study's trials differ");
    assert_eq!(
        done["best"]["params"],
        calm.get_json("/api/v1/studies/resume").await["best"]["params"]
    );
}

#[tokio::test]
async fn four_parallel_tpe_trials_never_repeat_a_configuration() {
    let server = Server::start_with(ServerOptions {
        cpus: 4.0,
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    // 36 configurations, 24 trials, 4 at a time: without the liar (and the duplicate check)
    // TPE keeps proposing the current best.
    let spec = command_study(
        "parallel",
        dir.path(),
        json!({
            "space": {
                "x": {"type": "int", "low": -2, "high": 3},
                "y": {"type": "int", "low": -4, "high": 1},
            },
            "sampler": {"kind": "tpe", "seed": 3, "startup_trials": 4},
            "parallelism": 4,
            "budget": {"trials": 24},
            "trial": {"env": {"DELAY": "0.2"}},
        }),
    );
    assert_eq!(create(&server, &spec).await.0, 201);
    // Four run at once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut most = 0;
    loop {
        let s = server.get_json("/api/v1/studies/parallel").await;
        most = most.max(s["counts"]["running"].as_i64().unwrap_or(0));
        if most == 4 || s["state"] != "running" {
            break;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(most, 4);
    let done = wait_study(&server, "parallel", Duration::from_secs(180)).await;
    assert_eq!(done["counts"]["complete"], 24, "{done}");
    let all = trials(&server, "parallel").await;
    let configs: HashSet<String> = all.iter().map(|t| t["params"].to_string()).collect();
    assert_eq!(configs.len(), 24, "duplicates among {all:?}");
    // Each trial is a run in the study's experiment, with its parameters.
    let job = all[0]["job_id"].as_str().unwrap();
    let run = server
        .get_json(&format!("/api/2.0/mlflow/runs/get?run_id={job}"))
        .await;
    let params = run["run"]["data"]["params"].to_string();
    assert!(params.contains("\"x\""), "{run}");
    let exp = server
        .get_json("/api/2.0/mlflow/experiments/get-by-name?experiment_name=parallel")
        .await;
    assert_eq!(
        exp["experiment"]["experiment_id"],
        run["run"]["info"]["experiment_id"]
    );
}

#[tokio::test]
async fn failures_pruning_promotions_and_the_cli() {
    let server = Server::start_with(ServerOptions {
        cpus: 4.0,
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();

    // Failing trials are recorded with their error and do not stop the study...
    let spec = command_study(
        "flaky",
        dir.path(),
        json!({"sampler": {"kind": "random", "seed": 1}, "budget": {"trials": 8},
               "parallelism": 2, "trial": {"env": {"FAIL_ABOVE": "1.5"}}}),
    );
    assert_eq!(create(&server, &spec).await.0, 201);
    let done = wait_study(&server, "flaky", Duration::from_secs(120)).await;
    assert_eq!(done["state"], "done", "{done}");
    let all = trials(&server, "flaky").await;
    let failed: Vec<&Value> = all.iter().filter(|t| t["state"] == "failed").collect();
    assert!(!failed.is_empty() && failed.len() < 8, "{all:?}");
    for t in &failed {
        assert!(t["params"]["x"].as_f64().unwrap() > 1.5);
        assert!(t["message"].as_str().unwrap().contains("exit"), "{t}");
    }
    // ...unless asked.
    let spec = command_study(
        "fragile",
        dir.path(),
        json!({"sampler": {"kind": "random", "seed": 1}, "budget": {"trials": 30},
               "max_failed_trials": 2, "trial": {"env": {"FAIL_ABOVE": "-10"}}}),
    );
    assert_eq!(create(&server, &spec).await.0, 201);
    let done = wait_study(&server, "fragile", Duration::from_secs(120)).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert!(
        done["message"]
            .as_str()
            .unwrap()
            .contains("max_failed_trials"),
        "{done}"
    );
    assert!(done["counts"]["failed"].as_i64().unwrap() < 30);

    // A template that never works, no budget, no max_failed_trials: it stops by itself.
    let spec = command_study(
        "broken",
        dir.path(),
        json!({"sampler": {"kind": "random", "seed": 1}, "parallelism": 2,
               "trial": {"env": {"FAIL_ABOVE": "-10"}}}),
    );
    assert_eq!(create(&server, &spec).await.0, 201);
    let done = wait_study(&server, "broken", Duration::from_secs(120)).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert!(
        done["message"].as_str().unwrap().contains("cannot run"),
        "{done}"
    );
    let failed = done["counts"]["failed"].as_i64().unwrap();
    assert!((10..14).contains(&failed), "{done}");

    // Median stopping: trials worse than the median at a step are cancelled there.
    let spec = command_study(
        "median",
        dir.path(),
        json!({"sampler": {"kind": "random", "seed": 4}, "budget": {"trials": 10},
               "pruner": {"kind": "median", "startup_trials": 3, "warmup_steps": 1},
               "trial": {"env": {"STEPS": "6", "DELAY": "0.3"}}}),
    );
    assert_eq!(create(&server, &spec).await.0, 201);
    let done = wait_study(&server, "median", Duration::from_secs(180)).await;
    assert_eq!(done["state"], "done", "{done}");
    let all = trials(&server, "median").await;
    let pruned: Vec<&Value> = all.iter().filter(|t| t["state"] == "pruned").collect();
    assert!(!pruned.is_empty(), "nothing pruned: {all:?}");
    for t in &pruned {
        let job = server.job(t["job_id"].as_str().unwrap()).await;
        assert_eq!(job["state"], "cancelled", "{job}");
        assert!(t["intermediate"].as_array().unwrap().len() < 6);
    }

    // ASHA: rungs 1, 3, 9 steps; promotions continue the trial's run from where it was.
    let spec = command_study(
        "asha",
        dir.path(),
        json!({"sampler": {"kind": "random", "seed": 2}, "budget": {"trials": 9},
               "parallelism": 3,
               "pruner": {"kind": "asha", "min_resource": 1, "max_resource": 9, "reduction_factor": 3}}),
    );
    assert_eq!(create(&server, &spec).await.0, 201);
    let done = wait_study(&server, "asha", Duration::from_secs(180)).await;
    assert_eq!(done["state"], "done", "{done}");
    let all = trials(&server, "asha").await;
    let top: Vec<&Value> = all.iter().filter(|t| t["rung"] == 2).collect();
    assert!(!top.is_empty(), "nothing reached the top rung: {all:?}");
    for t in &top {
        assert_eq!(t["state"], "complete");
        assert_eq!(t["resource"], 9, "{t}");
        assert!(t["resume_from"].is_string(), "{t}");
        let log = server.logs(t["job_id"].as_str().unwrap(), "").await;
        assert!(
            log.contains(&format!(
                "resuming from {}",
                t["resume_from"].as_str().unwrap()
            )),
            "{log}"
        );
    }
    let used: u64 = all.iter().map(|t| t["resource"].as_u64().unwrap()).sum();
    assert!(
        used < 9 * 9,
        "ASHA used {used} steps, no less than running all 9 trials fully"
    );
    assert!(all.iter().any(|t| t["state"] == "pruned" && t["rung"] == 0));

    // The CLI: a study file with a training-file-free command template, followed to the end.
    let file = dir.path().join("study.toml");
    std::fs::write(
        &file,
        format!(
            r#"name = "from-cli"
[space.x]
type = "float"
low = -2
high = 2
[sampler]
kind = "sobol"
seed = 9
[budget]
trials = 4
[trial]
command = ["{PYTHON}", "{}"]
working_dir = "{}"
"#,
            script(dir.path()),
            dir.path().display()
        ),
    )
    .unwrap();
    let out = common::ok(server.cli(&["tune", file.to_str().unwrap()]));
    assert!(out.contains("study from-cli done"), "{out}");
    assert!(out.contains("best: trial"), "{out}");
    assert_eq!(out.matches("complete").count(), 5, "{out}");
    let out = common::ok(server.cli(&["studies", "ls"]));
    assert!(out.contains("from-cli") && out.contains("asha"), "{out}");
    let out = common::ok(server.cli(&["studies", "show", "from-cli"]));
    assert!(out.contains("trial    3"), "{out}");
    let out = common::ok(server.cli(&["studies", "best", "from-cli", "-o", "json"]));
    let best: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(best["state"], "complete");
    let out = server.cli(&["studies", "best", "nope"]);
    assert!(!out.status.success());
}

/// Runs one of `tests/optuna_client`'s scripts to success; the JSON of its last line.
fn run_client(python: &str, server: &Server, script: &str, args: &[&str]) -> Value {
    let out = std::process::Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{script}: {stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.server_log()
    );
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

#[tokio::test]
#[ignore = "needs TRAINYARD_TEST_OPTUNA_PYTHON, a python with optuna (scripts/test sets it)"]
async fn an_unmodified_optuna_client_keeps_its_study_here() {
    let python = std::env::var("TRAINYARD_TEST_OPTUNA_PYTHON")
        .expect("TRAINYARD_TEST_OPTUNA_PYTHON names a python that has optuna");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Server::start_with(ServerOptions {
        config_toml: Some(format!("optuna_listen = \"127.0.0.1:{port}\"\n")),
        ..Default::default()
    })
    .await;
    let script = format!(
        "{}/../../tests/optuna_client/study.py",
        std::env::var("CARGO_MANIFEST_DIR").unwrap()
    );
    let seen = run_client(
        &python,
        &server,
        &script,
        &["127.0.0.1", &port.to_string(), "tpe-study", "30"],
    );
    // 30 trials, the enqueued one first; the client reloaded all of them.
    assert_eq!(seen["trials"], 30, "{seen}");
    assert_eq!(
        seen["first_params"]["x"], 2.0,
        "the enqueued trial ran first: {seen}"
    );
    assert_eq!(seen["duplicate_refused"], true);
    assert_eq!(seen["names"], json!(["tpe-study"]));
    assert_eq!(seen["user_attrs"]["owner"], "optuna-client-test");

    // The same study through /api/v1/studies.
    let study = server.get_json("/api/v1/studies/tpe-study").await;
    assert_eq!(study["spec"]["sampler"]["kind"], "external", "{study}");
    let total: i64 = study["counts"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_i64().unwrap())
        .sum();
    assert_eq!(total, 30, "{study}");
    assert_eq!(
        study["counts"]["complete"], seen["states"]["COMPLETE"],
        "{study} vs {seen}"
    );
    assert_eq!(study["best"]["number"], seen["best_number"]);
    assert_eq!(study["best"]["value"], seen["best_value"]);
    assert_eq!(study["best"]["params"], seen["best_params"]);
    let listed = server.get_json("/api/v1/studies").await;
    assert!(listed["studies"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "tpe-study"));
    let page = server
        .get_json("/api/v1/studies/tpe-study/trials?max_results=10")
        .await;
    assert_eq!(page["trials"].as_array().unwrap().len(), 10);
    assert_eq!(page["next_page_token"], "9");
    let r = server
        .post("/api/v1/studies/tpe-study/trials")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        409,
        "its client samples; the API asks nothing for it"
    );

    // Each trial is a run of the experiment named after the study, with params and values.
    let exp = server
        .get_json("/api/2.0/mlflow/experiments/get-by-name?experiment_name=tpe-study")
        .await;
    let id = exp["experiment"]["experiment_id"]
        .as_str()
        .unwrap()
        .to_string();
    let runs: Value = server
        .post("/api/2.0/mlflow/runs/search")
        .json(&json!({"experiment_ids": [id], "max_results": 100}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let runs = runs["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 30);
    let best_run = study["best"]["run_id"].as_str().unwrap();
    let best = runs
        .iter()
        .find(|r| r["info"]["run_id"] == best_run)
        .unwrap();
    assert_eq!(best["info"]["status"], "FINISHED");
    let params = best["data"]["params"].as_array().unwrap();
    for name in ["x", "lr", "layers", "optimizer"] {
        assert!(params.iter().any(|p| p["key"] == name), "{best}");
    }
    let value = best["data"]["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["key"] == "value")
        .unwrap();
    assert_eq!(value["value"], seen["best_value"]);

    // Malformed and out-of-range calls get Optuna's status codes, never INTERNAL, and the
    // endpoint still serves.
    let attack = script.replace("study.py", "attack.py");
    let codes = run_client(&python, &server, &attack, &["127.0.0.1", &port.to_string()]);
    for (call, code) in [
        ("empty study name", "INVALID_ARGUMENT"),
        ("huge study name", "INVALID_ARGUMENT"),
        ("no directions", "INVALID_ARGUMENT"),
        ("unknown study", "NOT_FOUND"),
        ("unknown trial", "NOT_FOUND"),
        ("distribution not JSON", "INVALID_ARGUMENT"),
        ("unknown distribution", "INVALID_ARGUMENT"),
        ("choice index out of range", "INVALID_ARGUMENT"),
        ("negative choice index", "INVALID_ARGUMENT"),
        ("good parameter", "OK"),
        ("incompatible redeclaration", "INVALID_ARGUMENT"),
        ("unknown state", "INVALID_ARGUMENT"),
        ("template param without distribution", "INVALID_ARGUMENT"),
        ("template with bad distribution", "INVALID_ARGUMENT"),
        ("too many included ids", "INVALID_ARGUMENT"),
        ("finish", "OK"),
        ("write to a finished trial", "FAILED_PRECONDITION"),
        ("claim a finished trial", "FAILED_PRECONDITION"),
        ("still serving", "OK"),
    ] {
        assert_eq!(codes[call], code, "{call}: {codes}");
    }

    // Two objectives: the study shows both directions, each trial its values, and Optuna's
    // own Pareto front; a single best is refused, not answered with the first objective's.
    let pareto = script.replace("study.py", "pareto.py");
    let seen = run_client(
        &python,
        &server,
        &pareto,
        &["127.0.0.1", &port.to_string(), "two-goals", "14"],
    );
    let study = server.get_json("/api/v1/studies/two-goals").await;
    assert_eq!(
        study["directions"],
        json!(["minimize", "maximize"]),
        "{study}"
    );
    assert_eq!(study["pareto_front"], seen["front"], "{study} vs {seen}");
    assert!(study["best"].is_null(), "{study}");
    let page = server
        .get_json("/api/v1/studies/two-goals/trials?max_results=100")
        .await;
    for t in page["trials"].as_array().unwrap() {
        let number = t["number"].to_string();
        assert_eq!(t["values"], seen["values"][&number], "{t} vs {seen}");
    }
    let r = server
        .get("/api/v1/studies/two-goals/best")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "several_objectives", "{body}");
    // A one-objective study shows neither field.
    let one = server.get_json("/api/v1/studies/tpe-study").await;
    assert!(one.get("directions").is_none() && one.get("pareto_front").is_none());

    // Another workspace sees none of it.
    common::ok(server.cli(&["workspaces", "create", "elsewhere"]));
    let other: Value = server
        .get("/api/v1/studies")
        .header("X-Trainyard-Workspace", "elsewhere")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(other["studies"], json!([]), "{other}");
}

#[tokio::test]
async fn a_training_file_study_promotes_trials_by_resuming_their_checkpoints() {
    let cache = tempfile::tempdir().unwrap();
    let server = Server::start_with(ServerOptions {
        cpus: 4.0,
        env: vec![(
            "TRAINYARD_CACHE_DIR".into(),
            cache.path().display().to_string(),
        )],
        ..Default::default()
    })
    .await;
    common::prepare_digits(&server);
    // examples/digits/tune.toml, smaller: rungs of 1 and 3 epochs, 3 trials.
    let dir = tempfile::tempdir().unwrap();
    let study = std::fs::read_to_string(common::example("tune.toml"))
        .unwrap()
        .replace("max_resource = 9", "max_resource = 3")
        .replace("trials = 12", "trials = 3");
    std::fs::write(dir.path().join("tune.toml"), study).unwrap();
    std::fs::copy(
        common::example("tune-mlp.toml"),
        dir.path().join("tune-mlp.toml"),
    )
    .unwrap();
    let file = dir.path().join("tune.toml");
    let out = server.cli(&["tune", file.to_str().unwrap(), "--register", "digits-tuned"]);
    let text = common::text(&out);
    assert!(out.status.success(), "{text}\n{}", server.server_log());
    assert!(text.contains("study digits-mlp-asha done"), "{text}");
    assert!(text.contains("registered model digits-tuned:1"), "{text}");
    let all = trials(&server, "digits-mlp-asha").await;
    assert_eq!(all.len(), 3, "{all:?}");
    // The best of three after one epoch went on to three, from its checkpoint.
    let promoted: Vec<&Value> = all.iter().filter(|t| t["rung"] == 1).collect();
    assert_eq!(promoted.len(), 1, "{all:?}");
    let top = promoted[0];
    assert_eq!(top["state"], "complete");
    assert_eq!(top["resource"], 3);
    let log = server.logs(top["job_id"].as_str().unwrap(), "").await;
    assert!(
        log.contains(&format!(
            "resuming run {}",
            top["resume_from"].as_str().unwrap()
        )),
        "{log}"
    );
    let first_rung = all.iter().filter(|t| t["state"] == "pruned").count();
    assert_eq!(first_rung, 2, "{all:?}");
    let used: u64 = all.iter().map(|t| t["resource"].as_u64().unwrap()).sum();
    assert_eq!(used, 5, "1 + 1 + 3 epochs instead of 3 × 3");
    // The trial's run holds the configuration; the best is the registered version.
    let best = server.get_json("/api/v1/studies/digits-mlp-asha").await["best"].clone();
    assert_eq!(best["number"], top["number"]);
    let version = server
        .get_json("/api/2.0/mlflow/model-versions/get?name=digits-tuned&version=1")
        .await;
    assert_eq!(
        version["model_version"]["run_id"], top["job_id"],
        "{version}"
    );
    let run = server
        .get_json(&format!(
            "/api/2.0/mlflow/runs/get?run_id={}",
            top["job_id"].as_str().unwrap()
        ))
        .await;
    assert!(run.to_string().contains("val_accuracy"), "{run}");
    let acc = best["value"].as_f64().unwrap();
    assert!(acc > 0.8, "3 epochs of the MLP reach {acc}");
}
