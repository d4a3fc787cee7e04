//! Convolution ops (shaders/conv.wgsl): implicit GEMM, tiles of 32 to 128 per side chosen per
//! call; the input gradient of few-channel layers through a dcol GEMM and col2im.

use super::params::{u32_of, ConvParams, MatmulParams};
use super::pipelines::{GemmEntry, Tile};
use super::recorder::{linear_grid, tile_grid};
use super::{GpuBackend, GpuTensor};
use crate::backend::ConvShape;

/// Widest conv tile (16 KiB of workgroup memory at 128 x 128).
const CONV_MAX_COLS: u32 = 128;

/// The k slab of the GEMM kernels (TK in common/gemm_tile.wgsl).
pub(super) const K_SLAB: usize = 16;

/// Most floats the scratch buffer (split-k partial sums, col2im's dcol) may hold: 64 MiB, under
/// every adapter's binding limit.
const MAX_SCRATCH_FLOATS: usize = 16 << 20;

/// How a conv's input gradient is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvInputGradAlgo {
    /// One implicit GEMM straight into dx: (n*in_h*in_w) rows, in_c wide, k_h*k_w*out_c deep.
    ImplicitGemm,
    /// dcol = dy * w^T (a plain GEMM into the scratch buffer), then col2im gathers each input
    /// element's sum over the windows that cover it.
    Col2im,
}

impl ConvInputGradAlgo {
    /// The algorithm for `s` (or `forced`, where a test forces one): col2im when its GEMM does
    /// under 4/5 of the implicit GEMM's padded work and its dcol buffer fits the scratch budget.
    /// The implicit GEMM's rows are (32-padded) in_c wide and many of its products are zeros
    /// (taps whose window is off the map); the dcol GEMM has none but adds a pass and a buffer.
    /// A rule of the shape (and the batch only through the buffer budget), so results never
    /// depend on the adapter. Measurements behind the 4/5: README, "GPU GEMM kernels".
    pub fn choose(s: &ConvShape, n: usize, forced: Option<ConvInputGradAlgo>) -> ConvInputGradAlgo {
        let implicit = s.in_h * s.in_w * s.in_c.next_multiple_of(32) * s.k_h * s.k_w * s.out_c;
        let col2im = s.out_h * s.out_w * s.patch_len().next_multiple_of(128) * s.out_c;
        let wanted = forced.unwrap_or(if col2im * 5 < implicit * 4 { Self::Col2im } else { Self::ImplicitGemm });
        let dcol_fits = n * s.out_h * s.out_w * s.patch_len() <= MAX_SCRATCH_FLOATS;
        if wanted == Self::Col2im && dcol_fits {
            Self::Col2im
        } else {
            Self::ImplicitGemm
        }
    }
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

fn conv_params(s: &ConvShape, n: usize, relu: bool, k_per_split: usize) -> ConvParams {
    ConvParams {
        n: u32_of(n),
        in_h: u32_of(s.in_h),
        in_w: u32_of(s.in_w),
        in_c: u32_of(s.in_c),
        out_h: u32_of(s.out_h),
        out_w: u32_of(s.out_w),
        out_c: u32_of(s.out_c),
        k_h: u32_of(s.k_h),
        k_w: u32_of(s.k_w),
        stride_h: u32_of(s.stride_h),
        stride_w: u32_of(s.stride_w),
        pad_top: u32_of(s.pad_top),
        pad_left: u32_of(s.pad_left),
        relu: relu as u32,
        k_per_split: u32_of(k_per_split),
        relu_mask: 0,
        dilation_h: u32_of(s.dilation_h),
        dilation_w: u32_of(s.dilation_w),
        bias: 0,
        direct: 0,
    }
}

impl GpuBackend {
    // x (n, in_h, in_w, in_c), w HWIO, b (out_c) or none -> y (n, out_h, out_w, out_c).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn record_conv2d_forward(&self, x: &GpuTensor, w: &GpuTensor, b: Option<&GpuTensor>, y: &mut GpuTensor, s: &ConvShape, n: usize, relu: bool) {
        let rows = n * s.out_h * s.out_w;
        let tile = Tile::for_gemm(rows, s.out_c, CONV_MAX_COLS);
        let pipeline = self.pipelines.gemm(&self.ctx.device, GemmEntry::Conv2dForward, tile);
        let groups = tile_grid(s.out_c.div_ceil(tile.tn as usize), rows.div_ceil(tile.tm as usize), self.max_per_dim());
        // Without a bias the kernel does not read binding 3, but it must be bound: w stands in.
        let bound = [x.at(1), w.at(2), b.unwrap_or(w).at(3), y.at(4)];
        let params = ConvParams { bias: b.is_some() as u32, ..conv_params(s, n, relu, 0) };
        self.dispatch(&pipeline, &params, &bound, groups);
        self.moved(n * s.in_len() + s.kernel_len() + b.map_or(0, |_| s.out_c), n * s.out_len());
    }

    // dy (n, out_h, out_w, out_c), w HWIO -> dx (n, in_h, in_w, in_c), by ConvInputGradAlgo::choose;
    // with `relu_y`, 0 where relu_y <= 0 (the ReLU backward of the layer before, fused).
    pub(super) fn record_conv2d_backward_input(&self, dy: &GpuTensor, w: &GpuTensor, relu_y: Option<&GpuTensor>, dx: &mut GpuTensor, s: &ConvShape, n: usize) {
        let params = ConvParams { relu_mask: relu_y.is_some() as u32, ..conv_params(s, n, false, 0) };
        match ConvInputGradAlgo::choose(s, n, self.forced_conv_input_grad.get()) {
            ConvInputGradAlgo::Col2im => self.record_conv2d_backward_input_col2im(dy, w, relu_y, dx, s, n, &params),
            ConvInputGradAlgo::ImplicitGemm => {
                let rows = n * s.in_h * s.in_w;
                let tile = Tile::for_gemm(rows, s.in_c, CONV_MAX_COLS);
                let pipeline = self.pipelines.gemm(&self.ctx.device, GemmEntry::Conv2dBackwardInput, tile);
                let groups = tile_grid(s.in_c.div_ceil(tile.tn as usize), rows.div_ceil(tile.tm as usize), self.max_per_dim());
                // Without a mask the kernel does not read binding 3, but it must be bound: w stands in.
                let bound = [dy.at(1), w.at(2), relu_y.unwrap_or(w).at(3), dx.at(4)];
                self.dispatch(&pipeline, &params, &bound, groups);
                self.moved(n * s.out_len() + s.kernel_len() + relu_y.map_or(0, |_| n * s.in_len()), n * s.in_len());
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record_conv2d_backward_input_col2im(
        &self,
        dy: &GpuTensor,
        w: &GpuTensor,
        relu_y: Option<&GpuTensor>,
        dx: &mut GpuTensor,
        s: &ConvShape,
        n: usize,
        params: &ConvParams,
    ) {
        let windows = n * s.out_h * s.out_w;
        let Some(dcol) = self.scratch(windows * s.patch_len()) else { return };
        // dcol (windows, patch) = dy (windows, out_c) * w^T; w is stored (patch, out_c).
        let product = MatmulParams::product(windows, s.patch_len(), s.out_c, super::dense::Transpose::Right);
        let tile = Tile::for_gemm(windows, s.patch_len(), 128);
        let pipeline = self.pipelines.gemm(&self.ctx.device, GemmEntry::MatmulBiasAct, tile);
        let groups = tile_grid(s.patch_len().div_ceil(tile.tn as usize), windows.div_ceil(tile.tm as usize), self.max_per_dim());
        // The bias binding is unused (no bias) but must be bound: w stands in.
        let bound = [dy.at(1), w.at(2), w.at(3), dcol.at(4)];
        self.dispatch(&pipeline, &product, &bound, groups);
        self.moved(n * s.out_len() + s.kernel_len(), windows * s.patch_len());
        // Without a mask col2im does not read binding 3, but it must be bound: dcol stands in.
        let bound = [dcol.at(1), relu_y.unwrap_or(&dcol).at(3), dx.at(4)];
        let groups = linear_grid(n * s.in_len(), self.max_per_dim());
        self.dispatch(&self.pipelines.conv2d_col2im, params, &bound, groups);
        self.moved(windows * s.patch_len() + relu_y.map_or(0, |_| n * s.in_len()), n * s.in_len());
    }

    // x (n, in_h, in_w, in_c), dy (n, out_h, out_w, out_c) -> dw HWIO, db (out_c) unless None,
    // overwritten. Split-k partial GEMMs into the scratch buffer, then a fixed-order sum of the
    // splits. (Without a bias the ones row is still computed, just not written out.)
    pub(super) fn record_conv2d_backward_filter(&self, x: &GpuTensor, dy: &GpuTensor, dw: &mut GpuTensor, db: Option<&mut GpuTensor>, s: &ConvShape, n: usize) {
        let depth = n * s.out_h * s.out_w;
        let rows = s.patch_len() + 1; // + the ones row that yields db
        let (per, splits) = split_k(depth, rows * s.out_c);
        let tile = Tile::for_gemm(rows, s.out_c, CONV_MAX_COLS);
        let pipeline = self.pipelines.gemm(&self.ctx.device, GemmEntry::Conv2dBackwardFilter, tile);
        let groups = [s.out_c.div_ceil(tile.tn as usize) as u32, rows.div_ceil(tile.tm as usize) as u32, splits as u32];
        if splits == 1 {
            // One split (at most 256 output pixels in the batch): the GEMM writes dw and db
            // itself, with no partial sums to add up. Without a bias, dw stands in at binding 5.
            let params = ConvParams { direct: 1, bias: db.is_some() as u32, ..conv_params(s, n, false, per) };
            let bound = [x.at(1), dy.at(2), dw.at(4), db.as_deref().unwrap_or(&*dw).at(5)];
            self.dispatch(&pipeline, &params, &bound, groups);
            self.moved(n * (s.in_len() + s.out_len()), (s.patch_len() + db.is_some() as usize) * s.out_c);
            return;
        }
        let Some(scratch) = self.scratch(splits * rows * s.out_c) else { return };
        // Binding 5 (db in the one-split case) is not written here, but must be bound.
        let bound = [x.at(1), dy.at(2), scratch.at(4), scratch.at(5)];
        self.dispatch(&pipeline, &conv_params(s, n, false, per), &bound, groups);
        self.moved(n * (s.in_len() + s.out_len()), splits * rows * s.out_c);
        self.record_sum_split_partials(&scratch, dw, db, s.patch_len(), s.out_c, splits);
    }

    /// partials (splits, rows + 1, cols) -> dw (rows, cols) and db (cols) unless None, splits
    /// added in order.
    pub(super) fn record_sum_split_partials(
        &self,
        partials: &GpuTensor,
        dw: &mut GpuTensor,
        db: Option<&mut GpuTensor>,
        rows: usize,
        cols: usize,
        splits: usize,
    ) {
        let params = MatmulParams { m: u32_of(rows), n: u32_of(cols), splits: u32_of(splits), bias: db.is_some() as u32, ..Default::default() };
        let written = (rows + db.is_some() as usize) * cols;
        // Without a bias the kernel does not write binding 5, but it must be bound: dw stands in.
        let bound = [partials.at(1), dw.at(4), db.as_deref().unwrap_or(&*dw).at(5)];
        let groups = linear_grid((rows + 1) * cols, self.max_per_dim());
        self.dispatch(&self.pipelines.sum_split_partials, &params, &bound, groups);
        self.moved(splits * (rows + 1) * cols, written);
    }
}
