//! Folding a BatchNormalization into the layer before it, for inference: BN's inference forward
//! is per channel y = gamma * (z - moving_mean) / sqrt(moving_variance + epsilon) + beta, an
//! affine map of the preceding conv's (or dense's) output z = x * W + b, so it is the same layer
//! with W'[.., c] = W[.., c] * scale_c and b'_c = (b_c - moving_mean_c) * scale_c + beta_c,
//! scale_c = gamma_c / sqrt(moving_variance_c + epsilon). Exact but for rounding: computed in
//! f64 and rounded once, the folded layer differs from conv + BN by a few f32 ulps of the
//! terms it sums (tests/batchnorm.rs measures it).
//!
//! A pure function on host tensors; choosing which layers to fold is the network's business.

use anyhow::{ensure, Result};

/// A BatchNormalization's inference tensors (Keras's order: gamma, beta, moving_mean,
/// moving_variance), each one per channel, and its epsilon.
#[derive(Clone, Copy, Debug)]
pub struct BatchNormWeights<'a> {
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
    pub moving_mean: &'a [f32],
    pub moving_variance: &'a [f32],
    pub epsilon: f32,
}

/// The folded (kernel, bias) of a layer whose kernel has the output channel as its last axis
/// (a conv's HWIO kernel, a dense layer's (in, out) one) followed by `bn`. `bias` None is a
/// layer without one (use_bias=False): the folded layer has one.
pub fn fold_batchnorm(kernel: &[f32], bias: Option<&[f32]>, bn: &BatchNormWeights<'_>) -> Result<(Vec<f32>, Vec<f32>)> {
    let c = bn.gamma.len();
    ensure!(
        bn.beta.len() == c && bn.moving_mean.len() == c && bn.moving_variance.len() == c,
        "BatchNormalization tensors of different lengths: gamma {c}, beta {}, moving_mean {}, moving_variance {}",
        bn.beta.len(),
        bn.moving_mean.len(),
        bn.moving_variance.len()
    );
    ensure!(c > 0 && kernel.len().is_multiple_of(c), "a kernel of {} values does not end in an axis of {c} channels", kernel.len());
    if let Some(b) = bias {
        ensure!(b.len() == c, "a bias of {} values for {c} channels", b.len());
    }
    let scale: Vec<f64> = (0..c).map(|ch| bn.gamma[ch] as f64 / (bn.moving_variance[ch] as f64 + bn.epsilon as f64).sqrt()).collect();
    let scale = &scale;
    let folded_kernel = kernel.chunks(c).flat_map(move |row| row.iter().zip(scale).map(|(&w, &s)| (w as f64 * s) as f32)).collect();
    let folded_bias = (0..c)
        .map(|ch| {
            let b = bias.map_or(0.0, |b| b[ch] as f64);
            ((b - bn.moving_mean[ch] as f64) * scale[ch] + bn.beta[ch] as f64) as f32
        })
        .collect();
    Ok((folded_kernel, folded_bias))
}
