//! Dense-layer ops (shaders/matmul.wgsl): one strided GEMM kernel serves all three passes, a
//! transpose being a swap of strides.

use super::conv::split_k;
use super::params::{u32_of, MatmulParams};
use super::pipelines::{GemmEntry, Tile};
use super::recorder::tile_grid;
use super::{GpuBackend, GpuTensor};
use crate::backend::DenseShape;

/// Which operand of c (m, n) = a (m, k) * b (k, n) is stored transposed (both row-major):
/// `Left` reads a from a (k, m) array, `Right` reads b from an (n, k) array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transpose {
    None,
    Left,
    Right,
}

impl MatmulParams {
    /// c (m, n) = a (m, k) * b (k, n), no bias, no activation, one split.
    pub fn product(m: usize, n: usize, k: usize, transpose: Transpose) -> MatmulParams {
        let (a_row_stride, a_col_stride) = if transpose == Transpose::Left { (1, m) } else { (k, 1) };
        let (b_row_stride, b_col_stride) = if transpose == Transpose::Right { (1, k) } else { (n, 1) };
        MatmulParams {
            m: u32_of(m),
            n: u32_of(n),
            k: u32_of(k),
            a_row_stride: u32_of(a_row_stride),
            a_col_stride: u32_of(a_col_stride),
            b_row_stride: u32_of(b_row_stride),
            b_col_stride: u32_of(b_col_stride),
            ..Default::default()
        }
    }
}

impl GpuBackend {
    // x (n, inputs), w (inputs, units), b (units) -> y (n, units).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_dense_forward(&self, x: &GpuTensor, w: &GpuTensor, b: &GpuTensor, y: &mut GpuTensor, s: &DenseShape, n: usize, relu: bool) {
        let params = MatmulParams { bias: 1, relu: relu as u32, ..MatmulParams::product(n, s.units, s.inputs, Transpose::None) };
        let tile = Tile::for_gemm(n, s.units, 128);
        let pipeline = self.pipelines.gemm(&self.ctx.device, GemmEntry::MatmulBiasAct, tile);
        let groups = tile_grid(s.units.div_ceil(tile.tn as usize), n.div_ceil(tile.tm as usize), self.max_per_dim());
        let bound = [x.at(1), w.at(2), b.at(3), y.at(4)];
        self.dispatch(&pipeline, &params, &bound, groups);
        self.moved(n * s.inputs + s.inputs * s.units + s.units, n * s.units);
    }

    // dy (n, units), w (inputs, units) -> dx (n, inputs) = dy * w^T; with `relu_y`, 0 where
    // relu_y <= 0 (the ReLU backward of the layer before, fused).
    pub(super) fn record_dense_backward_input(&self, dy: &GpuTensor, w: &GpuTensor, relu_y: Option<&GpuTensor>, dx: &mut GpuTensor, s: &DenseShape, n: usize) {
        let params = MatmulParams { relu_mask: relu_y.is_some() as u32, ..MatmulParams::product(n, s.inputs, s.units, Transpose::Right) };
        let tile = Tile::for_gemm(n, s.inputs, 128);
        let pipeline = self.pipelines.gemm(&self.ctx.device, GemmEntry::MatmulBiasAct, tile);
        let groups = tile_grid(s.inputs.div_ceil(tile.tn as usize), n.div_ceil(tile.tm as usize), self.max_per_dim());
        // Binding 3 is the mask, or unused (no bias) but bound: w stands in.
        let bound = [dy.at(1), w.at(2), relu_y.unwrap_or(w).at(3), dx.at(4)];
        self.dispatch(&pipeline, &params, &bound, groups);
        self.moved(n * s.units + s.inputs * s.units + relu_y.map_or(0, |_| n * s.inputs), n * s.inputs);
    }

    // x (n, inputs), dy (n, units) -> dw (inputs, units) = x^T * dy, db (units) = column sums.
    pub(super) fn record_dense_backward_filter(&self, x: &GpuTensor, dy: &GpuTensor, dw: &mut GpuTensor, db: &mut GpuTensor, s: &DenseShape, n: usize) {
        let rows = s.inputs + 1; // + the ones row that yields db
        let (per, splits) = split_k(n, rows * s.units);
        let params =
            MatmulParams { k_per_split: u32_of(per), ones_row: 1, splits: u32_of(splits), ..MatmulParams::product(s.inputs, s.units, n, Transpose::Left) };
        let tile = Tile::for_gemm(rows, s.units, 128);
        let pipeline = self.pipelines.gemm(&self.ctx.device, GemmEntry::MatmulSplitPartials, tile);
        let groups = [s.units.div_ceil(tile.tn as usize) as u32, rows.div_ceil(tile.tm as usize) as u32, splits as u32];
        if splits == 1 {
            // One split (a batch of at most 256): the GEMM writes dw and db itself, with no
            // partial sums to add up (one dispatch and a round trip of dw through scratch less).
            let params = MatmulParams { direct: 1, bias: 1, ..params };
            self.dispatch(&pipeline, &params, &[x.at(1), dy.at(2), dw.at(4), db.at(5)], groups);
            self.moved(n * (s.inputs + s.units), rows * s.units);
            return;
        }
        let Some(scratch) = self.scratch(splits * rows * s.units) else { return };
        // Binding 5 (db in the one-split case) is not written here, but must be bound.
        let bound = [x.at(1), dy.at(2), scratch.at(4), scratch.at(5)];
        self.dispatch(&pipeline, &params, &bound, groups);
        self.moved(n * (s.inputs + s.units), splits * rows * s.units);
        self.record_sum_split_partials(&scratch, dw, Some(db), s.inputs, s.units, splits);
    }
}
