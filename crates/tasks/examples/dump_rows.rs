//! Writes the rows `trainyard compress` reads (a model's input column decoded as the model
//! takes it, and its class labels) as NumPy `.npy` files, so `bench/compress` can give ONNX
//! Runtime's quantization tool exactly the calibration and evaluation rows a job uses.
//!
//! `cargo run -p trainyard-tasks --example dump_rows -- SERVER TOKEN MODEL:VERSION DATASET SPLIT ROWS OUT_PREFIX [INPUT TARGET]`
//! writes `OUT_PREFIX.x.npy` (float32, [rows, ..shape]) and `OUT_PREFIX.y.npy` (int64).
//! `ROWS` 0 means every row of the split.

use std::io::Write;

use trainyard_data::Targets;

fn npy(path: &str, descr: &str, shape: &[usize], data: &[u8]) -> std::io::Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic, version, header length, then the header padded so the data starts on 64 bytes.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut f = std::fs::File::create(path)?;
    f.write_all(b"\x93NUMPY\x01\x00")?;
    f.write_all(&(header.len() as u16).to_le_bytes())?;
    f.write_all(header.as_bytes())?;
    f.write_all(data)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (fixed, columns) = args.split_at(args.len().min(7));
    let [server, token, model, dataset, split, rows, out] = fixed else {
        return Err("usage: dump_rows SERVER TOKEN MODEL:VERSION DATASET SPLIT ROWS OUT_PREFIX [INPUT TARGET]".into());
    };
    let columns = match columns {
        [input, target] => Some(trainyard_tasks::compress::Columns {
            input: input.clone(),
            target: target.clone(),
        }),
        _ => None,
    };
    let client = trainyard_client::Client::new(server, Some(token.clone()))?;
    let parent =
        trainyard_tasks::compress::fetch_parent_with(&client, model, columns.as_ref()).await?;
    let limit: usize = rows.parse()?;
    let batches = trainyard_tasks::compress::read_rows(
        &client,
        &parent,
        dataset,
        Some(split),
        "split",
        (limit > 0).then_some(limit),
    )
    .await?;
    let mut x: Vec<u8> = Vec::new();
    let mut y: Vec<u8> = Vec::new();
    let mut n = 0;
    let shape = batches.first().ok_or("no rows")?.sample_shape.clone();
    for b in &batches {
        let take = if limit > 0 {
            b.rows.min(limit - n)
        } else {
            b.rows
        };
        let per_row = b.inputs.len() / b.rows;
        x.extend(
            b.inputs[..take * per_row]
                .iter()
                .flat_map(|v| v.to_le_bytes()),
        );
        match &b.targets {
            Some(Targets::Classes(c)) => y.extend(c[..take].iter().flat_map(|v| v.to_le_bytes())),
            _ => return Err("the rows have no class labels".into()),
        }
        n += take;
    }
    let mut xshape = vec![n];
    xshape.extend(shape);
    npy(&format!("{out}.x.npy"), "<f4", &xshape, &x)?;
    npy(&format!("{out}.y.npy"), "<i8", &[n], &y)?;
    println!("{n} rows of {dataset} ({split}) → {out}.x.npy, {out}.y.npy");
    Ok(())
}
