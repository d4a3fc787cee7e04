//! AdamW's weight decay, SGD and RMSprop on the CPU: the per-element updates of Keras 3
//! (keras/src/optimizers/base_optimizer.py `_apply_weight_decay`, sgd.py and rmsprop.py
//! `update_step`), written in Keras's operation order so shaders/{adamw,sgd,rmsprop}.wgsl can
//! compute the same expressions. Chunks of 4096 run in parallel; each element is independent,
//! so the split changes no bit. (Adam itself is `CpuBackend::adam_update` in mod.rs.)

use crate::backend::{RmsPropStep, SgdStep};
use rayon::prelude::*;

const CHUNK: usize = 4096;

/// Keras's decoupled weight decay: p = p - p * weight_decay * lr.
pub fn weight_decay(param: &mut [f32], weight_decay: f32, learning_rate: f32) {
    param.par_chunks_mut(CHUNK).for_each(|p| {
        for p in p {
            *p -= *p * weight_decay * learning_rate;
        }
    });
}

/// SGD: p -= g * lr; with a momentum buffer m = m * momentum - g * lr, then p += m, or with
/// Nesterov p += m * momentum - g * lr.
pub fn sgd(param: &mut [f32], grad: &[f32], momentum: Option<&mut [f32]>, h: &SgdStep) {
    let lr = h.learning_rate;
    match momentum {
        None => param.par_chunks_mut(CHUNK).zip(grad.par_chunks(CHUNK)).for_each(|(p, g)| {
            for (p, g) in p.iter_mut().zip(g) {
                *p -= g * lr;
            }
        }),
        Some(m) => param.par_chunks_mut(CHUNK).zip(grad.par_chunks(CHUNK)).zip(m.par_chunks_mut(CHUNK)).for_each(|((p, g), m)| {
            for ((p, g), m) in p.iter_mut().zip(g).zip(m) {
                *m = *m * h.momentum - g * lr;
                if h.nesterov {
                    *p += *m * h.momentum - g * lr;
                } else {
                    *p += *m;
                }
            }
        }),
    }
}

/// RMSprop: v = rho * v + (1 - rho) * g^2, p -= lr * g / sqrt(v + epsilon).
pub fn rmsprop(param: &mut [f32], grad: &[f32], velocity: &mut [f32], h: &RmsPropStep) {
    let (lr, rho, eps) = (h.learning_rate, h.rho, h.epsilon);
    param.par_chunks_mut(CHUNK).zip(grad.par_chunks(CHUNK)).zip(velocity.par_chunks_mut(CHUNK)).for_each(|((p, g), v)| {
        for ((p, g), v) in p.iter_mut().zip(g).zip(v) {
            *v = rho * *v + (1.0 - rho) * (g * g);
            *p -= lr * g / (*v + eps).sqrt();
        }
    });
}
