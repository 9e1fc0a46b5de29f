//! `trainyard`: the server (`up`), the client commands, and the `task` commands that
//! executors run. Thin: parse, call the library crates or the HTTP API, print.

mod client;
mod commands;
mod config;
mod output;
mod server;
mod serving;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "trainyard",
    version,
    about = "Self-hosted deep-learning platform: jobs, storage and APIs in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server: REST API, scheduler and local executor.
    Up(Box<config::UpArgs>),
    /// Serve models from a model repository folder (Open Inference Protocol, HTTP and gRPC), without the rest of the platform.
    Serve(Box<serving::ServeCommand>),
    /// Send one inference request and print the outputs.
    Infer(commands::inference::InferArgs),
    /// Submit a command as a job, stream its log, and exit with its exit code.
    Run(commands::run::RunArgs),
    /// What the server's machine has, what is free, and how much work waits.
    Status(ClientArgs),
    /// List, inspect, cancel jobs and read their logs.
    Jobs {
        #[command(subcommand)]
        command: commands::jobs::JobsCommand,
    },
    /// Tracked runs (every job is one): list, show, metric histories.
    Runs {
        #[command(subcommand)]
        command: commands::tracking::RunsCommand,
    },
    /// Registered models and their versions; load and unload them for serving.
    Models {
        #[command(subcommand)]
        command: commands::tracking::ModelsCommand,
    },
    /// Datasets: import, process into new versions, list, show, head, stats.
    Dataset {
        #[command(subcommand)]
        command: commands::datasets::DatasetCommand,
    },
    /// Train a model with the built-in engine, as a job (or resume a run from its checkpoint).
    Train(commands::train::TrainArgs),
    /// Evaluate a registered model version on a dataset, as a job.
    Eval(commands::train::EvalArgs),
    /// Batch inference of a model version over a dataset into a new dataset, as a job.
    Predict(commands::train::PredictArgs),
    /// A compressed (8-bit) version of a model version, evaluated against it, as a job.
    Compress(commands::compress::CompressArgs),
    /// Workspaces: create and remove them, their members, fair-share weights and quotas.
    Workspaces {
        #[command(subcommand)]
        command: commands::workspaces::WorkspacesCommand,
    },
    /// Users and their roles (owners).
    Users {
        #[command(subcommand)]
        command: commands::users::UsersCommand,
    },
    /// Tune hyper-parameters: create a study from a study file and follow its trials.
    Tune(commands::studies::TuneArgs),
    /// Hyper-parameter studies: list, show with trials, stop, best (and register it).
    Studies {
        #[command(subcommand)]
        command: commands::studies::StudiesCommand,
    },
    /// Workspace secrets for jobs (`trainyard run --secret VAR=NAME`): list, set, remove.
    Secrets {
        #[command(subcommand)]
        command: commands::secrets::SecretsCommand,
    },
    /// Log in with a password (read from standard input); prints a token that expires.
    Login(commands::users::LoginArgs),
    /// Personal tokens: make, list, revoke.
    Tokens {
        #[command(subcommand)]
        command: commands::users::TokensCommand,
    },
    /// The audit trail: who changed what, and which calls were denied (workspace admins).
    Audit(commands::audit::AuditArgs),
    /// Commands run by executors, not by people.
    #[command(hide = true)]
    Task {
        #[command(subcommand)]
        command: TaskCommand,
    },
}

#[derive(Subcommand)]
enum TaskCommand {
    /// Supervise one attempt of a job (started by the local executor).
    Shim(ShimArgs),
    /// Start the workers of a gang-scheduled job on this machine (torchrun's variables),
    /// ending all of them when one fails (started by the local executor).
    Gang(GangArgs),
    /// Train with the built-in engine inside a job.
    Train {
        /// The training file as JSON, dataset pinned.
        #[arg(long)]
        config: String,
        #[arg(long)]
        resume_from: Option<String>,
        /// Keep the model in the run only (a study's trial).
        #[arg(long)]
        no_register: bool,
    },
    /// Evaluate a model version inside a job.
    Eval {
        #[arg(long)]
        model: String,
        #[arg(long)]
        dataset: String,
        #[arg(long)]
        split: Option<String>,
        #[arg(long, default_value = "split")]
        split_column: String,
        #[arg(long, default_value = "cpu")]
        device: String,
        #[arg(long, default_value_t = 3)]
        top_k: usize,
    },
    /// Compress a model version inside a job.
    Compress {
        #[arg(long)]
        model: String,
        #[arg(long)]
        eval: String,
        #[arg(long)]
        split: Option<String>,
        #[arg(long, default_value = "split")]
        split_column: String,
        #[arg(long)]
        max_accuracy_drop: f64,
        #[arg(long)]
        calibrate: Option<String>,
        #[arg(long)]
        calibration_split: Option<String>,
        #[arg(long, default_value_t = 512)]
        calibration_rows: usize,
        #[arg(long, default_value = "minmax")]
        method: String,
        #[arg(long)]
        per_channel: bool,
        #[arg(long)]
        reduce_range: bool,
        #[arg(long)]
        symmetric_activations: bool,
        #[arg(long)]
        exclude: Vec<String>,
        #[arg(long)]
        prune: Option<f64>,
        #[arg(long, conflicts_with_all = ["calibrate", "prune"])]
        fp16: bool,
        #[arg(long)]
        input: Option<String>,
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        structured: bool,
        #[arg(long)]
        global: bool,
    },
    /// Predict with a model version inside a job.
    Predict {
        #[arg(long)]
        model: String,
        #[arg(long)]
        dataset: String,
        #[arg(long)]
        output: String,
        #[arg(long, default_value = "cpu")]
        device: String,
    },
}

#[derive(Args)]
struct ShimArgs {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    attempt: u32,
    #[arg(long)]
    timeout_s: Option<u64>,
    #[arg(long, default_value_t = 10_000)]
    kill_grace_ms: u64,
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Run the command as this uid (with --gid and --groups); the supervisor keeps its own.
    #[arg(long, requires = "gid")]
    uid: Option<u32>,
    #[arg(long)]
    gid: Option<u32>,
    #[arg(long, value_delimiter = ',')]
    groups: Vec<u32>,
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Args)]
struct GangArgs {
    #[arg(long)]
    workers: u32,
    #[arg(long, default_value_t = 0)]
    gpus_per_worker: u32,
    #[arg(long, default_value_t = 10_000)]
    kill_grace_ms: u64,
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// Options every client command takes.
#[derive(Args, Clone, Debug)]
pub struct ClientArgs {
    /// The server to talk to.
    #[arg(
        long,
        env = "TRAINYARD_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub server: String,
    /// API token; defaults to the local server's `<data-dir>/admin-token`.
    #[arg(long, env = "TRAINYARD_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// The workspace calls act on (your token's when absent; a narrowed token's always).
    #[arg(long, env = "TRAINYARD_WORKSPACE", global = true)]
    pub workspace: Option<String>,
    /// `table` for people, `json` for scripts.
    #[arg(long, short = 'o', value_enum, default_value_t = output::Format::Table, global = true)]
    pub output: output::Format,
}

/// Whether `trainyard task KIND ARGS` takes `task`'s arguments: the server's check of a
/// built-in task at submit (`api::AppState::task_args`), the same parser its worker runs.
pub(crate) fn task_args_parse(task: &trainyard_core::BuiltinTask) -> Result<(), String> {
    let argv = ["trainyard", "task", task.kind.as_str()]
        .into_iter()
        .map(String::from)
        .chain(task.args.iter().cloned());
    match Cli::try_parse_from(argv) {
        Ok(cli) => task_settings(cli.command).map_err(|e| e.to_string()),
        Err(e) => {
            // clap's message up to its usage, on one line, without `error: ` or colour.
            let text = e.render().to_string();
            let said = text.split("Usage:").next().unwrap_or_default();
            let said = said.split_whitespace().collect::<Vec<_>>().join(" ");
            Err(format!(
                "`trainyard task {}` does not take these arguments: {}",
                task.kind.as_str(),
                said.trim_start_matches("error: ")
            ))
        }
    }
}

/// The checks a built-in task makes of its settings before it does anything (the same
/// functions), so a submission can be refused with them.
fn task_settings(command: Command) -> Result<(), trainyard_tasks::TaskError> {
    use trainyard_tasks::compress as c;
    let Command::Task {
        command:
            TaskCommand::Compress {
                prune,
                max_accuracy_drop,
                calibrate,
                calibration_split,
                calibration_rows,
                method,
                fp16,
                ..
            },
    } = command
    else {
        return Ok(());
    };
    match prune {
        Some(ratio) => c::check_ratio(ratio),
        None => {
            let scheme = compress_scheme(
                calibrate,
                calibration_split,
                calibration_rows,
                &method,
                fp16,
            )?;
            c::check_settings(max_accuracy_drop, &scheme)
        }
    }
}

/// The quantization scheme `trainyard task compress` was given (without `--prune`).
fn compress_scheme(
    calibrate: Option<String>,
    calibration_split: Option<String>,
    calibration_rows: usize,
    method: &str,
    fp16: bool,
) -> Result<trainyard_tasks::compress::Scheme, trainyard_tasks::TaskError> {
    use trainyard_tasks::compress::{parse_method, Scheme};
    Ok(match calibrate {
        None if fp16 => Scheme::Fp16,
        None => Scheme::Dynamic,
        Some(dataset) => Scheme::Static {
            dataset,
            split: calibration_split,
            rows: calibration_rows,
            method: parse_method(method)?,
        },
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The supervisor must stay single-threaded (it waits for signals synchronously), so it
    // runs before any async runtime exists.
    if let Command::Task {
        command: TaskCommand::Shim(args),
    } = cli.command
    {
        let code = trainyard_compute::shim::run(trainyard_compute::shim::ShimOptions {
            dir: args.dir,
            attempt: args.attempt,
            timeout: args.timeout_s.map(std::time::Duration::from_secs),
            kill_grace: std::time::Duration::from_millis(args.kill_grace_ms),
            working_dir: args.workdir,
            run_as: match (args.uid, args.gid) {
                (Some(uid), Some(gid)) => Some(trainyard_compute::shim::RunAs {
                    uid,
                    gid,
                    groups: args.groups,
                }),
                _ => None,
            },
            command: args.command,
        });
        return ExitCode::from(code as u8);
    }
    if let Command::Task {
        command: TaskCommand::Gang(args),
    } = cli.command
    {
        let code = trainyard_compute::gang::run(trainyard_compute::gang::GangOptions {
            workers: args.workers,
            gpus_per_worker: args.gpus_per_worker,
            kill_grace: std::time::Duration::from_millis(args.kill_grace_ms),
            command: args.command,
        });
        return ExitCode::from(code.clamp(0, 255) as u8);
    }
    if matches!(cli.command, Command::Up(_) | Command::Serve(_)) {
        trainyard_serve::memory::limit_malloc_arenas();
    } else if !matches!(cli.command, Command::Task { .. }) {
        // A client command piped into `head` should end quietly when the pipe closes, as
        // other Unix tools do, instead of panicking on a failed write (Rust ignores SIGPIPE).
        // Servers and tasks keep ignoring it: a closed socket or log must not kill them.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("trainyard: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Up(args) => server::up(*args).await.map(|()| 0),
            Command::Serve(args) => serving::serve(*args).await.map(|()| 0),
            Command::Infer(args) => commands::inference::infer(args).await,
            Command::Run(args) => commands::run::run(args).await,
            Command::Jobs { command } => commands::jobs::run(command).await,
            Command::Status(args) => commands::status::run(args).await,
            Command::Audit(args) => commands::audit::run(args).await,
            Command::Workspaces { command } => commands::workspaces::run(command).await,
            Command::Users { command } => commands::users::run_users(command).await,
            Command::Tokens { command } => commands::users::run_tokens(command).await,
            Command::Login(args) => commands::users::login(args).await,
            Command::Secrets { command } => commands::secrets::run(command).await,
            Command::Tune(args) => commands::studies::tune(args).await,
            Command::Studies { command } => commands::studies::run(command).await,
            Command::Runs { command } => commands::tracking::runs(command).await,
            Command::Models { command } => commands::tracking::models(command).await,
            Command::Dataset { command } => commands::datasets::run(command).await,
            Command::Train(args) => commands::train::train(args).await,
            Command::Eval(args) => commands::train::eval(args).await,
            Command::Predict(args) => commands::train::predict(args).await,
            Command::Compress(args) => commands::compress::compress(args).await,
            Command::Task { command } => Ok(match command {
                TaskCommand::Shim(_) | TaskCommand::Gang(_) => unreachable!("handled above"),
                TaskCommand::Train {
                    config,
                    resume_from,
                    no_register,
                } => {
                    trainyard_tasks::train::run(trainyard_tasks::train::TrainTask {
                        config,
                        resume_from,
                        register: !no_register,
                    })
                    .await?
                }
                TaskCommand::Eval {
                    model,
                    dataset,
                    split,
                    split_column,
                    device,
                    top_k,
                } => {
                    trainyard_tasks::evaluate::eval(trainyard_tasks::evaluate::EvalTask {
                        model,
                        dataset,
                        split,
                        split_column,
                        device,
                        top_k,
                    })
                    .await?
                }
                TaskCommand::Compress {
                    model,
                    eval,
                    split,
                    split_column,
                    max_accuracy_drop,
                    calibrate,
                    calibration_split,
                    calibration_rows,
                    method,
                    per_channel,
                    reduce_range,
                    symmetric_activations,
                    exclude,
                    prune,
                    fp16,
                    input,
                    target,
                    structured,
                    global,
                } => {
                    use trainyard_tasks::compress::{CompressTask, PruneTask};
                    if let Some(ratio) = prune {
                        trainyard_tasks::compress::prune(PruneTask {
                            model,
                            ratio,
                            structured,
                            global,
                            eval,
                            split,
                            split_column,
                        })
                        .await?
                    } else {
                        let scheme = compress_scheme(
                            calibrate,
                            calibration_split,
                            calibration_rows,
                            &method,
                            fp16,
                        )?;
                        trainyard_tasks::compress::compress(CompressTask {
                            model,
                            scheme,
                            options: trainyard_tasks::compress::Int8Options {
                                per_channel,
                                reduce_range,
                                symmetric_activations,
                                exclude: exclude.into_iter().collect(),
                            },
                            eval,
                            split,
                            split_column,
                            max_accuracy_drop,
                            columns: input.zip(target).map(|(input, target)| {
                                trainyard_tasks::compress::Columns { input, target }
                            }),
                        })
                        .await?
                    }
                }
                TaskCommand::Predict {
                    model,
                    dataset,
                    output,
                    device,
                } => {
                    trainyard_tasks::predict::predict(trainyard_tasks::predict::PredictTask {
                        model,
                        dataset,
                        output,
                        device,
                    })
                    .await?
                }
            }),
        }
    });
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("trainyard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trainyard_core::{BuiltinTask, TaskKind};

    fn task(kind: TaskKind, args: &[&str]) -> BuiltinTask {
        BuiltinTask {
            kind,
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn task_arguments_are_read_as_the_worker_reads_them() {
        let compress = [
            "--model",
            "m:1",
            "--eval",
            "d:1",
            "--max-accuracy-drop",
            "0.01",
        ];
        assert_eq!(
            task_args_parse(&task(TaskKind::Compress, &compress)),
            Ok(())
        );
        for (kind, args, says) in [
            (TaskKind::Compress, vec!["--bogus"], "--bogus"),
            (TaskKind::Compress, vec![], "--model"),
            (TaskKind::Eval, vec!["--model", "m:1"], "--dataset"),
            (TaskKind::Train, vec!["--config"], "--config"),
            (TaskKind::Predict, vec!["--help"], "trainyard task predict"),
        ] {
            let why = task_args_parse(&task(kind, &args)).unwrap_err();
            assert!(why.contains(says), "{args:?}: {why}");
            assert!(!why.contains('\u{1b}'), "no colour codes: {why:?}");
        }
        for (prune, ok) in [("0.5", true), ("1.5", false), ("0", false), ("NaN", false)] {
            let mut args = compress.to_vec();
            args.extend(["--prune", prune]);
            let got = task_args_parse(&task(TaskKind::Compress, &args));
            assert_eq!(got.is_ok(), ok, "--prune {prune}: {got:?}");
        }
        // The task's own checks of its settings, before it would fetch anything.
        let mut args = compress.to_vec();
        args[5] = "-1";
        assert!(task_args_parse(&task(TaskKind::Compress, &args)).is_err());
        for extra in [["--method", "bogus"], ["--calibration-rows", "0"]] {
            let mut args = compress.to_vec();
            args.extend(["--calibrate", "d:1"]);
            args.extend(extra);
            assert!(
                task_args_parse(&task(TaskKind::Compress, &args)).is_err(),
                "{extra:?}"
            );
        }
    }
}
