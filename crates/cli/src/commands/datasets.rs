//! `trainyard dataset …`: import files as versioned datasets, derive versions with
//! processing steps, and look at them. Import and processing run in this process (the
//! files are here); shards go to the server under their checksums and the version is
//! committed last, so an interrupted import leaves no version behind.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use clap::{Subcommand, ValueEnum};
use reqwest::Method;
use serde::Deserialize;
use trainyard_data::{Column, Format, ImportOptions, OnBad, Step};

use crate::output::{print_json, print_table, Format as Output};
use crate::ClientArgs;
use trainyard_client::datasets::{self as remote, RemoteShards};
use trainyard_core::dataset::{CreatedVersion, DatasetVersionInfo};

#[derive(Subcommand)]
pub enum DatasetCommand {
    /// Import CSV (also .gz), JSONL, Parquet, IDX (MNIST) or an image folder as a new version.
    Import {
        #[command(flatten)]
        client: ClientArgs,
        /// Dataset name.
        name: String,
        /// File or folder to import.
        path: PathBuf,
        /// Format [default: from the path].
        #[arg(long, value_enum)]
        format: Option<FormatArg>,
        /// CSV: the first row is a header.
        #[arg(long, conflicts_with = "no_header")]
        header: bool,
        /// CSV: there is no header row (columns are named c0, c1, …).
        #[arg(long)]
        no_header: bool,
        /// Images: skip files that do not decode instead of failing.
        #[arg(long)]
        skip_bad_files: bool,
        /// Rows per shard.
        #[arg(long, default_value_t = trainyard_data::DEFAULT_SHARD_ROWS)]
        shard_rows: usize,
    },
    /// Apply processing steps (a TOML file with [[steps]]) to a version, making a new one.
    Process {
        #[command(flatten)]
        client: ClientArgs,
        /// `NAME[:VERSION]` to start from.
        dataset: String,
        /// TOML (or JSON) with `[[steps]]`: stack, split, shuffle, standardize, normalize,
        /// label_encode, rename, drop, cast, resize, filter.
        #[arg(long)]
        steps: PathBuf,
        /// Name of the result [default: the same dataset, as a new version].
        #[arg(long)]
        into: Option<String>,
    },
    /// List datasets with their latest version.
    Ls(ClientArgs),
    /// A version's schema, lineage and shards (and the other versions).
    Show {
        #[command(flatten)]
        client: ClientArgs,
        dataset: String,
    },
    /// The first rows of a version.
    Head {
        #[command(flatten)]
        client: ClientArgs,
        dataset: String,
        #[arg(short = 'n', long, default_value_t = 10)]
        rows: usize,
    },
    /// Per-column statistics and class histograms.
    Stats {
        #[command(flatten)]
        client: ClientArgs,
        dataset: String,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum FormatArg {
    Csv,
    Jsonl,
    Parquet,
    Idx,
    ImageFolder,
}

#[derive(Deserialize)]
struct StepsFile {
    steps: Vec<Step>,
}

pub async fn run(command: DatasetCommand) -> anyhow::Result<i32> {
    match command {
        DatasetCommand::Import {
            client,
            name,
            path,
            format,
            header,
            no_header,
            skip_bad_files,
            shard_rows,
        } => {
            let args = client;
            let client = crate::client::connect(&args)?;
            let options = ImportOptions {
                format: format.map(|f| match f {
                    FormatArg::Csv => Format::Csv,
                    FormatArg::Jsonl => Format::Jsonl,
                    FormatArg::Parquet => Format::Parquet,
                    FormatArg::Idx => Format::Idx,
                    FormatArg::ImageFolder => Format::ImageFolder,
                }),
                header: match (header, no_header) {
                    (true, _) => Some(true),
                    (_, true) => Some(false),
                    _ => None,
                },
                on_bad_file: if skip_bad_files {
                    OnBad::Skip
                } else {
                    OnBad::Fail
                },
                shard_rows,
            };
            let mut sink = RemoteShards::new(client.clone(), None)?;
            let started = std::time::Instant::now();
            let (manifest, report, sink) = tokio::task::spawn_blocking(move || {
                let (m, r) = trainyard_data::import_with_report(&path, &options, &mut sink)?;
                anyhow::Ok((m, r, sink))
            })
            .await??;
            for skipped in &report.skipped {
                eprintln!("skipped {skipped}: not a decodable image");
            }
            let created = remote::commit_version(&client, &name, &manifest).await?;
            finish_version(&args, &created, manifest.rows, sink.uploaded_bytes, started)
        }
        DatasetCommand::Process {
            client,
            dataset,
            steps,
            into,
        } => {
            let args = client;
            let client = crate::client::connect(&args)?;
            let text = std::fs::read_to_string(&steps)
                .with_context(|| format!("cannot read {}", steps.display()))?;
            let file: StepsFile = if text.trim_start().starts_with('{') {
                serde_json::from_str(&text).map_err(|e| anyhow!("{}: {e}", steps.display()))?
            } else {
                toml::from_str(&text).map_err(|e| anyhow!("{}: {e}", steps.display()))?
            };
            let input = remote::fetch_version(&client, &dataset).await?;
            let manifest = remote::manifest(&input)?;
            let name = into.unwrap_or_else(|| input.name.clone());
            let source = RemoteShards::new(client.clone(), Some(remote::cache_dir()))?;
            let mut sink = RemoteShards::new(client.clone(), None)?;
            let started = std::time::Instant::now();
            let input_id = input.version.clone();
            let (out, sink) = tokio::task::spawn_blocking(move || {
                let out =
                    trainyard_data::apply(&file.steps, &manifest, &input_id, &source, &mut sink)?;
                anyhow::Ok((out, sink))
            })
            .await??;
            let created = remote::commit_version(&client, &name, &out).await?;
            finish_version(&args, &created, out.rows, sink.uploaded_bytes, started)
        }
        DatasetCommand::Ls(args) => {
            let client = crate::client::connect(&args)?;
            let list: serde_json::Value = client
                .json(client.request(Method::GET, "/api/v1/datasets"))
                .await?;
            if args.output == Output::Json {
                print_json(&list);
                return Ok(0);
            }
            let rows: Vec<Vec<String>> = list["datasets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    let latest = &d["latest"];
                    vec![
                        d["name"].as_str().unwrap_or("").to_string(),
                        short(latest["version"].as_str().unwrap_or("")),
                        d["versions"].to_string(),
                        latest["rows"].to_string(),
                        human_bytes(latest["bytes"].as_i64().unwrap_or(0)),
                        crate::output::time(Some(latest["created_ms"].as_i64().unwrap_or(0))),
                    ]
                })
                .collect();
            print_table(
                &["NAME", "LATEST", "VERSIONS", "ROWS", "SIZE", "CREATED"],
                &rows,
            );
            Ok(0)
        }
        DatasetCommand::Show { client, dataset } => {
            let args = client;
            let client = crate::client::connect(&args)?;
            let version = remote::fetch_version(&client, &dataset).await?;
            if args.output == Output::Json {
                print_json(&version);
                return Ok(0);
            }
            show(&version)?;
            let (name, _) = remote::split_reference(&dataset);
            let all: serde_json::Value = client
                .json(client.request(Method::GET, &format!("/api/v1/datasets/{name}")))
                .await?;
            let versions = all["versions"].as_array().cloned().unwrap_or_default();
            if versions.len() > 1 {
                println!("\nversions:");
                for v in versions {
                    println!(
                        "  {}  {} rows  parent {}",
                        short(v["version"].as_str().unwrap_or("")),
                        v["rows"],
                        v["parent"]
                            .as_str()
                            .map(short)
                            .unwrap_or_else(|| "-".into())
                    );
                }
            }
            Ok(0)
        }
        DatasetCommand::Head {
            client,
            dataset,
            rows,
        } => {
            let args = client;
            let client = crate::client::connect(&args)?;
            let version = remote::fetch_version(&client, &dataset).await?;
            let manifest = remote::manifest(&version)?;
            let source: Arc<dyn trainyard_data::ShardSource> = Arc::new(RemoteShards::new(
                client.clone(),
                Some(remote::cache_dir()),
            )?);
            let table = tokio::task::spawn_blocking(move || {
                let mut out = trainyard_data::Table::empty(&manifest.schema);
                for index in 0..manifest.shards.len() {
                    if out.rows() >= rows {
                        break;
                    }
                    let t = trainyard_data::read_shard(&manifest, index, source.as_ref(), None)?;
                    out.append(&t)?;
                }
                let n = out.rows().min(rows);
                anyhow::Ok(out.slice(0, n))
            })
            .await??;
            let header: Vec<&str> = table.schema.iter().map(|f| f.name.as_str()).collect();
            if args.output == Output::Json {
                // Whole, typed values (the table below shortens tensors for the eye).
                let rows: Vec<serde_json::Value> = (0..table.rows())
                    .map(|r| {
                        serde_json::Value::Object(
                            header
                                .iter()
                                .zip(&table.columns)
                                .map(|(h, c)| (h.to_string(), json_cell(c, r)))
                                .collect(),
                        )
                    })
                    .collect();
                print_json(&rows);
            } else {
                let cells: Vec<Vec<String>> = (0..table.rows())
                    .map(|r| table.columns.iter().map(|c| cell(c, r)).collect())
                    .collect();
                print_table(&header, &cells);
            }
            Ok(0)
        }
        DatasetCommand::Stats { client, dataset } => {
            let args = client;
            let client = crate::client::connect(&args)?;
            let version = remote::fetch_version(&client, &dataset).await?;
            let manifest = remote::manifest(&version)?;
            if args.output == Output::Json {
                print_json(&manifest.stats);
                return Ok(0);
            }
            let fmt = |v: Option<f64>| v.map(|x| format!("{x:.4}")).unwrap_or_else(|| "-".into());
            let rows: Vec<Vec<String>> = manifest
                .schema
                .iter()
                .map(|f| {
                    let s = manifest.stats.get(&f.name);
                    vec![
                        f.name.clone(),
                        type_name(&f.dtype),
                        s.map(|s| s.count.to_string()).unwrap_or_default(),
                        fmt(s.and_then(|s| s.min)),
                        fmt(s.and_then(|s| s.max)),
                        fmt(s.and_then(|s| s.mean)),
                        fmt(s.and_then(|s| s.std)),
                        s.and_then(|s| s.distinct)
                            .map(|d| d.to_string())
                            .unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            print_table(
                &[
                    "COLUMN", "TYPE", "COUNT", "MIN", "MAX", "MEAN", "STD", "DISTINCT",
                ],
                &rows,
            );
            for f in &manifest.schema {
                if let Some(h) = manifest
                    .stats
                    .get(&f.name)
                    .and_then(|s| s.histogram.as_ref())
                {
                    if h.len() <= 50 {
                        let parts: Vec<String> =
                            h.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        println!("{}: {}", f.name, parts.join(" "));
                    }
                }
            }
            Ok(0)
        }
    }
}

fn finish_version(
    args: &ClientArgs,
    created: &CreatedVersion,
    rows: u64,
    uploaded: u64,
    started: std::time::Instant,
) -> anyhow::Result<i32> {
    if args.output == Output::Json {
        print_json(created);
    } else {
        println!(
            "{}:{}  {} rows, {} uploaded in {:.1} s{}",
            created.name,
            short(&created.version),
            rows,
            human_bytes(uploaded as i64),
            started.elapsed().as_secs_f64(),
            if created.created {
                ""
            } else {
                " (this exact version already existed)"
            }
        );
    }
    Ok(0)
}

fn show(v: &DatasetVersionInfo) -> anyhow::Result<()> {
    let m = remote::manifest(v)?;
    println!("{}:{}", v.name, v.version);
    println!("rows     {}", m.rows);
    println!("shards   {} ({})", m.shards.len(), human_bytes(v.bytes));
    println!("created  {}", crate::output::time(Some(v.created_ms)));
    if let Some(source) = &m.lineage.source {
        println!("source   {source}");
    }
    if let Some(parent) = &m.lineage.parent {
        println!("parent   {}", short(parent));
    }
    for step in &m.lineage.steps {
        println!("step     {}", step_summary(step));
    }
    println!("schema:");
    for f in &m.schema {
        println!("  {:<20} {}", f.name, type_name(&f.dtype));
    }
    Ok(())
}

/// A processing step for people: its op and settings on one line, fitted parameters as
/// what they cover (`fitted pixels: 64 means, 64 deviations`) instead of every number;
/// `-o json` keeps the full values.
fn step_summary(step: &serde_json::Value) -> String {
    use serde_json::Value;
    let Value::Object(map) = step else {
        return step.to_string();
    };
    let mut out = map
        .get("op")
        .and_then(Value::as_str)
        .unwrap_or("step")
        .to_string();
    for (key, value) in map {
        if key == "op" || key == "fitted" || value.is_null() {
            continue;
        }
        out.push_str(&format!(" {key}={}", compact(value)));
    }
    if let Some(Value::Object(fitted)) = map.get("fitted") {
        let parts: Vec<String> = fitted
            .iter()
            .map(|(name, v)| match v {
                Value::Object(stats) => format!(
                    "{name}: {}",
                    stats
                        .iter()
                        .map(|(k, v)| match v {
                            Value::Array(a) if a.len() > 4 => format!("{} {k}", a.len()),
                            other => format!("{k} {}", compact(other)),
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                other => format!("{name} {}", compact(other)),
            })
            .collect();
        out.push_str(&format!(" (fitted {})", parts.join("; ")));
    }
    out
}

/// A JSON value in a few characters: long lists are counted, not listed.
fn compact(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::String(s) => s.clone(),
        Value::Array(a) if a.len() > 8 => format!("[{} values]", a.len()),
        Value::Array(a) => format!("[{}]", a.iter().map(compact).collect::<Vec<_>>().join(",")),
        Value::Object(o) if o.len() > 4 => format!("{{{} entries}}", o.len()),
        other => other.to_string(),
    }
}

fn type_name(t: &trainyard_data::ColumnType) -> String {
    match t {
        trainyard_data::ColumnType::Float32 { shape } if shape.is_empty() => "float32".into(),
        trainyard_data::ColumnType::Float32 { shape } => format!("float32{shape:?}"),
        trainyard_data::ColumnType::Int64 => "int64".into(),
        trainyard_data::ColumnType::String => "string".into(),
        trainyard_data::ColumnType::Bytes => "bytes".into(),
    }
}

fn cell(column: &Column, row: usize) -> String {
    match column {
        Column::Float32 { shape, values } => {
            let n: usize = shape.iter().product::<usize>().max(1);
            let v = &values[row * n..(row + 1) * n];
            if n == 1 {
                format!("{}", v[0])
            } else {
                let head: Vec<String> = v.iter().take(4).map(|x| format!("{x}")).collect();
                format!("[{}{}]", head.join(", "), if n > 4 { ", …" } else { "" })
            }
        }
        Column::Int64(v) => v[row].to_string(),
        Column::String(v) => v[row].clone(),
        Column::Bytes(v) => format!("<{} bytes>", v[row].len()),
    }
}

/// A row's value as JSON: numbers as numbers, a tensor as nested arrays of its shape,
/// bytes as their length (they are images, not text).
fn json_cell(column: &Column, row: usize) -> serde_json::Value {
    use serde_json::{json, Value};
    fn nest(shape: &[usize], values: &[f32]) -> Value {
        match shape.split_first() {
            None => json!(values.first().copied().map(f64::from)),
            Some((_, [])) => {
                json!(values.iter().map(|v| f64::from(*v)).collect::<Vec<_>>())
            }
            Some((_, rest)) => {
                let step = rest.iter().product::<usize>().max(1);
                Value::Array(values.chunks(step).map(|c| nest(rest, c)).collect())
            }
        }
    }
    match column {
        Column::Float32 { shape, values } => {
            let n: usize = shape.iter().product::<usize>().max(1);
            nest(shape, &values[row * n..(row + 1) * n])
        }
        Column::Int64(v) => json!(v[row]),
        Column::String(v) => json!(v[row]),
        Column::Bytes(v) => json!({ "bytes": v[row].len() }),
    }
}

fn short(version: &str) -> String {
    version.chars().take(12).collect()
}

fn human_bytes(n: i64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.1} GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.1} MB", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1} kB", n / 1e3)
    } else {
        format!("{n} B")
    }
}

#[cfg(test)]
mod tests {
    use super::{json_cell, step_summary, Column};
    use serde_json::json;

    #[test]
    fn fitted_statistics_are_summarised_for_people() {
        let step = json!({
            "op": "standardize", "columns": ["pixels"], "fit_on": "train", "split_column": "split",
            "fitted": {"pixels": {"mean": vec![0.5; 64], "std": vec![1.0; 64]}}
        });
        let line = step_summary(&step);
        assert_eq!(
            line,
            "standardize columns=[pixels] fit_on=train split_column=split (fitted pixels: 64 mean, 64 std)"
        );
        assert!(line.len() < 120);
        let labels =
            json!({"op": "label_encode", "column": "y", "fitted": {"classes": ["a", "b"]}});
        assert_eq!(
            step_summary(&labels),
            "label_encode column=y (fitted classes [a,b])"
        );
    }

    #[test]
    fn json_rows_keep_whole_typed_values() {
        let tensor = Column::Float32 {
            shape: vec![2, 3],
            values: (0..12).map(|v| v as f32 * 0.5).collect(),
        };
        assert_eq!(
            json_cell(&tensor, 1),
            serde_json::json!([[3.0, 3.5, 4.0], [4.5, 5.0, 5.5]])
        );
        let scalar = Column::Float32 {
            shape: vec![],
            values: vec![1.5, -2.0],
        };
        assert_eq!(json_cell(&scalar, 1), serde_json::json!(-2.0));
        assert_eq!(
            json_cell(&Column::Int64(vec![7, 9]), 1),
            serde_json::json!(9)
        );
        assert_eq!(
            json_cell(&Column::Bytes(vec![vec![0; 5]]), 0),
            serde_json::json!({"bytes": 5})
        );
    }
}
