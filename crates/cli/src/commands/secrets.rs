//! `trainyard secrets ls | set | rm`: a workspace's secrets (set and removed by its admins).
//! `set` reads the value from standard input, so it stays out of shell history and `ps`.

use std::io::Read;

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use crate::output::{print_json, print_table, Format};
use crate::ClientArgs;

#[derive(Subcommand)]
pub enum SecretsCommand {
    /// The names of the workspace's secrets (never their values).
    Ls {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Set a secret from standard input (one trailing newline is dropped):
    /// `printf %s "$TOKEN" | trainyard secrets set hf-token`.
    Set {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
    },
    /// Remove a secret.
    Rm {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
    },
}

pub async fn run(command: SecretsCommand) -> anyhow::Result<i32> {
    match command {
        SecretsCommand::Ls { client: args } => {
            let client = crate::client::connect(&args)?;
            let list: Value = client
                .json(client.request(Method::GET, "/api/v1/secrets"))
                .await?;
            match args.output {
                Format::Json => print_json(&list),
                Format::Table => {
                    let rows: Vec<Vec<String>> = list["secrets"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|s| {
                            vec![
                                s["name"].as_str().unwrap_or("").to_string(),
                                crate::output::time(s["updated_at_ms"].as_i64()),
                            ]
                        })
                        .collect();
                    print_table(&["NAME", "UPDATED"], &rows);
                }
            }
        }
        SecretsCommand::Set { client: args, name } => {
            let mut value = String::new();
            std::io::stdin().read_to_string(&mut value)?;
            let value = value.strip_suffix('\n').unwrap_or(&value);
            let client = crate::client::connect(&args)?;
            client
                .send(
                    client
                        .request(Method::PUT, &format!("/api/v1/secrets/{name}"))
                        .json(&json!({ "value": value })),
                )
                .await?;
            if args.output == Format::Table {
                println!("secret {name} set");
            }
        }
        SecretsCommand::Rm { client: args, name } => {
            let client = crate::client::connect(&args)?;
            client
                .send(client.request(Method::DELETE, &format!("/api/v1/secrets/{name}")))
                .await?;
            if args.output == Format::Table {
                println!("secret {name} removed");
            }
        }
    }
    Ok(0)
}
