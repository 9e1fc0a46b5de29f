//! `trainyard jobs ls | show | cancel | logs`.

use std::io::Write;
use std::time::Duration;

use clap::Subcommand;
use futures::StreamExt;
use reqwest::Method;
use serde::Deserialize;
use trainyard_core::Job;

use crate::output::{job_row, print_job, print_json, print_table, Format, JOB_HEADER};
use crate::ClientArgs;

#[derive(Subcommand)]
pub enum JobsCommand {
    /// List jobs, newest first.
    Ls {
        #[command(flatten)]
        client: ClientArgs,
        /// Only jobs in this state (queued, running, succeeded, failed, cancelled).
        #[arg(long)]
        state: Option<String>,
        /// Only jobs with this label, as KEY=VALUE.
        #[arg(long)]
        label: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Continue after this job id (the `next_cursor` of the previous page).
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Show one job.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Cancel a job and wait until its processes are gone.
    Cancel {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Run a finished job again as a new job (same command or task, resources, pool),
    /// labelled `retry_of=ID`; prints the new job.
    Retry {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
    /// Print a job's log.
    Logs {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
        /// Keep printing new output until the job ends.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<u64>,
    },
}

#[derive(Deserialize)]
struct JobPage {
    jobs: Vec<Job>,
    next_cursor: Option<String>,
}

pub async fn run(command: JobsCommand) -> anyhow::Result<i32> {
    match command {
        JobsCommand::Ls {
            client: args,
            state,
            label,
            limit,
            cursor,
        } => {
            let client = crate::client::connect(&args)?;
            let mut query = vec![("limit", limit.to_string())];
            if let Some(s) = state {
                query.push(("state", s));
            }
            if let Some(l) = label {
                query.push(("label", l));
            }
            if let Some(c) = cursor {
                query.push(("cursor", c));
            }
            let page: JobPage = client
                .json(client.request(Method::GET, "/api/v1/jobs").query(&query))
                .await?;
            match args.output {
                Format::Json => print_json(&serde_json::json!({
                    "jobs": page.jobs, "next_cursor": page.next_cursor
                })),
                Format::Table => {
                    let rows: Vec<_> = page.jobs.iter().map(job_row).collect();
                    print_table(JOB_HEADER, &rows);
                    if let Some(next) = &page.next_cursor {
                        eprintln!("(more jobs: --cursor {next})");
                    }
                }
            }
            Ok(0)
        }
        JobsCommand::Show { client: args, id } => {
            let client = crate::client::connect(&args)?;
            let job = client.job(&id).await?;
            match args.output {
                Format::Json => print_json(&job),
                Format::Table => print_job(&job),
            }
            Ok(0)
        }
        JobsCommand::Retry { client: args, id } => {
            let client = crate::client::connect(&args)?;
            let job: Job = client
                .json(client.request(Method::POST, &format!("/api/v1/jobs/{id}/retry")))
                .await?;
            match args.output {
                Format::Json => print_json(&job),
                Format::Table => println!("job {} {} (again: {id})", job.id, job.state.as_str()),
            }
            Ok(0)
        }
        JobsCommand::Cancel { client: args, id } => {
            let client = crate::client::connect(&args)?;
            let mut job: Job = client
                .json(client.request(Method::POST, &format!("/api/v1/jobs/{id}/cancel")))
                .await?;
            while !job.state.is_terminal() {
                tokio::time::sleep(Duration::from_millis(100)).await;
                job = client.job(&id).await?;
            }
            match args.output {
                Format::Json => print_json(&job),
                Format::Table => println!("job {} {}", job.id, job.state.as_str()),
            }
            Ok(0)
        }
        JobsCommand::Logs {
            client: args,
            id,
            follow,
            tail,
        } => {
            let client = crate::client::connect(&args)?;
            let mut query = vec![("follow", follow.to_string())];
            if let Some(n) = tail {
                query.push(("tail", n.to_string()));
            }
            let response = client
                .send(
                    client
                        .request(Method::GET, &format!("/api/v1/jobs/{id}/logs"))
                        .query(&query),
                )
                .await?;
            let mut body = response.bytes_stream();
            let mut stdout = std::io::stdout();
            while let Some(chunk) = body.next().await {
                stdout.write_all(&chunk?)?;
                stdout.flush()?;
            }
            Ok(0)
        }
    }
}
