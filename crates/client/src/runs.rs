//! A job's run: the tracking calls a task process makes, through the same MLflow-compatible REST API any
//! MLflow client uses (the job's token reaches only that and datasets).

use reqwest::Method;
use serde_json::{json, Value};

use crate::{Client, ClientError, Context};

/// The job's run, from the variables the executor sets.
#[derive(Clone)]
pub struct RunClient {
    pub client: Client,
    pub run_id: String,
    /// Where the run's artifacts live on the proxy: `<experiment>/<run>/artifacts`.
    pub artifact_root: String,
}

/// One metric point; `step` is the x axis of its curve.
#[derive(Clone, Debug)]
pub struct Point {
    pub key: String,
    pub value: f64,
    pub step: u64,
}

impl RunClient {
    /// Connects as the job (MLFLOW_TRACKING_URI / _TOKEN / MLFLOW_RUN_ID).
    pub async fn from_env() -> Result<Self, ClientError> {
        let var = |k: &str| {
            std::env::var(k).map_err(|_| {
                ClientError::Unexpected(format!(
                    "{k} is not set: task commands run inside a job started by `trainyard up`"
                ))
            })
        };
        let client = Client::new(
            &var("MLFLOW_TRACKING_URI")?,
            std::env::var("MLFLOW_TRACKING_TOKEN").ok(),
        )?;
        let run_id = var("MLFLOW_RUN_ID")?;
        Self::for_run(client, run_id).await
    }

    pub async fn for_run(client: Client, run_id: String) -> Result<Self, ClientError> {
        let run: Value = client
            .json(client.request(
                Method::GET,
                &format!("/api/2.0/mlflow/runs/get?run_id={run_id}"),
            ))
            .await
            .context_with(|| format!("run {run_id}"))?;
        let uri = run["run"]["info"]["artifact_uri"]
            .as_str()
            .ok_or_else(|| ClientError::Unexpected(format!("run {run_id} has no artifact_uri")))?;
        let artifact_root = uri
            .strip_prefix("mlflow-artifacts:/")
            .ok_or_else(|| {
                ClientError::Unexpected(format!(
                    "run {run_id} stores artifacts at {uri}, not on the server"
                ))
            })?
            .trim_start_matches('/')
            .to_string();
        Ok(Self {
            client,
            run_id,
            artifact_root,
        })
    }

    /// Starts a new run named `run_name` in experiment `experiment` (created when missing):
    /// for work done outside a job, such as an import from the user's machine.
    pub async fn create(
        client: Client,
        experiment: &str,
        run_name: &str,
    ) -> Result<Self, ClientError> {
        let experiment_id = match experiment_id(&client, experiment).await {
            Err(e) if e.code() == Some("RESOURCE_DOES_NOT_EXIST") => {
                let created = client
                    .json::<Value>(
                        client
                            .request(Method::POST, "/api/2.0/mlflow/experiments/create")
                            .json(&json!({ "name": experiment })),
                    )
                    .await;
                match created {
                    Ok(v) => v["experiment_id"]
                        .as_str()
                        .map(str::to_string)
                        .ok_or_else(|| {
                            ClientError::Unexpected("the new experiment has no id".into())
                        })?,
                    // Another client made it meanwhile: use theirs.
                    Err(e) if e.code() == Some("RESOURCE_ALREADY_EXISTS") => {
                        experiment_id(&client, experiment).await?
                    }
                    Err(e) => return Err(e),
                }
            }
            found => found?,
        };
        let run: Value = client
            .json(
                client
                    .request(Method::POST, "/api/2.0/mlflow/runs/create")
                    .json(&json!({
                        "experiment_id": experiment_id,
                        "run_name": run_name,
                        "start_time": trainyard_core::time::now_ms(),
                    })),
            )
            .await?;
        let run_id = run["run"]["info"]["run_id"]
            .as_str()
            .ok_or_else(|| ClientError::Unexpected("the new run has no id".into()))?
            .to_string();
        Self::for_run(client, run_id).await
    }

    /// Ends the run with `status` (`FINISHED`, `FAILED`).
    pub async fn end(&self, status: &str) -> Result<(), ClientError> {
        self.post(
            "runs/update",
            json!({"run_id": self.run_id, "status": status, "end_time": trainyard_core::time::now_ms()}),
        )
        .await
        .map(|_| ())
    }

    pub fn artifact_uri(&self, path: &str) -> String {
        format!("mlflow-artifacts:/{}/{path}", self.artifact_root)
    }

    async fn post(&self, endpoint: &str, body: Value) -> Result<Value, ClientError> {
        self.client
            .json(
                self.client
                    .request(Method::POST, &format!("/api/2.0/mlflow/{endpoint}"))
                    .json(&body),
            )
            .await
    }

    pub async fn log_metrics(&self, points: &[Point]) -> Result<(), ClientError> {
        let now = trainyard_core::time::now_ms();
        for chunk in points.chunks(1000) {
            let metrics: Vec<Value> = chunk
                .iter()
                .map(|p| json!({"key": p.key, "value": p.value, "step": p.step, "timestamp": now}))
                .collect();
            self.post(
                "runs/log-batch",
                json!({"run_id": self.run_id, "metrics": metrics}),
            )
            .await?;
        }
        Ok(())
    }

    pub async fn log_params(&self, params: &[(String, String)]) -> Result<(), ClientError> {
        for chunk in params.chunks(100) {
            let params: Vec<Value> = chunk
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect();
            self.post(
                "runs/log-batch",
                json!({"run_id": self.run_id, "params": params}),
            )
            .await?;
        }
        Ok(())
    }

    pub async fn set_tag(&self, key: &str, value: &str) -> Result<(), ClientError> {
        self.post(
            "runs/set-tag",
            json!({"run_id": self.run_id, "key": key, "value": value}),
        )
        .await
        .map(|_| ())
    }

    fn artifact_path(&self, root: &str, path: &str) -> String {
        format!("/api/2.0/mlflow-artifacts/artifacts/{root}/{path}")
    }

    pub async fn upload(&self, path: &str, bytes: Vec<u8>) -> Result<(), ClientError> {
        let url = self.artifact_path(&self.artifact_root, path);
        self.client
            .send(self.client.request(Method::PUT, &url).body(bytes))
            .await
            .context_with(|| format!("uploading artifact {path}"))?;
        Ok(())
    }

    pub async fn delete(&self, path: &str) -> Result<(), ClientError> {
        let url = self.artifact_path(&self.artifact_root, path);
        self.client
            .send(self.client.request(Method::DELETE, &url))
            .await?;
        Ok(())
    }

    /// Downloads an artifact of this run.
    pub async fn download(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        download_uri(&self.client, &self.artifact_uri(path)).await
    }

    /// File names directly under `path` in this run's artifacts.
    pub async fn list(&self, path: &str) -> Result<Vec<String>, ClientError> {
        let full = format!("{}/{path}", self.artifact_root);
        let listing: Value = self
            .client
            .json(
                self.client
                    .request(Method::GET, "/api/2.0/mlflow-artifacts/artifacts")
                    .query(&[("path", full.as_str())]),
            )
            .await?;
        Ok(listing["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|f| !f["is_dir"].as_bool().unwrap_or(false))
            .filter_map(|f| f["path"].as_str())
            .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
            .collect())
    }

    /// Registers `source` as a new version of `name` (creating the model when needed);
    /// returns the version number.
    pub async fn register(
        &self,
        name: &str,
        source: &str,
        description: &str,
        tags: &[(String, String)],
    ) -> Result<String, ClientError> {
        let created = self
            .client
            .send(
                self.client
                    .request(Method::POST, "/api/2.0/mlflow/registered-models/create")
                    .json(&json!({"name": name})),
            )
            .await;
        let made_here = match created {
            Ok(_) => true,
            // Already registered is the usual case after the first training.
            Err(e) if e.code() == Some("RESOURCE_ALREADY_EXISTS") => false,
            Err(e) => return Err(e),
        };
        let tags: Vec<Value> = tags
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        let version = self
            .post(
                "model-versions/create",
                json!({"name": name, "source": source, "run_id": self.run_id,
                       "description": description, "tags": tags}),
            )
            .await;
        let version = match version {
            Ok(v) => v,
            Err(e) => {
                // A model this call made must not stay behind empty.
                if made_here {
                    let _ = self
                        .client
                        .send(
                            self.client
                                .request(Method::DELETE, "/api/2.0/mlflow/registered-models/delete")
                                .json(&json!({"name": name})),
                        )
                        .await;
                }
                return Err(e);
            }
        };
        version["model_version"]["version"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| {
                ClientError::Unexpected(format!(
                    "the registry answered without a version: {version}"
                ))
            })
    }
}

/// The id of the experiment named `name` (`RESOURCE_DOES_NOT_EXIST` when there is none).
async fn experiment_id(client: &Client, name: &str) -> Result<String, ClientError> {
    let found: Value = client
        .json(
            client
                .request(Method::GET, "/api/2.0/mlflow/experiments/get-by-name")
                .query(&[("experiment_name", name)]),
        )
        .await?;
    found["experiment"]["experiment_id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| ClientError::Unexpected(format!("experiment `{name}` has no id")))
}

/// Downloads an artifact by its `mlflow-artifacts:/` URI.
pub async fn download_uri(client: &Client, uri: &str) -> Result<Vec<u8>, ClientError> {
    let path = uri
        .strip_prefix("mlflow-artifacts:/")
        .ok_or_else(|| {
            ClientError::Unexpected(format!(
                "cannot download {uri}: not an mlflow-artifacts:/ URI"
            ))
        })?
        .trim_start_matches('/');
    let response = client
        .send(client.request(
            Method::GET,
            &format!("/api/2.0/mlflow-artifacts/artifacts/{path}"),
        ))
        .await
        .context_with(|| format!("downloading {uri}"))?;
    Ok(response.bytes().await?.to_vec())
}

/// A registered version's artifact folder, from `NAME:VERSION` (or `NAME` for the latest).
pub async fn model_source(
    client: &Client,
    reference: &str,
) -> Result<(String, String, String), ClientError> {
    let (name, version) = match reference.split_once(':') {
        Some((n, v)) => (n.to_string(), v.to_string()),
        None => {
            let model: Value = client
                .json(client.request(
                    Method::GET,
                    &format!(
                        "/api/2.0/mlflow/registered-models/get?name={name}",
                        name = reference
                    ),
                ))
                .await
                .context_with(|| format!("model `{reference}`"))?;
            let latest = model["registered_model"]["latest_versions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v["version"].as_str()?.parse::<u64>().ok())
                .max()
                .ok_or_else(|| {
                    ClientError::Unexpected(format!("model `{reference}` has no versions"))
                })?;
            (reference.to_string(), latest.to_string())
        }
    };
    let found: Value = client
        .json(client.request(
            Method::GET,
            &format!(
                "/api/2.0/mlflow/model-versions/get-download-uri?name={name}&version={version}"
            ),
        ))
        .await
        .context_with(|| format!("model version `{name}:{version}`"))?;
    let uri = found["artifact_uri"]
        .as_str()
        .ok_or_else(|| {
            ClientError::Unexpected(format!("model version `{name}:{version}` has no artifacts"))
        })?
        .to_string();
    Ok((name, version, uri))
}

/// The value of tag `key` on model version `name:version` (`None` when it has no such tag).
pub async fn version_tag(
    client: &Client,
    name: &str,
    version: &str,
    key: &str,
) -> Result<Option<String>, ClientError> {
    Ok(version_tags(client, name, version).await?.remove(key))
}

/// Every tag of model version `name:version`.
pub async fn version_tags(
    client: &Client,
    name: &str,
    version: &str,
) -> Result<std::collections::BTreeMap<String, String>, ClientError> {
    let found: Value = client
        .json(
            client
                .request(Method::GET, "/api/2.0/mlflow/model-versions/get")
                .query(&[("name", name), ("version", version)]),
        )
        .await
        .context_with(|| format!("model version `{name}:{version}`"))?;
    Ok(found["model_version"]["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some((
                t["key"].as_str()?.to_string(),
                t["value"].as_str()?.to_string(),
            ))
        })
        .collect())
}
