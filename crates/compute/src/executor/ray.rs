//! Ray as a cluster engine, through its Jobs REST API on the dashboard (`POST /api/jobs/`,
//! status, logs, stop). Each attempt is one Ray job whose `submission_id` is
//! `trainyard-<job>-<attempt>`: Trainyard picks the id, so a restarted server always finds
//! its jobs again. The entrypoint `exec`s the job's argv (quoted) with
//! `entrypoint_num_cpus` / `_gpus` / `_memory` reserved for it.
//!
//! Ray leaves a request no node can satisfy PENDING forever, without an error, so the
//! executor refuses one at submit against the largest node Ray reported at start. Ray
//! keeps a job's output itself: the executor pulls it (`GET /api/jobs/{id}/logs` returns
//! the whole log) into the job's spool and ships it to blobs from there.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use trainyard_core::ExitReason;

use super::cluster::{shell_command, Ended, Engine, EngineError, EngineJob, EngineState};
use super::Node;

const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A Ray pool's settings (`[[pools]] executor = "ray"`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RaySettings {
    /// The Ray dashboard's address, which serves the Jobs API (`http://HOST:8265`).
    pub url: String,
}

/// Ray through the Jobs REST API.
pub struct Ray {
    http: reqwest::Client,
    url: String,
}

impl Ray {
    /// Checks that the dashboard at `settings.url` answers (an error names the URL).
    pub async fn connect(settings: &RaySettings) -> Result<Self, EngineError> {
        let url = settings.url.trim_end_matches('/').to_string();
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .build()
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let this = Self { http, url };
        this.get("/api/version").await.map_err(|e| {
            EngineError::Unavailable(format!(
                "the Ray dashboard at {} cannot be reached: {e}",
                this.url
            ))
        })?;
        Ok(this)
    }

    /// `GET path`: `Ok(None)` on 404.
    async fn get_optional(&self, path: &str) -> Result<Option<Value>, EngineError> {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(EngineError::Unavailable(format!(
                "HTTP {status}: {}",
                last_line(&text)
            )));
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| EngineError::Unavailable(format!("not JSON ({e}): {}", last_line(&text))))
    }

    async fn get(&self, path: &str) -> Result<Value, EngineError> {
        self.get_optional(path)
            .await?
            .ok_or_else(|| EngineError::Unavailable(format!("{path}: HTTP 404")))
    }

    /// The body of `POST /api/jobs/` for `job`.
    pub fn submit_body(job: &EngineJob) -> Result<Value, EngineError> {
        if job.workers > 1 {
            return Self::gang_body(job);
        }
        let mut body = json!({
            "entrypoint": shell_command(&job.argv, job.working_dir.as_deref())?,
            "submission_id": job.name,
            "entrypoint_num_cpus": job.cpus,
            "entrypoint_num_gpus": job.gpus,
            "runtime_env": {"env_vars": job.env.iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect::<serde_json::Map<String, Value>>()},
            "metadata": {"trainyard": job.name},
        });
        if let Some(mb) = job.memory_mb {
            body["entrypoint_memory"] = json!(mb * 1024 * 1024);
        }
        Ok(body)
    }

    /// A gang: the entrypoint is a small driver (`ray_gang.py`, run by the cluster's
    /// `python3`, which imports `ray` on every Ray node) that reserves a placement group
    /// of one bundle per worker, so all start or none does, and runs the workers in it.
    /// The driver itself holds no resources.
    fn gang_body(job: &EngineJob) -> Result<Value, EngineError> {
        let spec = json!({
            "workers": job.workers,
            "cpus": job.cpus,
            "gpus": job.gpus,
            "memory": job.memory_mb.map(|mb| mb * 1024 * 1024),
            "argv": job.argv,
            "cwd": job.working_dir,
        });
        let argv = [
            "python3".to_string(),
            "-c".to_string(),
            GANG_DRIVER.to_string(),
            spec.to_string(),
        ];
        Ok(json!({
            "entrypoint": shell_command(&argv, None)?,
            "submission_id": job.name,
            "entrypoint_num_cpus": 0,
            "runtime_env": {"env_vars": job.env.iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect::<serde_json::Map<String, Value>>()},
            "metadata": {"trainyard": job.name},
        }))
    }
}

/// The gang driver's source (see the file for what it does).
const GANG_DRIVER: &str = include_str!("ray_gang.py");

/// The last non-empty line of a (Python traceback) answer: its error.
fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty() && *l != ".")
        .unwrap_or("")
}

/// Trainyard's view of `GET /api/jobs/{id}`.
pub fn parse_job(job: &Value) -> EngineState {
    let status = job["status"].as_str().unwrap_or("UNKNOWN");
    let message = job["message"].as_str().unwrap_or("").trim();
    let first_line = message.lines().next().unwrap_or("");
    let code = job["driver_exit_code"].as_i64().map(|c| c as i32);
    let ended = |reason: ExitReason, exit_code: Option<i32>, signal: Option<i32>| {
        EngineState::Ended(Ended {
            reason,
            exit_code,
            signal,
            engine_says: if first_line.is_empty() {
                status.to_string()
            } else {
                format!("{status}: {first_line}")
            },
        })
    };
    match status {
        "PENDING" => EngineState::Pending(if first_line.is_empty() {
            "PENDING".into()
        } else {
            first_line.to_string()
        }),
        "RUNNING" => EngineState::Running(job["driver_node_id"].as_str().map(str::to_string)),
        "SUCCEEDED" => ended(ExitReason::Exited, Some(code.unwrap_or(0)), None),
        "STOPPED" => ended(ExitReason::Cancelled, code, None),
        // A negative code is Python's way of saying "killed by that signal".
        "FAILED" => match code {
            Some(c) if c < 0 => ended(ExitReason::Signaled, None, Some(-c)),
            Some(c) => ended(ExitReason::Exited, Some(c), None),
            // No exit code: the entrypoint never ran (runtime env, driver setup).
            None => ended(ExitReason::SpawnFailed, None, None),
        },
        _ => ended(ExitReason::Lost, code, None),
    }
}

/// Trainyard's view of `GET /api/v0/nodes?detail=1`, with per-node free resources from
/// the cluster's usage when there is one node (Ray reports usage per cluster).
pub fn parse_nodes(nodes: &Value, status: Option<&Value>) -> Vec<Node> {
    let list = nodes["data"]["result"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let usage = status.map(|s| &s["data"]["clusterStatus"]["loadMetricsReport"]["usage"]);
    let used = |key: &str| usage.and_then(|u| u[key][0].as_f64()).unwrap_or(0.0);
    let alive = list.iter().filter(|n| n["state"] == "ALIVE").count();
    list.iter()
        .map(|n| {
            let total = &n["resources_total"];
            let cpus = total["CPU"].as_f64().unwrap_or(0.0);
            let memory_mb = (total["memory"].as_f64().unwrap_or(0.0) / 1048576.0) as u64;
            let gpus = total["GPU"].as_f64().unwrap_or(0.0) as u32;
            let only = alive == 1 && n["state"] == "ALIVE" && usage.is_some();
            Node {
                name: n["node_name"]
                    .as_str()
                    .or(n["node_ip"].as_str())
                    .unwrap_or("?")
                    .to_string(),
                state: n["state"].as_str().unwrap_or("?").to_string(),
                cpus,
                memory_mb,
                gpus,
                free_cpus: only.then(|| (cpus - used("CPU")).max(0.0)),
                free_memory_mb: only
                    .then(|| memory_mb.saturating_sub((used("memory") / 1048576.0) as u64)),
                free_gpus: only.then(|| gpus.saturating_sub(used("GPU") as u32)),
            }
        })
        .collect()
}

#[async_trait]
impl Engine for Ray {
    fn kind(&self) -> &'static str {
        "ray"
    }

    async fn submit(&self, job: &EngineJob) -> Result<String, EngineError> {
        let body = Self::submit_body(job)?;
        let response = self
            .http
            .post(format!("{}/api/jobs/", self.url))
            .json(&body)
            .send()
            .await
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status.is_success() {
            return Ok(job.name.clone());
        }
        // Our own earlier try got through (the answer was lost): it is this attempt's job.
        if text.contains("already exists") {
            return Ok(job.name.clone());
        }
        if status.is_client_error() {
            Err(EngineError::Rejected(last_line(&text).to_string()))
        } else {
            Err(EngineError::Unavailable(format!(
                "HTTP {status}: {}",
                last_line(&text)
            )))
        }
    }

    async fn find(&self, name: &str) -> Result<Option<String>, EngineError> {
        Ok(self
            .get_optional(&format!("/api/jobs/{name}"))
            .await?
            .map(|_| name.to_string()))
    }

    async fn state(&self, id: &str) -> Result<Option<EngineState>, EngineError> {
        Ok(self
            .get_optional(&format!("/api/jobs/{id}"))
            .await?
            .map(|job| parse_job(&job)))
    }

    async fn stop(&self, id: &str) -> Result<(), EngineError> {
        let response = self
            .http
            .post(format!("{}/api/jobs/{id}/stop", self.url))
            .send()
            .await
            .map_err(|e| EngineError::Unavailable(e.to_string()))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(EngineError::Rejected(format!(
                "stop answered HTTP {}",
                response.status()
            )))
        }
    }

    /// The log call used here answers the whole output each time.
    fn reads_output_whole(&self) -> bool {
        true
    }

    async fn pull_output(&self, id: &str, spool: &Path, pulled: u64) -> Result<(), EngineError> {
        let Some(answer) = self.get_optional(&format!("/api/jobs/{id}/logs")).await? else {
            return Ok(());
        };
        let logs = answer["logs"].as_str().unwrap_or("").as_bytes();
        super::cluster::append_new_output(spool, logs, pulled)
    }

    async fn nodes(&self) -> Result<Vec<Node>, EngineError> {
        let nodes = self.get("/api/v0/nodes?detail=1").await?;
        let status = self.get("/api/cluster_status").await.ok();
        Ok(parse_nodes(&nodes, status.as_ref()))
    }
}
