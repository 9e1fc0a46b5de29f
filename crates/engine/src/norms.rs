//! Per-layer weight and gradient norms: how the debugger sees a layer that stopped learning
//! (its gradients near zero), one that explodes, or weights that grow without bound.
//!
//! Each top-level layer with parameters gets the L2 norm of all its float parameters and of
//! their gradients (a residual block counts as one layer). Reading a norm syncs with the
//! device, so the trainer asks for them every `training.norms_every` steps, not every step.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Gradients, Tensor};

use crate::network::{Layer, Network};

/// One layer's norms.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNorms {
    /// `NN_kind`, e.g. `00_conv2d`: the layer's index in the spec and its kind, a valid
    /// MLflow metric name part.
    pub layer: String,
    pub weight: f64,
    /// `None` when no gradient reached the layer (frozen, or not on the loss's path).
    pub grad: Option<f64>,
}

struct SumOfSquares<'a> {
    grads: Option<&'a Gradients>,
    weight: f64,
    grad: Option<f64>,
}

impl ModuleVisitor for SumOfSquares<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let sq = |t: Tensor<D>| f64::from(t.powi_scalar(2).sum().into_scalar::<f32>());
        if let Some(g) = self.grads.and_then(|grads| t.grad(grads)) {
            *self.grad.get_or_insert(0.0) += sq(g);
        }
        self.weight += sq(t.detach());
    }
}

fn kind(layer: &Layer) -> &'static str {
    match layer {
        Layer::Linear(_) => "linear",
        Layer::Conv2d(_) => "conv2d",
        Layer::BatchNorm(_) => "batch_norm",
        Layer::LayerNorm(_) => "layer_norm",
        Layer::Embedding(_) => "embedding",
        Layer::Residual(_) => "residual",
        Layer::Attention(_) => "attention",
        Layer::TransformerEncoder(_) => "transformer",
        _ => "layer",
    }
}

/// The norms of every layer that has parameters, in layer order; `grads` from the step's
/// `backward()` (before the optimizer takes them).
pub fn layer_norms(net: &Network, grads: Option<&Gradients>) -> Vec<LayerNorms> {
    net.layers
        .iter()
        .enumerate()
        .filter_map(|(i, layer)| {
            let mut v = SumOfSquares {
                grads,
                weight: 0.0,
                grad: None,
            };
            layer.visit(&mut v);
            (layer.num_params() > 0).then(|| LayerNorms {
                layer: format!("{i:02}_{}", kind(layer)),
                weight: v.weight.sqrt(),
                grad: v.grad.map(f64::sqrt),
            })
        })
        .collect()
}

/// The metrics a step logs for `norms`.
pub fn metrics(norms: &[LayerNorms]) -> Vec<(String, f64)> {
    norms
        .iter()
        .flat_map(|n| {
            std::iter::once((format!("weight_norm/{}", n.layer), n.weight))
                .chain(n.grad.map(|g| (format!("grad_norm/{}", n.layer), g)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    #[test]
    fn every_weighted_layer_has_its_norms_and_gradients_only_after_a_backward_pass() {
        let spec = crate::spec::parse_model("architecture = \"mlp\"\nhidden = [8]\n")
            .unwrap()
            .resolve(Some(&[4]), Some(3), "model")
            .unwrap();
        let device = Device::flex().autodiff();
        let net = Network::new(&spec, &device);
        let before = layer_norms(&net, None);
        // The two linear layers (the activation between them has no weights).
        let names: Vec<&str> = before.iter().map(|n| n.layer.as_str()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.iter().all(|n| n.ends_with("_linear")), "{names:?}");
        assert!(before.iter().all(|n| n.weight > 0.0 && n.grad.is_none()));

        let x = crate::network::batch(vec![0.5; 8], 2, &[4], &device);
        let loss = net.forward(x).powi_scalar(2).sum();
        let grads = loss.backward();
        let after = layer_norms(&net, Some(&grads));
        assert_eq!(after.len(), 2);
        for (a, b) in after.iter().zip(&before) {
            assert_eq!(a.weight, b.weight, "reading norms changes nothing");
            assert!(a.grad.is_some_and(|g| g > 0.0 && g.is_finite()), "{a:?}");
        }
        let logged = metrics(&after);
        assert_eq!(logged.len(), 4);
        assert!(logged[0].0.starts_with("weight_norm/") && logged[1].0.starts_with("grad_norm/"));
    }
}
