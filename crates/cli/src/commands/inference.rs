//! `trainyard infer NAME --input request.json`: one Open Inference Protocol request, for a
//! quick check from the terminal.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use reqwest::Method;
use serde_json::Value;

use crate::output::{print_json, print_table, Format};
use crate::ClientArgs;

#[derive(Args)]
pub struct InferArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Model name.
    name: String,
    /// A version number [default: the model's default version].
    #[arg(long)]
    version: Option<u64>,
    /// The request: `{"inputs": [{"name", "shape", "datatype", "data"}]}` (`-` = stdin).
    #[arg(long, short)]
    input: PathBuf,
}

/// A model name as one URL path segment.
pub fn segment(name: &str) -> String {
    let mut out = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub async fn infer(args: InferArgs) -> anyhow::Result<i32> {
    let text = if args.input.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).context("cannot read the request from stdin")?
    } else {
        std::fs::read_to_string(&args.input)
            .with_context(|| format!("cannot read {}", args.input.display()))?
    };
    let body: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", args.input.display()))?;
    let client = crate::client::connect(&args.client)?;
    let path = match args.version {
        Some(v) => format!("/v2/models/{}/versions/{v}/infer", segment(&args.name)),
        None => format!("/v2/models/{}/infer", segment(&args.name)),
    };
    let answer: Value = client
        .json(client.request(Method::POST, &path).json(&body))
        .await?;
    if args.client.output == Format::Json {
        print_json(&answer);
        return Ok(0);
    }
    println!(
        "model {} version {}",
        answer["model_name"].as_str().unwrap_or("?"),
        answer["model_version"].as_str().unwrap_or("?")
    );
    let rows: Vec<Vec<String>> = answer["outputs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| {
            let data = o["data"].as_array().cloned().unwrap_or_default();
            let mut shown: Vec<String> = data.iter().take(10).map(|v| v.to_string()).collect();
            if data.len() > 10 {
                shown.push(format!("… ({} values)", data.len()));
            }
            vec![
                o["name"].as_str().unwrap_or("").to_string(),
                o["datatype"].as_str().unwrap_or("").to_string(),
                o["shape"].to_string(),
                shown.join(", "),
            ]
        })
        .collect();
    print_table(&["OUTPUT", "DATATYPE", "SHAPE", "DATA"], &rows);
    Ok(0)
}
