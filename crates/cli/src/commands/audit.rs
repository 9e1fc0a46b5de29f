//! `trainyard audit`: the audit trail, newest first (admin tokens only).

use clap::Args;
use reqwest::Method;
use serde::Deserialize;
use trainyard_core::AuditEvent;

use crate::output::{print_json, print_table, time, Format};
use crate::ClientArgs;

#[derive(Args)]
pub struct AuditArgs {
    #[command(flatten)]
    client: ClientArgs,
    /// Only events this recent: `30m`, `12h`, `7d`.
    #[arg(long, value_parser = parse_age)]
    since: Option<i64>,
    /// Only `ok`, `denied` or `failed` calls.
    #[arg(long)]
    outcome: Option<String>,
    /// Only calls made with this token (its id).
    #[arg(long)]
    token_id: Option<String>,
    /// Only calls whose action starts with this (`POST /api/v1/jobs`).
    #[arg(long)]
    action: Option<String>,
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Continue after this event (the `next_cursor` of the previous page).
    #[arg(long)]
    cursor: Option<String>,
}

#[derive(Deserialize)]
struct AuditPage {
    events: Vec<AuditEvent>,
    next_cursor: Option<String>,
}

/// `30m`, `12h`, `7d` (or plain seconds) as milliseconds.
fn parse_age(s: &str) -> Result<i64, String> {
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = number
        .parse()
        .map_err(|_| format!("`{s}`: use a number with s, m, h or d (`12h`)"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{s}`: the unit must be s, m, h or d")),
    };
    n.checked_mul(seconds * 1000)
        .ok_or_else(|| format!("`{s}` is too long ago"))
}

pub async fn run(args: AuditArgs) -> anyhow::Result<i32> {
    let client = crate::client::connect(&args.client)?;
    let mut query = vec![("limit", args.limit.to_string())];
    if let Some(age) = args.since {
        query.push((
            "since_ms",
            (trainyard_core::time::now_ms() - age).max(0).to_string(),
        ));
    }
    for (key, value) in [
        ("outcome", args.outcome),
        ("token_id", args.token_id),
        ("action", args.action),
        ("cursor", args.cursor),
    ] {
        if let Some(v) = value {
            query.push((key, v));
        }
    }
    let page: AuditPage = client
        .json(client.request(Method::GET, "/api/v1/audit").query(&query))
        .await?;
    match args.client.output {
        Format::Json => print_json(&serde_json::json!({
            "events": page.events, "next_cursor": page.next_cursor
        })),
        Format::Table => {
            let rows: Vec<Vec<String>> = page
                .events
                .iter()
                .map(|e| {
                    vec![
                        time(Some(e.at_ms)),
                        e.principal.clone().unwrap_or_else(|| "-".into()),
                        e.action.clone(),
                        e.target.clone(),
                        format!("{} {}", e.outcome.as_str(), e.status),
                        e.client.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            print_table(
                &["TIME", "WHO", "ACTION", "TARGET", "OUTCOME", "FROM"],
                &rows,
            );
            if let Some(next) = &page.next_cursor {
                eprintln!("(more events: --cursor {next})");
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::parse_age;

    #[test]
    fn ages() {
        assert_eq!(parse_age("90"), Ok(90_000));
        assert_eq!(parse_age("30m"), Ok(1_800_000));
        assert_eq!(parse_age("12h"), Ok(43_200_000));
        assert_eq!(parse_age("7d"), Ok(604_800_000));
        assert!(parse_age("7w").is_err());
        assert!(parse_age("h").is_err());
        assert!(parse_age("99999999999999999d").is_err());
    }
}
