//! `trainyard workspaces …`: create and remove workspaces (owners), their members (their
//! admins), and how they share the pools (owners set weights and quotas).

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use crate::output::{print_json, print_table, Format};
use crate::ClientArgs;

#[derive(Subcommand)]
pub enum WorkspacesCommand {
    /// Every workspace: its fair-share weight, quotas and what it holds now.
    Ls {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Change a workspace's weight or quotas (what is not named stays as it is).
    Set {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
        /// Share under contention, relative to other workspaces' (default 1).
        #[arg(long)]
        weight: Option<f64>,
        /// Most CPUs its running jobs may hold.
        #[arg(long)]
        cpus: Option<f64>,
        /// Most memory (MB) its running jobs may hold.
        #[arg(long)]
        memory_mb: Option<u64>,
        /// Most GPUs its running jobs may hold.
        #[arg(long)]
        gpus: Option<u32>,
        /// Most jobs running at once.
        #[arg(long)]
        running_jobs: Option<u32>,
        /// Most jobs waiting in the queue (more submissions are refused).
        #[arg(long)]
        queued_jobs: Option<u32>,
        /// Most bytes kept in the blob store (artifacts, dataset shards); uploads past it
        /// are refused.
        #[arg(long)]
        stored_bytes: Option<u64>,
        /// Remove a limit (cpus, memory_mb, gpus, running_jobs, queued_jobs, stored_bytes);
        /// repeatable.
        #[arg(long, value_parser = ["cpus", "memory_mb", "gpus", "running_jobs", "queued_jobs", "stored_bytes"])]
        unset: Vec<String>,
    },
    /// Create an empty workspace.
    Create {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
    },
    /// Remove an empty workspace with its members and tokens (`--cascade`: with its
    /// finished jobs, experiments, models and datasets too).
    Rm {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
        #[arg(long)]
        cascade: bool,
    },
    /// The members of the workspace given by `--workspace` (or your token's).
    Members {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Give a user a role (viewer, editor, admin) in the workspace given by `--workspace`.
    Grant {
        #[command(flatten)]
        client: ClientArgs,
        user: String,
        #[arg(value_parser = ["viewer", "editor", "admin"])]
        role: String,
    },
    /// Take a user's role in the workspace given by `--workspace` away.
    Revoke {
        #[command(flatten)]
        client: ClientArgs,
        user: String,
    },
}

fn limit(quota: &Value, key: &str) -> String {
    match &quota[key] {
        Value::Null => "-".into(),
        v => v.to_string(),
    }
}

pub async fn run(command: WorkspacesCommand) -> anyhow::Result<i32> {
    match command {
        WorkspacesCommand::Create { client: args, name } => {
            let client = crate::client::connect(&args)?;
            let made: Value = client
                .json(
                    client
                        .request(Method::POST, "/api/v1/workspaces")
                        .json(&json!({"name": name})),
                )
                .await?;
            match args.output {
                Format::Json => print_json(&made),
                Format::Table => println!("created workspace {name}"),
            }
            Ok(0)
        }
        WorkspacesCommand::Rm {
            client: args,
            name,
            cascade,
        } => {
            let client = crate::client::connect(&args)?;
            let path = format!("/api/v1/workspaces/{name}?cascade={cascade}");
            client.send(client.request(Method::DELETE, &path)).await?;
            if args.output == Format::Table {
                println!("removed workspace {name}");
            }
            Ok(0)
        }
        WorkspacesCommand::Members { client: args } => {
            let client = crate::client::connect(&args)?;
            let list: Value = client
                .json(client.request(Method::GET, "/api/v1/members"))
                .await?;
            match args.output {
                Format::Json => print_json(&list),
                Format::Table => {
                    let rows: Vec<Vec<String>> = list["members"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|m| {
                            vec![
                                m["user"].as_str().unwrap_or("").to_string(),
                                m["role"].as_str().unwrap_or("").to_string(),
                            ]
                        })
                        .collect();
                    print_table(&["USER", "ROLE"], &rows);
                }
            }
            Ok(0)
        }
        WorkspacesCommand::Grant {
            client: args,
            user,
            role,
        } => {
            let client = crate::client::connect(&args)?;
            let member: Value = client
                .json(
                    client
                        .request(Method::PUT, &format!("/api/v1/members/{user}"))
                        .json(&json!({"role": role})),
                )
                .await?;
            match args.output {
                Format::Json => print_json(&member),
                Format::Table => println!("{user} is {role}"),
            }
            Ok(0)
        }
        WorkspacesCommand::Revoke { client: args, user } => {
            let client = crate::client::connect(&args)?;
            client
                .send(client.request(Method::DELETE, &format!("/api/v1/members/{user}")))
                .await?;
            if args.output == Format::Table {
                println!("{user} has no role here any more");
            }
            Ok(0)
        }
        WorkspacesCommand::Ls { client: args } => {
            let client = crate::client::connect(&args)?;
            let list: Value = client
                .json(client.request(Method::GET, "/api/v1/workspaces"))
                .await?;
            match args.output {
                Format::Json => print_json(&list),
                Format::Table => {
                    let rows: Vec<Vec<String>> = list["workspaces"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|w| {
                            let q = &w["quota"];
                            let u = &w["in_use"];
                            vec![
                                w["name"].as_str().unwrap_or("").to_string(),
                                w["weight"].to_string(),
                                format!("{}/{}", u["cpus"], limit(q, "cpus")),
                                format!("{}/{}", u["memory_mb"], limit(q, "memory_mb")),
                                format!("{}/{}", u["gpus"], limit(q, "gpus")),
                                format!("{}/{}", u["running_jobs"], limit(q, "running_jobs")),
                                format!("{}/{}", w["queued_jobs"], limit(q, "queued_jobs")),
                            ]
                        })
                        .collect();
                    print_table(
                        &[
                            "NAME",
                            "WEIGHT",
                            "CPUS",
                            "MEMORY_MB",
                            "GPUS",
                            "RUNNING",
                            "QUEUED",
                        ],
                        &rows,
                    );
                }
            }
            Ok(0)
        }
        WorkspacesCommand::Set {
            client: args,
            name,
            weight,
            cpus,
            memory_mb,
            gpus,
            running_jobs,
            queued_jobs,
            stored_bytes,
            unset,
        } => {
            let client = crate::client::connect(&args)?;
            let list: Value = client
                .json(client.request(Method::GET, "/api/v1/workspaces"))
                .await?;
            let current = list["workspaces"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|w| w["name"] == name.as_str())
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("no workspace named `{name}`"))?;
            let mut quota = current["quota"].clone();
            let object = quota
                .as_object_mut()
                .ok_or_else(|| anyhow::anyhow!("the server sent no quota for `{name}`"))?;
            for (key, value) in [
                ("cpus", cpus.map(|v| json!(v))),
                ("memory_mb", memory_mb.map(|v| json!(v))),
                ("gpus", gpus.map(|v| json!(v))),
                ("running_jobs", running_jobs.map(|v| json!(v))),
                ("queued_jobs", queued_jobs.map(|v| json!(v))),
                ("stored_bytes", stored_bytes.map(|v| json!(v))),
            ] {
                if let Some(v) = value {
                    object.insert(key.into(), v);
                }
            }
            for key in &unset {
                object.remove(key);
            }
            let body = json!({
                "weight": weight.map(|w| json!(w)).unwrap_or_else(|| current["weight"].clone()),
                "quota": quota,
            });
            let updated: Value = client
                .json(
                    client
                        .request(Method::PUT, &format!("/api/v1/workspaces/{name}/policy"))
                        .json(&body),
                )
                .await?;
            match args.output {
                Format::Json => print_json(&updated),
                Format::Table => println!(
                    "workspace {name}: weight {}, quota {}",
                    updated["weight"], updated["quota"]
                ),
            }
            Ok(0)
        }
    }
}
