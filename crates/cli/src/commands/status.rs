//! `trainyard status`: every pool's capacity, what is free, how much work waits, and the
//! nodes its engine reports.

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
            let gpus = |v: &Value| match v.as_array() {
                Some(list) => list.len().to_string(),
                None => "-".to_string(),
            };
            let pools = usage["pools"].as_array().cloned().unwrap_or_default();
            let rows: Vec<Vec<String>> = pools
                .iter()
                .map(|p| {
                    let (c, f) = (&p["capacity"], &p["free"]);
                    vec![
                        p["name"].as_str().unwrap_or("?").to_string(),
                        p["executor"].as_str().unwrap_or("?").to_string(),
                        format!("{}/{}", f["cpus"], c["cpus"]),
                        format!("{}/{}", f["memory_mb"], c["memory_mb"]),
                        format!("{}/{}", gpus(&f["gpus"]), gpus(&c["gpus"])),
                        p["running"].to_string(),
                        p["queued"].to_string(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "POOL",
                    "EXECUTOR",
                    "FREE/CPUS",
                    "FREE/MEMORY_MB",
                    "FREE/GPUS",
                    "RUNNING",
                    "QUEUED",
                ],
                &rows,
            );
            let opt = |v: &Value| {
                if v.is_null() {
                    "-".to_string()
                } else {
                    v.to_string()
                }
            };
            let nodes: Vec<Vec<String>> = pools
                .iter()
                .flat_map(|p| {
                    let pool = p["name"].as_str().unwrap_or("?").to_string();
                    let mut rows: Vec<Vec<String>> = p["nodes"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .iter()
                        .map(|n| {
                            vec![
                                pool.clone(),
                                n["name"].as_str().unwrap_or("?").to_string(),
                                n["state"].as_str().unwrap_or("?").to_string(),
                                format!("{}/{}", opt(&n["free_cpus"]), n["cpus"]),
                                format!("{}/{}", opt(&n["free_memory_mb"]), n["memory_mb"]),
                                format!("{}/{}", opt(&n["free_gpus"]), n["gpus"]),
                            ]
                        })
                        .collect();
                    if let Some(e) = p["inventory_error"].as_str() {
                        rows.push(vec![pool, "?".into(), format!("unknown: {e}")]);
                    }
                    rows
                })
                .collect();
            println!();
            print_table(
                &[
                    "POOL",
                    "NODE",
                    "STATE",
                    "FREE/CPUS",
                    "FREE/MEMORY_MB",
                    "FREE/GPUS",
                ],
                &nodes,
            );
        }
    }
    Ok(0)
}
