//! What every attempt gets to log into its run, whatever executor runs it: the URL of this
//! server's MLflow-compatible API and a fresh token of its own, scoped to the job.

use trainyard_core::time::now_ms;
use trainyard_core::Job;
use trainyard_store::generate_token;
use trainyard_tracking::Tracking;

use crate::ComputeError;

/// What jobs need to log into their runs: the tracking service, and the URL by which the
/// job's process reaches this server's MLflow-compatible API.
#[derive(Clone)]
pub struct JobTracking {
    pub tracking: Tracking,
    pub tracking_uri: String,
    /// The CA bundle a job trusts this server's TLS certificate with, when it is not in the
    /// system's roots (`--tls-ca`): passed as `TRAINYARD_CA_CERT` and MLflow's
    /// `MLFLOW_TRACKING_SERVER_CERT_PATH`.
    pub ca_cert: Option<String>,
    /// The key workspace secrets are sealed with; without one a job that asks for a secret
    /// cannot start.
    pub secrets_key: Option<trainyard_store::SecretKey>,
}

impl JobTracking {
    /// The MLflow variables a job's process gets, so an MLflow client in it logs into the
    /// job's run with no configuration. Each attempt gets a fresh token of its own (`store`
    /// deletes it when the attempt's end is recorded).
    pub(crate) async fn attempt_env(
        &self,
        job: &Job,
    ) -> Result<Vec<(String, String)>, ComputeError> {
        let run = match self.tracking.get_run(&job.id).await {
            Ok(run) => run,
            // A job from before tracking existed has no run: it runs untracked.
            Err(trainyard_tracking::TrackingError::NotFound(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let token = generate_token();
        self.tracking
            .db()
            .insert_token(
                &trainyard_store::NewToken {
                    id: &trainyard_core::new_id(),
                    name: &format!("job:{}", job.id),
                    workspace: &job.workspace,
                    user_id: None,
                    narrowed: true,
                    read_only: false,
                    expires_at_ms: None,
                    created_at_ms: now_ms(),
                },
                &token,
            )
            .await?;
        let mut env = vec![
            ("MLFLOW_TRACKING_URI".into(), self.tracking_uri.clone()),
            ("MLFLOW_TRACKING_TOKEN".into(), token),
            ("MLFLOW_RUN_ID".into(), job.id.clone()),
            ("MLFLOW_EXPERIMENT_ID".into(), run.info.experiment_id),
        ];
        if let Some(ca) = &self.ca_cert {
            env.push(("TRAINYARD_CA_CERT".into(), ca.clone()));
            env.push(("MLFLOW_TRACKING_SERVER_CERT_PATH".into(), ca.clone()));
        }
        env.extend(self.secret_env(job).await?);
        Ok(env)
    }

    /// The job's secrets, opened from its workspace's, as the variables it named.
    async fn secret_env(&self, job: &Job) -> Result<Vec<(String, String)>, ComputeError> {
        let mut env = Vec::with_capacity(job.secrets.len());
        for (var, name) in &job.secrets {
            let refused = |why: String| {
                ComputeError::Invalid(trainyard_core::InvalidField::new(
                    format!("secrets.{var}"),
                    why,
                ))
            };
            let key = self.secrets_key.as_ref().ok_or_else(|| {
                refused("this server has no secrets key to open secrets with".into())
            })?;
            match self
                .tracking
                .db()
                .open_secret(key, &job.workspace, name)
                .await?
            {
                Some(Ok(value)) => env.push((var.clone(), value)),
                Some(Err(e)) => return Err(refused(format!("secret `{name}`: {e}"))),
                None => {
                    return Err(refused(format!(
                        "workspace `{}` has no secret `{name}` any more",
                        job.workspace
                    )))
                }
            }
        }
        Ok(env)
    }
}
