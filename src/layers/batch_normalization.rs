//! Keras's BatchNormalization over the last axis (the channels of NHWC, the units of a flat
//! input): batch statistics in training (updating the moving ones), the moving statistics in
//! evaluate and predict. Tensors in Keras `get_weights()` order: gamma, beta (trainable),
//! moving_mean, moving_variance (not trainable).

use super::{Args, Backward, Forward, Init, LayerKind, ParamSpec, ScratchKind, ScratchSpec};
use crate::backend::{Backend, BatchNormConfig, BatchNormShape, Passes};
use anyhow::{bail, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct BatchNormalization {
    pub momentum: f32,
    pub epsilon: f32,
}

const USAGE: &str = "BatchNormalization(momentum=0.99, epsilon=0.001)";

impl BatchNormalization {
    pub fn shape(input: &[usize]) -> BatchNormShape {
        let channels = *input.last().expect("Model::new checked the input shape");
        BatchNormShape { positions: input.iter().product::<usize>() / channels, channels, relu: false }
    }
    fn config(&self) -> BatchNormConfig {
        BatchNormConfig { momentum: self.momentum, epsilon: self.epsilon }
    }
}

impl LayerKind for BatchNormalization {
    const CLASS: &'static str = "BatchNormalization";
    const BASE: &'static str = "batch_normalization";
    const ALIASES: &'static [&'static str] = &["batchnorm"];

    fn from_args(args: &Args) -> Result<Self> {
        args.check_keywords(&["momentum", "epsilon"])?;
        args.check_positional(0, USAGE)?;
        let defaults = BatchNormConfig::default();
        let momentum = args.keyword(&["momentum"]).map(|v| v.number("momentum")).transpose()?.map_or(defaults.momentum, |v| v as f32);
        let epsilon = args.keyword(&["epsilon"]).map(|v| v.number("epsilon")).transpose()?.map_or(defaults.epsilon, |v| v as f32);
        if !(0.0..1.0).contains(&momentum) {
            bail!("BatchNormalization: momentum {momentum} is not in [0, 1)");
        }
        if epsilon.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            bail!("BatchNormalization: epsilon {epsilon} is not positive");
        }
        Ok(BatchNormalization { momentum, epsilon })
    }

    fn to_args(&self) -> Vec<String> {
        let defaults = BatchNormConfig::default();
        let mut out = Vec::new();
        if self.momentum != defaults.momentum {
            out.push(format!("momentum={}", self.momentum));
        }
        if self.epsilon != defaults.epsilon {
            out.push(format!("epsilon={}", self.epsilon));
        }
        out
    }

    fn output_shape(&self, input: &[usize], _is_last: bool) -> Result<Vec<usize>> {
        if input.is_empty() || input.contains(&0) {
            bail!("BatchNormalization needs a non-empty input, got {input:?}");
        }
        Ok(input.to_vec())
    }

    fn params(&self, input: &[usize]) -> Vec<ParamSpec> {
        let c = Self::shape(input).channels;
        vec![
            ParamSpec::trainable("gamma", vec![c], Init::Ones),
            ParamSpec::trainable("beta", vec![c], Init::Zeros),
            ParamSpec::non_trainable("moving_mean", vec![c], Init::Zeros),
            ParamSpec::non_trainable("moving_variance", vec![c], Init::Ones),
        ]
    }

    /// The batch mean and inverse deviation (+ the backward's two per-channel terms), and a dx
    /// to write when the layer's input is the network's (whose gradient nobody reads).
    fn scratch(&self, input: &[usize]) -> Vec<ScratchSpec> {
        let s = Self::shape(input);
        vec![ScratchSpec::fixed(ScratchKind::Tensor, s.saved_len()), ScratchSpec::per_image(ScratchKind::Tensor, s.len())]
    }

    fn absorbs_relu(&self) -> bool {
        true
    }

    /// Where the backend fuses the two (`Backend::fuses_batchnorm_maxpool`), in training and
    /// inference alike.
    fn absorbs_maxpool<B: Backend>(&self, backend: &B, _input: &[usize], _passes: Passes) -> bool {
        backend.fuses_batchnorm_maxpool()
    }

    fn forward<B: Backend>(&self, f: Forward<'_, B>) {
        let s = BatchNormShape { relu: f.relu, ..Self::shape(f.input) };
        let [gamma, beta, mean, variance] = f.params else { unreachable!("BatchNormalization has four tensors") };
        let saved = f.scratch[0].tensor_mut();
        let b = f.backend;
        match (f.pool, f.training) {
            (None, true) => b.batchnorm_forward_train(f.x, gamma, beta, mean, variance, saved, f.y, &s, f.n, &self.config()),
            (None, false) => b.batchnorm_forward_infer(f.x, gamma, beta, mean, variance, saved, f.y, &s, f.n, self.epsilon),
            (Some((pool, argmax)), true) => {
                b.batchnorm_maxpool_forward_train(f.x, gamma, beta, mean, variance, saved, f.y, argmax, &s, &pool, f.n, &self.config())
            }
            (Some((pool, argmax)), false) => {
                b.batchnorm_maxpool_forward_infer(f.x, gamma, beta, mean, variance, saved, f.y, argmax, &s, &pool, f.n, self.epsilon)
            }
        }
    }

    fn backward<B: Backend>(&self, b: Backward<'_, B>) {
        let s = Self::shape(b.input);
        let [dgamma, dbeta] = b.grads else { unreachable!("BatchNormalization has two trainable tensors") };
        let (saved, rest) = b.scratch.split_at_mut(1);
        let dx = match b.dx {
            Some(dx) => dx,
            None => rest[0].tensor_mut(),
        };
        match b.pool {
            None => b.backend.batchnorm_backward(b.x, b.dy, &b.params[0], saved[0].tensor_mut(), dx, dgamma, dbeta, &s, b.n),
            Some((pool, argmax)) => {
                // The forward's ReLU, if any, is the pool's to undo: its backward masks by the pooled y.
                let s = BatchNormShape { relu: b.relu, ..s };
                b.backend.batchnorm_maxpool_backward(b.x, b.dy, b.y, argmax, &b.params[0], saved[0].tensor_mut(), dx, dgamma, dbeta, &s, &pool, b.n)
            }
        }
        if let Some(y) = b.relu_y {
            b.backend.relu_backward(y, dx, b.n * s.len());
        }
    }
}
