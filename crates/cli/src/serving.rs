//! Inference serving in both shapes: inside `trainyard up` (models from the registry, `/v2`
//! on the main port) and standalone `trainyard serve --model-repository DIR`.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, ValueEnum};
use tokio::net::TcpListener;
use trainyard_api::{Auth, HttpMetrics, InferenceState};
use trainyard_background::Background;
use trainyard_serve::runtime::{find_library, OnnxRuntime};
use trainyard_serve::source::{ModelSource, RepositoryFolder};
use trainyard_serve::{ControlMode, ManagerOptions, ModelManager, RuntimeKind, Runtimes};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuntimeChoice {
    /// ONNX Runtime when its library is found, else tract.
    Auto,
    Onnxruntime,
    Tract,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControlChoice {
    /// A request for a model that is not loaded loads it.
    OnDemand,
    /// Only the load API (or --pin) loads models.
    Explicit,
}

/// Inference options shared by `up` and `serve`: one struct read twice, from flags and
/// environment (clap) and from `[serve]` in `trainyard.toml` (serde, where the names drop
/// `serve_`). Each is optional here: what neither gives comes from
/// [`ServeSettings::default`], the one place the defaults are written.
#[derive(Args, Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeArgs {
    /// Address of the gRPC inference service (inference.GRPCInferenceService) [default: 127.0.0.1:8081].
    #[arg(long, env = "TRAINYARD_GRPC_LISTEN")]
    pub grpc_listen: Option<String>,
    /// Memory loaded models may hold, e.g. 2GiB; least recently used idle models are
    /// unloaded to stay within it [default: no limit].
    #[arg(long, env = "TRAINYARD_SERVE_MEMORY_LIMIT")]
    #[serde(rename = "memory_limit")]
    pub serve_memory_limit: Option<String>,
    /// A model that is loaded at start and never evicted (repeatable).
    #[arg(long = "pin", value_name = "MODEL")]
    pub pin: Vec<String>,
    /// Runtime for models whose config names none [default: auto].
    #[arg(long, env = "TRAINYARD_SERVE_RUNTIME", value_enum)]
    #[serde(rename = "runtime")]
    pub serve_runtime: Option<RuntimeChoice>,
    /// ONNX Runtime intra-op threads per instance (1 was fastest on 2 cores; instances and
    /// batching give the parallelism) [default: 1].
    #[arg(long, env = "TRAINYARD_SERVE_THREADS")]
    #[serde(rename = "threads")]
    pub serve_threads: Option<usize>,
    /// Largest inference request body (after decompression) [default: 64MiB].
    #[arg(long, env = "TRAINYARD_SERVE_MAX_BODY")]
    #[serde(rename = "max_body")]
    pub serve_max_body: Option<String>,
    /// What a request for a model that is not loaded does [default: on-demand].
    #[arg(long, value_enum)]
    pub model_control_mode: Option<ControlChoice>,
    /// Let requests without a token infer and read model metadata (loading and unloading
    /// still need the token). For trusted networks and clients that cannot send a token
    /// (perf_analyzer over gRPC).
    #[arg(long, env = "TRAINYARD_ANONYMOUS_INFERENCE")]
    pub anonymous_inference: bool,
}

/// The serving options in force.
#[derive(Debug, Clone, PartialEq)]
pub struct ServeSettings {
    pub grpc_listen: String,
    /// Bytes; `None` = no limit.
    pub memory_limit: Option<u64>,
    pub pin: Vec<String>,
    pub runtime: RuntimeChoice,
    pub threads: usize,
    pub max_body: usize,
    pub control: ControlChoice,
    pub anonymous_inference: bool,
}

impl Default for ServeSettings {
    fn default() -> Self {
        Self {
            grpc_listen: "127.0.0.1:8081".into(),
            memory_limit: None,
            pin: Vec::new(),
            runtime: RuntimeChoice::Auto,
            threads: 1,
            max_body: 64 << 20,
            control: ControlChoice::OnDemand,
            anonymous_inference: false,
        }
    }
}

impl ServeArgs {
    /// Flags and environment (`self`) over the file's `[serve]`, over the defaults.
    pub fn resolve(self, file: &ServeArgs) -> anyhow::Result<ServeSettings> {
        let d = ServeSettings::default();
        let size = |flag: Option<String>, file: &Option<String>, name: &str| {
            flag.or_else(|| file.clone())
                .map(|s| trainyard_serve::memory::parse_size(&s).with_context(|| name.to_string()))
                .transpose()
        };
        let threads = self
            .serve_threads
            .or(file.serve_threads)
            .unwrap_or(d.threads);
        if threads == 0 {
            anyhow::bail!("serve threads must be at least 1");
        }
        Ok(ServeSettings {
            grpc_listen: self
                .grpc_listen
                .or_else(|| file.grpc_listen.clone())
                .unwrap_or(d.grpc_listen),
            memory_limit: size(
                self.serve_memory_limit,
                &file.serve_memory_limit,
                "serve memory limit",
            )?,
            pin: if self.pin.is_empty() {
                file.pin.clone()
            } else {
                self.pin
            },
            runtime: self
                .serve_runtime
                .or(file.serve_runtime)
                .unwrap_or(d.runtime),
            threads,
            max_body: size(self.serve_max_body, &file.serve_max_body, "serve max body")?
                .map(|n| n as usize)
                .unwrap_or(d.max_body),
            control: self
                .model_control_mode
                .or(file.model_control_mode)
                .unwrap_or(d.control),
            anonymous_inference: self.anonymous_inference
                || file.anonymous_inference
                || d.anonymous_inference,
        })
    }
}

/// Builds the model manager over `source` and loads the pinned models in the background.
pub fn manager(
    args: &ServeSettings,
    source: Arc<dyn ModelSource>,
    background: &Background,
) -> anyhow::Result<ModelManager> {
    let ort = match args.runtime {
        RuntimeChoice::Tract => None,
        _ => match find_library() {
            Some(lib) => match OnnxRuntime::new(&lib, args.threads) {
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
    let preferred = match args.runtime {
        RuntimeChoice::Auto => None,
        RuntimeChoice::Onnxruntime => Some(RuntimeKind::OnnxRuntime),
        RuntimeChoice::Tract => Some(RuntimeKind::Tract),
    };
    let runtimes = Runtimes::new(ort, preferred)?;
    let memory_limit = args.memory_limit;
    let options = ManagerOptions {
        memory_limit,
        pinned: args.pin.iter().cloned().collect::<HashSet<_>>(),
        control: match args.control {
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
    background.spawn_task("model-pin", async move { pinned.load_pinned().await });
    // A version deleted from the source (or made again under its name) gives back the
    // memory of its loaded copy within seconds, requests or not.
    let follower = manager.clone();
    background.spawn_restarting(
        "model-source-follow",
        trainyard_background::Backoff::UNTIL_DONE,
        move || {
            let follower = follower.clone();
            async move { follower.follow_source().await }
        },
    );
    Ok(manager)
}

/// Starts the gRPC service; it stops when `stop` turns true.
pub async fn start_grpc(
    args: &ServeSettings,
    state: InferenceState,
    mut stop: tokio::sync::watch::Receiver<bool>,
    background: &Background,
    tls: Option<trainyard_api::TlsIdentity>,
) -> anyhow::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(&args.grpc_listen)
        .await
        .with_context(|| format!("cannot listen for gRPC on {}", args.grpc_listen))?;
    let address = listener.local_addr()?;
    background.spawn_task("inference-grpc", async move {
        let shutdown = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        if let Err(e) =
            trainyard_api::inference::grpc::serve(listener, state, shutdown, tls.as_ref()).await
        {
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
    /// TLS certificate chain (PEM) for the HTTP and gRPC listeners (with `--tls-key`).
    #[arg(long, env = "TRAINYARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "TRAINYARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
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
    let settings = args.serve.resolve(&ServeArgs::default())?;
    let source = Arc::new(RepositoryFolder::new(&args.model_repository)?);
    let background = Background::new();
    let manager = manager(&settings, source, &background)?;
    let state = InferenceState {
        manager: manager.clone(),
        auth: Auth::fixed(&token),
        max_body: settings.max_body,
        anonymous_inference: settings.anonymous_inference,
    };
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(trainyard_api::TlsIdentity::load(cert, key)?),
        _ => None,
    };
    let grpc = start_grpc(
        &settings,
        state.clone(),
        stop_rx.clone(),
        &background,
        tls.clone(),
    )
    .await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(http = %address, grpc = %grpc, "trainyard serve is up on {scheme}://{address}");
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
        tls.as_ref(),
    )
    .await?;
    Ok(())
}
