//! `trainyard compress` end to end: a real server, the digits CNN trained by a real job, then
//! compressed by real jobs (`trainyard task compress`) that calibrate and evaluate through
//! the serving runtime and register new versions; those versions served through `/v2`.

mod common;

use common::{example, ok, prepare_digits, text, Server, ServerOptions};
use serde_json::{json, Value};

async fn server() -> Server {
    let cache = tempfile::tempdir().unwrap().keep();
    Server::start_with(ServerOptions {
        cpus: 4.0,
        env: vec![("TRAINYARD_CACHE_DIR".into(), cache.display().to_string())],
        ..Default::default()
    })
    .await
}

/// The tags of `model:version`.
async fn tags(server: &Server, model: &str, version: &str) -> serde_json::Map<String, Value> {
    let mv = server
        .get_json(&format!(
            "/api/2.0/mlflow/model-versions/get?name={model}&version={version}"
        ))
        .await;
    mv["model_version"]["tags"]
        .as_array()
        .unwrap_or_else(|| panic!("{mv}"))
        .iter()
        .map(|t| (t["key"].as_str().unwrap().to_string(), t["value"].clone()))
        .collect()
}

fn tag(tags: &serde_json::Map<String, Value>, key: &str) -> String {
    tags.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no {key} in {tags:?}"))
        .to_string()
}

/// The compression report a version's tag points at, read through the artifact API.
async fn report(server: &Server, tags: &serde_json::Map<String, Value>) -> Value {
    let uri = tag(tags, "trainyard.compression.report");
    let path = uri
        .strip_prefix("mlflow-artifacts:/")
        .unwrap_or_else(|| panic!("{uri}"));
    let r = server
        .get(&format!("/api/2.0/mlflow-artifacts/artifacts/{path}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{uri}");
    r.json().await.unwrap()
}

/// 8 digits through `/v2/models/{model}/versions/{version}/infer`: the predicted classes.
async fn classes(server: &Server, model: &str, version: &str, pixels: &[f32]) -> Vec<usize> {
    let rows = pixels.len() / 64;
    let answer: Value = server
        .post(&format!("/v2/models/{model}/versions/{version}/infer"))
        .json(&serde_json::json!({"inputs": [{
            "name": "input", "datatype": "FP32", "shape": [rows, 1, 8, 8], "data": pixels,
        }]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let data: Vec<f64> = answer["outputs"][0]["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{answer}"))
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    data.chunks(10)
        .map(|row| {
            row.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap()
                .0
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_digits_cnn_is_quantized_pruned_and_distilled_into_new_versions() {
    let server = server().await;
    let dataset = prepare_digits(&server);
    let dir = tempfile::tempdir().unwrap();
    // The example's CNN with fewer epochs: compression, not training, is under test.
    let file = dir.path().join("cnn.toml");
    let cnn = std::fs::read_to_string(example("cnn.toml"))
        .unwrap()
        .replace("epochs = 40", "epochs = 12");
    std::fs::write(&file, cnn).unwrap();
    let trained = ok(server.cli(&["train", file.to_str().unwrap()]));
    assert!(
        trained.contains("registered model digits-cnn:1"),
        "{trained}"
    );

    // Bad input, refused before any job runs.
    for (args, says) in [
        (vec!["--max-accuracy-drop", "2"], "--max-accuracy-drop 2"),
        (
            vec!["--exclude", "nope"],
            "--exclude nope: digits-cnn:1 has no such operator",
        ),
        (vec!["--method", "entropy"], "add --calibrate DATASET"),
        (vec!["--calibrate", "nosuchdata"], "nosuchdata"),
        (
            vec![
                "--calibrate",
                "digits",
                "--percentile",
                "0",
                "--method",
                "percentile",
            ],
            "--percentile 0",
        ),
    ] {
        let mut command = vec!["compress", "digits-cnn:1", "--int8"];
        command.extend(args);
        let out = server.cli(&command);
        assert!(!out.status.success(), "{command:?}: {}", text(&out));
        assert!(text(&out).contains(says), "{command:?}: {}", text(&out));
    }
    // A calibration dataset without the model's input column: both are named.
    let csv = dir.path().join("other.csv");
    std::fs::write(&csv, "a,b\n1,2\n3,4\n").unwrap();
    ok(server.cli(&["dataset", "import", "other", csv.to_str().unwrap()]));
    let out = server.cli(&["compress", "digits-cnn:1", "--int8", "--calibrate", "other"]);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("calibration dataset other:")
            && said.contains("has no column `pixels`")
            && said.contains("model digits-cnn:1 (input `input` of shape [1, 8, 8])"),
        "{said}"
    );
    let jobs = server.get_json("/api/v1/jobs").await;
    assert_eq!(
        jobs["jobs"].as_array().unwrap().len(),
        1,
        "only the training job ran: {jobs}"
    );

    // Dynamic int8, per channel: convolutions with one shared zero point and a scale per
    // channel after `ConvInteger` (run in ONNX Runtime when the suite has its library).
    let dynamic = ok(server.cli(&["compress", "digits-cnn:1", "--int8", "--per-channel"]));
    assert!(
        dynamic.contains("registered model digits-cnn:2"),
        "{dynamic}"
    );
    // Static int8, per channel, calibrated on the training split.
    let calibrated = ok(server.cli(&[
        "compress",
        "digits-cnn:1",
        "--int8",
        "--calibrate",
        &format!("digits:{dataset}"),
        "--per-channel",
        "--method",
        "entropy",
    ]));
    assert!(
        calibrated.contains("calibrating on 512 rows (entropy)"),
        "{calibrated}"
    );
    assert!(
        calibrated.contains("registered model digits-cnn:3"),
        "{calibrated}"
    );

    for (version, method) in [("2", "int8-dynamic"), ("3", "int8-static")] {
        let t = tags(&server, "digits-cnn", version).await;
        assert_eq!(tag(&t, "trainyard.lineage"), "compressed");
        assert_eq!(tag(&t, "trainyard.source"), "digits-cnn:1");
        assert_eq!(tag(&t, "trainyard.compression.method"), method);
        assert_eq!(tag(&t, "trainyard.format"), "onnx");
        let r = report(&server, &t).await;
        assert_eq!(r["parent"], "digits-cnn:1");
        let drop = r["accuracy_drop"].as_f64().unwrap();
        assert!(drop <= 0.01, "{method}: drop {drop}: {r}");
        let ratio = r["size_ratio"].as_f64().unwrap();
        assert!(ratio >= 3.5, "{method}: {ratio}× smaller: {r}");
        assert_eq!(r["parameters"]["parent"], r["parameters"]["child"]);
        assert_eq!(r["quantized"].as_array().unwrap().len(), 4, "{r}");
        let mut runtimes = vec!["tract"];
        if std::env::var_os("TRAINYARD_ORT_LIB").is_some() {
            runtimes.push("onnxruntime");
        }
        for runtime in runtimes {
            for side in ["parent", "child"] {
                for batch in ["batch_1", "batch_32"] {
                    let p50 = r["latency_ms"][runtime][side][batch]["p50_ms"].as_f64();
                    assert!(
                        p50.is_some_and(|v| v > 0.0),
                        "{runtime} {side} {batch}: {r}"
                    );
                }
            }
        }
        let tagged: f64 = tag(&t, "eval.digits.test.accuracy").parse().unwrap();
        assert!((tagged - r["child_eval"]["accuracy"].as_f64().unwrap()).abs() < 1e-5);
    }
    let settings: Value = serde_json::from_str(&tag(
        &tags(&server, "digits-cnn", "3").await,
        "trainyard.compression.settings",
    ))
    .unwrap();
    assert_eq!(settings["calibration"]["method"], "entropy");
    assert_eq!(settings["per_channel"], true);

    // Each version serves through /v2, and the 8-bit ones agree with the float one on
    // nearly every digit.
    let pixels: Vec<f32> = (0..32 * 64)
        .map(|i| ((i * 7 + i / 64) % 17) as f32)
        .collect();
    let float = classes(&server, "digits-cnn", "1", &pixels).await;
    for version in ["2", "3"] {
        let int8 = classes(&server, "digits-cnn", version, &pixels).await;
        let same = float.iter().zip(&int8).filter(|(a, b)| a == b).count();
        assert!(same >= 30, "v{version}: {same} of 32 agree");
    }

    // What the jobs printed (their reports), for whoever reads a failure.
    eprintln!("{dynamic}\n{calibrated}");

    // The accuracy guard. Percentile calibration at 50 % clips half of every activation's
    // range: without a budget (drop up to 1.0) the 8-bit model loses points; with the default
    // budget of one point the most sensitive operators fall back to float until it fits.
    let percentile = [
        "compress",
        "digits-cnn:1",
        "--int8",
        "--calibrate",
        "digits",
        "--method",
        "percentile",
        "--percentile",
        "50",
    ];
    let plain = ok(server.cli(&[&percentile[..], &["--max-accuracy-drop", "1"]].concat()));
    assert!(plain.contains("registered model digits-cnn:4"), "{plain}");
    let r = report(&server, &tags(&server, "digits-cnn", "4").await).await;
    let broken = r["accuracy_drop"].as_f64().unwrap();
    assert!(
        broken > 0.01,
        "plain static int8 keeps within the budget ({broken}): {plain}"
    );
    assert!(r["fell_back"].as_array().unwrap().is_empty());

    let guarded = ok(server.cli(&percentile));
    assert!(guarded.contains("accuracy guard: kept"), "{guarded}");
    assert!(
        guarded.contains("registered model digits-cnn:5"),
        "{guarded}"
    );
    let t = tags(&server, "digits-cnn", "5").await;
    let r = report(&server, &t).await;
    let drop = r["accuracy_drop"].as_f64().unwrap();
    assert!(drop <= 0.01, "guarded drop {drop}: {guarded}");
    let fell_back: Vec<&str> = r["fell_back"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(!fell_back.is_empty() && fell_back.len() < 4, "{r}");
    assert_eq!(
        tag(&t, "trainyard.compression.fell_back"),
        fell_back.join(",")
    );
    // Every operator's loss when quantized alone was measured, and the ones that fell back
    // are the most sensitive.
    let sensitivity = r["sensitivity"].as_array().unwrap();
    assert_eq!(sensitivity.len(), 4, "{r}");
    for (i, name) in fell_back.iter().enumerate() {
        assert_eq!(sensitivity[i][0].as_str(), Some(*name), "{r}");
    }
    assert_eq!(
        r["quantized"].as_array().unwrap().len() + fell_back.len(),
        4,
        "{r}"
    );

    // Structured pruning of half the channels and neurons, then 3 epochs of fine-tuning
    // with the parent's own training file, as a training job.
    for (args, says) in [
        (
            vec!["--prune", "1.5"],
            "--prune 1.5: give the fraction to remove, in (0, 1)",
        ),
        (vec!["--prune", "0"], "in (0, 1)"),
        (vec!["--prune", "0.5", "--int8"], "cannot be used with"),
        (vec!["--structured"], "--prune"),
    ] {
        let mut command = vec!["compress", "digits-cnn:1"];
        command.extend(args);
        let out = server.cli(&command);
        assert!(!out.status.success(), "{command:?}: {}", text(&out));
        assert!(text(&out).contains(says), "{command:?}: {}", text(&out));
    }
    let pruned = ok(server.cli(&[
        "compress",
        "digits-cnn:1",
        "--prune",
        "0.5",
        "--structured",
        "--finetune-epochs",
        "3",
    ]));
    eprintln!("{pruned}");
    assert!(pruned.contains("registered model digits-cnn:6"), "{pruned}");
    assert!(
        pruned.contains("fine-tuning digits-cnn:6 for 3 epochs"),
        "{pruned}"
    );
    assert!(pruned.contains("registered model digits-cnn:7"), "{pruned}");
    let t = tags(&server, "digits-cnn", "6").await;
    assert_eq!(tag(&t, "trainyard.compression.method"), "prune-structured");
    assert_eq!(tag(&t, "trainyard.source"), "digits-cnn:1");
    let r = report(&server, &t).await;
    let layers: Vec<(String, u64, u64)> = r["pruned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["layer"].as_str().unwrap().to_string(),
                l["before"].as_u64().unwrap(),
                l["after"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        layers,
        [
            ("layers[0]".to_string(), 32, 16),
            ("layers[2]".to_string(), 64, 32),
            ("layers[7]".to_string(), 128, 64),
        ],
        "{r}"
    );
    let ratio = r["size_ratio"].as_f64().unwrap();
    assert!(ratio >= 1.8, "pruned ONNX only {ratio}× smaller: {r}");
    let parent_accuracy = r["parent_eval"]["accuracy"].as_f64().unwrap();
    // The fine-tuned version: trained from the pruned one, same size, accuracy back within a
    // point of the parent's.
    let t = tags(&server, "digits-cnn", "7").await;
    assert_eq!(tag(&t, "trainyard.lineage"), "fine-tuned");
    assert_eq!(tag(&t, "trainyard.source"), "digits-cnn:6");
    let tuned: f64 = tag(&t, "metric.test_accuracy").parse().unwrap();
    assert!(
        tuned >= parent_accuracy - 0.01,
        "fine-tuned {tuned} vs parent {parent_accuracy}: {pruned}"
    );
    assert_eq!(
        tag(&t, "trainyard.parameters"),
        r["parameters"]["child"].to_string()
    );
    let int8 = classes(&server, "digits-cnn", "7", &pixels).await;
    assert_eq!(int8.len(), 32, "the fine-tuned version serves");

    // Half precision: the float parent's arithmetic in half, inputs and outputs still float,
    // half the file, the same digits through /v2. An 8-bit version is not converted again.
    for (args, says) in [
        (
            vec!["digits-cnn:1", "--fp16", "--calibrate", "digits"],
            "cannot be used with",
        ),
        (
            vec!["digits-cnn:1", "--fp16", "--int8"],
            "cannot be used with",
        ),
        (
            vec![
                "digits-cnn:2",
                "--fp16",
                "--input",
                "pixels",
                "--target",
                "label",
            ],
            "already quantized",
        ),
    ] {
        let out = server.cli(&[&["compress"][..], &args].concat());
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        assert!(text(&out).contains(says), "{args:?}: {}", text(&out));
    }
    let half = ok(server.cli(&["compress", "digits-cnn:1", "--fp16"]));
    eprintln!("{half}");
    assert!(half.contains("registered model digits-cnn:8"), "{half}");
    let t = tags(&server, "digits-cnn", "8").await;
    assert_eq!(tag(&t, "trainyard.compression.method"), "fp16");
    assert_eq!(tag(&t, "trainyard.source"), "digits-cnn:1");
    let r = report(&server, &t).await;
    let drop = r["accuracy_drop"].as_f64().unwrap();
    assert!(drop.abs() <= 0.01, "fp16 drop {drop}: {half}");
    let ratio = r["size_ratio"].as_f64().unwrap();
    assert!((1.9..2.05).contains(&ratio), "fp16 {ratio}× smaller: {r}");
    // Both convolutions, both linear layers and what lies between them.
    assert!(r["quantized"].as_array().unwrap().len() >= 4, "{r}");
    assert_eq!(r["kept_in_float"], json!([]), "{r}");
    let half_classes = classes(&server, "digits-cnn", "8", &pixels).await;
    let same = float
        .iter()
        .zip(&half_classes)
        .filter(|(a, b)| a == b)
        .count();
    assert!(same >= 31, "fp16: {same} of 32 agree");

    // Distillation: the CNN teaches the small MLP of examples/digits/student.toml (2,410
    // parameters against 151,306). With alpha = 1 the teacher's term weighs nothing, and the
    // run must be the student trained alone, to the last digit: the same seed, batches and
    // steps, only the loss extended.
    let student = example("student.toml");
    let alone = ok(server.cli(&["train", &student]));
    let distilled = ok(server.cli(&["compress", "digits-cnn:1", "--distill", &student]));
    assert!(
        distilled.contains("distilling from digits-cnn:1 (alpha 0.1, temperature 4)"),
        "{distilled}"
    );
    let labels_only = ok(server.cli(&[
        "compress",
        "digits-cnn:1",
        "--distill",
        &student,
        "--alpha",
        "1",
    ]));
    let test_line = |out: &str| {
        out.lines()
            .find(|l| l.starts_with("test: accuracy"))
            .unwrap_or_else(|| panic!("{out}"))
            .to_string()
    };
    assert_eq!(
        test_line(&alone),
        test_line(&labels_only),
        "{alone}\n{labels_only}"
    );
    assert_ne!(test_line(&alone), test_line(&distilled), "{distilled}");
    eprintln!(
        "alone: {}\ndistilled: {}",
        test_line(&alone),
        test_line(&distilled)
    );
    let t = tags(&server, "digits-student", "2").await;
    assert_eq!(tag(&t, "trainyard.lineage"), "distilled");
    assert_eq!(tag(&t, "trainyard.teacher"), "digits-cnn:1");
    // A teacher whose outputs are not the student's classes, or bad settings: refused
    // before any job runs.
    let five = trainyard_models::graph::Graph {
        name: "five".into(),
        sample_shape: vec![1, 8, 8],
        layers: vec![
            trainyard_models::graph::NamedLayer {
                name: "flatten".into(),
                layer: trainyard_models::graph::Layer::Flatten,
            },
            trainyard_models::graph::NamedLayer {
                name: "fc".into(),
                layer: trainyard_models::graph::Layer::Linear {
                    weight: trainyard_models::graph::Weights::new(vec![64, 5], vec![0.01; 320]),
                    bias: None,
                },
            },
        ],
    };
    let file = dir.path().join("five.onnx");
    std::fs::write(
        &file,
        trainyard_models::onnx::encode(&five, Some(5)).unwrap(),
    )
    .unwrap();
    ok(server.cli(&[
        "models",
        "import",
        file.to_str().unwrap(),
        "--name",
        "five-classes",
    ]));
    let jobs_before = server.get_json("/api/v1/jobs").await["jobs"]
        .as_array()
        .unwrap()
        .len();
    for (args, says) in [
        (
            vec!["five-classes:1", "--distill", student.as_str()],
            "distill.teacher five-classes:1 gives 5 output classes; the student's head has 10",
        ),
        (
            vec![
                "digits-cnn:1",
                "--distill",
                student.as_str(),
                "--alpha",
                "2",
            ],
            "distill.alpha: 2 is not in [0, 1]",
        ),
        (
            vec![
                "digits-cnn:1",
                "--distill",
                student.as_str(),
                "--temperature",
                "0",
            ],
            "distill.temperature: 0 is not in [0.05, 100]",
        ),
        (
            vec!["digits-cnn:1", "--distill", student.as_str(), "--int8"],
            "cannot be used with",
        ),
    ] {
        let mut command = vec!["compress"];
        command.extend(args);
        let out = server.cli(&command);
        assert!(!out.status.success(), "{command:?}: {}", text(&out));
        assert!(text(&out).contains(says), "{command:?}: {}", text(&out));
    }
    let jobs_after = server.get_json("/api/v1/jobs").await["jobs"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(jobs_before, jobs_after, "no job ran for refused input");

    // An ONNX import without a native form (a skip connection is a branch the engine's
    // layer chain does not hold) has no card: the columns are named on the command line.
    let layer = |name: &str, layer| trainyard_models::graph::NamedLayer {
        name: name.into(),
        layer,
    };
    let dense = |i: usize, o: usize| trainyard_models::graph::Layer::Linear {
        weight: trainyard_models::graph::Weights::new(
            vec![i, o],
            (0..i * o)
                .map(|k| ((k * 37 % 101) as f32 - 50.0) / 500.0)
                .collect(),
        ),
        bias: None,
    };
    let branchy = trainyard_models::graph::Graph {
        name: "branchy".into(),
        sample_shape: vec![1, 8, 8],
        layers: vec![
            layer("flatten", trainyard_models::graph::Layer::Flatten),
            layer("fc1", dense(64, 16)),
            layer(
                "skip",
                trainyard_models::graph::Layer::Residual(vec![layer("inner", dense(16, 16))]),
            ),
            layer("fc2", dense(16, 10)),
        ],
    };
    let file = dir.path().join("branchy.onnx");
    std::fs::write(
        &file,
        trainyard_models::onnx::encode(&branchy, Some(10)).unwrap(),
    )
    .unwrap();
    let imported = ok(server.cli(&[
        "models",
        "import",
        file.to_str().unwrap(),
        "--name",
        "branchy",
    ]));
    assert!(
        imported.contains("native form: not converted"),
        "{imported}"
    );
    let out = server.cli(&["compress", "branchy:1", "--int8"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("name them with --input COLUMN --target COLUMN"),
        "{}",
        text(&out)
    );
    let compressed = ok(server.cli(&[
        "compress",
        "branchy:1",
        "--int8",
        "--calibrate",
        "digits",
        "--eval",
        "digits",
        "--input",
        "pixels",
        "--target",
        "label",
        "--max-accuracy-drop",
        "1",
    ]));
    assert!(
        compressed.contains("registered model branchy:2"),
        "{compressed}"
    );
    let r = report(&server, &tags(&server, "branchy", "2").await).await;
    assert_eq!(r["quantized"].as_array().unwrap().len(), 3, "{r}");

    // `models show` says what each compressed version is.
    let shown = ok(server.cli(&["models", "show", "digits-cnn"]));
    assert!(shown.contains("compressed from digits-cnn:1"), "{shown}");
    assert!(shown.contains("v3 ← digits-cnn:1: int8-static"), "{shown}");
    assert!(
        shown.contains(&format!("kept in float: {}", fell_back.join(","))),
        "{shown}"
    );
}
