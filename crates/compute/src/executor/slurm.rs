//! Slurm as a cluster engine, two ways: through slurmrestd (JWT auth, the newest OpenAPI
//! version both sides speak chosen at start) or, on a submit host without slurmrestd,
//! through Slurm's own commands (`sbatch --parsable`, `scontrol show job`, `scancel`).
//!
//! Each attempt is one batch job named `trainyard-<job>-<attempt>` whose script `exec`s the
//! job's argv (quoted, no shell expansion of the job's words). Its output goes to
//! `<spool_dir>/<job>/output` in append mode: Slurm has no log API, so the pool's spool
//! folder must be storage the nodes share with the server (a Slurm site's home or project
//! file system), and the server ships that file to the blob store as it grows, like a local
//! job's. Exit codes come from the raw wait status (`exit_code: 1792` is exit 7).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use trainyard_core::time::now_ms;
use trainyard_core::ExitReason;

use super::cluster::{shell_command, Ended, Engine, EngineError, EngineJob, EngineState};
use super::Node;

/// The slurmrestd OpenAPI versions this executor speaks, newest first. v0.0.38 (Slurm
/// 22.05) runs for real in CI; v0.0.40 to v0.0.42 (Slurm 23.11 to 24.11) are tested
/// against exchanges built from Slurm's published OpenAPI documents.
pub const REST_VERSIONS: [&str; 4] = ["v0.0.42", "v0.0.41", "v0.0.40", "v0.0.38"];

/// How long one call to slurmrestd or one Slurm command may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Lifetime of the tokens this server signs itself, and how long before expiry it renews.
const OWN_TOKEN_LIFETIME_S: i64 = 3600;
const RENEW_BEFORE_S: i64 = 300;

/// A Slurm pool's settings (`[[pools]] executor = "slurm"`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmSettings {
    /// slurmrestd's base URL (`http://HOST:6820`); without it, Slurm's commands are run on
    /// this host, which must then be a submit host.
    #[serde(default)]
    pub url: Option<String>,
    /// The Slurm user jobs are submitted as (`X-SLURM-USER-NAME`) [default: the server's].
    #[serde(default)]
    pub user: Option<String>,
    /// The HS256 key slurmctld checks tokens with (`AuthAltParameters=jwt_key=…`): with
    /// it, the server signs short-lived tokens itself and renews them before they expire.
    #[serde(default)]
    pub jwt_key_file: Option<PathBuf>,
    /// A file holding a token from `scontrol token` (or `SLURM_JWT` in the server's
    /// environment), used until it expires; then calls fail with an error that says so.
    #[serde(default)]
    pub jwt_file: Option<PathBuf>,
    #[serde(default)]
    pub partition: Option<String>,
    #[serde(default)]
    pub account: Option<String>,
    /// Node features every job of the pool needs (`--constraint`, e.g. `"a100&nvme"`).
    #[serde(default)]
    pub constraint: Option<String>,
}

/// How slurmrestd learns who calls.
enum Auth {
    /// Tokens signed here with the cluster's key, renewed before they expire.
    Key {
        key: jsonwebtoken::EncodingKey,
        current: Mutex<Option<(String, i64)>>,
    },
    /// A token made elsewhere, with its expiry (seconds since the epoch) when it has one.
    Given { token: String, expires: Option<i64> },
}

#[derive(Serialize)]
struct Claims<'a> {
    iat: i64,
    exp: i64,
    sun: &'a str,
}

impl Auth {
    fn from_settings(settings: &SlurmSettings, user: &str) -> Result<Self, EngineError> {
        if let Some(path) = &settings.jwt_key_file {
            let key = std::fs::read(path).map_err(|e| {
                EngineError::Rejected(format!("cannot read jwt_key_file {}: {e}", path.display()))
            })?;
            return Ok(Auth::Key {
                key: jsonwebtoken::EncodingKey::from_secret(&key),
                current: Mutex::new(None),
            });
        }
        let token = match &settings.jwt_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| {
                    EngineError::Rejected(format!("cannot read jwt_file {}: {e}", path.display()))
                })?
                .trim()
                .trim_start_matches("SLURM_JWT=")
                .to_string(),
            None => std::env::var("SLURM_JWT").map_err(|_| {
                EngineError::Rejected(format!(
                    "slurmrestd needs a token for user {user}: give jwt_key_file (the server \
                     signs its own), jwt_file, or SLURM_JWT in the server's environment"
                ))
            })?,
        };
        Ok(Auth::Given {
            expires: token_expiry(&token),
            token,
        })
    }

    fn token(&self, user: &str) -> Result<String, EngineError> {
        let now = now_ms() / 1000;
        match self {
            Auth::Key { key, current } => {
                let mut current = current.lock();
                if let Some((token, exp)) = current.as_ref() {
                    if exp - now > RENEW_BEFORE_S {
                        return Ok(token.clone());
                    }
                }
                let exp = now + OWN_TOKEN_LIFETIME_S;
                let claims = Claims {
                    iat: now,
                    exp,
                    sun: user,
                };
                let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, key)
                    .map_err(|e| {
                        EngineError::Rejected(format!("cannot sign a Slurm token: {e}"))
                    })?;
                *current = Some((token.clone(), exp));
                Ok(token)
            }
            Auth::Given { token, expires } => match expires {
                Some(exp) if *exp <= now => Err(EngineError::Rejected(format!(
                    "the Slurm token for user {user} expired {} s ago; make a new one \
                     (`scontrol token username={user} lifespan=…`) or give jwt_key_file so \
                     that the server signs its own",
                    now - exp
                ))),
                _ => Ok(token.clone()),
            },
        }
    }
}

/// The `exp` claim of a JWT, read without checking its signature (slurmctld checks it).
fn token_expiry(token: &str) -> Option<i64> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<Value>(&bytes).ok()?["exp"].as_i64()
}

/// Slurm through slurmrestd.
pub struct SlurmRest {
    http: reqwest::Client,
    /// `http://host:port/slurm/<version>`.
    api: String,
    version: &'static str,
    user: String,
    auth: Auth,
    partition: Option<String>,
    /// The partition whose nodes are this pool's: the configured one, else the cluster's
    /// default (where Slurm puts jobs that name none); all nodes when none is found.
    nodes_partition: Option<String>,
    account: Option<String>,
    constraint: Option<String>,
}

impl SlurmRest {
    /// Finds the newest API version slurmrestd at `settings.url` speaks that this executor
    /// does, with one authenticated ping each. Unreachable or unauthorised: an error that
    /// names the URL.
    pub async fn connect(settings: &SlurmSettings) -> Result<Self, EngineError> {
        let url = settings
            .url
            .as_deref()
            .ok_or_else(|| EngineError::Rejected("no slurmrestd url".into()))?
            .trim_end_matches('/')
            .to_string();
        let user = match &settings.user {
            Some(u) => u.clone(),
            None => current_user_name(),
        };
        let auth = Auth::from_settings(settings, &user)?;
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let mut tried = Vec::new();
        for version in REST_VERSIONS {
            let rest = SlurmRest {
                http: http.clone(),
                api: format!("{url}/slurm/{version}"),
                version,
                user: user.clone(),
                auth: match &auth {
                    Auth::Key { key, .. } => Auth::Key {
                        key: key.clone(),
                        current: Mutex::new(None),
                    },
                    Auth::Given { token, expires } => Auth::Given {
                        token: token.clone(),
                        expires: *expires,
                    },
                },
                partition: settings.partition.clone(),
                nodes_partition: settings.partition.clone(),
                account: settings.account.clone(),
                constraint: settings.constraint.clone(),
            };
            match rest
                .call(reqwest::Method::GET, &rest.list_path("ping"), None)
                .await
            {
                Ok(_) => {
                    let mut rest = rest;
                    if rest.nodes_partition.is_none() {
                        rest.nodes_partition = rest
                            .call(reqwest::Method::GET, &rest.list_path("partitions"), None)
                            .await
                            .ok()
                            .and_then(|answer| default_partition(&answer));
                    }
                    return Ok(rest);
                }
                Err(EngineError::Unavailable(e)) if e.starts_with("HTTP 404") => {
                    tried.push(version)
                }
                Err(EngineError::Unavailable(e)) => {
                    return Err(EngineError::Unavailable(format!(
                        "slurmrestd at {url} cannot be reached: {e}"
                    )))
                }
                Err(EngineError::Rejected(e)) => {
                    return Err(EngineError::Rejected(format!("slurmrestd at {url}: {e}")))
                }
            }
        }
        Err(EngineError::Rejected(format!(
            "slurmrestd at {url} speaks none of the OpenAPI versions {}",
            tried.join(", ")
        )))
    }

    pub fn version(&self) -> &'static str {
        self.version
    }

    /// Whether this version encodes numbers as `{set, infinite, number}` and lists as
    /// arrays (the data parsers of Slurm 23.11 and later) rather than plainly (22.05).
    fn data_parser(&self) -> bool {
        self.version != "v0.0.38"
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, EngineError> {
        let token = self.auth.token(&self.user)?;
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.api))
            .header("X-SLURM-USER-NAME", &self.user)
            .header("X-SLURM-USER-TOKEN", token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(EngineError::Rejected(format!(
                "slurmrestd refused the token for user {} (HTTP {status}: {})",
                self.user,
                text.trim()
            )));
        }
        if let Some(message) = rest_errors(&value) {
            return Err(EngineError::Rejected(message));
        }
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(EngineError::Unavailable(format!(
                "HTTP 404: {}",
                text.trim()
            )));
        }
        if !status.is_success() {
            return Err(EngineError::Unavailable(format!(
                "HTTP {status}: {}",
                text.trim()
            )));
        }
        Ok(value)
    }

    /// `/ping`, `/jobs`, `/nodes` as this version spells them (with a trailing slash in
    /// the data parsers' documents).
    fn list_path(&self, what: &str) -> String {
        if self.data_parser() {
            format!("/{what}/")
        } else {
            format!("/{what}")
        }
    }

    /// The body of `POST job/submit` for `job` in this API version.
    pub fn submit_body(&self, job: &EngineJob) -> Result<Value, EngineError> {
        let script = batch_script(job)?;
        let number = |n: u64| {
            if self.data_parser() {
                json!({"set": true, "infinite": false, "number": n})
            } else {
                json!(n)
            }
        };
        let mut desc = json!({
            "name": job.name,
            "cpus_per_task": job.cpus,
            "current_working_directory": job.working_dir.as_deref().unwrap_or("/tmp"),
            "standard_output": job.output.display().to_string(),
            "requeue": false,
        });
        let d = desc.as_object_mut().expect("an object");
        if self.data_parser() {
            // The top-level `script` is deprecated from v0.0.41 on; `job.script` is in all.
            d.insert("script".into(), json!(script));
            d.insert(
                "environment".into(),
                json!(job
                    .env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()),
            );
            d.insert("open_mode".into(), json!(["APPEND"]));
            if job.gpus > 0 {
                // A gang's GPUs are per worker (task); a plain job's per node.
                let per = if job.workers > 1 {
                    "tres_per_task"
                } else {
                    "tres_per_node"
                };
                d.insert(per.into(), json!(format!("gres/gpu:{}", job.gpus)));
            }
        } else {
            d.insert(
                "environment".into(),
                Value::Object(job.env.iter().map(|(k, v)| (k.clone(), json!(v))).collect()),
            );
            d.insert("open_mode".into(), json!("append"));
            if job.gpus > 0 && job.workers > 1 {
                d.insert("gpus_per_task".into(), json!(job.gpus.to_string()));
            } else if job.gpus > 0 {
                d.insert("gres".into(), json!(format!("gpu:{}", job.gpus)));
            }
        }
        if job.workers > 1 {
            // A gang: one task per worker, each with its CPUs, its memory (per CPU, as
            // Slurm counts it for tasks that may land on several nodes) and its GPUs.
            d.insert("tasks".into(), json!(job.workers));
            if let Some(mb) = job.memory_mb {
                d.insert(
                    "memory_per_cpu".into(),
                    number(mb.div_ceil(u64::from(job.cpus.max(1)))),
                );
            }
        } else if let Some(mb) = job.memory_mb {
            d.insert("memory_per_node".into(), number(mb));
        }
        if let Some(s) = job.time_limit_s {
            d.insert("time_limit".into(), number(s.div_ceil(60)));
        }
        if let Some(p) = &self.partition {
            d.insert("partition".into(), json!(p));
        }
        if let Some(a) = &self.account {
            d.insert("account".into(), json!(a));
        }
        if let Some(c) = &self.constraint {
            d.insert("constraints".into(), json!(c));
        }
        if self.data_parser() {
            Ok(json!({ "job": desc }))
        } else {
            Ok(json!({"script": script, "job": desc}))
        }
    }
}

/// The port a gang's rank 0 listens on, from its engine name: the same for every worker
/// (and a restarted server), different for gangs that share a node. Below Linux's
/// ephemeral range (32768 and up), so a connection some other process made on the node
/// cannot already hold it.
pub fn gang_port(name: &str) -> u16 {
    let hash = name
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    20_000 + (hash % 12_000) as u16
}

/// The batch script of `job`: it `exec`s the job's argv (quoted); for a gang, `srun` starts
/// one task per worker with torchrun's variables from Slurm's (`RANK` = `SLURM_PROCID`,
/// …, `MASTER_ADDR` = the first node), and one failed task ends them all.
///
/// A plain job's script is `/bin/sh`, as `sbatch --wrap` writes it: the shell starts on the
/// job's slot, and bash's start made a slot's cycle longer. With `#!/bin/bash`, 500 trivial
/// jobs through `sbatch` alone ran at 0.983× the rate of the same jobs with `#!/bin/sh`, the
/// whole of the gap then measured between Trainyard→Slurm and `sbatch` (docs/benchmarks.md).
/// For the same reason a job that is a shell line (`sh -c LINE`, `bash -c LINE`) gets that
/// line as its script, run by that shell, instead of a shell that starts another: the
/// second start was what remained of the gap (0.996×). A `:` comes first, so a line that
/// begins with `#SBATCH` comments cannot give `sbatch` options (it reads them only before
/// the first command).
pub fn batch_script(job: &EngineJob) -> Result<String, EngineError> {
    // Quoting refuses what no script can hold (a NUL byte), whichever form is written.
    let run = shell_command(&job.argv, None)?;
    if job.workers <= 1 {
        return Ok(match shell_line(&job.argv) {
            Some((shell, line)) => format!("#!{shell}\n:\n{line}\n"),
            None => format!("#!/bin/sh\n{run}\n"),
        });
    }
    let argv = run.trim_start_matches("exec ");
    Ok(format!(
        "#!/bin/bash\n\
         export MASTER_ADDR=\"$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)\"\n\
         export MASTER_PORT={port}\n\
         export WORLD_SIZE=\"$SLURM_NTASKS\"\n\
         exec srun --kill-on-bad-exit=1 --cpus-per-task={cpus} bash -c \
         'export RANK=\"$SLURM_PROCID\" LOCAL_RANK=\"$SLURM_LOCALID\" NODE_RANK=\"$SLURM_NODEID\"; exec \"$@\"' \
         trainyard-worker {argv}\n",
        port = gang_port(&job.name),
        cpus = job.cpus,
    ))
}

/// The shell and the line of an argv that is `sh -c LINE` or `bash -c LINE` (nothing after
/// the line: arguments after it would be the line's `$0`, `$1`, …, which a script does not
/// have).
fn shell_line(argv: &[String]) -> Option<(&'static str, &str)> {
    let [shell, flag, line] = argv else {
        return None;
    };
    if flag != "-c" {
        return None;
    }
    let shell = match shell.as_str() {
        "sh" | "/bin/sh" => "/bin/sh",
        "bash" | "/bin/bash" => "/bin/bash",
        _ => return None,
    };
    Some((shell, line))
}

/// The errors a slurmrestd answer carries, joined; `None` when it carries none.
fn rest_errors(value: &Value) -> Option<String> {
    let errors = value.get("errors")?.as_array()?;
    let messages: Vec<String> = errors
        .iter()
        .map(|e| {
            let field = |k: &str| e.get(k).and_then(Value::as_str).filter(|s| !s.is_empty());
            let text = match (field("error"), field("description")) {
                (Some(error), Some(description)) => format!("{error}: {description}"),
                (Some(one), None) | (None, Some(one)) => one.to_string(),
                (None, None) => "unknown error".to_string(),
            };
            match e
                .get("error_number")
                .or_else(|| e.get("errno"))
                .and_then(Value::as_i64)
            {
                Some(n) if n != 0 => format!("{text} (Slurm error {n})"),
                _ => text.to_string(),
            }
        })
        .collect();
    (!messages.is_empty()).then(|| messages.join("; "))
}

/// A number as either encoding gives it: plain, or `{set, infinite, number}`.
fn number(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64(),
        Value::Object(o) => {
            if o.get("set").and_then(Value::as_bool) == Some(false)
                || o.get("infinite").and_then(Value::as_bool) == Some(true)
            {
                return None;
            }
            o.get("number").and_then(Value::as_i64)
        }
        _ => None,
    }
}

/// A state as either encoding gives it: `"FAILED"` or `["FAILED", "…flags"]`.
fn state_words(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => s.split('+').map(|w| w.to_ascii_uppercase()).collect(),
        Value::Array(a) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_ascii_uppercase)
            .collect(),
        _ => Vec::new(),
    }
}

/// (exit code, signal) from a job's `exit_code`: the raw wait status (v0.0.38) or
/// `{status, return_code, signal: {id}}` (data parsers).
fn exit_of(value: &Value) -> (Option<i32>, Option<i32>) {
    match value {
        Value::Number(_) => match number(value) {
            Some(raw) => {
                let raw = raw as i32;
                let signal = raw & 0x7f;
                if signal != 0 {
                    (None, Some(signal))
                } else {
                    (Some((raw >> 8) & 0xff), None)
                }
            }
            None => (None, None),
        },
        Value::Object(o) => {
            let signal = o
                .get("signal")
                .and_then(|s| s.get("id"))
                .and_then(number)
                .filter(|s| *s != 0)
                .map(|s| s as i32);
            let signaled = state_words(o.get("status").unwrap_or(&Value::Null))
                .iter()
                .any(|w| w == "SIGNALED");
            let code = o.get("return_code").and_then(number).map(|c| c as i32);
            if signaled || (signal.is_some() && code.unwrap_or(0) == 0) {
                (None, signal)
            } else {
                (code, None)
            }
        }
        _ => (None, None),
    }
}

/// Trainyard's view of a Slurm job in state `state` (its first word) with `reason`.
pub fn map_state(
    state: &str,
    reason: &str,
    node: Option<String>,
    exit: (Option<i32>, Option<i32>),
) -> EngineState {
    let says = |s: &str| {
        if reason.is_empty() || reason == "None" {
            s.to_string()
        } else {
            format!("{s} ({reason})")
        }
    };
    let ended = |reason: ExitReason| {
        EngineState::Ended(Ended {
            reason,
            exit_code: exit.0,
            signal: exit.1,
            engine_says: says(state),
        })
    };
    match state {
        "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "RESIZING"
        | "SUSPENDED" => EngineState::Pending(says(state)),
        "RUNNING" | "COMPLETING" | "STAGE_OUT" | "SIGNALING" => EngineState::Running(node),
        "COMPLETED" => ended(ExitReason::Exited),
        "FAILED" if exit.1.is_some() => ended(ExitReason::Signaled),
        "FAILED" => ended(ExitReason::Exited),
        "CANCELLED" => ended(ExitReason::Cancelled),
        "TIMEOUT" | "DEADLINE" => ended(ExitReason::Timeout),
        "OUT_OF_MEMORY" => ended(ExitReason::Signaled),
        // NODE_FAIL, BOOT_FAIL, PREEMPTED, REVOKED, SPECIAL_EXIT: not the job's doing; the
        // outcome is unknown and the attempt is retried per policy.
        _ => ended(ExitReason::Lost),
    }
}

/// Trainyard's view of one job object of `GET job/{id}` (either encoding).
pub fn parse_rest_job(job: &Value) -> EngineState {
    let words = state_words(&job["job_state"]);
    let state = words.first().map(String::as_str).unwrap_or("UNKNOWN");
    let reason = job["state_reason"].as_str().unwrap_or("");
    let node = job["nodes"]
        .as_str()
        .filter(|n| !n.is_empty())
        .map(str::to_string);
    map_state(state, reason, node, exit_of(&job["exit_code"]))
}

/// GPUs in a gres string: `gpu:2`, `gpu:a100:4(S:0-1)`, `gpu:0,shard:4`.
fn gres_gpus(gres: &str) -> u32 {
    gres.split(',')
        .filter(|item| item.starts_with("gpu"))
        .filter_map(|item| {
            let item = item.split('(').next()?;
            item.rsplit(':').next()?.parse::<u32>().ok()
        })
        .sum()
}

/// The name of the default partition in `GET partitions` (flag `default`/`DEFAULT`).
fn default_partition(answer: &Value) -> Option<String> {
    answer["partitions"].as_array()?.iter().find_map(|p| {
        let flags = p["flags"]
            .as_array()
            .into_iter()
            .chain(p["partition"]["state"].as_array())
            .flatten();
        flags
            .filter_map(Value::as_str)
            .any(|f| f.eq_ignore_ascii_case("default"))
            .then(|| p["name"].as_str().map(str::to_string))
            .flatten()
    })
}

/// Trainyard's view of the nodes of `GET nodes` (either encoding), in `partition` if given.
pub fn parse_rest_nodes(value: &Value, partition: Option<&str>) -> Vec<Node> {
    let Some(nodes) = value["nodes"].as_array() else {
        return Vec::new();
    };
    nodes
        .iter()
        .filter(|n| match partition {
            None => true,
            Some(p) => n["partitions"]
                .as_array()
                .is_some_and(|ps| ps.iter().any(|x| x.as_str() == Some(p))),
        })
        .map(|n| {
            let cpus = number(&n["cpus"]).unwrap_or(0);
            let memory = number(&n["real_memory"]).unwrap_or(0);
            let gpus = gres_gpus(n["gres"].as_str().unwrap_or(""));
            let mut state = state_words(&n["state"]).join("+").to_ascii_lowercase();
            if let Some(reason) = n["reason"].as_str().filter(|r| !r.is_empty()) {
                state = format!("{state} ({reason})");
            }
            Node {
                name: n["name"].as_str().unwrap_or("?").to_string(),
                state,
                cpus: cpus as f64,
                memory_mb: memory.max(0) as u64,
                gpus,
                free_cpus: Some((cpus - number(&n["alloc_cpus"]).unwrap_or(0)).max(0) as f64),
                free_memory_mb: Some(
                    (memory - number(&n["alloc_memory"]).unwrap_or(0)).max(0) as u64
                ),
                free_gpus: Some(
                    gpus.saturating_sub(gres_gpus(n["gres_used"].as_str().unwrap_or(""))),
                ),
            }
        })
        .collect()
}

#[async_trait]
impl Engine for SlurmRest {
    fn kind(&self) -> &'static str {
        "slurm"
    }

    fn needs_path(&self) -> bool {
        true
    }

    async fn submit(&self, job: &EngineJob) -> Result<String, EngineError> {
        let body = self.submit_body(job)?;
        let answer = self
            .call(reqwest::Method::POST, "/job/submit", Some(body))
            .await?;
        number(&answer["job_id"])
            .map(|id| id.to_string())
            .ok_or_else(|| EngineError::Unavailable(format!("no job_id in {answer}")))
    }

    async fn find(&self, name: &str) -> Result<Option<String>, EngineError> {
        let answer = self
            .call(reqwest::Method::GET, &self.list_path("jobs"), None)
            .await?;
        Ok(answer["jobs"].as_array().and_then(|jobs| {
            jobs.iter()
                .filter(|j| j["name"].as_str() == Some(name))
                .filter_map(|j| number(&j["job_id"]))
                .max()
                .map(|id| id.to_string())
        }))
    }

    async fn state(&self, id: &str) -> Result<Option<EngineState>, EngineError> {
        match self
            .call(reqwest::Method::GET, &format!("/job/{id}"), None)
            .await
        {
            Ok(answer) => Ok(answer["jobs"]
                .as_array()
                .and_then(|jobs| jobs.first())
                .map(parse_rest_job)),
            // "Invalid job id specified": slurmctld forgot it (MinJobAge passed).
            Err(EngineError::Rejected(e)) if e.contains("Invalid job id") => Ok(None),
            Err(EngineError::Unavailable(e)) if e.starts_with("HTTP 404") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Few jobs are asked one by one (slurmctld keeps ended jobs `MinJobAge` seconds, so
    /// its whole list can be far longer than what is watched); many with one list, and
    /// only the ones it lacks one by one.
    async fn states(&self, ids: &[String]) -> Vec<Result<Option<EngineState>, EngineError>> {
        if ids.len() < LIST_FROM {
            return futures::future::join_all(ids.iter().map(|id| self.state(id))).await;
        }
        let listed = match self
            .call(reqwest::Method::GET, &self.list_path("jobs"), None)
            .await
        {
            Ok(answer) => answer,
            Err(e) => return ids.iter().map(|_| Err(e.clone())).collect(),
        };
        let mut by_id: HashMap<String, EngineState> = listed["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|j| Some((number(&j["job_id"])?.to_string(), parse_rest_job(j))))
            .collect();
        let mut answers = Vec::with_capacity(ids.len());
        for id in ids {
            answers.push(match by_id.remove(id) {
                Some(state) => Ok(Some(state)),
                None => self.state(id).await,
            });
        }
        answers
    }

    async fn stop(&self, id: &str) -> Result<(), EngineError> {
        self.call(reqwest::Method::DELETE, &format!("/job/{id}"), None)
            .await
            .map(|_| ())
    }

    async fn nodes(&self) -> Result<Vec<Node>, EngineError> {
        let answer = self
            .call(reqwest::Method::GET, &self.list_path("nodes"), None)
            .await?;
        Ok(parse_rest_nodes(&answer, self.nodes_partition.as_deref()))
    }
}

/// Watched jobs from which one `GET /jobs` is cheaper than a `GET /job/{id}` each.
const LIST_FROM: usize = 8;

/// Slurm through its own commands on this host (a submit host).
pub struct SlurmCommands {
    partition: Option<String>,
    /// See `SlurmRest::nodes_partition`.
    nodes_partition: Option<String>,
    account: Option<String>,
    constraint: Option<String>,
}

impl SlurmCommands {
    /// Checks that `sinfo` runs here (the commands are installed and slurmctld answers).
    pub async fn connect(settings: &SlurmSettings) -> Result<Self, EngineError> {
        let mut this = Self {
            partition: settings.partition.clone(),
            nodes_partition: settings.partition.clone(),
            account: settings.account.clone(),
            constraint: settings.constraint.clone(),
        };
        run_command("sinfo", &["--version".to_string()], None, &[]).await?;
        if this.nodes_partition.is_none() {
            let args = ["show", "partition", "-o"].map(String::from);
            let out = run_command("scontrol", &args, None, &[]).await?;
            this.nodes_partition = out
                .lines()
                .map(scontrol_fields)
                .find(|f| f.get("Default") == Some(&"YES"))
                .and_then(|f| f.get("PartitionName").map(|p| p.to_string()));
        }
        Ok(this)
    }

    /// The arguments of `sbatch` for `job` (the script goes on its standard input).
    pub fn sbatch_args(&self, job: &EngineJob) -> Vec<String> {
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name={}", job.name),
            format!("--output={}", job.output.display()),
            "--open-mode=append".into(),
            "--no-requeue".into(),
            format!("--chdir={}", job.working_dir.as_deref().unwrap_or("/tmp")),
            format!("--cpus-per-task={}", job.cpus),
            "--export=ALL".into(),
        ];
        if job.workers > 1 {
            args.push(format!("--ntasks={}", job.workers));
            if let Some(mb) = job.memory_mb {
                args.push(format!(
                    "--mem-per-cpu={}M",
                    mb.div_ceil(u64::from(job.cpus.max(1)))
                ));
            }
            if job.gpus > 0 {
                args.push(format!("--gpus-per-task={}", job.gpus));
            }
        } else {
            if let Some(mb) = job.memory_mb {
                args.push(format!("--mem={mb}M"));
            }
            if job.gpus > 0 {
                args.push(format!("--gres=gpu:{}", job.gpus));
            }
        }
        if let Some(s) = job.time_limit_s {
            args.push(format!("--time={}", s.div_ceil(60)));
        }
        if let Some(p) = &self.partition {
            args.push(format!("--partition={p}"));
        }
        if let Some(a) = &self.account {
            args.push(format!("--account={a}"));
        }
        if let Some(c) = &self.constraint {
            args.push(format!("--constraint={c}"));
        }
        args
    }
}

/// Runs a Slurm command; its standard output, or its standard error as the refusal.
async fn run_command(
    program: &str,
    args: &[String],
    stdin: Option<String>,
    env: &[(String, String)],
) -> Result<String, EngineError> {
    use tokio::io::AsyncWriteExt;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if !env.is_empty() {
        // The job's environment, exported by `--export=ALL`: nothing of the server's but
        // what Slurm's commands themselves need to find the cluster.
        cmd.env_clear().envs(env.iter().cloned());
        for key in ["SLURM_CONF", "SLURM_CONFIG_DIR"] {
            if let Ok(v) = std::env::var(key) {
                cmd.env(key, v);
            }
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| EngineError::Unavailable(format!("cannot run {program}: {e}")))?;
    let mut input = child.stdin.take().expect("piped");
    let stdin = stdin.unwrap_or_default();
    let run = async move {
        input.write_all(stdin.as_bytes()).await?;
        drop(input);
        child.wait_with_output().await
    };
    let output = tokio::time::timeout(CALL_TIMEOUT, run)
        .await
        .map_err(|_| EngineError::Unavailable(format!("{program} did not answer in time")))?
        .map_err(|e| EngineError::Unavailable(format!("{program}: {e}")))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(EngineError::Rejected(
            String::from_utf8_lossy(&output.stderr).trim().to_string(),
        ))
    }
}

/// `Key=Value` words of one line of `scontrol show … -o` (values with spaces are cut at
/// the first space, which none of the keys read here has).
pub fn scontrol_fields(line: &str) -> HashMap<&str, &str> {
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .collect()
}

/// Trainyard's view of `scontrol show job ID -o`.
pub fn parse_scontrol_job(line: &str) -> EngineState {
    let f = scontrol_fields(line);
    let state = f.get("JobState").copied().unwrap_or("UNKNOWN");
    let reason = f.get("Reason").copied().unwrap_or("");
    let node = f
        .get("NodeList")
        .filter(|n| **n != "(null)" && !n.is_empty())
        .map(|n| n.to_string());
    let exit = f
        .get("ExitCode")
        .and_then(|e| e.split_once(':'))
        .map(|(code, signal)| {
            let signal: i32 = signal.parse().unwrap_or(0);
            if signal != 0 {
                (None, Some(signal))
            } else {
                (code.parse().ok(), None)
            }
        })
        .unwrap_or((None, None));
    map_state(state, reason, node, exit)
}

/// `gres/gpu=N` in a TRES string (`cpu=2,mem=4G,gres/gpu=2`).
fn tres_gpus(tres: &str) -> u32 {
    tres.split(',')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "gres/gpu")
        .filter_map(|(_, v)| v.parse::<u32>().ok())
        .sum()
}

/// Trainyard's view of `scontrol show nodes -o`, in `partition` if given.
pub fn parse_scontrol_nodes(text: &str, partition: Option<&str>) -> Vec<Node> {
    text.lines()
        .filter(|l| l.starts_with("NodeName="))
        .map(scontrol_fields)
        .filter(|f| match partition {
            None => true,
            Some(p) => f
                .get("Partitions")
                .is_some_and(|ps| ps.split(',').any(|x| x == p)),
        })
        .map(|f| {
            let get = |k: &str| f.get(k).and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
            let cpus = get("CPUTot");
            let memory = get("RealMemory");
            // GRES are in the TRES strings only where accounting tracks them
            // (`AccountingStorageTRES=gres/gpu`); `Gres`/`GresUsed` (with `-d`) always are.
            let either = |gres: &str, tres: &str| {
                gres_gpus(f.get(gres).copied().unwrap_or(""))
                    .max(tres_gpus(f.get(tres).copied().unwrap_or("")))
            };
            let gpus = either("Gres", "CfgTRES");
            let used_gpus = either("GresUsed", "AllocTRES");
            Node {
                name: f.get("NodeName").copied().unwrap_or("?").to_string(),
                state: f.get("State").copied().unwrap_or("?").to_ascii_lowercase(),
                cpus: cpus as f64,
                memory_mb: memory.max(0) as u64,
                gpus,
                free_cpus: Some((cpus - get("CPUAlloc")).max(0) as f64),
                free_memory_mb: Some((memory - get("AllocMem")).max(0) as u64),
                free_gpus: Some(gpus.saturating_sub(used_gpus)),
            }
        })
        .collect()
}

#[async_trait]
impl Engine for SlurmCommands {
    fn kind(&self) -> &'static str {
        "slurm"
    }

    fn needs_path(&self) -> bool {
        true
    }

    async fn submit(&self, job: &EngineJob) -> Result<String, EngineError> {
        let script = batch_script(job)?;
        let out = run_command("sbatch", &self.sbatch_args(job), Some(script), &job.env).await?;
        // `--parsable`: "ID" or "ID;CLUSTER".
        let id = out.trim().split(';').next().unwrap_or("").to_string();
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(EngineError::Unavailable(format!(
                "sbatch printed no job id: {out:?}"
            )));
        }
        Ok(id)
    }

    async fn find(&self, name: &str) -> Result<Option<String>, EngineError> {
        let args = ["-h", "-t", "all", "-o", "%i", "--name", name].map(String::from);
        let out = run_command("squeue", &args, None, &[]).await?;
        Ok(out
            .lines()
            .filter_map(|l| l.trim().parse::<u64>().ok())
            .max()
            .map(|id| id.to_string()))
    }

    async fn state(&self, id: &str) -> Result<Option<EngineState>, EngineError> {
        let args = ["show", "job", id, "-o"].map(String::from);
        match run_command("scontrol", &args, None, &[]).await {
            Ok(out) => Ok(out
                .lines()
                .find(|l| l.starts_with("JobId="))
                .map(parse_scontrol_job)),
            Err(EngineError::Rejected(e)) if e.contains("Invalid job id") => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn stop(&self, id: &str) -> Result<(), EngineError> {
        run_command("scancel", &[id.to_string()], None, &[])
            .await
            .map(|_| ())
    }

    async fn nodes(&self) -> Result<Vec<Node>, EngineError> {
        let args = ["-d", "show", "nodes", "-o"].map(String::from);
        let out = run_command("scontrol", &args, None, &[]).await?;
        Ok(parse_scontrol_nodes(&out, self.nodes_partition.as_deref()))
    }
}

/// The name of the user this process runs as.
fn current_user_name() -> String {
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| "root".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(argv: &[&str]) -> EngineJob {
        EngineJob {
            name: "trainyard-j-1".into(),
            argv: argv.iter().map(|a| a.to_string()).collect(),
            env: vec![],
            working_dir: None,
            cpus: 1,
            memory_mb: None,
            gpus: 0,
            workers: 1,
            time_limit_s: None,
            output: "/dev/null".into(),
        }
    }

    /// Runs a batch script as Slurm would (its shebang's shell reads the file).
    fn run_script(script: &str) -> (Option<i32>, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("script");
        std::fs::write(&path, script).unwrap();
        let shell = script.lines().next().unwrap().trim_start_matches("#!");
        let out = std::process::Command::new(shell)
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    #[test]
    fn a_shell_line_is_the_script_and_cannot_carry_sbatch_options() {
        // `sh -c LINE`: the line runs in the script's own shell, one shell start.
        let line = "#SBATCH --partition=elsewhere\n#SBATCH --cpus-per-task=64\necho \"it's $((1 + 2))\"; exit 7";
        let script = batch_script(&plain(&["sh", "-c", line])).unwrap();
        assert!(script.starts_with("#!/bin/sh\n:\n"), "{script}");
        // sbatch reads `#SBATCH` lines only before the first command: `:` is one.
        let first_command = script
            .lines()
            .skip(1)
            .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .unwrap();
        assert_eq!(first_command, ":");
        let before: Vec<&str> = script
            .lines()
            .take_while(|l| *l != ":")
            .filter(|l| l.starts_with("#SBATCH"))
            .collect();
        assert!(before.is_empty(), "{script}");
        assert_eq!(run_script(&script), (Some(7), "it's 3\n".to_string()));
        // bash's line runs in bash.
        let script = batch_script(&plain(&["bash", "-c", "echo ${BASH_VERSION:+bash}"])).unwrap();
        assert!(script.starts_with("#!/bin/bash\n"), "{script}");
        assert_eq!(run_script(&script), (Some(0), "bash\n".to_string()));
        // Anything else is exec'd as given: other programs, a line with arguments after it.
        for argv in [
            &["sh", "-c", "echo \"$0 $1\"", "zero", "one"][..],
            &["/usr/bin/env", "sh", "-c", "echo hi"],
            &["sh", "-e", "-c", "true"],
        ] {
            let script = batch_script(&plain(argv)).unwrap();
            assert!(script.starts_with("#!/bin/sh\nexec "), "{script}");
        }
        let script = batch_script(&plain(&["sh", "-c", "echo \"$0 $1\"", "zero", "one"])).unwrap();
        assert_eq!(run_script(&script), (Some(0), "zero one\n".to_string()));
        assert!(batch_script(&plain(&["sh", "-c", "a\0b"])).is_err());
    }

    #[test]
    fn raw_wait_statuses_and_scontrol_exit_codes_give_the_same_outcome() {
        assert_eq!(exit_of(&json!(1792)), (Some(7), None));
        assert_eq!(exit_of(&json!(0)), (Some(0), None));
        assert_eq!(exit_of(&json!(9)), (None, Some(9)));
        let EngineState::Ended(e) = parse_scontrol_job(
            "JobId=1 JobName=demo JobState=FAILED Reason=NonZeroExitCode ExitCode=3:0 NodeList=vm",
        ) else {
            panic!()
        };
        assert_eq!((e.reason, e.exit_code), (ExitReason::Exited, Some(3)));
        let EngineState::Ended(e) =
            parse_scontrol_job("JobId=3 JobState=FAILED Reason=OutOfMemory ExitCode=0:9")
        else {
            panic!()
        };
        assert_eq!((e.reason, e.signal), (ExitReason::Signaled, Some(9)));
        assert_eq!(
            parse_scontrol_job("JobId=3 JobState=PENDING Reason=Resources ExitCode=0:0"),
            EngineState::Pending("PENDING (Resources)".into())
        );
        let EngineState::Ended(e) = parse_scontrol_job("JobId=3 JobState=NODE_FAIL ExitCode=0:0")
        else {
            panic!()
        };
        assert_eq!(e.reason, ExitReason::Lost);
    }

    #[test]
    fn gres_strings_count_gpus() {
        assert_eq!(gres_gpus("gpu:2"), 2);
        assert_eq!(gres_gpus("gpu:a100:4(S:0-1)"), 4);
        assert_eq!(gres_gpus("gpu:0,shard:4"), 0);
        assert_eq!(gres_gpus("(null)"), 0);
        assert_eq!(tres_gpus("cpu=2,mem=4G,billing=2,gres/gpu=2"), 2);
    }

    #[test]
    fn a_given_token_that_expired_is_named_as_such() {
        use base64::Engine as _;
        let b64 = |v: Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        let expired = format!(
            "{}.{}.sig",
            b64(json!({"alg": "HS256"})),
            b64(json!({"exp": 1_000, "sun": "alice"}))
        );
        assert_eq!(token_expiry(&expired), Some(1_000));
        let auth = Auth::Given {
            expires: token_expiry(&expired),
            token: expired,
        };
        let err = auth.token("alice").unwrap_err().to_string();
        assert!(
            err.contains("expired") && err.contains("scontrol token"),
            "{err}"
        );
    }

    #[test]
    fn own_tokens_carry_the_user_and_are_renewed_before_expiry() {
        let auth = Auth::Key {
            key: jsonwebtoken::EncodingKey::from_secret(b"k"),
            current: Mutex::new(None),
        };
        let t1 = auth.token("bob").unwrap();
        assert_eq!(auth.token("bob").unwrap(), t1, "reused while fresh");
        let exp = token_expiry(&t1).unwrap();
        assert!(exp > now_ms() / 1000 + RENEW_BEFORE_S);
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_required_spec_claims(&["exp"]);
        let claims = jsonwebtoken::decode::<Value>(
            &t1,
            &jsonwebtoken::DecodingKey::from_secret(b"k"),
            &validation,
        )
        .unwrap()
        .claims;
        assert_eq!(claims["sun"], "bob");
        if let Auth::Key { current, .. } = &auth {
            current.lock().as_mut().unwrap().1 = now_ms() / 1000 + 10;
        }
        auth.token("bob").unwrap();
        if let Auth::Key { current, .. } = &auth {
            let renewed = current.lock().as_ref().unwrap().1;
            assert!(
                renewed > now_ms() / 1000 + RENEW_BEFORE_S,
                "renewed near expiry"
            );
        }
    }
}
