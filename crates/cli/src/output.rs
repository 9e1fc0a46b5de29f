//! Printing for people (aligned tables) and scripts (`--output json`).

use std::time::{Duration, UNIX_EPOCH};

use trainyard_core::Job;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

pub fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
}

/// `text` with its control characters written as escapes (`\n`, `\u{1b}`): names, labels
/// and messages come from other users and from jobs, and a newline or an escape sequence in
/// one must not fake lines or drive the terminal of whoever lists them.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect::<String>()
        .into()
}

/// Columns padded to their widest cell (cells made [`printable`]).
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| printable(c).into_owned()).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out += cell;
            } else {
                out += &format!("{cell:<w$}  ", w = widths[i]);
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row);
    }
}

pub fn time(ms: Option<i64>) -> String {
    match ms {
        Some(ms) if ms > 0 => {
            let t = UNIX_EPOCH + Duration::from_millis(ms as u64);
            humantime::format_rfc3339_seconds(t).to_string()
        }
        _ => "-".into(),
    }
}

pub fn duration(job: &Job) -> String {
    match (job.started_at_ms, job.finished_at_ms) {
        (Some(s), Some(f)) if f >= s && job.state.is_terminal() => {
            format!("{:.1}s", (f - s) as f64 / 1000.0)
        }
        (Some(s), _) if !job.state.is_terminal() => {
            let now = trainyard_core::time::now_ms();
            format!("{:.0}s", (now - s).max(0) as f64 / 1000.0)
        }
        _ => "-".into(),
    }
}

pub fn job_row(job: &Job) -> Vec<String> {
    vec![
        job.id.clone(),
        job.name.clone(),
        job.state.as_str().to_string(),
        job.attempt.to_string(),
        job.exit_code
            .map(|c| c.to_string())
            .unwrap_or_else(|| "-".into()),
        format!("{}", job.resources.cpus),
        job.resources.gpus.to_string(),
        time(Some(job.created_at_ms)),
        duration(job),
    ]
}

pub const JOB_HEADER: &[&str] = &[
    "ID", "NAME", "STATE", "ATTEMPT", "EXIT", "CPUS", "GPUS", "CREATED", "DURATION",
];

pub fn print_job(job: &Job) {
    let mut rows: Vec<(&str, String)> = vec![
        ("id", job.id.clone()),
        ("name", job.name.clone()),
        ("state", job.state.as_str().to_string()),
        match &job.task {
            Some(task) => (
                "task",
                format!(
                    "trainyard {}",
                    shell_words(
                        &task
                            .argv_after_program()
                            .map(str::to_string)
                            .collect::<Vec<_>>()
                    )
                ),
            ),
            None => ("command", shell_words(&job.command)),
        },
        (
            "exit code",
            job.exit_code
                .map(|c| c.to_string())
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "exit reason",
            job.exit_reason
                .map(|r| r.as_str().to_string())
                .unwrap_or_else(|| "-".into()),
        ),
        ("message", job.message.clone().unwrap_or_else(|| "-".into())),
        (
            "attempt",
            format!("{} (max retries {})", job.attempt, job.max_retries),
        ),
        (
            "resources",
            format!(
                "{} CPUs, {} GPUs, {}",
                job.resources.cpus,
                job.resources.gpus,
                job.resources
                    .memory_mb
                    .map(|m| format!("{m} MB"))
                    .unwrap_or_else(|| "no memory reserved".into())
            ),
        ),
        ("priority", job.priority.to_string()),
        ("host", job.host.clone().unwrap_or_else(|| "-".into())),
        (
            "gpus given",
            if job.gpus.is_empty() {
                "-".into()
            } else {
                format!("{:?}", job.gpus)
            },
        ),
        ("created", time(Some(job.created_at_ms))),
        ("started", time(job.started_at_ms)),
        ("finished", time(job.finished_at_ms)),
        ("duration", duration(job)),
    ];
    if let Some(t) = job.timeout_s {
        rows.push(("timeout", format!("{t}s")));
    }
    if !job.labels.is_empty() {
        let labels: Vec<String> = job.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        rows.push(("labels", labels.join(", ")));
    }
    for (k, v) in rows {
        println!("{:<12} {}", format!("{k}:"), printable(&v));
    }
}

fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_printed_as_escapes() {
        assert_eq!(printable("plain name é"), "plain name é");
        assert_eq!(
            printable("evil\nINFO fake \u{1b}[31mRED\r"),
            "evil\\nINFO fake \\u{1b}[31mRED\\r"
        );
    }
}
