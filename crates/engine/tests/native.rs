//! Round trips: a network exported as ONNX, read back as a graph and made native again
//! computes what the original does.

use trainyard_data::Batch;
use trainyard_engine::network::Network;
use trainyard_engine::spec::parse_model;
use trainyard_engine::{export, native, train};
use trainyard_models::graph::Layer;

fn probe(shape: &[usize], rows: usize) -> Batch {
    let n = rows * shape.iter().product::<usize>();
    Batch {
        inputs: (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0)
            .collect(),
        sample_shape: shape.to_vec(),
        rows,
        targets: None,
    }
}

#[test]
fn engine_to_onnx_to_native_gives_the_same_outputs() {
    let cpu = trainyard_engine::device::DeviceSpec::Cpu.device().unwrap();
    cpu.seed(5);
    for (input, text) in [
        (
            vec![1, 8, 8],
            "[[layers]]\ntype = \"conv2d\"\nout_channels = 4\nkernel = 3\npadding = 1\n\
             [[layers]]\ntype = \"batch_norm\"\n[[layers]]\ntype = \"relu\"\n\
             [[layers]]\ntype = \"max_pool2d\"\nkernel = 2\n[[layers]]\ntype = \"dropout\"\np = 0.3\n\
             [[layers]]\ntype = \"flatten\"\n[[layers]]\ntype = \"linear\"\nout_features = 10\n",
        ),
        (
            vec![12],
            "[[layers]]\ntype = \"linear\"\nout_features = 16\n[[layers]]\ntype = \"tanh\"\n\
             [[layers]]\ntype = \"linear\"\nout_features = 8\nbias = false\n[[layers]]\ntype = \"sigmoid\"\n\
             [[layers]]\ntype = \"linear\"\nout_features = 3\n[[layers]]\ntype = \"softmax\"\n",
        ),
        (vec![1, 8, 8], "architecture = \"cnn\"\nchannels = [4, 8]\ndense = [16]\noutputs = 10\n"),
    ] {
        let spec = parse_model(text)
            .unwrap()
            .resolve(Some(&input), None, "model")
            .unwrap();
        // Batch norms of a fresh network are the identity: give them statistics of their
        // own first, so the round trip has something to keep.
        let fresh = Network::new(&spec, &cpu);
        let mut graph = export::graph(&fresh, &spec, "m").unwrap();
        for l in &mut graph.layers {
            if let Layer::BatchNorm { gamma, beta, mean, var, .. } = &mut l.layer {
                for (i, v) in gamma.values.iter_mut().enumerate() {
                    *v = 0.5 + i as f32 * 0.3;
                }
                for (i, v) in beta.values.iter_mut().enumerate() {
                    *v = i as f32 * 0.1 - 0.2;
                }
                for (i, v) in mean.values.iter_mut().enumerate() {
                    *v = 0.7 - i as f32 * 0.4;
                }
                for (i, v) in var.values.iter_mut().enumerate() {
                    *v = 0.3 + i as f32 * 0.5;
                }
            }
        }
        let (_, original) = native::from_graph(&graph).unwrap();
        let graph = export::graph(&original, &spec, "m").unwrap();
        let onnx = trainyard_models::onnx::encode(&graph, Some(spec.outputs())).unwrap();
        let read = trainyard_models::onnx_read::to_graph(&onnx, "m").unwrap();
        let (native_spec, native) = native::from_graph(&read).unwrap();
        assert_eq!(native_spec.input, spec.input);
        assert_eq!(native_spec.output, spec.output);
        let batch = probe(&input, 6);
        let (a, b) = (
            train::predict(&original, &batch).unwrap(),
            train::predict(&native, &batch).unwrap(),
        );
        let scale = a.iter().fold(1f32, |m, v| m.max(v.abs()));
        let diff = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(diff <= 1e-5 * scale, "{text}: max |Δ| {diff:e}");
    }
}
