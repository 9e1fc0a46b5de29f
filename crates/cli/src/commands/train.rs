//! `trainyard train | eval | predict`: check what can be checked here (the training file,
//! the model spec against the dataset's shapes), then submit the work as a job and follow it
//! like `trainyard run` does.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, Context};
use clap::Args;
use trainyard_core::{BuiltinTask, JobSubmission, JobTracking, Resources, TaskKind};
use trainyard_engine::config::TrainConfig;

use crate::commands::run::{submit_and_follow, submit_and_follow_job};
use crate::ClientArgs;
use trainyard_client::datasets as remote;
use trainyard_client::runs::{self as mlflow, RunClient};

#[derive(Args)]
pub struct JobArgs {
    /// CPUs to reserve (also the engine's thread count).
    #[arg(long, default_value_t = 2.0)]
    pub cpus: f64,
    /// GPUs to reserve [default: 1 when the device is cuda, else 0].
    #[arg(long)]
    pub gpus: Option<u32>,
    /// Resource pool to run in (`[[pools]]` of the server's configuration) [default: the first].
    #[arg(long, env = "TRAINYARD_POOL")]
    pub pool: Option<String>,
    /// Print the job id and return at once instead of streaming.
    #[arg(long, short = 'd')]
    pub detach: bool,
}

#[derive(Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub job: JobArgs,
    /// The training file (TOML or JSON): [data], [model], [training], [checkpoints].
    #[arg(required_unless_present = "resume")]
    pub file: Option<PathBuf>,
    /// Continue a run from its latest checkpoint (its training file is reused unless one is given).
    #[arg(long, value_name = "RUN_ID")]
    pub resume: Option<String>,
}

pub async fn train(args: TrainArgs) -> anyhow::Result<i32> {
    let client = crate::client::connect(&args.client)?;
    let (text, origin) = match (&args.file, &args.resume) {
        (Some(file), _) => (
            std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?,
            file.display().to_string(),
        ),
        (None, Some(run_id)) => {
            let previous = RunClient::for_run(client.clone(), run_id.clone()).await?;
            let bytes = previous
                .download(trainyard_tasks::train::CONFIG_ARTIFACT)
                .await
                .with_context(|| format!("run {run_id} was not a `trainyard train` run"))?;
            (String::from_utf8(bytes)?, format!("run {run_id}"))
        }
        (None, None) => unreachable!("clap requires one"),
    };
    let config = TrainConfig::parse(&text).map_err(|e| anyhow!("{origin}: {e}"))?;
    submit_training(
        &client,
        config,
        &origin,
        args.resume.as_deref(),
        &args.job,
        args.client.output,
    )
    .await
}

/// Checks a training configuration against its dataset (and the version it starts from),
/// pins both, and submits it as a job, followed unless detached.
pub(crate) async fn submit_training(
    client: &trainyard_client::Client,
    mut config: TrainConfig,
    origin: &str,
    resume: Option<&str>,
    job: &JobArgs,
    output: crate::output::Format,
) -> anyhow::Result<i32> {
    let client = client.clone();
    // Pin the dataset version now, so the job trains on what was checked here.
    let version = remote::fetch_version(&client, &config.data.dataset).await?;
    let source = trainyard_tasks::train::fetch_source(&client, &config)
        .await
        .map_err(|e| anyhow!("{origin}: {e}"))?;
    let resolved = trainyard_tasks::train::check_against(&config, &version, source.as_ref())
        .map_err(|e| anyhow!("{origin}: {e}"))?;
    // A distillation's teacher must take the student's input and give its classes: checked
    // here by running it once, and pinned.
    if let Some(distill) = &mut config.distill {
        let teacher = trainyard_tasks::distill::OnnxTeacher::load(
            &client,
            &distill.teacher,
            &resolved.spec.input,
            resolved.head.outputs,
        )
        .await
        .map_err(|e| anyhow!("{origin}: {e}"))?;
        distill.teacher = teacher.reference;
    }
    config.data.dataset = version.reference();
    // The version started from is pinned too (`NAME` alone means its latest now).
    if let Some(source) = source {
        config.model.from = Some(source.reference);
    }
    let pinned = serde_json::to_string(&config)?;
    let mut task_args = vec!["--config".into(), pinned];
    if let Some(run_id) = resume {
        task_args.extend(["--resume-from".into(), run_id.to_string()]);
    }
    let cuda = config.training.device.starts_with("cuda");
    let submission = submission(
        config.name.clone(),
        TaskKind::Train,
        task_args,
        job,
        cuda,
        config.experiment.clone(),
    );
    submit_and_follow(&client, &submission, job.detach, output).await
}

#[derive(Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub job: JobArgs,
    /// `MODEL:VERSION` (or `MODEL` for its latest version).
    pub model: String,
    /// `NAME[:VERSION]`.
    #[arg(long)]
    pub dataset: String,
    /// Rows of this split only (when the dataset has a split column); `all` for every row.
    #[arg(long, default_value = "test")]
    pub split: String,
    #[arg(long, default_value = "split")]
    pub split_column: String,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long, default_value_t = 3)]
    pub top_k: usize,
    /// Experiment the evaluation run joins [default: Default].
    #[arg(long)]
    pub experiment: Option<String>,
}

pub async fn eval(args: EvalArgs) -> anyhow::Result<i32> {
    let client = crate::client::connect(&args.client)?;
    trainyard_engine::device::parse(&args.device)?;
    let (model_name, model_version, _) = mlflow::model_source(&client, &args.model).await?;
    let version = remote::fetch_version(&client, &args.dataset).await?;
    let mut task_args = vec![
        "--model".into(),
        // Pinned: the version evaluated is the one its numbers are put on.
        format!("{model_name}:{model_version}"),
        "--dataset".into(),
        version.reference(),
        "--split-column".into(),
        args.split_column.clone(),
        "--device".into(),
        args.device.clone(),
        "--top-k".into(),
        args.top_k.to_string(),
    ];
    if args.split != "all" {
        task_args.extend(["--split".into(), args.split.clone()]);
    }
    let submission = submission(
        format!("eval {}", args.model),
        TaskKind::Eval,
        task_args,
        &args.job,
        args.device.starts_with("cuda"),
        args.experiment.clone(),
    );
    let (job_id, code) =
        submit_and_follow_job(&client, &submission, args.job.detach, args.client.output).await?;
    if args.job.detach {
        eprintln!(
            "detached: the evaluation's numbers stay on its run {job_id}; they are put on {} only when `trainyard eval` waits for the job",
            args.model
        );
    } else if code == 0 {
        trainyard_tasks::evaluate::apply_version_tags(
            &client,
            &job_id,
            &model_name,
            &model_version,
        )
        .await?;
    }
    Ok(code)
}

#[derive(Args)]
pub struct PredictArgs {
    /// The server to talk to.
    #[arg(
        long,
        env = "TRAINYARD_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// API token; defaults to the local server's `<data-dir>/admin-token`.
    #[arg(long, env = "TRAINYARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The workspace to act in (the token's when absent).
    #[arg(long, env = "TRAINYARD_WORKSPACE")]
    pub workspace: Option<String>,
    #[command(flatten)]
    pub job: JobArgs,
    /// `MODEL:VERSION` (or `MODEL` for its latest version).
    pub model: String,
    /// `NAME[:VERSION]` to predict over.
    #[arg(long)]
    pub dataset: String,
    /// Dataset the predictions become (a new version of it).
    #[arg(long)]
    pub output: String,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub async fn predict(args: PredictArgs) -> anyhow::Result<i32> {
    // `--output` names the dataset here, so this command prints for people only.
    let client_args = ClientArgs {
        server: args.server.clone(),
        token: args.token.clone(),
        workspace: args.workspace.clone(),
        output: crate::output::Format::Table,
    };
    let client = crate::client::connect(&client_args)?;
    trainyard_engine::device::parse(&args.device)?;
    mlflow::model_source(&client, &args.model).await?;
    let version = remote::fetch_version(&client, &args.dataset).await?;
    let task_args = vec![
        "--model".into(),
        args.model.clone(),
        "--dataset".into(),
        version.reference(),
        "--output".into(),
        args.output.clone(),
        "--device".into(),
        args.device.clone(),
    ];
    let submission = submission(
        format!("predict {}", args.model),
        TaskKind::Predict,
        task_args,
        &args.job,
        args.device.starts_with("cuda"),
        None,
    );
    submit_and_follow(&client, &submission, args.job.detach, client_args.output).await
}

/// A job that runs built-in task `kind` with `args`: the server's executor resolves the
/// `trainyard` program where the job runs, so nothing of this machine's paths goes along.
pub(crate) fn submission(
    name: String,
    kind: TaskKind,
    args: Vec<String>,
    job: &JobArgs,
    cuda: bool,
    experiment: Option<String>,
) -> JobSubmission {
    let threads = job.cpus.ceil().max(1.0) as u32;
    JobSubmission {
        name: Some(name),
        command: Vec::new(),
        task: Some(BuiltinTask { kind, args }),
        env: BTreeMap::from([("RAYON_NUM_THREADS".to_string(), threads.to_string())]),
        secrets: BTreeMap::new(),
        // A built-in task reads and writes only through the server: it needs no folder of
        // this machine (which the server's machine may not have, or its job user not enter).
        working_dir: None,
        resources: Resources {
            cpus: job.cpus,
            memory_mb: None,
            gpus: job.gpus.unwrap_or(u32::from(cuda)),
            workers: 1,
        },
        priority: 0,
        max_retries: 0,
        timeout_s: None,
        labels: BTreeMap::new(),
        tracking: JobTracking {
            experiment,
            metrics: Vec::new(),
            metric_regex: None,
        },
        pool: job.pool.clone(),
    }
}
