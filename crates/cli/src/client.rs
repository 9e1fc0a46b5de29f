//! The HTTP client the CLI commands share.

use std::path::PathBuf;

use anyhow::{anyhow, Context};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use trainyard_core::Job;

use crate::ClientArgs;

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let base = args.server.trim_end_matches('/').to_string();
        let token = match &args.token {
            Some(t) => Some(t.clone()),
            None => local_admin_token(&base),
        };
        Ok(Self {
            http: reqwest::Client::builder().build()?,
            base,
            token,
        })
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    /// Sends and turns an error answer into a readable error.
    pub async fn send(&self, req: RequestBuilder) -> anyhow::Result<Response> {
        let response = req
            .send()
            .await
            .with_context(|| format!("cannot reach the Trainyard server at {}", self.base))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                // REST v1 errors are {"error": {"message"}}; inference errors {"error": "..."}.
                v["error"]["message"]
                    .as_str()
                    .or(v["error"].as_str())
                    .map(str::to_string)
            })
            .unwrap_or(body);
        if status == StatusCode::UNAUTHORIZED {
            return Err(anyhow!(
                "{message} (set TRAINYARD_TOKEN, or run next to the server's data dir so the CLI finds admin-token)"
            ));
        }
        Err(anyhow!("{message} (HTTP {})", status.as_u16()))
    }

    pub async fn json<T: DeserializeOwned>(&self, req: RequestBuilder) -> anyhow::Result<T> {
        Ok(self.send(req).await?.json().await?)
    }

    pub async fn job(&self, id: &str) -> anyhow::Result<Job> {
        self.json(self.request(Method::GET, &format!("/api/v1/jobs/{id}")))
            .await
    }
}

/// The token a local server wrote, when talking to a server on this machine.
fn local_admin_token(base: &str) -> Option<String> {
    let host = reqwest::Url::parse(base).ok()?.host_str()?.to_string();
    if !matches!(host.as_str(), "127.0.0.1" | "localhost" | "[::1]" | "::1") {
        return None;
    }
    let dir = std::env::var_os("TRAINYARD_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_DATA_DIR));
    let token = std::fs::read_to_string(dir.join("admin-token")).ok()?;
    Some(token.trim().to_string())
}
