//! Server configuration: flags > environment > `trainyard.toml` > defaults.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use serde::Deserialize;

/// Every server setting, once: clap reads it from flags and environment, serde from
/// `trainyard.toml` (unknown keys are errors), and [`UpArgs::resolve`] lays the flags over
/// the file and the defaults (written there and in `ServeSettings::default`, nowhere else).
#[derive(Args, Debug, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "TRAINYARD_LISTEN")]
    pub listen: Option<String>,
    /// Where local state lives: SQLite database, blobs, job spools, admin token [default: ./trainyard-data].
    #[arg(long, env = "TRAINYARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Metadata database: postgres://USER:PASSWORD@HOST:PORT/DB [default: SQLite in the data dir].
    #[arg(
        long = "database",
        env = "TRAINYARD_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Blob store: s3://BUCKET/PREFIX (AWS_* variables; AWS_ENDPOINT_URL for other S3 APIs) [default: the data dir's blobs/].
    #[arg(long = "blobs", env = "TRAINYARD_BLOBS_URL")]
    pub blobs_url: Option<String>,
    /// Configuration file [default: ./trainyard.toml when present].
    #[arg(long, env = "TRAINYARD_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// CPUs offered to jobs [default: all cores].
    #[arg(long, env = "TRAINYARD_CPUS")]
    pub cpus: Option<f64>,
    /// Memory offered to jobs, in MB [default: all memory].
    #[arg(long, env = "TRAINYARD_MEMORY_MB")]
    pub memory_mb: Option<u64>,
    /// GPUs offered to jobs; a number here declares that many (fake ones too, for tests) [default: nvidia-smi].
    #[arg(long, env = "TRAINYARD_GPUS")]
    pub gpus: Option<u32>,
    /// Seconds a cancelled or timed-out job gets between SIGTERM and SIGKILL [default: 10].
    #[arg(long, env = "TRAINYARD_KILL_GRACE_S")]
    pub kill_grace_s: Option<f64>,
    /// Seconds a queued job that does not fit lets smaller jobs behind it start first; after
    /// that, jobs behind it wait until it runs, so it cannot starve [default: 120].
    #[arg(long, env = "TRAINYARD_BACKFILL_WINDOW_S")]
    pub backfill_window_s: Option<f64>,
    /// Account jobs run as [default: `trainyard-job` (created if missing) when the server runs
    /// as root; else the server's own user, which lets jobs read the server's secrets].
    #[arg(long, env = "TRAINYARD_JOB_USER")]
    pub job_user: Option<String>,
    /// TLS certificate chain (PEM, leaf first) for the HTTP and gRPC listeners; with
    /// `--tls-key`, both serve TLS only.
    #[arg(long, env = "TRAINYARD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, env = "TRAINYARD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// CA bundle (PEM) that jobs trust the server's certificate with, when a private CA
    /// signed it (jobs get `TRAINYARD_CA_CERT` and `MLFLOW_TRACKING_SERVER_CERT_PATH`).
    #[arg(long, env = "TRAINYARD_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// The URL jobs on this machine, the other servers on the same database, and cluster
    /// pools (unless a pool sets `server_url`) reach this server at; with TLS, a name the
    /// certificate covers [default: http(s)://<listen address>, loopback for 0.0.0.0].
    #[arg(long, env = "TRAINYARD_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Days the audit trail keeps an event; 0 keeps every event for ever [default: 90].
    #[arg(long, env = "TRAINYARD_AUDIT_RETENTION_DAYS")]
    pub audit_retention_days: Option<u32>,
    /// Serve Optuna's gRPC storage protocol here (`optuna.storages.GrpcStorageProxy`). Off
    /// unless given. Optuna's client sends no credentials: anyone who reaches the address
    /// can read and write the Optuna studies of `optuna_workspace`, so a loopback address
    /// is required unless `optuna_allow_remote` is set.
    #[arg(long, env = "TRAINYARD_OPTUNA_LISTEN")]
    pub optuna_listen: Option<String>,
    /// The one workspace the Optuna endpoint acts in [default: default].
    #[arg(long, env = "TRAINYARD_OPTUNA_WORKSPACE")]
    pub optuna_workspace: Option<String>,
    /// Let `optuna_listen` be a non-loopback address (for a network you trust).
    #[arg(long, env = "TRAINYARD_OPTUNA_ALLOW_REMOTE")]
    pub optuna_allow_remote: Option<bool>,
    /// Inference options (`[serve]` in the file).
    #[command(flatten)]
    pub serve: crate::serving::ServeArgs,
    /// Resource pools (`[[pools]]`, in the file only): where jobs run.
    #[arg(skip)]
    pub pools: Vec<trainyard_compute::PoolSettings>,
}

/// The resolved configuration the server runs with.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: String,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub blobs_url: String,
    pub cpus: Option<f64>,
    pub memory_mb: Option<u64>,
    pub gpus: Option<u32>,
    pub kill_grace_s: f64,
    pub backfill_window_s: f64,
    pub job_user: Option<String>,
    /// The listeners' certificate and key, read and checked.
    pub tls: Option<trainyard_api::TlsIdentity>,
    /// What jobs trust that certificate with.
    pub tls_ca: Option<PathBuf>,
    /// See `UpArgs::public_url`.
    pub public_url: Option<String>,
    /// How long audit events are kept (`None`: for ever).
    pub audit_retention: Option<std::time::Duration>,
    pub serve: crate::serving::ServeSettings,
    pub pools: Vec<trainyard_compute::PoolSettings>,
    /// Where Optuna's storage protocol is served, and for which workspace.
    pub optuna: Option<(std::net::SocketAddr, String)>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATA_DIR: &str = "trainyard-data";

impl UpArgs {
    pub fn resolve(self) -> anyhow::Result<ServerConfig> {
        let file = match &self.config {
            Some(path) => read_file_config(path)?,
            None if Path::new("trainyard.toml").exists() => {
                read_file_config(Path::new("trainyard.toml"))?
            }
            None => UpArgs::default(),
        };
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
        let data_dir = data_dir
            .canonicalize()
            .with_context(|| format!("cannot resolve {}", data_dir.display()))?;
        let database_url = self
            .database_url
            .or(file.database_url)
            .unwrap_or_else(|| trainyard_store::Db::sqlite_url(&data_dir.join("trainyard.db")));
        let blobs_url = self
            .blobs_url
            .or(file.blobs_url)
            .unwrap_or_else(|| format!("file://{}", data_dir.join("blobs").display()));
        let kill_grace_s = self.kill_grace_s.or(file.kill_grace_s).unwrap_or(10.0);
        if !(0.0..=3600.0).contains(&kill_grace_s) {
            bail!("kill_grace_s must be between 0 and 3600 seconds");
        }
        let backfill_window_s = self
            .backfill_window_s
            .or(file.backfill_window_s)
            .unwrap_or(120.0);
        if !(0.0..=86_400.0).contains(&backfill_window_s) {
            bail!("backfill_window_s must be between 0 and 86400 seconds");
        }
        let cpus = self.cpus.or(file.cpus);
        if let Some(c) = cpus {
            if !c.is_finite() || c <= 0.0 {
                bail!("cpus must be a positive number, got {c}");
            }
        }
        let tls = match (
            self.tls_cert.or(file.tls_cert),
            self.tls_key.or(file.tls_key),
        ) {
            (Some(cert), Some(key)) => Some(trainyard_api::TlsIdentity::load(&cert, &key)?),
            (None, None) => None,
            _ => bail!("tls_cert and tls_key go together: give both or neither"),
        };
        let tls_ca = self.tls_ca.or(file.tls_ca);
        if let Some(ca) = &tls_ca {
            if tls.is_none() {
                bail!("tls_ca is what jobs trust the server's certificate with: it needs tls_cert and tls_key");
            }
            std::fs::metadata(ca)
                .with_context(|| format!("cannot read the TLS CA bundle {}", ca.display()))?;
        }
        // Jobs get the path and run elsewhere: it must not depend on this working directory.
        let tls_ca = tls_ca
            .map(|ca| {
                ca.canonicalize()
                    .with_context(|| format!("cannot resolve {}", ca.display()))
            })
            .transpose()?;
        let public_url = self.public_url.or(file.public_url);
        if let Some(url) = &public_url {
            let parsed = reqwest::Url::parse(url)
                .with_context(|| format!("public_url `{url}` is not a URL"))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
                bail!("public_url `{url}` must be an http:// or https:// URL with a host");
            }
        }
        let audit_retention_days = self
            .audit_retention_days
            .or(file.audit_retention_days)
            .unwrap_or(90);
        if audit_retention_days > 36_500 {
            bail!("audit_retention_days must be at most 36500 (0 keeps events for ever)");
        }
        let optuna = match self.optuna_listen.or(file.optuna_listen) {
            None => None,
            Some(address) => {
                let parsed: std::net::SocketAddr = address.parse().with_context(|| {
                    format!("optuna_listen `{address}` is not an IP address and port")
                })?;
                let remote = self
                    .optuna_allow_remote
                    .or(file.optuna_allow_remote)
                    .unwrap_or(false);
                if !parsed.ip().is_loopback() && !remote {
                    bail!(
                        "optuna_listen `{address}` is not a loopback address: Optuna's client sends no \
                         credentials, so anyone reaching it could use the workspace's Optuna studies; \
                         set optuna_allow_remote to serve it on a network you trust"
                    );
                }
                let workspace = self
                    .optuna_workspace
                    .or(file.optuna_workspace)
                    .unwrap_or_else(|| "default".into());
                Some((parsed, workspace))
            }
        };
        Ok(ServerConfig {
            optuna,
            listen: self
                .listen
                .or(file.listen)
                .unwrap_or_else(|| DEFAULT_LISTEN.into()),
            data_dir,
            database_url,
            blobs_url,
            cpus,
            memory_mb: self.memory_mb.or(file.memory_mb),
            gpus: self.gpus.or(file.gpus),
            kill_grace_s,
            backfill_window_s,
            job_user: self.job_user.or(file.job_user),
            tls,
            tls_ca,
            public_url: public_url.map(|u| u.trim_end_matches('/').to_string()),
            audit_retention: (audit_retention_days > 0)
                .then(|| std::time::Duration::from_secs(u64::from(audit_retention_days) * 86_400)),
            serve: self.serve.resolve(&file.serve)?,
            pools: file.pools,
        })
    }
}

fn read_file_config(path: &Path) -> anyhow::Result<UpArgs> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid configuration file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_optuna_endpoint_stays_on_loopback_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let args = |listen: &str, remote: Option<bool>| UpArgs {
            data_dir: Some(dir.path().to_path_buf()),
            optuna_listen: Some(listen.into()),
            optuna_allow_remote: remote,
            ..UpArgs::default()
        };
        let cfg = args("127.0.0.1:8090", None).resolve().unwrap();
        assert_eq!(cfg.optuna.unwrap().1, "default");
        let err = args("0.0.0.0:8090", None)
            .resolve()
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a loopback address"), "{err}");
        assert!(args("0.0.0.0:8090", Some(true)).resolve().is_ok());
        assert!(args("localhost:x", None).resolve().is_err());
        assert!(UpArgs {
            data_dir: Some(dir.path().to_path_buf()),
            ..UpArgs::default()
        }
        .resolve()
        .unwrap()
        .optuna
        .is_none());
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("t.toml");
        std::fs::write(&cfg, "listen = \"127.0.0.1:9\"\ngpus = 4\n").unwrap();
        let resolved = UpArgs {
            listen: Some("127.0.0.1:7".into()),
            data_dir: Some(dir.path().join("data")),
            config: Some(cfg),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(resolved.listen, "127.0.0.1:7");
        assert_eq!(resolved.gpus, Some(4));
        assert!(resolved.database_url.starts_with("sqlite://"));
        assert!(resolved.blobs_url.starts_with("file:///"));
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("t.toml");
        std::fs::write(&cfg, "lisen = \"x\"\n").unwrap();
        let err = UpArgs {
            config: Some(cfg),
            data_dir: Some(dir.path().join("data")),
            ..Default::default()
        }
        .resolve()
        .unwrap_err();
        assert!(format!("{err:#}").contains("lisen"), "{err:#}");
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    fn example() -> PathBuf {
        Path::new(
            &std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
        )
        .join("../../deploy/trainyard.example.toml")
    }

    #[test]
    fn the_shipped_example_configuration_parses() {
        let file = read_file_config(&example()).unwrap();
        assert_eq!(file.listen.as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(file.kill_grace_s, Some(10.0));
    }

    /// The example names every setting, and with its commented settings switched on it is
    /// still a valid file: it cannot fall behind the settings struct.
    #[test]
    fn the_shipped_example_names_every_setting() {
        let text = std::fs::read_to_string(example()).unwrap();
        // The pools are arrays of tables, checked on their own below.
        let switched_on: String = text
            .lines()
            .take_while(|l| !l.starts_with("# Resource pools"))
            .map(|l| {
                let t = l.trim_start_matches("# ");
                let is_setting = t.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                });
                if l.starts_with("# ") && is_setting {
                    t
                } else {
                    l
                }
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let _valid: UpArgs = toml::from_str(&switched_on)
            .unwrap_or_else(|e| panic!("the example with every setting on: {e}\n{switched_on}"));
        let given: toml::Table = toml::from_str(&switched_on).unwrap();
        // Every key the settings struct reads from a file, by serialising it.
        let all = serde_json::to_value(UpArgs::default()).unwrap();
        for (key, value) in all.as_object().unwrap() {
            if key == "pools" {
                assert!(
                    text.contains("# [[pools]]"),
                    "the example does not show [[pools]]"
                );
                let pools: String = text
                    .lines()
                    .skip_while(|l| !l.starts_with("# [[pools]]"))
                    .map(|l| format!("{}\n", l.trim_start_matches('#').trim_start()))
                    .collect();
                let parsed: UpArgs = toml::from_str(&pools)
                    .unwrap_or_else(|e| panic!("the example's pools: {e}\n{pools}"));
                assert_eq!(parsed.pools.len(), 4);
            } else if key == "serve" {
                for sub in value.as_object().unwrap().keys() {
                    assert!(
                        given["serve"].get(sub).is_some(),
                        "the example does not name serve.{sub}"
                    );
                }
            } else {
                assert!(given.contains_key(key), "the example does not name {key}");
            }
        }
    }

    #[test]
    fn serving_options_come_from_the_file_unless_a_flag_says_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("t.toml");
        std::fs::write(
            &cfg,
            "[serve]\nmax_body = \"1KiB\"\ngrpc_listen = \"127.0.0.1:9\"\nruntime = \"tract\"\n\
             model_control_mode = \"explicit\"\npin = [\"a\"]\n",
        )
        .unwrap();
        let from_file = UpArgs {
            data_dir: Some(dir.path().join("data")),
            config: Some(cfg.clone()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(from_file.serve.max_body, 1024);
        assert_eq!(from_file.serve.grpc_listen, "127.0.0.1:9");
        assert_eq!(
            from_file.serve.runtime,
            crate::serving::RuntimeChoice::Tract
        );
        assert_eq!(
            from_file.serve.control,
            crate::serving::ControlChoice::Explicit
        );
        assert_eq!(from_file.serve.pin, ["a"]);
        let flagged = UpArgs {
            data_dir: Some(dir.path().join("data")),
            config: Some(cfg),
            serve: crate::serving::ServeArgs {
                serve_max_body: Some("2KiB".into()),
                ..Default::default()
            },
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(flagged.serve.max_body, 2048);
        let defaults = crate::serving::ServeSettings::default();
        let none = UpArgs {
            data_dir: Some(dir.path().join("data")),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        assert_eq!(none.serve, defaults);
    }
}
