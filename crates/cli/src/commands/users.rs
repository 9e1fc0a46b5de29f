//! `trainyard users …` (owners) and `trainyard tokens …` (everyone, for their own tokens).

use clap::Subcommand;
use reqwest::Method;
use serde_json::{json, Value};

use crate::output::{print_json, print_table, Format};
use crate::ClientArgs;

#[derive(Subcommand)]
pub enum UsersCommand {
    /// Every user with their roles.
    Ls {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Add a user; give them roles with `trainyard workspaces grant` and a token with
    /// `trainyard tokens create --user`.
    Add {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
        /// A cluster-wide owner.
        #[arg(long)]
        owner: bool,
    },
    /// Remove a user with their tokens and roles.
    Rm {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
    },
    /// Set a user's password (yours, or anyone's as an owner) from standard input, for
    /// `trainyard login` and the UI; `--clear` removes it. Changing your own once set needs
    /// `--current`; without it (a first password, an owner's reset) the token must not expire.
    Passwd {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
        #[arg(long)]
        clear: bool,
        /// The first line of standard input is the current password, the next the new one
        /// (with `--clear`, the current one only).
        #[arg(long)]
        current: bool,
    },
}

/// Read one line (a password) from standard input, without its newline.
fn read_secret_line() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

#[derive(Subcommand)]
pub enum TokensCommand {
    /// Your tokens (`--all`: everyone's, for owners). Never their values.
    Ls {
        #[command(flatten)]
        client: ClientArgs,
        #[arg(long)]
        all: bool,
    },
    /// Make a token acting in the workspace given by `--workspace` (or your token's), and
    /// print it once.
    Create {
        #[command(flatten)]
        client: ClientArgs,
        name: String,
        /// For another user (owners).
        #[arg(long)]
        user: Option<String>,
        /// Acts only in that workspace.
        #[arg(long)]
        narrowed: bool,
        /// Only reads.
        #[arg(long)]
        read_only: bool,
        /// Stops working after this many days.
        #[arg(long)]
        expires_in_days: Option<u64>,
    },
    /// Revoke a token by id.
    Revoke {
        #[command(flatten)]
        client: ClientArgs,
        id: String,
    },
}

fn date(ms: &Value) -> String {
    match ms.as_i64() {
        Some(ms) => crate::output::time(Some(ms)),
        None => "-".into(),
    }
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or("-").to_string()
}

pub async fn run_users(command: UsersCommand) -> anyhow::Result<i32> {
    match command {
        UsersCommand::Ls { client: args } => {
            let client = crate::client::connect(&args)?;
            let list: Value = client
                .json(client.request(Method::GET, "/api/v1/users"))
                .await?;
            match args.output {
                Format::Json => print_json(&list),
                Format::Table => {
                    let rows: Vec<Vec<String>> = list["users"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|u| {
                            let roles = u["roles"]
                                .as_object()
                                .map(|r| {
                                    r.iter()
                                        .map(|(w, role)| format!("{w}:{}", text(role)))
                                        .collect::<Vec<_>>()
                                        .join(",")
                                })
                                .unwrap_or_default();
                            vec![
                                text(&u["name"]),
                                if u["owner"] == true { "yes" } else { "" }.into(),
                                roles,
                                date(&u["created_at_ms"]),
                            ]
                        })
                        .collect();
                    print_table(&["NAME", "OWNER", "ROLES", "CREATED"], &rows);
                }
            }
        }
        UsersCommand::Add {
            client: args,
            name,
            owner,
        } => {
            let client = crate::client::connect(&args)?;
            let user: Value = client
                .json(
                    client
                        .request(Method::POST, "/api/v1/users")
                        .json(&json!({"name": name, "owner": owner})),
                )
                .await?;
            match args.output {
                Format::Json => print_json(&user),
                Format::Table => println!("added user {name}"),
            }
        }
        UsersCommand::Passwd {
            client: args,
            name,
            clear,
            current,
        } => {
            let mut body = json!({});
            if current {
                body["current_password"] = json!(read_secret_line()?);
            }
            body["password"] = if clear {
                Value::Null
            } else {
                json!(read_secret_line()?)
            };
            let client = crate::client::connect(&args)?;
            client
                .send(
                    client
                        .request(Method::PUT, &format!("/api/v1/users/{name}/password"))
                        .json(&body),
                )
                .await?;
            if args.output == Format::Table {
                println!(
                    "password of {name} {}",
                    if clear { "removed" } else { "set" }
                );
            }
        }
        UsersCommand::Rm { client: args, name } => {
            let client = crate::client::connect(&args)?;
            client
                .send(client.request(Method::DELETE, &format!("/api/v1/users/{name}")))
                .await?;
            if args.output == Format::Table {
                println!("removed user {name} with their tokens and roles");
            }
        }
    }
    Ok(0)
}

pub async fn run_tokens(command: TokensCommand) -> anyhow::Result<i32> {
    match command {
        TokensCommand::Ls { client: args, all } => {
            let client = crate::client::connect(&args)?;
            let path = if all {
                "/api/v1/tokens?all=true"
            } else {
                "/api/v1/tokens"
            };
            let list: Value = client.json(client.request(Method::GET, path)).await?;
            match args.output {
                Format::Json => print_json(&list),
                Format::Table => {
                    let rows: Vec<Vec<String>> = list["tokens"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|t| {
                            let mut scope = Vec::new();
                            if t["narrowed"] == true {
                                scope.push("narrowed");
                            }
                            if t["read_only"] == true {
                                scope.push("read-only");
                            }
                            vec![
                                text(&t["id"]),
                                text(&t["name"]),
                                text(&t["user"]),
                                text(&t["workspace"]),
                                scope.join(","),
                                date(&t["expires_at_ms"]),
                            ]
                        })
                        .collect();
                    print_table(
                        &["ID", "NAME", "USER", "WORKSPACE", "SCOPE", "EXPIRES"],
                        &rows,
                    );
                }
            }
        }
        TokensCommand::Create {
            client: args,
            name,
            user,
            narrowed,
            read_only,
            expires_in_days,
        } => {
            let client = crate::client::connect(&args)?;
            let mut body = json!({"name": name, "narrowed": narrowed, "read_only": read_only});
            if let Some(user) = user {
                body["user"] = json!(user);
            }
            if let Some(days) = expires_in_days {
                body["expires_in_s"] = json!(days.saturating_mul(86_400));
            }
            let made: Value = client
                .json(client.request(Method::POST, "/api/v1/tokens").json(&body))
                .await?;
            match args.output {
                Format::Json => print_json(&made),
                Format::Table => {
                    eprintln!(
                        "token {} ({}) for {} in workspace {}; it is shown this once:",
                        text(&made["id"]),
                        text(&made["name"]),
                        text(&made["user"]),
                        text(&made["workspace"]),
                    );
                    println!("{}", text(&made["token"]));
                }
            }
        }
        TokensCommand::Revoke { client: args, id } => {
            let client = crate::client::connect(&args)?;
            client
                .send(client.request(Method::DELETE, &format!("/api/v1/tokens/{id}")))
                .await?;
            if args.output == Format::Table {
                println!("revoked token {id}");
            }
        }
    }
    Ok(0)
}

/// `trainyard login --user NAME`: a password from standard input for a token that expires.
#[derive(clap::Args)]
pub struct LoginArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[arg(long)]
    pub user: String,
    /// Hours the token lasts (at most 720).
    #[arg(long, default_value_t = 12)]
    pub hours: u64,
}

/// Prints the token (and only it, on standard output).
pub async fn login(args: LoginArgs) -> anyhow::Result<i32> {
    let password = read_secret_line()?;
    let client = crate::client::Client::new(&args.client.server, None)?;
    let mut body = json!({
        "user": args.user,
        "password": password,
        "expires_in_s": args.hours.saturating_mul(3600),
    });
    if let Some(w) = &args.client.workspace {
        body["workspace"] = json!(w);
    }
    let made: Value = client
        .json(client.request(Method::POST, "/api/v1/login").json(&body))
        .await?;
    match args.client.output {
        Format::Json => print_json(&made),
        Format::Table => println!("{}", text(&made["token"])),
    }
    Ok(0)
}
