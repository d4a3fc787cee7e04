//! Dense-layer ops (shaders/matmul.wgsl): one strided GEMM kernel serves all three passes, a
//! transpose being a swap of strides.

use super::conv::split_k;
use super::pipelines::{GemmEntry, Tile};
use super::recorder::tile_grid;
use super::{GpuBackend, GpuTensor};
use crate::backend::DenseShape;

/// MatmulParams in matmul.wgsl.
#[allow(clippy::too_many_arguments)]
fn matmul_params(m: usize, n: usize, k: usize, a_strides: (usize, usize), b_strides: (usize, usize), bias: bool, relu: bool, k_per_split: usize, ones_row: bool, splits: usize) -> [u32; 12] {
    [
        m as u32, n as u32, k as u32, a_strides.0 as u32,
        a_strides.1 as u32, b_strides.0 as u32, b_strides.1 as u32, bias as u32,
        relu as u32, k_per_split as u32, ones_row as u32, splits as u32,
    ]
}

impl GpuBackend {
    // x (n, inputs), w (inputs, units), b (units) -> y (n, units).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_dense_forward(&self, x: &GpuTensor, w: &GpuTensor, b: &GpuTensor, y: &mut GpuTensor, s: &DenseShape, n: usize, relu: bool) {
        let params = matmul_params(n, s.units, s.inputs, (s.inputs, 1), (s.units, 1), true, relu, 0, false, 0);
        let tile = Tile::for_gemm(n, s.units, 128);
        let pipeline = self.pipelines.gemm(&self.ctx.device, GemmEntry::MatmulBiasAct, tile);
        let groups = tile_grid(s.units.div_ceil(tile.tn as usize), n.div_ceil(tile.tm as usize), self.max_per_dim());
        let bound = [x.at(1), w.at(2), b.at(3), y.at(4)];
        self.recorder.dispatch(&self.ctx.device, &pipeline, &params, &bound, groups);
    }

    // dy (n, units), w (inputs, units) -> dx (n, inputs) = dy * w^T.
    pub(super) fn record_dense_backward_input(&self, dy: &GpuTensor, w: &GpuTensor, dx: &mut GpuTensor, s: &DenseShape, n: usize) {
        let params = matmul_params(n, s.inputs, s.units, (s.units, 1), (1, s.units), false, false, 0, false, 0);
        let tile = Tile::for_gemm(n, s.inputs, 128);
        let pipeline = self.pipelines.gemm(&self.ctx.device, GemmEntry::MatmulBiasAct, tile);
        let groups = tile_grid(s.inputs.div_ceil(tile.tn as usize), n.div_ceil(tile.tm as usize), self.max_per_dim());
        // The kernel's bias binding is unused here (p.bias = 0) but must be bound: w stands in.
        let bound = [dy.at(1), w.at(2), w.at(3), dx.at(4)];
        self.recorder.dispatch(&self.ctx.device, &pipeline, &params, &bound, groups);
    }

    // x (n, inputs), dy (n, units) -> dw (inputs, units) = x^T * dy, db (units) = column sums.
    pub(super) fn record_dense_backward_filter(&self, x: &GpuTensor, dy: &GpuTensor, dw: &mut GpuTensor, db: &mut GpuTensor, s: &DenseShape, n: usize) {
        let rows = s.inputs + 1; // + the ones row that yields db
        let (per, splits) = split_k(n, rows * s.units);
        let Some(scratch) = self.scratch(splits * rows * s.units) else { return };
        let params = matmul_params(s.inputs, s.units, n, (1, s.inputs), (s.units, 1), false, false, per, true, splits);
        let tile = Tile::for_gemm(rows, s.units, 128);
        let pipeline = self.pipelines.gemm(&self.ctx.device, GemmEntry::MatmulSplitPartials, tile);
        let groups = [s.units.div_ceil(tile.tn as usize) as u32, rows.div_ceil(tile.tm as usize) as u32, splits as u32];
        let bound = [x.at(1), dy.at(2), scratch.at(4)];
        self.recorder.dispatch(&self.ctx.device, &pipeline, &params, &bound, groups);
        self.record_sum_split_partials(&scratch, dw, db, s.inputs, s.units, splits);
    }
}
