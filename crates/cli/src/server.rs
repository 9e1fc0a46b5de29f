//! `trainyard up`: open storage, make sure an admin token exists, reconcile jobs, serve.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;
use trainyard_api::{AppState, Auth, HttpMetrics, InferenceState};
use trainyard_background::Background;
use trainyard_compute::{
    build_pools, detect_capacity, CapacityOverrides, JobTracking, JobUser, Leadership,
    LeaseOptions, LocalExecutor, LocalOptions, PoolContext, Scheduler, SchedulerOptions,
};
use trainyard_core::time::now_ms;
use trainyard_core::{new_id, DEFAULT_WORKSPACE};
use trainyard_serve::source::RegistrySource;
use trainyard_store::{generate_token, redact_url, NewToken, SecretKey, Store, UserRow};
use trainyard_tracking::Tracking;

use crate::config::{ServerConfig, UpArgs};

/// How long open requests get to finish after SIGTERM.
const DRAIN: Duration = Duration::from_secs(5);

pub fn init_logging() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // `TRAINYARD_LOG_FORMAT=json`: one JSON object per line, for log shippers.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("TRAINYARD_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    init_logging();
    // Nobody but root may read this process's memory or environment (`/proc/<pid>/environ`
    // holds TRAINYARD_ADMIN_TOKEN and database passwords), not even jobs of the same user.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    let config = args.resolve()?;
    if let Some(tls) = &config.tls {
        check_certificate_names(tls, &config.listen, config.public_url.as_deref())?;
    }
    let serve_args = config.serve.clone();
    let job_user = JobUser::resolve(config.job_user.as_deref())?;
    if job_user.is_server_user() {
        tracing::warn!(
            user = %job_user.name,
            "jobs run as the server's own user and can read its secrets (the data directory, \
             the admin token); start the server as root, or pass --job-user NAME, to run them \
             as another account"
        );
    } else {
        tracing::info!(
            user = %job_user.name,
            uid = job_user.uid,
            per_job_uids = job_user.per_job_uids,
            "jobs run as {}{}",
            job_user.name,
            if job_user.per_job_uids { " (its group, a uid of their own each)" } else { "" }
        );
    }
    // The data directory (database, blobs, spools, admin token) is the server's alone.
    std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot restrict {}", config.data_dir.display()))?;
    let store = Store::open(&config.database_url, &config.blobs_url).await?;
    let blobs = store.blobs.clone();
    let swept = tokio::task::spawn_blocking(move || blobs.sweep_staged_uploads()).await?;
    match swept {
        Ok(0) => {}
        Ok(n) => tracing::info!(files = n, "removed uploads a crash left unfinished"),
        Err(e) => tracing::warn!(error = %e, "cannot sweep unfinished uploads"),
    }
    match store.blobs.sweep_stale_shard_uploads().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(uploads = n, "removed dataset shard uploads a crash left"),
        Err(e) => tracing::warn!(error = %e, "cannot sweep stale shard uploads"),
    }
    ensure_admin_token(&store, &config).await?;
    let secrets_key = secrets_key(&config)?;

    let capacity = detect_capacity(&CapacityOverrides {
        cpus: config.cpus,
        memory_mb: config.memory_mb,
        gpus: config.gpus,
    });
    let program = std::env::current_exe().context("cannot find the trainyard binary")?;
    let tracking = Tracking::new(store.db.clone(), store.blobs.clone());
    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener.local_addr()?;
    let public_url = config
        .public_url
        .clone()
        .unwrap_or_else(|| local_url(address, config.tls.is_some()));
    let executor = LocalExecutor::new(
        LocalOptions {
            root: config.data_dir.join("executor"),
            program: program.clone(),
            kill_grace: Duration::from_secs_f64(config.kill_grace_s),
            job_user,
            capacity: capacity.clone(),
        },
        store.blobs.clone(),
        tracking.clone(),
    )?;
    let options = SchedulerOptions {
        backfill_window: Duration::from_secs_f64(config.backfill_window_s),
    };
    // Every background loop of the server runs under this, so none ends or panics unseen
    // (the scheduler loop's end is logged as an error and `/readyz` answers 503).
    let background = Background::new();
    let pools = build_pools(
        &config.pools,
        PoolContext {
            local: Arc::new(executor),
            db: store.db.clone(),
            blobs: store.blobs.clone(),
            tracking: tracking.clone(),
            data_dir: config.data_dir.clone(),
            program,
            server_url: public_url.clone(),
        },
    )
    .await?;
    // One server schedules at a time (the others serve the API and take over if it
    // stops); SQLite allows only one server at all.
    let leadership = Leadership::start(
        store.db.clone(),
        LeaseOptions::new(public_url.clone(), store.db.is_sqlite()),
        &background,
    )
    .await?;
    let (scheduler, _scheduler_loops) = Scheduler::start_pools(
        store.clone(),
        pools,
        JobTracking {
            tracking: tracking.clone(),
            tracking_uri: public_url.clone(),
            ca_cert: config.tls_ca.as_ref().map(|p| p.display().to_string()),
            secrets_key: Some(secrets_key.clone()),
        },
        options,
        &background,
        leadership.clone(),
    )
    .await?;
    // Studies with a template run their trials as jobs: one controller, on the server
    // that schedules.
    let studies = trainyard_compute::studies::Studies::new(scheduler.clone());
    background.spawn_restarting(
        "study-controller",
        trainyard_background::Backoff::UNTIL_DONE,
        move || trainyard_compute::studies::run_controller(studies.clone()),
    );
    let auth = Auth::new(store.db.clone());
    let models = crate::serving::manager(
        &serve_args,
        Arc::new(RegistrySource::new(tracking.clone())),
        &background,
    )?;
    let inference = InferenceState {
        manager: models.clone(),
        auth: auth.clone(),
        max_body: serve_args.max_body,
        anonymous_inference: serve_args.anonymous_inference,
    };
    let audit = trainyard_api::AuditLog::start(store.db.clone());
    if let Some(keep) = config.audit_retention {
        let db = store.db.clone();
        background.spawn_restarting(
            "audit-retention",
            trainyard_background::Backoff::UNTIL_DONE,
            move || trainyard_api::AuditLog::keep_for(db.clone(), keep),
        );
    }
    let state = AppState {
        audit: audit.clone(),
        metrics: Arc::new(HttpMetrics::new(
            &scheduler,
            Some(models.metrics()),
            &background,
        )),
        auth,
        studies: trainyard_compute::studies::Studies::new(scheduler.clone()),
        scheduler,
        datasets: trainyard_datasets::Datasets::new(store.db.clone(), store.blobs.clone()),
        secrets_key: Some(secrets_key),
        storage: Default::default(),
        tracking,
        task_args: Some(Arc::new(crate::task_args_parse)),
        passwords: Default::default(),
    };
    tracing::info!(
        listen = %address,
        data_dir = %config.data_dir.display(),
        database = %redact_url(&config.database_url),
        blobs = %config.blobs_url,
        cpus = capacity.cpus_milli as f64 / 1000.0,
        memory_mb = capacity.memory_mb,
        gpus = capacity.gpus.len(),
        "trainyard is up on {}", public_url.clone()
    );
    // On SIGTERM: stop accepting, let open requests finish for a moment, then close the
    // rest (log streams that follow a job would otherwise hold the server open).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let grpc = crate::serving::start_grpc(
        &serve_args,
        inference.clone(),
        stop_rx.clone(),
        &background,
        config.tls.clone(),
    )
    .await?;
    tracing::info!(grpc = %grpc, "inference gRPC on {grpc}");
    if let Some((address, workspace)) = &config.optuna {
        if store.db.workspace_exists(workspace).await? {
            let listener = TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for Optuna on {address}"))?;
            let bound = listener.local_addr()?;
            let storage =
                trainyard_compute::studies::optuna::OptunaStorage::new(&state.scheduler, workspace);
            let mut stop = stop_rx.clone();
            background.spawn_task("optuna-grpc", async move {
                let shutdown = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) = trainyard_api::optuna::serve(listener, storage, shutdown).await {
                    tracing::error!("the Optuna storage service stopped: {e}");
                }
            });
            tracing::warn!(optuna = %bound, workspace = %workspace,
                "Optuna's storage protocol on {bound} for workspace `{workspace}`: it takes no credentials");
        } else {
            anyhow::bail!("optuna_workspace `{workspace}` does not exist: create it first");
        }
    }
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let mut graceful = stop_rx.clone();
    let mut deadline = stop_rx;
    tokio::select! {
        served = trainyard_api::serve(listener, trainyard_api::router(state, Some(inference)), async move {
            let _ = graceful.wait_for(|stop| *stop).await;
        }, config.tls.as_ref()) => served?,
        _ = async move {
            let _ = deadline.wait_for(|stop| *stop).await;
            tokio::time::sleep(DRAIN).await;
        } => tracing::warn!("requests still open after {DRAIN:?} (followed logs?) are closed"),
    }
    tracing::info!("stopped accepting requests; running jobs keep running and are re-adopted at the next start");
    if !audit.flush(Duration::from_secs(10)).await {
        tracing::error!("audit events not yet written after 10 s are lost");
    }
    // Another server (or this one restarted) need not wait for the lease to expire.
    if let Some(fence) = leadership.current() {
        if let Err(e) = store.db.release_lease(&fence).await {
            tracing::warn!(error = %e, "cannot give the scheduler lease up; it expires by itself");
        }
    }
    store.db.close().await;
    Ok(())
}

pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
}

/// The first start creates the first owner, `admin`, and a token for it (or takes
/// `TRAINYARD_ADMIN_TOKEN`), stores only the token's hash, and writes the token to
/// `<data-dir>/admin-token` (mode 0600) for the local CLI.
async fn ensure_admin_token(store: &Store, config: &ServerConfig) -> anyhow::Result<()> {
    if let Ok(token) = std::env::var("TRAINYARD_ADMIN_TOKEN") {
        if token.trim().len() < 16 {
            anyhow::bail!("TRAINYARD_ADMIN_TOKEN must be at least 16 characters");
        }
        let (id, Some(owner)) = (new_id(), first_owner(store).await?) else {
            return Ok(());
        };
        let new = owner_token(&id, "admin (TRAINYARD_ADMIN_TOKEN)", &owner);
        if store.db.insert_token(&new, token.trim()).await? {
            tracing::info!("admin token taken from TRAINYARD_ADMIN_TOKEN");
        }
        return Ok(());
    }
    let path = config.data_dir.join("admin-token");
    if store.db.count_owner_tokens().await? > 0 {
        if !path.exists() {
            tracing::warn!(
                "an admin token exists but {} is gone; use the token you saved or TRAINYARD_ADMIN_TOKEN",
                path.display()
            );
        }
        return Ok(());
    }
    let (id, Some(owner)) = (new_id(), first_owner(store).await?) else {
        return Ok(());
    };
    let token = generate_token();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(format!("{token}\n").as_bytes())?;
    file.sync_all()?;
    store
        .db
        .insert_token(&owner_token(&id, "admin", &owner), &token)
        .await?;
    tracing::info!(
        "created an admin token and wrote it to {} (mode 0600)",
        path.display()
    );
    Ok(())
}

/// The key workspace secrets are sealed with: `TRAINYARD_SECRETS_KEY` (64 hex digits or
/// base64 of 32 bytes), else the file `TRAINYARD_SECRETS_KEY_FILE` names, else
/// `<data-dir>/secrets.key`, made (mode 0600) on the first start. Servers sharing a
/// database must share the key.
fn secrets_key(config: &ServerConfig) -> anyhow::Result<SecretKey> {
    if let Ok(text) = std::env::var("TRAINYARD_SECRETS_KEY") {
        return SecretKey::parse(&text).context("TRAINYARD_SECRETS_KEY");
    }
    let path = match std::env::var_os("TRAINYARD_SECRETS_KEY_FILE") {
        Some(p) => std::path::PathBuf::from(p),
        None => {
            let path = config.data_dir.join("secrets.key");
            if !path.exists() {
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                file.write_all(format!("{}\n", SecretKey::generate()).as_bytes())?;
                file.sync_all()?;
                tracing::info!("made a secrets key in {} (mode 0600)", path.display());
            }
            path
        }
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read the secrets key {}", path.display()))?;
    SecretKey::parse(&text).with_context(|| format!("the secrets key in {}", path.display()))
}

/// A token of the owner `admin` that acts in `default` unless a call names another.
fn owner_token<'a>(id: &'a str, name: &'a str, owner: &'a UserRow) -> NewToken<'a> {
    NewToken {
        id,
        name,
        workspace: DEFAULT_WORKSPACE,
        user_id: Some(owner.id.as_str()),
        narrowed: false,
        read_only: false,
        expires_at_ms: None,
        created_at_ms: now_ms(),
    }
}

/// The owner `admin`, made when there is no owner at all (the first start); `None` when it
/// was removed and other owners remain.
async fn first_owner(store: &Store) -> anyhow::Result<Option<UserRow>> {
    if let Some(user) = store.db.find_user("admin").await? {
        if user.owner {
            return Ok(Some(user));
        }
        anyhow::bail!(
            "the user `admin` is not an owner: the admin token belongs to the owner `admin`"
        );
    }
    // Removed on purpose while other owners remain: not brought back.
    if store.db.count_owners().await? > 0 {
        tracing::warn!(
            "the owner `admin` was removed; no admin token is taken or made (use another owner's)"
        );
        return Ok(None);
    }
    store
        .db
        .create_user(&new_id(), "admin", true, None, now_ms())
        .await?;
    Ok(store.db.find_user("admin").await?.filter(|u| u.owner))
}

/// How a job on this machine reaches the server: a wildcard listen address is reached
/// through loopback.
fn local_url(address: std::net::SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}:{}", local_host(address.ip()), address.port())
}

/// The host in [`local_url`]: loopback for an unspecified address, IPv6 in brackets.
fn local_host(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) if v4.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(v6) if v6.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        ip => ip.to_string(),
    }
}

/// Jobs reach the server by its public URL (its listen address when none is given) and
/// verify its certificate: one that does not name that host fails every job's first call,
/// far from the cause, so the start stops and says so — before anything is created. A
/// public URL that is given may point at a proxy that ends TLS with a certificate of its
/// own, so there a mismatch is only a warning.
fn check_certificate_names(
    tls: &trainyard_api::TlsIdentity,
    listen: &str,
    public_url: Option<&str>,
) -> anyhow::Result<()> {
    if let Some(url) = public_url {
        let host = reqwest::Url::parse(url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        if let Err(why) = tls.check_names(&host) {
            tracing::warn!(
                public_url = url,
                "{why}: jobs that reach this server by its public URL directly will fail to \
                 verify it (fine when a proxy there ends TLS with a certificate of its own)"
            );
        }
        return Ok(());
    }
    let host = match listen.parse::<std::net::SocketAddr>() {
        Ok(address) => local_host(address.ip()),
        Err(_) => listen
            .rsplit_once(':')
            .map_or(listen, |(host, _)| host)
            .to_string(),
    };
    tls.check_names(&host).map_err(|why| {
        anyhow::anyhow!(
            "jobs reach this server at `{host}` (its listen address), but {why}: set \
             --public-url (public_url) to https://NAME:PORT with a name the certificate holds, \
             or listen on an address it names"
        )
    })
}
