//! Softmax and the fused softmax + cross-entropy + gradient (shaders/loss.wgsl).

use super::params::{u32_of, LossParams};
use super::recorder::linear_grid;
use super::{GpuBackend, GpuIndices, GpuTensor};

impl GpuBackend {
    // logits (n, classes), labels (n) -> dlogits (n, classes); metrics (3) += loss, hits, n.
    pub(super) fn record_softmax_xent(
        &self,
        logits: &GpuTensor,
        labels: &GpuIndices,
        dlogits: &mut GpuTensor,
        metrics: &mut GpuTensor,
        n: usize,
        classes: usize,
    ) {
        if n == 0 || classes == 0 {
            return;
        }
        let params = LossParams { n: u32_of(n), classes: u32_of(classes), ..Default::default() };
        let bound = [logits.at(1), labels.at(2), dlogits.at(3), metrics.at(4)];
        // One workgroup: it reduces the whole batch's metrics in a fixed order.
        self.dispatch(&self.pipelines.softmax_xent, &params, &bound, [1, 1, 1]);
        self.moved(n * classes + n + 3, n * classes + 3);
    }

    // softmax_xent with each row weighted by class_weights[label] (classes floats).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_softmax_xent_weighted(
        &self,
        logits: &GpuTensor,
        labels: &GpuIndices,
        class_weights: &GpuTensor,
        dlogits: &mut GpuTensor,
        metrics: &mut GpuTensor,
        n: usize,
        classes: usize,
    ) {
        if n == 0 || classes == 0 {
            return;
        }
        let params = LossParams { n: u32_of(n), classes: u32_of(classes), ..Default::default() };
        let bound = [logits.at(1), labels.at(2), dlogits.at(3), metrics.at(4), class_weights.at(5)];
        self.dispatch(&self.pipelines.softmax_xent_weighted, &params, &bound, [1, 1, 1]);
    }

    // softmax_xent (class_weights None) or softmax_xent_weighted against targets smoothed by
    // label_smoothing: the same kernels with the uniform's label_smoothing set.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_softmax_xent_smoothed(
        &self,
        logits: &GpuTensor,
        labels: &GpuIndices,
        class_weights: Option<&GpuTensor>,
        dlogits: &mut GpuTensor,
        metrics: &mut GpuTensor,
        n: usize,
        classes: usize,
        label_smoothing: f32,
    ) {
        if n == 0 || classes == 0 {
            return;
        }
        let params = LossParams { n: u32_of(n), classes: u32_of(classes), label_smoothing, ..Default::default() };
        match class_weights {
            None => self.dispatch(&self.pipelines.softmax_xent, &params, &[logits.at(1), labels.at(2), dlogits.at(3), metrics.at(4)], [1, 1, 1]),
            Some(w) => {
                let bound = [logits.at(1), labels.at(2), dlogits.at(3), metrics.at(4), w.at(5)];
                self.dispatch(&self.pipelines.softmax_xent_weighted, &params, &bound, [1, 1, 1]);
            }
        }
        self.moved(n * classes + n + 3, n * classes + 3);
    }

    // logits (n, classes) -> probs (n, classes).
    pub(super) fn record_softmax(&self, logits: &GpuTensor, probs: &mut GpuTensor, n: usize, classes: usize) {
        if classes == 0 {
            return;
        }
        let params = LossParams { n: u32_of(n), classes: u32_of(classes), ..Default::default() };
        let bound = [logits.at(1), probs.at(3)];
        self.dispatch(&self.pipelines.softmax, &params, &bound, linear_grid(n, self.max_per_dim()));
        self.moved(n * classes, n * classes);
    }
}
