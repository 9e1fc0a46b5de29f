//! `trainyard runs ls | show | metrics` and `trainyard models ls | show`: tracking from
//! the terminal, over the REST v1 views.

use anyhow::Context;
use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use crate::output::{print_json, print_table, time, Format};
use crate::ClientArgs;

#[derive(Subcommand)]
pub enum RunsCommand {
    /// List runs, newest first (every job is a run; its run id is the job id).
    Ls {
        #[command(flatten)]
        client: ClientArgs,
        /// Only runs of this experiment (name).
        #[arg(long)]
        experiment: Option<String>,
        /// MLflow search filter, e.g. "metrics.loss < 0.1".
        #[arg(long)]
        filter: Option<String>,
        /// e.g. "metrics.loss ASC".
        #[arg(long)]
        order_by: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Show a run: status, params, tags and latest metrics.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Print a metric's history (downsampled to about --max-points when longer).
    Metrics {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
        key: String,
        #[arg(long, default_value_t = 1000)]
        max_points: u32,
    },
}

#[derive(Subcommand)]
pub enum ModelsCommand {
    /// List registered models with their newest version.
    Ls {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a registered model and all its versions.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
    },
    /// Load a model for serving now (its default version: alias `production`, else the latest).
    Load {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
    },
    /// Unload a model from serving; requests in flight finish.
    Unload {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
    },
    /// Register a file as a new version of NAME: an ONNX file from any exporter (served as
    /// is), or weights — safetensors, a PyTorch `state_dict` (.pt/.pth) — into a model spec
    /// (`--spec`), which become a native version like a trained one.
    Import {
        #[command(flatten)]
        client: ClientArgs,
        /// The `.onnx`, `.safetensors`, `.pt` or `.pth` file.
        path: std::path::PathBuf,
        /// The registered model the file becomes a version of.
        #[arg(long)]
        name: String,
        /// Its licence, as an SPDX identifier (unknown when not given).
        #[arg(long)]
        license: Option<String>,
        /// For weights: the model spec (TOML or JSON with `input = [..]` and `[[layers]]`).
        #[arg(long)]
        spec: Option<std::path::PathBuf>,
        /// For weights: rewrite the file's tensor names, `REGEX=REPLACEMENT` (repeatable;
        /// default: a Sequential's `N.weight` is the spec's `layers[N]`).
        #[arg(long = "map", value_name = "REGEX=REPLACEMENT")]
        map: Vec<String>,
        /// What the model does (how `eval` reads its outputs): classification or regression.
        #[arg(long, default_value = "classification")]
        task: String,
        /// The dataset column `eval`, `predict` and `compress` feed the model (weights, and
        /// ONNX files that get a native form).
        #[arg(long, default_value = "input")]
        input: String,
        /// The dataset column `eval` and `compress` score the model against.
        #[arg(long, default_value = "label")]
        target: String,
    },
    /// Write a model version to a file: its ONNX file, or its weights as safetensors
    /// (PyTorch names and layouts).
    Export {
        /// The server to talk to.
        #[arg(
            long,
            env = "TRAINYARD_SERVER",
            default_value = "http://127.0.0.1:8080"
        )]
        server: String,
        /// API token; defaults to the local server's `<data-dir>/admin-token`.
        #[arg(long, env = "TRAINYARD_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// The workspace the model is in (the token's when absent).
        #[arg(long, env = "TRAINYARD_WORKSPACE")]
        workspace: Option<String>,
        /// `MODEL:VERSION` (or `MODEL` for its latest version).
        model: String,
        #[arg(long, value_enum, default_value_t = ExportChoice::Onnx)]
        format: ExportChoice,
        /// Where to write the file.
        #[arg(long, short = 'o')]
        output: std::path::PathBuf,
    },
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ExportChoice {
    Onnx,
    Safetensors,
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub async fn runs(command: RunsCommand) -> anyhow::Result<i32> {
    match command {
        RunsCommand::Ls {
            client: args,
            experiment,
            filter,
            order_by,
            limit,
        } => {
            let client = crate::client::connect(&args)?;
            let mut query = vec![("limit", limit.to_string())];
            if let Some(name) = experiment {
                let list: Value = client
                    .json(client.request(Method::GET, "/api/v1/experiments"))
                    .await?;
                let id = list["experiments"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|e| e["name"] == name.as_str())
                    .map(|e| text(&e["experiment_id"]))
                    .ok_or_else(|| anyhow::anyhow!("no experiment named `{name}`"))?;
                query.push(("experiment_id", id));
            }
            if let Some(f) = filter {
                query.push(("filter", f));
            }
            if let Some(o) = order_by {
                query.push(("order_by", o));
            }
            let page: Value = client
                .json(client.request(Method::GET, "/api/v1/runs").query(&query))
                .await?;
            if args.output == Format::Json {
                print_json(&page);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = page["runs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    let metrics: Vec<String> = r["metrics"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .take(3)
                        .map(|(k, m)| format!("{k}={}", text(&m["value"])))
                        .collect();
                    vec![
                        text(&r["run_id"]),
                        text(&r["name"]),
                        text(&r["experiment_id"]),
                        text(&r["status"]),
                        time(r["start_time"].as_i64()),
                        metrics.join(" "),
                    ]
                })
                .collect();
            print_table(
                &["RUN", "NAME", "EXPERIMENT", "STATUS", "STARTED", "METRICS"],
                &rows,
            );
            Ok(0)
        }
        RunsCommand::Show { client: args, id } => {
            let client = crate::client::connect(&args)?;
            let run: Value = client
                .json(client.request(Method::GET, &format!("/api/v1/runs/{}", path_segment(&id))))
                .await?;
            if args.output == Format::Json {
                print_json(&run);
                return Ok(0);
            }
            for (label, key) in [
                ("run", "run_id"),
                ("name", "name"),
                ("experiment", "experiment_id"),
                ("status", "status"),
                ("job", "job_id"),
                ("artifacts", "artifact_uri"),
            ] {
                println!("{label:<11} {}", text(&run[key]));
            }
            println!("{:<11} {}", "started", time(run["start_time"].as_i64()));
            println!("{:<11} {}", "ended", time(run["end_time"].as_i64()));
            for section in ["params", "tags"] {
                if let Some(map) = run[section].as_object().filter(|m| !m.is_empty()) {
                    println!("{section}:");
                    for (k, v) in map {
                        println!("  {k} = {}", text(v));
                    }
                }
            }
            if let Some(map) = run["metrics"].as_object().filter(|m| !m.is_empty()) {
                println!("metrics (latest):");
                for (k, m) in map {
                    println!("  {k} = {} (step {})", text(&m["value"]), text(&m["step"]));
                }
            }
            Ok(0)
        }
        RunsCommand::Metrics {
            client: args,
            id,
            key,
            max_points,
        } => {
            let client = crate::client::connect(&args)?;
            let series: Value = client
                .json(
                    client
                        .request(
                            Method::GET,
                            &format!(
                                "/api/v1/runs/{}/metrics/{}",
                                path_segment(&id),
                                path_segment(&key)
                            ),
                        )
                        .query(&[("max_points", max_points)]),
                )
                .await?;
            if args.output == Format::Json {
                print_json(&series);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = series["points"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    vec![
                        text(&p["step"]),
                        text(&p["value"]),
                        time(p["timestamp"].as_i64()),
                    ]
                })
                .collect();
            print_table(&["STEP", "VALUE", "TIME"], &rows);
            if series["sampled"] == true {
                eprintln!(
                    "({} of {} points: each bucket's minimum and maximum)",
                    rows.len(),
                    text(&series["total_points"])
                );
            }
            Ok(0)
        }
    }
}

pub async fn models(command: ModelsCommand) -> anyhow::Result<i32> {
    match command {
        ModelsCommand::Import {
            client: args,
            path,
            name,
            license,
            spec,
            map,
            task,
            input,
            target,
        } => {
            let client = crate::client::connect(&args)?;
            let origin = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string());
            let is_onnx = path.extension().is_some_and(|e| e == "onnx");
            let task = match task.as_str() {
                "classification" => trainyard_engine::config::Task::Classification,
                "regression" => trainyard_engine::config::Task::Regression,
                other => anyhow::bail!("--task {other}: classification or regression"),
            };
            let (version, summary) = if is_onnx {
                if spec.is_some() {
                    anyhow::bail!(
                        "--spec: an ONNX file carries its own graph; --spec is for weights files"
                    );
                }
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let imported = trainyard_tasks::import::import_onnx(
                    &client,
                    bytes,
                    &origin,
                    &name,
                    license.as_deref(),
                    task,
                    (&input, &target),
                )
                .await?;
                let summary = serde_json::json!({
                    "name": imported.name,
                    "version": imported.version,
                    "run_id": imported.run_id,
                    "format": "onnx",
                    "opset": imported.summary.opset,
                    "operators": imported.summary.operators,
                    "checked_on": imported.runtime,
                    "native": imported.native,
                });
                (imported.version, summary)
            } else {
                let spec_path = spec.ok_or_else(|| {
                    anyhow::anyhow!(
                        "--spec: {origin} holds weights only; give the model spec they fill"
                    )
                })?;
                let spec_text = std::fs::read_to_string(&spec_path)
                    .with_context(|| format!("cannot read {}", spec_path.display()))?;
                let map = map
                    .iter()
                    .map(|m| {
                        m.split_once('=')
                            .map(|(a, b)| (a.to_string(), b.to_string()))
                            .ok_or_else(|| anyhow::anyhow!("--map {m}: expected REGEX=REPLACEMENT"))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                let imported = trainyard_tasks::import::import_weights(
                    &client,
                    trainyard_tasks::import::WeightsImport {
                        path: &path,
                        spec: &spec_text,
                        map,
                        task,
                        input,
                        target,
                    },
                    &name,
                    license.as_deref(),
                )
                .await?;
                let summary = serde_json::json!({
                    "name": imported.name,
                    "version": imported.version,
                    "run_id": imported.run_id,
                    "format": "burnpack",
                    "parameters": imported.parameters,
                    "onnx": match &imported.onnx {
                        Ok(e) => serde_json::json!({"checked_on": e.runtime, "max_abs_diff": e.max_abs_diff}),
                        Err(e) => serde_json::json!({"error": e.to_string()}),
                    },
                });
                (imported.version, summary)
            };
            // The file was checked here; whether the server serves it is the server's to say
            // (another runtime, another library): ask it.
            let served = client
                .send(client.request(
                    Method::GET,
                    &format!("/v2/models/{}/versions/{version}", path_segment(&name)),
                ))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
            if args.output == Format::Json {
                let mut summary = summary;
                summary["served"] = serde_json::json!(served.is_ok());
                if let Err(e) = &served {
                    summary["serving_error"] = serde_json::json!(e);
                }
                print_json(&summary);
            } else {
                println!(
                    "imported {origin} as {name}:{version} ({})",
                    match summary["format"].as_str() {
                        Some("onnx") => format!(
                            "ONNX opset {}, checked on {}",
                            summary["opset"],
                            summary["checked_on"].as_str().unwrap_or("?")
                        ),
                        _ => format!("{} parameters", summary["parameters"]),
                    }
                );
                if let Some(native) = summary["native"].as_str() {
                    println!("native form: {native}");
                }
                match served {
                    Ok(()) => println!("served at /v2/models/{name}"),
                    Err(e) => println!("registered, but this server cannot serve it: {e}"),
                }
            }
            Ok(0)
        }
        ModelsCommand::Export {
            server,
            token,
            workspace,
            model,
            format,
            output,
        } => {
            let client = crate::client::connect(&ClientArgs {
                server,
                token,
                workspace,
                output: Format::Table,
            })?;
            let format = match format {
                ExportChoice::Onnx => trainyard_tasks::export::ExportFormat::Onnx,
                ExportChoice::Safetensors => trainyard_tasks::export::ExportFormat::Safetensors,
            };
            let (version, bytes) =
                trainyard_tasks::export::export_version(&client, &model, format).await?;
            // A hidden temporary name of its own beside the target, then a rename: a cut-off
            // export never looks like a file, and never replaces someone else's.
            let file_name = output
                .file_name()
                .with_context(|| format!("{} names no file", output.display()))?;
            let partial = output.with_file_name(format!(
                ".{}.{}.partial",
                file_name.to_string_lossy(),
                std::process::id()
            ));
            let written =
                std::fs::write(&partial, &bytes).and_then(|()| std::fs::rename(&partial, &output));
            if let Err(e) = written {
                let _ = std::fs::remove_file(&partial);
                return Err(anyhow::anyhow!("cannot write {}: {e}", output.display()));
            }
            println!(
                "wrote {version} as {} to {} ({} bytes)",
                match format {
                    trainyard_tasks::export::ExportFormat::Onnx => "onnx",
                    trainyard_tasks::export::ExportFormat::Safetensors => "safetensors",
                },
                output.display(),
                bytes.len()
            );
            Ok(0)
        }
        ModelsCommand::Load { client: args, name } => {
            let client = crate::client::connect(&args)?;
            let path = format!(
                "/v2/repository/models/{}/load",
                crate::commands::inference::segment(&name)
            );
            client.send(client.request(Method::POST, &path)).await?;
            println!("loaded {name}");
            Ok(0)
        }
        ModelsCommand::Unload { client: args, name } => {
            let client = crate::client::connect(&args)?;
            let path = format!(
                "/v2/repository/models/{}/unload",
                crate::commands::inference::segment(&name)
            );
            client.send(client.request(Method::POST, &path)).await?;
            println!("unloaded {name}");
            Ok(0)
        }
        ModelsCommand::Ls { client: args } => {
            let client = crate::client::connect(&args)?;
            let list: Value = client
                .json(client.request(Method::GET, "/api/v1/models"))
                .await?;
            if args.output == Format::Json {
                print_json(&list);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = list["models"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    let newest = &m["versions"][0];
                    vec![
                        text(&m["name"]),
                        text(&newest["version"]),
                        text(&newest["stage"]),
                        time(m["last_updated_time"].as_i64()),
                    ]
                })
                .collect();
            print_table(&["MODEL", "LATEST", "STAGE", "UPDATED"], &rows);
            Ok(0)
        }
        ModelsCommand::Show { client: args, name } => {
            let client = crate::client::connect(&args)?;
            let model: Value = client
                .json(client.request(
                    Method::GET,
                    &format!("/api/v1/models/{}", path_segment(&name)),
                ))
                .await?;
            if args.output == Format::Json {
                print_json(&model);
                return Ok(0);
            }
            println!("model       {}", text(&model["name"]));
            println!("description {}", text(&model["description"]));
            if let Some(aliases) = model["aliases"].as_object().filter(|a| !a.is_empty()) {
                let list: Vec<String> = aliases
                    .iter()
                    .map(|(a, v)| format!("{a}→v{}", text(v)))
                    .collect();
                println!("aliases     {}", list.join(", "));
            }
            let rows: Vec<Vec<String>> = model["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| {
                    let tag = |key: &str| v["tags"][key].as_str().map(str::to_string);
                    // What the registry records of each version's format and origin.
                    let format = match (tag("trainyard.format"), tag("trainyard.onnx.opset")) {
                        (Some(f), Some(opset)) if f != "onnx" => format!("{f} + onnx {opset}"),
                        (Some(f), Some(opset)) => format!("{f} {opset}"),
                        (Some(f), None) => f,
                        (None, _) => "—".into(),
                    };
                    let lineage = match (tag("trainyard.lineage"), tag("trainyard.source")) {
                        (Some(l), Some(source)) => format!("{l} from {source}"),
                        (Some(l), None) => l,
                        (None, _) => "—".into(),
                    };
                    vec![
                        text(&v["version"]),
                        text(&v["stage"]),
                        format,
                        lineage,
                        tag("trainyard.parameters").unwrap_or_else(|| "—".into()),
                        tag("trainyard.license").unwrap_or_else(|| "unknown".into()),
                        text(&v["run_id"]),
                        time(v["creation_time"].as_i64()),
                    ]
                })
                .collect();
            print_table(
                &[
                    "VERSION", "STAGE", "FORMAT", "LINEAGE", "PARAMS", "LICENSE", "RUN", "CREATED",
                ],
                &rows,
            );
            // What compression made of each compressed version (the full report is the
            // `compression/report.json` artifact its tag names).
            for v in model["versions"].as_array().into_iter().flatten() {
                let tag = |key: &str| v["tags"][key].as_str().map(str::to_string);
                let Some(method) = tag("trainyard.compression.method") else {
                    continue;
                };
                let drop = v["tags"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .find(|(k, _)| k.starts_with("trainyard.compression.") && k.ends_with("_drop"))
                    .map(|(k, d)| {
                        format!(
                            "{} drop {}",
                            k.trim_start_matches("trainyard.compression.")
                                .trim_end_matches("_drop"),
                            text(d)
                        )
                    })
                    .unwrap_or_default();
                println!(
                    "v{} ← {}: {method}, {}× smaller, {drop}, kept in float: {}; report {}",
                    text(&v["version"]),
                    tag("trainyard.source").unwrap_or_default(),
                    tag("trainyard.compression.size_ratio").unwrap_or_default(),
                    tag("trainyard.compression.fell_back")
                        .filter(|f| !f.is_empty())
                        .unwrap_or_else(|| "none".into()),
                    tag("trainyard.compression.report").unwrap_or_default(),
                );
            }
            Ok(0)
        }
    }
}
