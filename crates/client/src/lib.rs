//! A typed client of Trainyard's REST API, shared by the CLI and by the built-in tasks that
//! jobs run: the HTTP plumbing and error decoding ([`Client`]), datasets and their shards
//! ([`datasets`]), and a job's run through the MLflow-compatible API ([`runs`]).

pub mod datasets;
mod error;
pub mod runs;

use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use trainyard_core::Job;

pub use error::{ClientError, Context};

/// A connection to one server with one token. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// Sent as `X-Trainyard-Workspace`: the workspace calls act on (the token's when none).
    workspace: Option<String>,
}

impl Client {
    /// `server` is the base URL (`http://127.0.0.1:8080`); `token` is sent as a bearer.
    /// An `https` server's certificate is checked against the system's roots, and also
    /// against the PEM bundle `TRAINYARD_CA_CERT` names (a private CA; jobs get it set).
    pub fn new(server: &str, token: Option<String>) -> Result<Self, ClientError> {
        let mut http = reqwest::Client::builder();
        if let Some(path) = std::env::var_os("TRAINYARD_CA_CERT").filter(|p| !p.is_empty()) {
            let path = std::path::PathBuf::from(path);
            let unusable = |why: String| {
                ClientError::Unexpected(format!("TRAINYARD_CA_CERT={}: {why}", path.display()))
            };
            let pem = std::fs::read(&path).map_err(|e| unusable(e.to_string()))?;
            let roots = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| unusable(format!("not a PEM bundle ({e})")))?;
            if roots.is_empty() {
                return Err(unusable("no PEM certificate in it".into()));
            }
            for root in roots {
                http = http.add_root_certificate(root);
            }
        }
        Ok(Self {
            http: http.build()?,
            base: server.trim_end_matches('/').to_string(),
            token,
            workspace: None,
        })
    }

    /// Calls act on `workspace` (with the caller's role there) instead of the token's own.
    pub fn in_workspace(mut self, workspace: Option<String>) -> Self {
        self.workspace = workspace.filter(|w| !w.is_empty());
        self
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(w) = &self.workspace {
            req = req.header("x-trainyard-workspace", w);
        }
        req
    }

    /// Sends, and turns an error answer into a [`ClientError`] with the server's code.
    pub async fn send(&self, req: RequestBuilder) -> Result<Response, ClientError> {
        let response = req
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                base: self.base.clone(),
                source,
            })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let parsed = serde_json::from_str::<serde_json::Value>(&body).ok();
        let field = |f: &dyn Fn(&serde_json::Value) -> Option<&str>| {
            parsed.as_ref().and_then(f).map(str::to_string)
        };
        // REST v1: {"error": {"code", "message"}}; inference: {"error": "..."}; MLflow's
        // {"error_code", "message"} is shown whole (its code is part of what users search).
        let message =
            field(&|v| v["error"]["message"].as_str().or(v["error"].as_str())).unwrap_or(body);
        let code = field(&|v| v["error"]["code"].as_str().or(v["error_code"].as_str()));
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(ClientError::Unauthorized { message });
        }
        Err(ClientError::Api {
            status,
            code,
            message,
        })
    }

    pub async fn json<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, ClientError> {
        Ok(self.send(req).await?.json().await?)
    }

    pub async fn job(&self, id: &str) -> Result<Job, ClientError> {
        self.json(self.request(Method::GET, &format!("/api/v1/jobs/{id}")))
            .await
    }
}
