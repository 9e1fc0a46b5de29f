//! Kubernetes as a cluster engine, through kube-rs: each attempt is one `batch/v1` Job
//! (`backoffLimit: 0`: Trainyard retries, not Kubernetes) whose single container runs the
//! job's argv in the pool's image, with CPU, memory and `nvidia.com/gpu` requests and the
//! job's environment from a Secret of the same name (its token never sits in the Job's
//! spec). Logs come from the pod; a cancel deletes the Job, its pods and the Secret.
//!
//! No API server could be run where this was written: it is tested against recorded API
//! exchanges (`tests/fixtures/kubernetes`), never against a live cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, Event, LocalObjectReference, Node as K8sNode, Pod, PodSpec,
    PodTemplateSpec, ResourceRequirements, Secret, SecretEnvSource,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};
use trainyard_core::ExitReason;

use super::cluster::{Ended, Engine, EngineError, EngineJob, EngineState};
use super::Node;

/// The container every job's pod runs (its logs are read by this name).
const CONTAINER: &str = "job";
/// Set on every Job, Secret and pod Trainyard makes.
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "trainyard");
/// The label the Job controller puts on a Job's pods (Kubernetes 1.27+).
const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// A Kubernetes pool's settings (`[[pools]] executor = "kubernetes"`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSettings {
    /// The image jobs run in; for built-in tasks it holds `trainyard` at the pool's
    /// `program` (`deploy/Dockerfile` makes one).
    pub image: String,
    /// Where Jobs are made [default: the kubeconfig's namespace, or the server's own pod's].
    #[serde(default)]
    pub namespace: Option<String>,
    /// A kubeconfig [default: the pod's service account in a cluster, else `KUBECONFIG`
    /// or `~/.kube/config`].
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Labels the jobs' nodes must have.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
    /// The service account of the jobs' pods [default: the namespace's `default`].
    #[serde(default)]
    pub service_account: Option<String>,
    /// Secrets for pulling the image.
    #[serde(default)]
    pub image_pull_secrets: Vec<String>,
}

/// Kubernetes through its API.
pub struct Kubernetes {
    client: kube::Client,
    namespace: String,
    settings: KubernetesSettings,
    /// The API server's URL, for errors.
    url: String,
}

impl Kubernetes {
    /// Builds a client from the settings and lists the nodes once (an API server that
    /// cannot be reached, or refuses, is an error naming it).
    pub async fn connect(settings: &KubernetesSettings) -> Result<Self, EngineError> {
        let config = match &settings.kubeconfig {
            Some(path) => {
                let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                    EngineError::Rejected(format!("cannot read kubeconfig {}: {e}", path.display()))
                })?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                    .await
                    .map_err(|e| {
                        EngineError::Rejected(format!("kubeconfig {}: {e}", path.display()))
                    })?
            }
            None => kube::Config::infer()
                .await
                .map_err(|e| EngineError::Rejected(format!("no Kubernetes configuration: {e}")))?,
        };
        let url = config.cluster_url.to_string();
        let namespace = settings
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = kube::Client::try_from(config)
            .map_err(|e| EngineError::Rejected(format!("Kubernetes client for {url}: {e}")))?;
        let this = Self {
            client,
            namespace,
            settings: settings.clone(),
            url,
        };
        this.nodes().await.map_err(|e| {
            EngineError::Unavailable(format!(
                "the Kubernetes API at {} cannot be used: {e}",
                this.url
            ))
        })?;
        Ok(this)
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The Job for `job` (its environment comes from the Secret of the same name).
    pub fn job_object(&self, job: &EngineJob) -> Job {
        let labels = BTreeMap::from([
            (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
            ("trainyard.io/attempt".to_string(), job.name.clone()),
        ]);
        let mut requests = BTreeMap::from([("cpu".to_string(), Quantity(job.cpus.to_string()))]);
        let mut limits = BTreeMap::new();
        if let Some(mb) = job.memory_mb {
            requests.insert("memory".into(), Quantity(format!("{mb}Mi")));
            limits.insert("memory".into(), Quantity(format!("{mb}Mi")));
        }
        if job.gpus > 0 {
            limits.insert("nvidia.com/gpu".into(), Quantity(job.gpus.to_string()));
        }
        Job {
            metadata: ObjectMeta {
                name: Some(job.name.clone()),
                labels: Some(labels.clone()),
                ..Default::default()
            },
            spec: Some(JobSpec {
                backoff_limit: Some(0),
                active_deadline_seconds: job.time_limit_s.map(|s| s as i64),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(labels),
                        ..Default::default()
                    }),
                    spec: Some(PodSpec {
                        restart_policy: Some("Never".into()),
                        containers: vec![Container {
                            name: CONTAINER.into(),
                            image: Some(self.settings.image.clone()),
                            command: Some(job.argv.clone()),
                            working_dir: job.working_dir.clone(),
                            env_from: Some(vec![EnvFromSource {
                                secret_ref: Some(SecretEnvSource {
                                    name: job.name.clone(),
                                    optional: Some(false),
                                }),
                                ..Default::default()
                            }]),
                            resources: Some(ResourceRequirements {
                                requests: Some(requests),
                                limits: (!limits.is_empty()).then_some(limits),
                                ..Default::default()
                            }),
                            ..Default::default()
                        }],
                        node_selector: (!self.settings.node_selector.is_empty())
                            .then(|| self.settings.node_selector.clone()),
                        service_account_name: self.settings.service_account.clone(),
                        image_pull_secrets: (!self.settings.image_pull_secrets.is_empty()).then(
                            || {
                                self.settings
                                    .image_pull_secrets
                                    .iter()
                                    .map(|name| LocalObjectReference { name: name.clone() })
                                    .collect()
                            },
                        ),
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The Secret holding `job`'s environment.
    pub fn secret_object(job: &EngineJob) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some(job.name.clone()),
                labels: Some(BTreeMap::from([(
                    MANAGED_BY.0.to_string(),
                    MANAGED_BY.1.to_string(),
                )])),
                ..Default::default()
            },
            type_: Some("Opaque".into()),
            string_data: Some(job.env.iter().cloned().collect()),
            ..Default::default()
        }
    }

    /// The newest warning event about Job `name`, as `REASON: message`.
    async fn latest_warning(&self, name: &str) -> Option<String> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let params = ListParams::default().fields(&format!(
            "involvedObject.kind=Job,involvedObject.name={name}"
        ));
        let list = events.list(&params).await.ok()?;
        list.items
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .max_by_key(|e| e.last_timestamp.clone().map(|t| t.0))
            .map(|e| {
                format!(
                    "{}: {}",
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default()
                )
            })
    }

    /// The attempt's pod (the newest, should there be several).
    async fn pod(&self, name: &str) -> Result<Option<Pod>, EngineError> {
        let pods = self
            .pods()
            .list(&ListParams::default().labels(&format!("{JOB_NAME_LABEL}={name}")))
            .await
            .map_err(api_error)?;
        Ok(pods
            .items
            .into_iter()
            .max_by_key(|p| p.metadata.creation_timestamp.clone()))
    }
}

/// A kube error as an engine error: the API's refusals (4xx) are final, the rest not.
fn api_error(e: kube::Error) -> EngineError {
    match e {
        kube::Error::Api(status) if status.code >= 400 && status.code < 500 => {
            EngineError::Rejected(format!("{} ({})", status.message, status.reason))
        }
        other => EngineError::Unavailable(other.to_string()),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 404)
}

/// CPUs in a quantity: `"4"`, `"7910m"`, `"1.5"`.
pub fn parse_cpu(q: &str) -> Option<f64> {
    match q.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().ok().map(|m| m / 1000.0),
        None => q.parse().ok(),
    }
}

/// Megabytes (MiB) in a memory quantity: `"31Gi"`, `"16318976Ki"`, `"129M"`, `"1e9"`.
pub fn parse_memory_mb(q: &str) -> Option<u64> {
    const UNITS: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (number, factor) = UNITS
        .iter()
        .find_map(|(suffix, f)| q.strip_suffix(suffix).map(|n| (n, *f)))
        .unwrap_or((q, 1.0));
    let bytes = number.parse::<f64>().ok()? * factor;
    (bytes.is_finite() && bytes >= 0.0).then(|| (bytes / 1048576.0) as u64)
}

/// Trainyard's view of a Job and its pod.
pub fn parse_state(job: &Job, pod: Option<&Pod>) -> EngineState {
    let status = job.status.clone().unwrap_or_default();
    let condition = |kind: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == kind && c.status == "True")
            .cloned()
    };
    let terminated = pod
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == CONTAINER))
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.clone());
    let ended = |reason: ExitReason, exit_code: Option<i32>, signal: Option<i32>, says: String| {
        EngineState::Ended(Ended {
            reason,
            exit_code,
            signal,
            engine_says: says,
        })
    };
    if condition("Complete").is_some() {
        return ended(ExitReason::Exited, Some(0), None, "Complete".into());
    }
    if let Some(failed) = condition("Failed") {
        let why = failed.reason.clone().unwrap_or_default();
        let says = match &failed.message {
            Some(m) if !m.is_empty() => format!("Failed ({why}: {m})"),
            _ => format!("Failed ({why})"),
        };
        if why == "DeadlineExceeded" {
            return ended(ExitReason::Timeout, None, None, says);
        }
        return match terminated {
            Some(t) if t.reason.as_deref() == Some("OOMKilled") => ended(
                ExitReason::Signaled,
                None,
                Some(9),
                format!("{says}; container OOMKilled"),
            ),
            Some(t) => match t.signal {
                Some(sig) if sig != 0 => ended(ExitReason::Signaled, None, Some(sig), says),
                _ => ended(ExitReason::Exited, Some(t.exit_code), None, says),
            },
            // The pod is gone (evicted, node lost): nobody knows how it ended.
            None => ended(ExitReason::Lost, None, None, says),
        };
    }
    let Some(pod) = pod else {
        return EngineState::Pending("no pod yet".into());
    };
    let pod_status = pod.status.clone().unwrap_or_default();
    let waiting = pod_status
        .container_statuses
        .iter()
        .flatten()
        .filter_map(|c| c.state.as_ref()?.waiting.clone())
        .next();
    match pod_status.phase.as_deref() {
        Some("Running") => {
            EngineState::Running(pod.spec.as_ref().and_then(|s| s.node_name.clone()))
        }
        _ => {
            let unscheduled = pod_status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False");
            let why = match (unscheduled, waiting) {
                (Some(c), _) => format!(
                    "{}: {}",
                    c.reason.clone().unwrap_or_default(),
                    c.message.clone().unwrap_or_default()
                ),
                (None, Some(w)) => format!(
                    "{}: {}",
                    w.reason.unwrap_or_default(),
                    w.message.unwrap_or_default()
                ),
                (None, None) => pod_status.phase.unwrap_or_else(|| "Pending".into()),
            };
            EngineState::Pending(why.trim_end_matches(": ").to_string())
        }
    }
}

/// Trainyard's view of the nodes.
pub fn parse_nodes(nodes: &[K8sNode]) -> Vec<Node> {
    nodes
        .iter()
        .map(|n| {
            let status = n.status.clone().unwrap_or_default();
            let allocatable = status.allocatable.unwrap_or_default();
            let get = |k: &str| allocatable.get(k).map(|q| q.0.clone()).unwrap_or_default();
            let ready = status
                .conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == "Ready");
            let cordoned = n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
            let state = match ready {
                Some(c) if c.status == "True" && !cordoned => "ready".to_string(),
                Some(c) if c.status == "True" => "drain (cordoned)".to_string(),
                Some(c) => format!("down ({})", c.reason.clone().unwrap_or_default()),
                None => "unknown".to_string(),
            };
            Node {
                name: n.metadata.name.clone().unwrap_or_default(),
                state,
                cpus: parse_cpu(&get("cpu")).unwrap_or(0.0),
                memory_mb: parse_memory_mb(&get("memory")).unwrap_or(0),
                gpus: get("nvidia.com/gpu").parse().unwrap_or(0),
                free_cpus: None,
                free_memory_mb: None,
                free_gpus: None,
            }
        })
        .collect()
}

#[async_trait]
impl Engine for Kubernetes {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn supports_gangs(&self) -> bool {
        false
    }

    async fn submit(&self, job: &EngineJob) -> Result<String, EngineError> {
        let name = job.name.clone();
        let post = PostParams::default();
        match self
            .secrets()
            .create(&post, &Self::secret_object(job))
            .await
        {
            Ok(_) => {}
            // Made by an earlier try whose answer was lost: replace its content.
            Err(e) if matches!(&e, kube::Error::Api(s) if s.code == 409) => {
                self.secrets()
                    .replace(&name, &post, &Self::secret_object(job))
                    .await
                    .map_err(api_error)?;
            }
            Err(e) => return Err(api_error(e)),
        }
        let created = match self.jobs().create(&post, &self.job_object(job)).await {
            Ok(created) => created,
            Err(e) if matches!(&e, kube::Error::Api(s) if s.code == 409) => {
                return Ok(name);
            }
            Err(e) => {
                let _ = self.secrets().delete(&name, &DeleteParams::default()).await;
                return Err(api_error(e));
            }
        };
        // The Secret goes with the Job when the Job is deleted (by us or by a TTL).
        if let Some(uid) = created.metadata.uid {
            let owner = serde_json::json!({"metadata": {"ownerReferences": [OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name: name.clone(),
                uid,
                ..Default::default()
            }]}});
            if let Err(e) = self
                .secrets()
                .patch(&name, &PatchParams::default(), &Patch::Merge(&owner))
                .await
            {
                tracing::warn!(secret = %name, error = %e, "cannot tie the job's Secret to its Job; it is deleted with the job instead");
            }
        }
        Ok(name)
    }

    async fn find(&self, name: &str) -> Result<Option<String>, EngineError> {
        match self.jobs().get(name).await {
            Ok(_) => Ok(Some(name.to_string())),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(api_error(e)),
        }
    }

    async fn state(&self, id: &str) -> Result<Option<EngineState>, EngineError> {
        let job = match self.jobs().get(id).await {
            Ok(job) => job,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(api_error(e)),
        };
        let pod = self.pod(id).await?;
        let state = parse_state(&job, pod.as_ref());
        // No pod at all: the Job controller cannot make one (a quota, an admission
        // webhook); its latest warning says why.
        if pod.is_none() && matches!(state, EngineState::Pending(_)) {
            if let Some(why) = self.latest_warning(id).await {
                return Ok(Some(EngineState::Pending(why)));
            }
        }
        Ok(Some(state))
    }

    async fn stop(&self, id: &str) -> Result<(), EngineError> {
        let result = self.jobs().delete(id, &DeleteParams::background()).await;
        let _ = self.secrets().delete(id, &DeleteParams::default()).await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(api_error(e)),
        }
    }

    /// The log call used here answers the whole output each time.
    fn reads_output_whole(&self) -> bool {
        true
    }

    async fn pull_output(&self, id: &str, spool: &Path, pulled: u64) -> Result<(), EngineError> {
        let Some(pod) = self.pod(id).await? else {
            return Ok(());
        };
        let name = pod.metadata.name.unwrap_or_default();
        let params = LogParams {
            container: Some(CONTAINER.into()),
            ..Default::default()
        };
        // Before the container starts the API answers 400 ("waiting to start"): nothing yet.
        let Ok(log) = self.pods().logs(&name, &params).await else {
            return Ok(());
        };
        super::cluster::append_new_output(spool, log.as_bytes(), pulled)
    }

    async fn nodes(&self) -> Result<Vec<Node>, EngineError> {
        let api: Api<K8sNode> = Api::all(self.client.clone());
        let nodes = api.list(&ListParams::default()).await.map_err(api_error)?;
        Ok(parse_nodes(&nodes.items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_as_the_api_writes_them() {
        assert_eq!(parse_cpu("4"), Some(4.0));
        assert_eq!(parse_cpu("7910m"), Some(7.91));
        assert_eq!(parse_cpu("1.5"), Some(1.5));
        assert_eq!(parse_memory_mb("31Gi"), Some(31 * 1024));
        assert_eq!(parse_memory_mb("16318976Ki"), Some(15936));
        assert_eq!(parse_memory_mb("1e9"), Some(953));
        assert_eq!(parse_memory_mb("129M"), Some(123));
        assert_eq!(parse_memory_mb("garbage"), None);
        assert_eq!(parse_memory_mb("-1Gi"), None);
    }
}
