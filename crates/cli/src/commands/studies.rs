//! `trainyard tune STUDY.toml` (create a study and follow it) and
//! `trainyard studies ls | show | stop | best`.
//!
//! A study file is the study's specification in TOML. One addition, read here: `[trial]
//! train_file = "cnn.toml"` names a training file (beside the study file) whose text becomes
//! the template, so the server never sees a path of this machine.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context};
use clap::{Args, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};
use trainyard_client::Client;

use crate::output::{print_json, print_table, Format};
use crate::ClientArgs;

#[derive(Args)]
pub struct TuneArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The study file (TOML).
    pub file: PathBuf,
    /// The study's name, instead of the file's `name`.
    #[arg(long)]
    pub name: Option<String>,
    /// Return once the study exists instead of following it to its end.
    #[arg(long)]
    pub detach: bool,
    /// When the study is done, register its best trial's model (`runs:/<trial's job>/model`)
    /// as a version of this registered model.
    #[arg(long)]
    pub register: Option<String>,
}

#[derive(Subcommand)]
pub enum StudiesCommand {
    /// The workspace's studies.
    Ls {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A study and its trials.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
    },
    /// Stop a study: no new trials, running ones cancelled.
    Stop {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
    },
    /// The best trial so far; `--register MODEL` makes its model a registered version.
    Best {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
        #[arg(long)]
        register: Option<String>,
    },
}

/// The study file as the API's JSON: `trial.train_file` read into `trial.train`.
pub fn read_study(file: &Path) -> anyhow::Result<Value> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut spec: toml::Value =
        toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    if let Some(trial) = spec.get_mut("trial").and_then(|t| t.as_table_mut()) {
        if let Some(path) = trial.remove("train_file") {
            let path = path
                .as_str()
                .ok_or_else(|| anyhow!("{}: trial.train_file is a path", file.display()))?;
            let path = file.parent().unwrap_or(Path::new(".")).join(path);
            let train = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            trial.insert("train".into(), toml::Value::String(train));
        }
    }
    Ok(serde_json::to_value(spec)?)
}

pub async fn tune(args: TuneArgs) -> anyhow::Result<i32> {
    let mut spec = read_study(&args.file)?;
    if let Some(name) = &args.name {
        spec["name"] = json!(name);
    }
    let client = crate::client::connect(&args.client)?;
    let study: Value = client
        .json(client.request(Method::POST, "/api/v1/studies").json(&spec))
        .await?;
    let name = study["name"].as_str().unwrap_or_default().to_string();
    if args.detach {
        match args.client.output {
            Format::Json => print_json(&study),
            Format::Table => println!(
                "study {name} created (seed {})",
                study["spec"]["sampler"]["seed"]
            ),
        }
        return Ok(0);
    }
    if args.client.output == Format::Table {
        println!(
            "study {name}: {} sampler (seed {}), {} pruner, {} in parallel",
            study["spec"]["sampler"]["kind"].as_str().unwrap_or("?"),
            study["spec"]["sampler"]["seed"],
            study["spec"]["pruner"]["kind"].as_str().unwrap_or("?"),
            study["spec"]["parallelism"],
        );
    }
    let study = follow(&client, &name, args.client.output).await?;
    finish(
        &client,
        &study,
        args.register.as_deref(),
        args.client.output,
    )
    .await
}

/// Prints each trial as it finishes until the study ends; returns the study.
async fn follow(client: &Client, name: &str, output: Format) -> anyhow::Result<Value> {
    let mut printed: BTreeSet<u64> = BTreeSet::new();
    loop {
        let study: Value = client
            .json(client.request(Method::GET, &format!("/api/v1/studies/{name}")))
            .await?;
        for t in all_trials(client, name).await? {
            let number = t["number"].as_u64().unwrap_or(0);
            let state = t["state"].as_str().unwrap_or("");
            let finished = matches!(state, "complete" | "pruned" | "failed");
            if finished && printed.insert(number) && output == Format::Table {
                println!("{}", trial_line(&t));
            }
        }
        if matches!(study["state"].as_str(), Some("done" | "stopped" | "failed")) {
            return Ok(study);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn finish(
    client: &Client,
    study: &Value,
    register: Option<&str>,
    output: Format,
) -> anyhow::Result<i32> {
    let state = study["state"].as_str().unwrap_or("");
    match output {
        Format::Json => print_json(study),
        Format::Table => {
            println!(
                "study {} {state}{}",
                study["name"].as_str().unwrap_or(""),
                study["message"]
                    .as_str()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            );
            match study["best"].is_object() {
                true => println!("best: {}", trial_line(&study["best"])),
                false => println!("no trial finished with a value"),
            }
        }
    }
    if let Some(model) = register {
        register_best(client, study, model, output).await?;
    }
    Ok(if state == "done" { 0 } else { 1 })
}

/// Registers the best trial's model (the `model` folder of its run) as a version of `model`.
async fn register_best(
    client: &Client,
    study: &Value,
    model: &str,
    output: Format,
) -> anyhow::Result<()> {
    let best = &study["best"];
    let run = best["run_id"]
        .as_str()
        .or_else(|| best["job_id"].as_str())
        .ok_or_else(|| anyhow!("the study has no best trial with a run to register"))?;
    let study_name = study["name"].as_str().unwrap_or_default();
    let number = best["number"].to_string();
    let v = trainyard_client::runs::RunClient::for_run(client.clone(), run.to_string())
        .await?
        .register(
            model,
            &format!("runs:/{run}/model"),
            &format!("best trial ({number}) of study {study_name}"),
            &[
                ("trainyard.study".to_string(), study_name.to_string()),
                ("trainyard.trial".to_string(), number.clone()),
                ("trainyard.lineage".to_string(), "tuned".to_string()),
            ],
        )
        .await?;
    if output == Format::Table {
        println!("registered model {model}:{v} from trial {number} (run {run})");
    }
    Ok(())
}

async fn all_trials(client: &Client, name: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut path = format!("/api/v1/studies/{name}/trials?max_results=1000");
        if let Some(t) = &token {
            path.push_str(&format!("&page_token={t}"));
        }
        let page: Value = client.json(client.request(Method::GET, &path)).await?;
        out.extend(page["trials"].as_array().cloned().unwrap_or_default());
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => return Ok(out),
        }
    }
}

fn params_text(params: &Value) -> String {
    params
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| match v {
                    Value::Number(n) => match n.as_f64() {
                        Some(f) if n.is_f64() => format!("{k}={f:.4e}"),
                        _ => format!("{k}={n}"),
                    },
                    Value::String(s) => format!("{k}={s}"),
                    other => format!("{k}={other}"),
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn value_text(t: &Value) -> String {
    t["value"]
        .as_f64()
        .map(|v| format!("{v:.6}"))
        .unwrap_or_else(|| "-".into())
}

fn trial_line(t: &Value) -> String {
    let mut line = format!(
        "trial {:>4}  {:<8}  value {:>12}  {}",
        t["number"].as_u64().unwrap_or(0),
        t["state"].as_str().unwrap_or(""),
        value_text(t),
        params_text(&t["params"])
    );
    if t["state"] != "complete" {
        if let Some(m) = t["message"].as_str() {
            line.push_str(&format!("  ({m})"));
        }
    }
    line
}

pub async fn run(command: StudiesCommand) -> anyhow::Result<i32> {
    match command {
        StudiesCommand::Ls { client: args } => {
            let client = crate::client::connect(&args)?;
            let list: Value = client
                .json(client.request(Method::GET, "/api/v1/studies"))
                .await?;
            match args.output {
                Format::Json => print_json(&list),
                Format::Table => {
                    let rows: Vec<Vec<String>> = list["studies"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|s| {
                            let counts = &s["counts"];
                            let n = |k: &str| counts[k].as_i64().unwrap_or(0);
                            vec![
                                s["name"].as_str().unwrap_or("").to_string(),
                                s["state"].as_str().unwrap_or("").to_string(),
                                s["spec"]["sampler"]["kind"]
                                    .as_str()
                                    .unwrap_or("")
                                    .to_string(),
                                format!(
                                    "{}/{}/{}/{}",
                                    n("complete"),
                                    n("pruned"),
                                    n("failed"),
                                    n("running") + n("paused")
                                ),
                                value_text(&s["best"]),
                                crate::output::time(s["created_at_ms"].as_i64()),
                            ]
                        })
                        .collect();
                    print_table(
                        &[
                            "NAME",
                            "STATE",
                            "SAMPLER",
                            "DONE/PRUNED/FAILED/OPEN",
                            "BEST",
                            "CREATED",
                        ],
                        &rows,
                    );
                }
            }
        }
        StudiesCommand::Show { client: args, name } => {
            let client = crate::client::connect(&args)?;
            let study: Value = client
                .json(client.request(Method::GET, &format!("/api/v1/studies/{name}")))
                .await?;
            let trials = all_trials(&client, &name).await?;
            match args.output {
                Format::Json => print_json(&json!({ "study": study, "trials": trials })),
                Format::Table => {
                    println!(
                        "study {name} {}: objective {} ({}), seed {}",
                        study["state"].as_str().unwrap_or(""),
                        study["spec"]["objective"]["metric"].as_str().unwrap_or(""),
                        study["spec"]["objective"]["direction"]
                            .as_str()
                            .unwrap_or(""),
                        study["spec"]["sampler"]["seed"]
                    );
                    for t in &trials {
                        println!("{}", trial_line(t));
                    }
                    if study["best"].is_object() {
                        println!("best: {}", trial_line(&study["best"]));
                    }
                }
            }
        }
        StudiesCommand::Stop { client: args, name } => {
            let client = crate::client::connect(&args)?;
            let study: Value = client
                .json(client.request(Method::POST, &format!("/api/v1/studies/{name}/stop")))
                .await?;
            match args.output {
                Format::Json => print_json(&study),
                Format::Table => println!("study {name} {}", study["state"].as_str().unwrap_or("")),
            }
        }
        StudiesCommand::Best {
            client: args,
            name,
            register,
        } => {
            let client = crate::client::connect(&args)?;
            let study: Value = client
                .json(client.request(Method::GET, &format!("/api/v1/studies/{name}")))
                .await?;
            if !study["best"].is_object() {
                anyhow::bail!("study {name} has no finished trial yet");
            }
            match args.output {
                Format::Json => print_json(&study["best"]),
                Format::Table => println!("{}", trial_line(&study["best"])),
            }
            if let Some(model) = register {
                register_best(&client, &study, &model, args.output).await?;
            }
        }
    }
    Ok(0)
}
