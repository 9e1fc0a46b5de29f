//! Weights written outside Trainyard loaded into a spec: a safetensors file written with
//! the `safetensors` and `numpy` packages, and a PyTorch `state_dict` saved by `torch.save`
//! (fixtures/weights/make.py made both, and the outputs of a NumPy forward pass of the same
//! weights; CI does not install PyTorch). Shapes and names that do not fit are named.

use std::path::{Path, PathBuf};

use trainyard_data::Batch;
use trainyard_engine::spec::{parse_model, ResolvedSpec};
use trainyard_engine::train;
use trainyard_engine::weights::{import, WeightsFile};

fn fixture(name: &str) -> PathBuf {
    Path::new(
        &std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("tests/fixtures/weights")
    .join(name)
}

fn spec(text: &str) -> ResolvedSpec {
    parse_model(text)
        .unwrap()
        .resolve(None, None, "model")
        .unwrap()
}

fn fixture_spec() -> ResolvedSpec {
    spec(&std::fs::read_to_string(fixture("spec.toml")).unwrap())
}

/// The largest |engine − NumPy| over the fixture's inputs, and the output scale.
fn max_difference(net: &trainyard_engine::network::Network) -> (f64, f64) {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap();
    let rows = expected["inputs"].as_array().unwrap();
    let inputs: Vec<f32> = rows
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
        })
        .collect();
    let want: Vec<f64> = expected["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()))
        .collect();
    let got = train::predict(
        net,
        &Batch {
            inputs,
            sample_shape: vec![1, 8, 8],
            rows: rows.len(),
            targets: None,
        },
    )
    .unwrap();
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(1f64, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(&want)
        .fold(0f64, |m, (g, w)| m.max((f64::from(*g) - w).abs()));
    (diff, scale)
}

#[test]
fn a_safetensors_file_written_by_numpy_gives_numpys_outputs() {
    let net = import(
        &fixture_spec(),
        &fixture("net.safetensors"),
        WeightsFile::Safetensors,
        &[],
    )
    .unwrap();
    let (diff, scale) = max_difference(&net);
    assert!(diff <= 1e-5 * scale, "max |Δ| {diff:e} at scale {scale}");
}

#[test]
fn a_pytorch_state_dict_gives_numpys_outputs() {
    let path = fixture("net.pt");
    assert!(
        path.exists(),
        "{} is missing: run fixtures/weights/make.py with PyTorch",
        path.display()
    );
    let net = import(&fixture_spec(), &path, WeightsFile::Pytorch, &[]).unwrap();
    let (diff, scale) = max_difference(&net);
    assert!(diff <= 1e-5 * scale, "max |Δ| {diff:e} at scale {scale}");
}

#[test]
fn weights_that_do_not_fit_the_spec_are_named_from_both_sides() {
    let text = std::fs::read_to_string(fixture("spec.toml")).unwrap();
    // A hidden layer of 32 where the file has 16.
    let wider = spec(
        &text
            .replace("out_features = 16", "out_features = 32")
            .replace("in_features = 16", "in_features = 32"),
    );
    let err = import(
        &wider,
        &fixture("net.safetensors"),
        WeightsFile::Safetensors,
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("layers.4.weight (the file's `4.weight`): the spec needs"),
        "{err}"
    );
    assert!(err.contains("net.safetensors"), "{err}");

    // A spec without the batch norm: its tensors fit nothing, and the layers after it are
    // shifted.
    let shorter = spec(&text.replace(
        "[[layers]]  # 1: nn.BatchNorm2d(4), eps 1e-5\ntype = \"batch_norm\"\nfeatures = 4\n",
        "",
    ));
    let err = import(
        &shorter,
        &fixture("net.safetensors"),
        WeightsFile::Safetensors,
        &[],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("1.running_mean: the file has it"), "{err}");

    // An explicit map that sends everything elsewhere leaves every parameter unfilled.
    let err = import(
        &fixture_spec(),
        &fixture("net.safetensors"),
        WeightsFile::Safetensors,
        &[("^".into(), "encoder.".into())],
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("layers.0.weight: the spec has it, the file has no tensor for it"),
        "{err}"
    );

    // A map that sends two tensors to one parameter is refused, naming both.
    let err = import(
        &fixture_spec(),
        &fixture("net.safetensors"),
        WeightsFile::Safetensors,
        &[(r"^\d+\.(weight|bias)$".into(), "layers.0.$1".into())],
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("both map to layers.0."), "{err}");

    // Garbage and a truncated file are refused, not a panic.
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("net.safetensors")).unwrap();
    for (name, content) in [
        ("garbage.safetensors", b"not a safetensors file".to_vec()),
        ("short.safetensors", bytes[..bytes.len() / 2].to_vec()),
        ("garbage.pt", b"PK\x03\x04 not a zip".to_vec()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let kind = WeightsFile::from_path(&path).unwrap();
        let err = import(&fixture_spec(), &path, kind, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains(name), "{name}: {err}");
    }
}
