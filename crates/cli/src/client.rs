//! Connecting the CLI to a server: the typed client, with the token found the way a user
//! expects (the flag or `TRAINYARD_TOKEN`, else a local server's admin token file).

use std::path::PathBuf;

pub use trainyard_client::Client;

use crate::ClientArgs;

pub fn connect(args: &ClientArgs) -> anyhow::Result<Client> {
    let token = match &args.token {
        Some(t) => Some(t.clone()),
        None => local_admin_token(&args.server),
    };
    Ok(Client::new(&args.server, token)?.in_workspace(args.workspace.clone()))
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
