//! Convolution ops (shaders/conv.wgsl): implicit GEMM, tiles of 32 to 128 per side chosen per
//! call; the input gradient of few-channel layers through a dcol GEMM and col2im.

use super::pipelines::{GemmEntry, Tile};
use super::recorder::{linear_grid, tile_grid};
use super::{GpuBackend, GpuTensor};
use crate::backend::ConvShape;

/// Widest conv tile (16 KiB of workgroup memory at 128 x 128).
const CONV_MAX_COLS: u32 = 128;

/// The k slab of the GEMM kernels (TK in conv.wgsl and matmul.wgsl).
pub(super) const K_SLAB: usize = 16;

/// Most floats the scratch buffer (split-k partial sums, col2im's dcol) may hold: 64 MiB, under
/// every adapter's binding limit.
const MAX_SCRATCH_FLOATS: usize = 16 << 20;

/// Whether a conv's input gradient should go through dcol = dy * w^T and col2im rather than
/// the implicit GEMM. The implicit GEMM computes in_h*in_w rows, each a (32-padded) in_c wide
/// and k_h*k_w*out_c deep, many of its products zeros (taps whose window is off the map: more
/// than half on a 6x6 map with a 3x3 kernel, 3/4 with stride 2); the dcol GEMM computes
/// out_h*out_w rows, (128-padded) patch wide and out_c deep, no zeros, but adds a gather
/// pass and a buffer. col2im when its GEMM is under 4/5 of the implicit one. Measured on
/// lavapipe at batch 32 / 128, GFLOP/s: 6x6x64 -> 4x4x64 2.18 -> 2.73 / 3.88 with col2im;
/// 15x15x32 -> 13x13x64 (equal work) stays on the implicit GEMM, 32x32x3 on col2im.
/// A rule of the shape only (not the batch), so results never depend on the batch size.
fn col2im_pays(s: &ConvShape) -> bool {
    let implicit = s.in_h * s.in_w * s.in_c.next_multiple_of(32) * s.k_h * s.k_w * s.out_c;
    let col2im = s.out_h * s.out_w * s.patch_len().next_multiple_of(128) * s.out_c;
    col2im * 5 < implicit * 4
}

/// How a filter-gradient GEMM of depth `k` (the batch's pixels or samples) with `outputs`
/// results (+ the bias row) is split so enough workgroups run: (k per split, a multiple of the
/// k slab; the number of splits, at most 64 and within MAX_SCRATCH_FLOATS). A rule of the shape
/// only, so results never depend on the adapter.
pub(super) fn split_k(k: usize, outputs: usize) -> (usize, usize) {
    let max_splits = (MAX_SCRATCH_FLOATS / outputs.max(1)).clamp(1, 64);
    let per = k.div_ceil(max_splits).div_ceil(K_SLAB).max(1) * K_SLAB;
    let per = per.max(256);
    (per, k.div_ceil(per).max(1))
}

fn conv_params(s: &ConvShape, n: usize, relu: bool, k_per_split: usize) -> [u32; 16] {
    [
        n as u32, s.in_h as u32, s.in_w as u32, s.in_c as u32,
        s.out_h as u32, s.out_w as u32, s.out_c as u32, s.k_h as u32,
        s.k_w as u32, s.stride_h as u32, s.stride_w as u32, s.pad_top as u32,
        s.pad_left as u32, relu as u32, k_per_split as u32, 0,
    ]
}

impl GpuBackend {
    // x (n, in_h, in_w, in_c), w HWIO, b (out_c) -> y (n, out_h, out_w, out_c).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_conv2d_forward(&self, x: &GpuTensor, w: &GpuTensor, b: &GpuTensor, y: &mut GpuTensor, s: &ConvShape, n: usize, relu: bool) {
        let rows = n * s.out_h * s.out_w;
        let tile = Tile::for_gemm(rows, s.out_c, CONV_MAX_COLS);
        let pipeline = self.pipelines.gemm(&self.ctx.device, GemmEntry::Conv2dForward, tile);
        let groups = tile_grid(s.out_c.div_ceil(tile.tn as usize), rows.div_ceil(tile.tm as usize), self.max_per_dim());
        let bound = [x.at(1), w.at(2), b.at(3), y.at(4)];
        self.recorder.dispatch(&self.ctx.device, &pipeline, &conv_params(s, n, relu, 0), &bound, groups);
    }

    // dy (n, out_h, out_w, out_c), w HWIO -> dx (n, in_h, in_w, in_c).
    // Two ways: implicit GEMM straight into dx, or dcol = dy * w^T (a plain GEMM) then a
    // gather per input element (col2im). The implicit GEMM's tile is only in_c wide, mostly
    // empty for an RGB input; col2im's GEMM is patch wide but needs a dcol buffer and a second
    // pass. col2im_pays decides, when dcol fits the scratch budget.
    pub(super) fn record_conv2d_backward_input(&self, dy: &GpuTensor, w: &GpuTensor, dx: &mut GpuTensor, s: &ConvShape, n: usize) {
        let windows = n * s.out_h * s.out_w;
        let col2im = self.conv_input_grad_col2im.get().unwrap_or_else(|| col2im_pays(s));
        if col2im && windows * s.patch_len() <= MAX_SCRATCH_FLOATS {
            let Some(dcol) = self.scratch(windows * s.patch_len()) else { return };
            // dcol (windows, patch) = dy (windows, out_c) * w^T; w is (patch, out_c).
            let params = [windows as u32, s.patch_len() as u32, s.out_c as u32, s.out_c as u32, 1, 1, s.out_c as u32, 0, 0, 0, 0, 0];
            let tile = Tile::for_gemm(windows, s.patch_len(), 128);
            let pipeline = self.pipelines.gemm(&self.ctx.device, GemmEntry::MatmulBiasAct, tile);
            let groups = tile_grid(s.patch_len().div_ceil(tile.tn as usize), windows.div_ceil(tile.tm as usize), self.max_per_dim());
            // The bias binding is unused (p.bias = 0) but must be bound: w stands in.
            let bound = [dy.at(1), w.at(2), w.at(3), dcol.at(4)];
            self.recorder.dispatch(&self.ctx.device, &pipeline, &params, &bound, groups);
            let bound = [dcol.at(1), dx.at(4)];
            let groups = linear_grid(n * s.in_len(), self.max_per_dim());
            self.recorder.dispatch(&self.ctx.device, &self.pipelines.conv2d_col2im, &conv_params(s, n, false, 0), &bound, groups);
            return;
        }
        let rows = n * s.in_h * s.in_w;
        let tile = Tile::for_gemm(rows, s.in_c, CONV_MAX_COLS);
        let pipeline = self.pipelines.gemm(&self.ctx.device, GemmEntry::Conv2dBackwardInput, tile);
        let groups = tile_grid(s.in_c.div_ceil(tile.tn as usize), rows.div_ceil(tile.tm as usize), self.max_per_dim());
        let bound = [dy.at(1), w.at(2), dx.at(4)];
        self.recorder.dispatch(&self.ctx.device, &pipeline, &conv_params(s, n, false, 0), &bound, groups);
    }

    // x (n, in_h, in_w, in_c), dy (n, out_h, out_w, out_c) -> dw HWIO, db (out_c), overwritten.
    // Split-k partial GEMMs into the scratch buffer, then a fixed-order sum of the splits.
    pub(super) fn record_conv2d_backward_filter(&self, x: &GpuTensor, dy: &GpuTensor, dw: &mut GpuTensor, db: &mut GpuTensor, s: &ConvShape, n: usize) {
        let depth = n * s.out_h * s.out_w;
        let rows = s.patch_len() + 1; // + the ones row that yields db
        let (per, splits) = split_k(depth, rows * s.out_c);
        let Some(scratch) = self.scratch(splits * rows * s.out_c) else { return };
        let tile = Tile::for_gemm(rows, s.out_c, CONV_MAX_COLS);
        let pipeline = self.pipelines.gemm(&self.ctx.device, GemmEntry::Conv2dBackwardFilter, tile);
        let groups = [s.out_c.div_ceil(tile.tn as usize) as u32, rows.div_ceil(tile.tm as usize) as u32, splits as u32];
        let bound = [x.at(1), dy.at(2), scratch.at(4)];
        self.recorder.dispatch(&self.ctx.device, &pipeline, &conv_params(s, n, false, per), &bound, groups);
        self.record_sum_split_partials(&scratch, dw, db, s.patch_len(), s.out_c, splits);
    }

    /// partials (splits, rows + 1, cols) -> dw (rows, cols) and db (cols), splits added in order.
    pub(super) fn record_sum_split_partials(&self, partials: &GpuTensor, dw: &mut GpuTensor, db: &mut GpuTensor, rows: usize, cols: usize, splits: usize) {
        let params = [rows as u32, cols as u32, 0, 0, 0, 0, 0, 0, 0, 0, 0, splits as u32];
        let bound = [partials.at(1), dw.at(4), db.at(5)];
        let groups = linear_grid((rows + 1) * cols, self.max_per_dim());
        self.recorder.dispatch(&self.ctx.device, &self.pipelines.sum_split_partials, &params, &bound, groups);
    }
}
