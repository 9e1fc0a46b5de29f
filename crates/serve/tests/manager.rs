//! The model manager over a real repository folder and the tract runtime (always available):
//! on-demand load, single flight, batching, bad input, unload, a broken model.

use std::sync::Arc;

use trainyard_serve::source::RepositoryFolder;
use trainyard_serve::{
    ControlMode, ManagerOptions, ModelManager, RuntimeKind, Runtimes, ServeError, Tensor,
};

fn repo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    // The package's folder as the test runs, not as it was built: a shared target
    // directory may hold a binary built from a checkout elsewhere.
    let fixture = std::path::PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("tests/fixtures/repo/tiny/1/model.onnx");
    for name in ["tiny", "tiny2"] {
        std::fs::create_dir_all(dir.path().join(name).join("1")).unwrap();
        std::fs::copy(&fixture, dir.path().join(name).join("1/model.onnx")).unwrap();
    }
    std::fs::create_dir_all(dir.path().join("broken/1")).unwrap();
    std::fs::write(dir.path().join("broken/1/model.onnx"), b"not onnx").unwrap();
    dir
}

fn manager(dir: &std::path::Path, control: ControlMode) -> ModelManager {
    ModelManager::new(
        Arc::new(RepositoryFolder::new(dir).unwrap()),
        Runtimes::new(None, Some(RuntimeKind::Tract)).unwrap(),
        ManagerOptions {
            control,
            ..ManagerOptions::default()
        },
    )
}

fn input(rows: &[[f32; 4]]) -> Tensor {
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_vec("input", vec![rows.len(), 4], &flat)
}

fn loads(m: &ModelManager, name: &str) -> u64 {
    m.metrics()
        .loads
        .get_or_create(&trainyard_serve::metrics::ModelLabels {
            model: name.into(),
            version: "1".into(),
        })
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_load_once_and_all_get_answers() {
    let dir = repo();
    let m = manager(dir.path(), ControlMode::OnDemand);
    let mut tasks = Vec::new();
    for i in 0..16 {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            let lease = m.acquire("tiny", None).await?;
            let x = [i as f32, 1.0, 2.0, 3.0];
            let out = m.infer(&lease, vec![input(&[x])], None).await?;
            Ok::<_, ServeError>((x, out[0].to_vec::<f32>()))
        }));
    }
    for t in tasks {
        let (x, y) = t.await.unwrap().unwrap();
        // w = [[0,1,2,3],[4,5,6,7]] / 8, b = [0.5, -0.5]
        let want0 = (x[1] + 2.0 * x[2] + 3.0 * x[3]) / 8.0 + 0.5;
        let want1 = (4.0 * x[0] + 5.0 * x[1] + 6.0 * x[2] + 7.0 * x[3]) / 8.0 - 0.5;
        assert!(
            (y[0] - want0).abs() < 1e-5 && (y[1] - want1).abs() < 1e-5,
            "{x:?} -> {y:?}"
        );
    }
    assert_eq!(loads(&m, "tiny"), 1);
    let stats = m.statistics(Some("tiny"), None).await.unwrap();
    let s = stats[0].1.snapshot();
    assert_eq!(s.queue.count, 16);
    assert_eq!(s.inference_count, 16);
}

#[tokio::test]
async fn bad_inputs_are_refused_with_the_tensor_named() {
    let dir = repo();
    let m = manager(dir.path(), ControlMode::OnDemand);
    let lease = m.acquire("tiny", None).await.unwrap();
    let cases = [
        (
            Tensor::from_vec("input", vec![1, 3], &[1.0f32, 2.0, 3.0]),
            "shape [1, 3]",
        ),
        (
            Tensor::from_vec("input", vec![1, 4], &[1.0f64, 2.0, 3.0, 4.0]),
            "datatype FP64",
        ),
        (
            Tensor::from_vec("other", vec![1, 4], &[1.0f32; 4]),
            "unexpected inference input 'other'",
        ),
        (
            Tensor::from_vec("input", vec![65, 4], &[1.0f32; 260]),
            "batch size 65",
        ),
    ];
    for (t, want) in cases {
        let err = m.infer(&lease, vec![t], None).await.unwrap_err();
        assert!(matches!(err, ServeError::Invalid(_)), "{err:?}");
        assert!(err.to_string().contains(want), "{err} should say {want}");
    }
    let err = m
        .infer(
            &lease,
            vec![input(&[[0.0; 4]])],
            Some(&["nope".to_string()]),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("'nope'"), "{err}");
}

#[tokio::test]
async fn unknown_models_versions_and_broken_files() {
    let dir = repo();
    let m = manager(dir.path(), ControlMode::OnDemand);
    assert!(matches!(
        m.acquire("nope", None).await,
        Err(ServeError::NotFound(_))
    ));
    assert!(matches!(
        m.acquire("tiny", Some(2)).await,
        Err(ServeError::NotFound(_))
    ));
    let err = m.acquire("broken", None).await.err().unwrap();
    assert!(matches!(err, ServeError::Unavailable(_)), "{err:?}");
    assert!(err.to_string().contains("not an ONNX model"), "{err}");
    // Others keep serving; the index shows the failure with its reason.
    m.acquire("tiny", None).await.unwrap();
    let index = m.index().await.unwrap();
    let broken = index.iter().find(|e| e.name == "broken").unwrap();
    assert_eq!(
        broken.versions[0].1,
        trainyard_serve::ModelState::Unavailable
    );
    assert!(!broken.versions[0].2.is_empty());
    assert!(index
        .iter()
        .any(|e| e.name == "tiny2" && e.versions.is_empty()));
}

#[tokio::test]
async fn unload_lets_requests_in_flight_finish_and_explicit_mode_refuses_new_ones() {
    let dir = repo();
    let m = manager(dir.path(), ControlMode::Explicit);
    assert!(matches!(
        m.acquire("tiny", None).await,
        Err(ServeError::Unavailable(_))
    ));
    m.load("tiny", None).await.unwrap();
    let lease = m.acquire("tiny", None).await.unwrap();
    m.unload("tiny").await.unwrap();
    // The lease taken before the unload still answers.
    let out = m
        .infer(&lease, vec![input(&[[1.0, 2.0, 3.0, 4.0]])], None)
        .await
        .unwrap();
    assert_eq!(out[0].to_vec::<f32>(), vec![3.0, 7.0]);
    drop(lease);
    let err = m.acquire("tiny", None).await.err().unwrap();
    assert!(err.to_string().contains("unloaded"), "{err}");
    // An explicit load brings it back.
    m.load("tiny", None).await.unwrap();
    assert!(m.acquire("tiny", None).await.is_ok());
}

/// The tiny model with its bias 1.5, -1.5 instead of 0.5, -0.5: [1, 2, 3, 4] gives [4, 6],
/// not [3, 7].
fn other_tiny(dir: &std::path::Path) -> Vec<u8> {
    let tiny = std::fs::read(dir.join("tiny/1/model.onnx")).unwrap();
    let bias = [0, 0, 0, 0x3f, 0, 0, 0, 0xbf];
    let at = tiny.windows(8).position(|w| w == bias).unwrap();
    let mut file = tiny.clone();
    file[at..at + 8].copy_from_slice(&[0, 0, 0xc0, 0x3f, 0, 0, 0xc0, 0xbf]);
    file
}

#[tokio::test]
async fn a_version_replaced_or_removed_in_the_folder_is_never_served_from_its_old_copy() {
    let dir = repo();
    let m = manager(dir.path(), ControlMode::OnDemand);
    let one = || vec![input(&[[1.0, 2.0, 3.0, 4.0]])];
    let lease = m.acquire("tiny", None).await.unwrap();
    let out = m.infer(&lease, one(), None).await.unwrap();
    assert_eq!(out[0].to_vec::<f32>(), vec![3.0, 7.0]);

    // Replaced as a deployment does it: a new file renamed over the old one.
    let other = other_tiny(dir.path());
    let new = dir.path().join("tiny/1/model.onnx.new");
    std::fs::write(&new, other).unwrap();
    std::fs::rename(&new, dir.path().join("tiny/1/model.onnx")).unwrap();
    m.index().await.unwrap();
    let key = ("tiny".to_string(), 1);
    assert!(m.peek(&key).is_none(), "the old copy is out of service");
    // A request that held it already finishes on it.
    let out = m.infer(&lease, one(), None).await.unwrap();
    assert_eq!(out[0].to_vec::<f32>(), vec![3.0, 7.0]);
    drop(lease);
    let lease = m.acquire("tiny", None).await.unwrap();
    let out = m.infer(&lease, one(), None).await.unwrap();
    assert_eq!(out[0].to_vec::<f32>(), vec![4.0, 6.0]);
    assert_eq!(loads(&m, "tiny"), 2);
    drop(lease);

    // Removed: the next listing unloads it, its memory is given back, and neither the
    // index nor the statistics show it.
    std::fs::remove_dir_all(dir.path().join("tiny")).unwrap();
    let index = m.index().await.unwrap();
    assert!(!index.iter().any(|e| e.name == "tiny"), "{index:?}");
    assert!(m.peek(&key).is_none());
    assert_eq!(m.memory_used(), 0);
    assert!(m.statistics(Some("tiny"), None).await.unwrap().is_empty());
    assert!(matches!(
        m.acquire("tiny", None).await,
        Err(ServeError::NotFound(_))
    ));
}

/// `model.onnx` whose weight lives in `location` (as `onnx.save(...,
/// save_as_external_data=True)` writes it), and the bytes that file must hold.
fn external_model(location: &str) -> (Vec<u8>, Vec<u8>) {
    use prost::Message;
    use tract_onnx::pb;
    use trainyard_models::graph::{Graph, Layer, NamedLayer, Weights};
    let graph = Graph {
        name: "external".into(),
        sample_shape: vec![4],
        layers: vec![NamedLayer {
            name: "l0".into(),
            layer: Layer::Linear {
                weight: Weights::new(vec![4, 2], (1..=8).map(|v| v as f32).collect()),
                bias: None,
            },
        }],
    };
    let bytes = trainyard_models::onnx::encode(&graph, Some(2)).unwrap();
    let mut model = pb::ModelProto::decode(bytes.as_slice()).unwrap();
    let weight = &mut model.graph.as_mut().unwrap().initializer[0];
    let data = std::mem::take(&mut weight.raw_data);
    weight.data_location = Some(pb::tensor_proto::DataLocation::External as i32);
    weight.external_data = vec![pb::StringStringEntryProto {
        key: "location".into(),
        value: location.into(),
    }];
    (model.encode_to_vec(), data)
}

/// Weights kept beside the model are read from its folder and served; a location outside
/// the folder is refused without being read, even where a file with the right bytes is.
#[tokio::test]
async fn external_weights_come_from_the_models_folder_only() {
    let dir = repo();
    let (model, weights) = external_model("weights.bin");
    std::fs::create_dir_all(dir.path().join("external/1")).unwrap();
    std::fs::write(dir.path().join("external/1/model.onnx"), model).unwrap();
    std::fs::write(dir.path().join("external/1/weights.bin"), &weights).unwrap();
    let (hostile, _) = external_model("../../secret.bin");
    std::fs::create_dir_all(dir.path().join("hostile/1")).unwrap();
    std::fs::write(dir.path().join("hostile/1/model.onnx"), hostile).unwrap();
    std::fs::write(dir.path().join("secret.bin"), &weights).unwrap();

    let m = manager(dir.path(), ControlMode::OnDemand);
    let lease = m.acquire("external", None).await.unwrap();
    let out = m
        .infer(&lease, vec![input(&[[1.0, 0.0, 0.0, 1.0]])], None)
        .await
        .unwrap();
    // Row [1, 0, 0, 1] · [[1, 2], [3, 4], [5, 6], [7, 8]] = [8, 10].
    assert_eq!(out[0].to_vec::<f32>(), [8.0, 10.0]);
    let err = m.acquire("hostile", None).await.err().unwrap().to_string();
    assert!(err.contains("not a file beside the model"), "{err}");
}

/// A batch dimension with neither a size nor a name (as skl2onnx writes it) loads on tract
/// too, which needs every input dimension named to type the graph.
#[tokio::test]
async fn an_unnamed_batch_dimension_loads_on_tract() {
    use prost::Message;
    use tract_onnx::pb;
    let dir = repo();
    let (model, weights) = external_model("weights.bin");
    let mut model = pb::ModelProto::decode(model.as_slice()).unwrap();
    let graph = model.graph.as_mut().unwrap();
    graph.initializer[0].raw_data = weights;
    graph.initializer[0].data_location = None;
    graph.initializer[0].external_data.clear();
    let Some(pb::type_proto::Value::TensorType(t)) =
        graph.input[0].r#type.as_mut().unwrap().value.as_mut()
    else {
        panic!("a tensor input")
    };
    t.shape.as_mut().unwrap().dim[0].value = None;
    std::fs::create_dir_all(dir.path().join("unnamed/1")).unwrap();
    std::fs::write(
        dir.path().join("unnamed/1/model.onnx"),
        model.encode_to_vec(),
    )
    .unwrap();
    let m = manager(dir.path(), ControlMode::OnDemand);
    let lease = m.acquire("unnamed", None).await.unwrap();
    let out = m
        .infer(&lease, vec![input(&[[1.0, 0.0, 0.0, 1.0], [0.0; 4]])], None)
        .await
        .unwrap();
    assert_eq!(out[0].to_vec::<f32>(), [8.0, 10.0, 0.0, 0.0]);
}

/// A file of two hundred bytes whose constants ask for 5·10⁸ values (2 GB): the runtime
/// would build and fill that tensor in the server's memory while it loads (without the
/// check this load succeeds and the test fails; ten times larger on a 24 GB machine and the
/// server is killed for memory). The model is refused with the reason; the others serve.
#[tokio::test]
async fn a_model_whose_constants_ask_for_a_huge_tensor_is_refused_not_loaded() {
    use prost::Message;
    use tract_onnx::pb;
    let dir = repo();
    let tensor_type = |elem: pb::tensor_proto::DataType, dims: &[i64]| pb::TypeProto {
        value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
            elem_type: elem as i32,
            shape: Some(pb::TensorShapeProto {
                dim: dims
                    .iter()
                    .map(|d| pb::tensor_shape_proto::Dimension {
                        value: Some(pb::tensor_shape_proto::dimension::Value::DimValue(*d)),
                        ..Default::default()
                    })
                    .collect(),
            }),
        })),
        ..Default::default()
    };
    let node = |op: &str, input: &[&str], output: &str| pb::NodeProto {
        op_type: op.into(),
        input: input.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    };
    let float = pb::tensor_proto::DataType::Float;
    // input + Σ ConstantOfShape([1000, 1000, 500]): a constant subgraph the optimiser folds.
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        graph: Some(pb::GraphProto {
            name: "bomb".into(),
            node: vec![
                node("ConstantOfShape", &["shape"], "big"),
                node("ReduceSum", &["big"], "sum"),
                node("Add", &["input", "sum"], "output"),
            ],
            initializer: vec![pb::TensorProto {
                name: "shape".into(),
                dims: vec![3],
                data_type: pb::tensor_proto::DataType::Int64 as i32,
                int64_data: vec![1000, 1000, 500],
                ..Default::default()
            }],
            input: vec![pb::ValueInfoProto {
                name: "input".into(),
                r#type: Some(tensor_type(float, &[1, 4])),
                ..Default::default()
            }],
            output: vec![pb::ValueInfoProto {
                name: "output".into(),
                r#type: Some(tensor_type(float, &[1, 4])),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    std::fs::create_dir_all(dir.path().join("bomb/1")).unwrap();
    std::fs::write(dir.path().join("bomb/1/model.onnx"), model.encode_to_vec()).unwrap();
    let m = manager(dir.path(), ControlMode::OnDemand);
    let err = m.acquire("bomb", None).await.err().unwrap();
    assert!(matches!(err, ServeError::Unavailable(_)), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("model refused") && message.contains("ConstantOfShape"),
        "{message}"
    );
    let lease = m.acquire("tiny", None).await.unwrap();
    m.infer(&lease, vec![input(&[[1.0; 4]])], None)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_version_folder_is_read_only_under_its_own_spelling() {
    let dir = repo();
    // `01` beside `1`: listed as version 1 it would give 1 the revision of a folder that
    // fetching `1/` never reads, and every request would reload it.
    std::fs::create_dir_all(dir.path().join("tiny/01")).unwrap();
    std::fs::write(
        dir.path().join("tiny/01/model.onnx"),
        other_tiny(dir.path()),
    )
    .unwrap();
    let m = manager(dir.path(), ControlMode::OnDemand);
    for _ in 0..3 {
        m.index().await.unwrap();
        let lease = m.acquire("tiny", Some(1)).await.unwrap();
        let out = m
            .infer(&lease, vec![input(&[[1.0, 2.0, 3.0, 4.0]])], None)
            .await
            .unwrap();
        assert_eq!(out[0].to_vec::<f32>(), vec![3.0, 7.0]);
    }
    assert_eq!(loads(&m, "tiny"), 1);
}
