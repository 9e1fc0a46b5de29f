//! `trainyard status`: what the machine has, what is free, and how much work waits.

use reqwest::Method;
use serde_json::Value;

use crate::output::{print_json, print_table, Format};
use crate::ClientArgs;

pub async fn run(args: ClientArgs) -> anyhow::Result<i32> {
    let client = crate::client::connect(&args)?;
    let usage: Value = client
        .json(client.request(Method::GET, "/api/v1/resources"))
        .await?;
    match args.output {
        Format::Json => print_json(&usage),
        Format::Table => {
            let gpus = |v: &Value| {
                let list: Vec<String> = v
                    .as_array()
                    .map(|a| a.iter().map(|g| g.to_string()).collect())
                    .unwrap_or_default();
                if list.is_empty() {
                    "-".to_string()
                } else {
                    list.join(",")
                }
            };
            let row = |what: &str, v: &Value| {
                vec![
                    what.to_string(),
                    v["cpus"].to_string(),
                    v["memory_mb"].to_string(),
                    gpus(&v["gpus"]),
                ]
            };
            print_table(
                &["", "CPUS", "MEMORY_MB", "GPUS"],
                &[
                    row("capacity", &usage["capacity"]),
                    row("free", &usage["free"]),
                ],
            );
            println!("\n{} running, {} queued", usage["running"], usage["queued"]);
        }
    }
    Ok(0)
}
