//! Inference serving in both shapes: inside `trainyard up` (models from the registry, `/v2`
//! on the main port) and standalone `trainyard serve --model-repository DIR`.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, ValueEnum};
use tokio::net::TcpListener;
use trainyard_api::{Auth, HttpMetrics, InferenceState};
use trainyard_serve::runtime::{find_library, OnnxRuntime};
use trainyard_serve::source::{ModelSource, RepositoryFolder};
use trainyard_serve::{ControlMode, ManagerOptions, ModelManager, RuntimeKind, Runtimes};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RuntimeChoice {
    /// ONNX Runtime when its library is found, else tract.
    Auto,
    Onnxruntime,
    Tract,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ControlChoice {
    /// A request for a model that is not loaded loads it.
    OnDemand,
    /// Only the load API (or --pin) loads models.
    Explicit,
}

/// Inference options shared by `up` and `serve`.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address of the gRPC inference service (inference.GRPCInferenceService).
    #[arg(long, env = "TRAINYARD_GRPC_LISTEN", default_value = "127.0.0.1:8081")]
    pub grpc_listen: String,
    /// Memory loaded models may hold, e.g. 2GiB; least recently used idle models are
    /// unloaded to stay within it [default: no limit].
    #[arg(long, env = "TRAINYARD_SERVE_MEMORY_LIMIT")]
    pub serve_memory_limit: Option<String>,
    /// A model that is loaded at start and never evicted (repeatable).
    #[arg(long = "pin", value_name = "MODEL")]
    pub pin: Vec<String>,
    /// Runtime for models whose config names none.
    #[arg(long, env = "TRAINYARD_SERVE_RUNTIME", value_enum, default_value_t = RuntimeChoice::Auto)]
    pub serve_runtime: RuntimeChoice,
    /// ONNX Runtime intra-op threads per instance (1 was fastest on 2 cores; instances and
    /// batching give the parallelism).
    #[arg(long, env = "TRAINYARD_SERVE_THREADS", default_value_t = 1)]
    pub serve_threads: usize,
    /// Largest inference request body (after decompression).
    #[arg(long, env = "TRAINYARD_SERVE_MAX_BODY", default_value = "64MiB")]
    pub serve_max_body: String,
    /// What a request for a model that is not loaded does.
    #[arg(long, value_enum, default_value_t = ControlChoice::OnDemand)]
    pub model_control_mode: ControlChoice,
    /// Let requests without a token infer and read model metadata (loading and unloading
    /// still need the token). For trusted networks and clients that cannot send a token
    /// (perf_analyzer over gRPC).
    #[arg(long, env = "TRAINYARD_ANONYMOUS_INFERENCE")]
    pub anonymous_inference: bool,
}

impl Default for ServeArgs {
    fn default() -> Self {
        Self {
            grpc_listen: "127.0.0.1:8081".into(),
            serve_memory_limit: None,
            pin: Vec::new(),
            serve_runtime: RuntimeChoice::Auto,
            serve_threads: 1,
            serve_max_body: "64MiB".into(),
            model_control_mode: ControlChoice::OnDemand,
            anonymous_inference: false,
        }
    }
}

/// Builds the model manager over `source` and loads the pinned models in the background.
pub fn manager(args: &ServeArgs, source: Arc<dyn ModelSource>) -> anyhow::Result<ModelManager> {
    let ort = match args.serve_runtime {
        RuntimeChoice::Tract => None,
        _ => match find_library() {
            Some(lib) => match OnnxRuntime::new(&lib, args.serve_threads) {
                Ok(o) => {
                    tracing::info!(library = %lib.display(), "ONNX Runtime loaded");
                    Some(o)
                }
                Err(e) => {
                    tracing::warn!("{e}; tract serves ONNX models instead");
                    None
                }
            },
            None => None,
        },
    };
    let preferred = match args.serve_runtime {
        RuntimeChoice::Auto => None,
        RuntimeChoice::Onnxruntime => Some(RuntimeKind::OnnxRuntime),
        RuntimeChoice::Tract => Some(RuntimeKind::Tract),
    };
    let runtimes = Runtimes::new(ort, preferred)?;
    let memory_limit = args
        .serve_memory_limit
        .as_deref()
        .map(trainyard_serve::memory::parse_size)
        .transpose()
        .context("--serve-memory-limit")?;
    let options = ManagerOptions {
        memory_limit,
        pinned: args.pin.iter().cloned().collect::<HashSet<_>>(),
        control: match args.model_control_mode {
            ControlChoice::OnDemand => ControlMode::OnDemand,
            ControlChoice::Explicit => ControlMode::Explicit,
        },
        ..ManagerOptions::default()
    };
    tracing::info!(
        source = %source.describe(),
        runtime = runtimes.default_kind().as_str(),
        memory_limit = ?memory_limit,
        "inference serving is on"
    );
    let manager = ModelManager::new(source, runtimes, options);
    let pinned = manager.clone();
    tokio::spawn(async move { pinned.load_pinned().await });
    Ok(manager)
}

pub fn max_body(args: &ServeArgs) -> anyhow::Result<usize> {
    Ok(
        trainyard_serve::memory::parse_size(&args.serve_max_body).context("--serve-max-body")?
            as usize,
    )
}

/// Starts the gRPC service; it stops when `stop` turns true.
pub async fn start_grpc(
    args: &ServeArgs,
    state: InferenceState,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(&args.grpc_listen)
        .await
        .with_context(|| format!("cannot listen for gRPC on {}", args.grpc_listen))?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) = trainyard_api::inference::grpc::serve(listener, state, shutdown).await {
            tracing::error!("the gRPC service stopped: {e}");
        }
    });
    Ok(address)
}

#[derive(Args, Debug)]
pub struct ServeCommand {
    /// A Triton-style model repository: DIR/<model>/<version>/model.onnx (+ DIR/<model>/config.json).
    #[arg(long, env = "TRAINYARD_MODEL_REPOSITORY")]
    pub model_repository: PathBuf,
    /// HTTP address (Open Inference Protocol REST, /metrics).
    #[arg(long, env = "TRAINYARD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// `trainyard serve`: only inference, from a folder; no database.
pub async fn serve(args: ServeCommand) -> anyhow::Result<()> {
    crate::server::init_logging();
    let token = match std::env::var("TRAINYARD_ADMIN_TOKEN") {
        Ok(t) if t.trim().len() >= 16 => t.trim().to_string(),
        Ok(_) => anyhow::bail!("TRAINYARD_ADMIN_TOKEN must be at least 16 characters"),
        Err(_) => {
            let t = trainyard_store::generate_token();
            // Printed once, for the operator to hand to clients.
            println!("admin token: {t}");
            t
        }
    };
    let source = Arc::new(RepositoryFolder::new(&args.model_repository)?);
    let manager = manager(&args.serve, source)?;
    let state = InferenceState {
        manager: manager.clone(),
        auth: Auth::fixed(&token),
        max_body: max_body(&args.serve)?,
        anonymous_inference: args.serve.anonymous_inference,
    };
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let grpc = start_grpc(&args.serve, state.clone(), stop_rx.clone()).await?;
    tracing::info!(http = %address, grpc = %grpc, "trainyard serve is up on http://{address}");
    tokio::spawn(async move {
        crate::server::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let metrics = Arc::new(HttpMetrics::for_serving(manager.metrics()));
    let mut graceful = stop_rx;
    trainyard_api::serve(
        listener,
        trainyard_api::inference_router(state, metrics),
        async move {
            let _ = graceful.wait_for(|s| *s).await;
        },
    )
    .await?;
    Ok(())
}
