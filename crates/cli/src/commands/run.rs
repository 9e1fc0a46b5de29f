//! `trainyard run -- CMD…`: submit, wait in the queue (with a spinner), stream the log,
//! and exit with the job's own exit code. Ctrl-C cancels the job.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;
use reqwest::Method;
use trainyard_core::{Job, JobState, JobSubmission, JobTracking, Resources};

use crate::client::Client;
use crate::output::{print_json, Format};
use crate::ClientArgs;

/// How long `trainyard run` keeps reconnecting to a server that went away.
const RECONNECT_FOR: Duration = Duration::from_secs(120);

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Name shown in listings [default: the program name].
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value_t = 1.0)]
    pub cpus: f64,
    #[arg(long, default_value_t = 0)]
    pub gpus: u32,
    /// Memory to reserve, in MB (per worker).
    #[arg(long)]
    pub memory: Option<u64>,
    /// Workers of a gang, each with --cpus, --gpus and --memory, started all at once with
    /// torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR, …).
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// Times a failed attempt is retried.
    #[arg(long, default_value_t = 0)]
    pub retries: u32,
    /// Wall-clock limit of one attempt, in seconds.
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Environment variable for the job, as KEY=VALUE (repeatable).
    #[arg(long = "env", short = 'e', value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// Variable set from a workspace secret, as VAR=SECRET_NAME (repeatable): the value is
    /// decrypted into the job's environment only.
    #[arg(long = "secret", value_parser = parse_key_value)]
    pub secrets: Vec<(String, String)>,
    /// Label, as KEY=VALUE (repeatable).
    #[arg(long = "label", short = 'l', value_parser = parse_key_value)]
    pub labels: Vec<(String, String)>,
    /// Directory the command starts in [default: the current directory].
    #[arg(long)]
    pub workdir: Option<String>,
    /// Experiment the job's run joins (created when missing) [default: Default].
    #[arg(long)]
    pub experiment: Option<String>,
    /// Metric to collect from `NAME=VALUE` in the job's output (repeatable); `step=N` or
    /// `epoch=N` on the same line sets the step.
    #[arg(long = "metric", short = 'm')]
    pub metrics: Vec<String>,
    /// Regex with named groups `name`, `value` (and `step`) to read metrics instead.
    #[arg(long)]
    pub metric_regex: Option<String>,
    /// Resource pool to run in (`[[pools]]` of the server's configuration) [default: the first].
    #[arg(long, env = "TRAINYARD_POOL")]
    pub pool: Option<String>,
    /// Print the job id and return at once instead of streaming.
    #[arg(long, short = 'd')]
    pub detach: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got `{s}`"))
}

pub async fn run(args: RunArgs) -> anyhow::Result<i32> {
    let client = crate::client::connect(&args.client)?;
    let working_dir = match args.workdir {
        Some(d) => Some(d),
        None => std::env::current_dir()
            .ok()
            .map(|d| d.display().to_string()),
    };
    let submission = JobSubmission {
        name: args.name,
        command: args.command,
        task: None,
        env: args.env.into_iter().collect::<BTreeMap<_, _>>(),
        secrets: args.secrets.into_iter().collect::<BTreeMap<_, _>>(),
        working_dir,
        resources: Resources {
            cpus: args.cpus,
            memory_mb: args.memory,
            gpus: args.gpus,
            workers: args.workers,
        },
        priority: args.priority,
        max_retries: args.retries,
        timeout_s: args.timeout,
        labels: args.labels.into_iter().collect(),
        tracking: JobTracking {
            experiment: args.experiment,
            metrics: args.metrics,
            metric_regex: args.metric_regex,
        },
        pool: args.pool,
    };
    submit_and_follow(&client, &submission, args.detach, args.client.output).await
}

/// Submits a job and, unless `detach`, waits for it while streaming its log; returns the
/// exit code the CLI should end with (the job's own).
pub async fn submit_and_follow(
    client: &Client,
    submission: &JobSubmission,
    detach: bool,
    output: Format,
) -> anyhow::Result<i32> {
    Ok(submit_and_follow_job(client, submission, detach, output)
        .await?
        .1)
}

/// [`submit_and_follow`], also returning the job's id.
pub async fn submit_and_follow_job(
    client: &Client,
    submission: &JobSubmission,
    detach: bool,
    output: Format,
) -> anyhow::Result<(String, i32)> {
    let job: Job = client
        .json(
            client
                .request(Method::POST, "/api/v1/jobs")
                .json(submission),
        )
        .await?;
    if detach {
        match output {
            Format::Json => print_json(&job),
            Format::Table => println!("{}", job.id),
        }
        return Ok((job.id, 0));
    }
    let json = output == Format::Json;
    eprintln!("job {} queued", job.id);
    // Ctrl-C once cancels the job (queued or running) and keeps following it to its end;
    // a second Ctrl-C leaves at once.
    {
        let client = client.clone();
        let id = job.id.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            eprintln!("\ncancelling job {id} … (Ctrl-C again to stop waiting)");
            let cancel = client.request(Method::POST, &format!("/api/v1/jobs/{id}/cancel"));
            let _ = client.send(cancel).await;
            let _ = tokio::signal::ctrl_c().await;
            std::process::exit(130);
        });
    }
    wait_while_queued(client, &job.id).await?;

    let mut offset = 0u64;
    let mut out: Box<dyn Write> = if json {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    // The job runs on whatever happens to this connection: if the server goes away (a
    // restart), keep trying for a while and continue from the last byte printed.
    let mut reconnect = Reconnect::default();
    loop {
        let req = client.request(
            Method::GET,
            &format!("/api/v1/jobs/{}/logs?follow=true&offset={offset}", job.id),
        );
        let streamed = match client.send(req).await {
            Ok(response) => {
                let mut body = response.bytes_stream();
                while let Some(chunk) = body.next().await {
                    let Ok(bytes) = chunk else { break };
                    reconnect.succeeded();
                    offset += bytes.len() as u64;
                    out.write_all(&bytes)?;
                    out.flush()?;
                }
                client.job(&job.id).await
            }
            Err(e) => Err(e),
        };
        match streamed {
            Ok(current) if current.state.is_terminal() => break,
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => {
                let hint = format!(
                    "gave up after {RECONNECT_FOR:?}; follow the job with `trainyard jobs logs {} --follow`",
                    job.id
                );
                reconnect.after(e.into(), &hint).await?;
            }
        }
    }
    let done = job_reconnecting(client, &job.id).await?;
    if json {
        print_json(&done);
    } else if done.state != JobState::Succeeded {
        eprintln!(
            "job {} {}: {}",
            done.id,
            done.state.as_str(),
            done.message.as_deref().unwrap_or("-")
        );
    }
    Ok((done.id.clone(), exit_code_of(&done)))
}

/// The CLI exits as the job did: its exit code, 130 when cancelled, 1 when it never ran.
pub fn exit_code_of(job: &Job) -> i32 {
    match job.state {
        JobState::Succeeded => 0,
        JobState::Cancelled => 130,
        _ => match job.exit_code {
            Some(code) if code != 0 => code,
            _ => 1,
        },
    }
}

async fn wait_while_queued(client: &Client, id: &str) -> anyhow::Result<()> {
    let spinner = if std::io::stderr().is_terminal() {
        let s = indicatif::ProgressBar::new_spinner();
        s.set_message("waiting in the queue for free resources");
        s.enable_steady_tick(Duration::from_millis(100));
        Some(s)
    } else {
        None
    };
    let result = async {
        loop {
            let job = job_reconnecting(client, id).await?;
            if job.state != JobState::Queued {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    .await;
    if let Some(s) = spinner {
        s.finish_and_clear();
    }
    result
}

/// The job, asking again while the server is unreachable (a restart) for `RECONNECT_FOR`.
async fn job_reconnecting(client: &Client, id: &str) -> anyhow::Result<Job> {
    let mut reconnect = Reconnect::default();
    loop {
        match client.job(id).await {
            Ok(job) => return Ok(job),
            Err(e) => reconnect.after(e.into(), "cannot follow the job").await?,
        }
    }
}

/// Patience with a server that went away (a restart): every wait of `trainyard run` keeps
/// trying for `RECONNECT_FOR` before it gives up.
#[derive(Default)]
struct Reconnect {
    since: Option<Instant>,
}

impl Reconnect {
    /// After a failed call: pauses and returns `Ok` to try again, or the error (with
    /// `hint`) once the server has been unreachable for `RECONNECT_FOR`.
    async fn after(&mut self, error: anyhow::Error, hint: &str) -> anyhow::Result<()> {
        let since = *self.since.get_or_insert_with(|| {
            eprintln!(
                "trainyard: lost the server ({error:#}); the job keeps running, reconnecting…"
            );
            Instant::now()
        });
        if since.elapsed() > RECONNECT_FOR {
            return Err(error.context(hint.to_string()));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(())
    }

    fn succeeded(&mut self) {
        self.since = None;
    }
}
