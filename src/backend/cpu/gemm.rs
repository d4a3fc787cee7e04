//! Matrix products and the fixed-order sums built on them: one `gemm` (on the calling thread or
//! split over the cores), one bias + ReLU epilogue, and the filter-gradient reduction whose
//! partial sums are added in a fixed order.

use rayon::prelude::*;

/// Sums over the batch (filter gradients) are split into this many partial sums, added in order.
/// A constant, not the core count, so results do not depend on the machine.
pub const REDUCTION_SPLITS: usize = 4;

/// Whether a GEMM may split its rows over the cores, or must stay on the calling thread (it
/// already runs inside a parallel loop).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    Serial,
    Parallel,
}

/// A matrix operand: its data with explicit row and column strides (a transpose is a swap of
/// strides).
#[derive(Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> Mat<'a> {
    /// Row-major with `cols` columns.
    pub fn rows(data: &'a [f32], cols: usize) -> Self {
        Mat { data, row_stride: cols, col_stride: 1 }
    }
    /// The transpose of a row-major matrix with `cols` columns.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        Mat { data, row_stride: 1, col_stride: cols }
    }
}

/// c (m, n, row-major) = a (m, k) * b (k, n) + beta * c. With `Threads::Parallel` the rows of c
/// are split over the cores; each element is computed by the same kernel in the same order
/// whatever the split, so the result does not depend on it.
pub fn gemm(threads: Threads, (m, k, n): (usize, usize, usize), a: Mat, b: Mat, c: &mut [f32], beta: f32) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(k == 0 || a.data.len() > (m - 1) * a.row_stride + (k - 1) * a.col_stride, "gemm: a too short");
    assert!(k == 0 || b.data.len() > (k - 1) * b.row_stride + (n - 1) * b.col_stride, "gemm: b too short");
    assert!(c.len() >= m * n, "gemm: c too short");
    let rows_per = if threads == Threads::Serial || m * k * n < 1 << 16 { m } else { m.div_ceil(rayon::current_num_threads()).max(1) };
    let run = |r0: usize, c_rows: &mut [f32]| {
        let rows = c_rows.len() / n;
        // SAFETY: the asserts above bound every index sgemm reads in a and b; c_rows holds
        // exactly `rows` rows of n.
        unsafe {
            matrixmultiply::sgemm(
                rows,
                k,
                n,
                1.0,
                a.data.as_ptr().add(r0 * a.row_stride),
                a.row_stride as isize,
                a.col_stride as isize,
                b.data.as_ptr(),
                b.row_stride as isize,
                b.col_stride as isize,
                beta,
                c_rows.as_mut_ptr(),
                n as isize,
                1,
            );
        }
    };
    if rows_per >= m {
        run(0, &mut c[..m * n]);
    } else {
        c[..m * n].par_chunks_mut(rows_per * n).enumerate().for_each(|(i, c_rows)| run(i * rows_per, c_rows));
    }
}

/// row += bias, then ReLU, for every row of `bias.len()` values in `rows`.
pub fn add_bias_activate(rows: &mut [f32], bias: &[f32], relu: bool) {
    for row in rows.chunks_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
            if relu && *v < 0.0 {
                *v = 0.0;
            }
        }
    }
}

/// Splits 0..total into REDUCTION_SPLITS ranges (some may be empty).
fn split_ranges(total: usize) -> [(usize, usize); REDUCTION_SPLITS] {
    let per = total.div_ceil(REDUCTION_SPLITS).max(1);
    std::array::from_fn(|i| ((i * per).min(total), ((i + 1) * per).min(total)))
}

/// Filter gradients as fixed partial sums: 0..items is cut into REDUCTION_SPLITS ranges,
/// `partial(range, dw_part, db_part)` sums one range (ranges run in parallel, each part starts
/// at zero), and the parts are added in order into dw (len) and db (cols).
#[allow(clippy::type_complexity)]
pub fn reduce_in_fixed_splits(
    items: usize,
    (len, cols): (usize, usize),
    dw: &mut [f32],
    db: &mut [f32],
    partials: &mut Vec<f32>,
    partial: impl Fn((usize, usize), &mut [f32], &mut [f32]) + Sync,
) {
    // Grown, never shrunk: the layers' sizes differ, and a shrink then regrow would zero
    // the tail again every call, though each part is zeroed below anyway.
    let needed = REDUCTION_SPLITS * (len + cols);
    if partials.len() < needed {
        partials.resize(needed, 0.0);
    }
    let partials = &mut partials[..needed];
    let ranges = split_ranges(items);
    partials.par_chunks_mut(len + cols).zip(ranges[..].par_iter()).for_each(|(part, &range)| {
        part.fill(0.0);
        let (pw, pb) = part.split_at_mut(len);
        partial(range, pw, pb);
    });
    dw[..len].fill(0.0);
    db[..cols].fill(0.0);
    for part in partials.chunks(len + cols) {
        for (d, p) in dw[..len].iter_mut().zip(&part[..len]) {
            *d += p;
        }
        for (d, p) in db[..cols].iter_mut().zip(&part[len..]) {
            *d += p;
        }
    }
}

/// sums += each row of `rows` (rows of `sums.len()` values): a bias gradient.
pub fn add_rows(sums: &mut [f32], rows: &[f32]) {
    for row in rows.chunks(sums.len()) {
        for (acc, v) in sums.iter_mut().zip(row) {
            *acc += v;
        }
    }
}

/// dw (rows_k, cols) = a^T * dy summed over `m` rows; a is (m, rows_k), dy is (m, cols).
/// db = column sums of dy.
#[allow(clippy::too_many_arguments)]
pub fn sum_outer_products(a: &[f32], dy: &[f32], (m, rows_k, cols): (usize, usize, usize), dw: &mut [f32], db: &mut [f32], partials: &mut Vec<f32>) {
    reduce_in_fixed_splits(m, (rows_k * cols, cols), dw, db, partials, |(r0, r1), pw, pb| {
        if r1 > r0 {
            // pw (rows_k, cols) += a[r0..r1]^T (rows_k, rows) * dy[r0..r1] (rows, cols)
            let rows = r1 - r0;
            gemm(
                Threads::Serial,
                (rows_k, rows, cols),
                Mat::transposed(&a[r0 * rows_k..r1 * rows_k], rows_k),
                Mat::rows(&dy[r0 * cols..r1 * cols], cols),
                pw,
                1.0,
            );
            add_rows(pb, &dy[r0 * cols..r1 * cols]);
        }
    });
}

thread_local! {
    /// Each worker thread's scratch blocks (im2col columns, Winograd tiles), reused across calls.
    static SCRATCH: std::cell::RefCell<[Vec<f32>; 2]> = const { std::cell::RefCell::new([Vec::new(), Vec::new()]) };
}

/// Images per parallel block of a pass whose images are independent: at most `most` (what fits
/// the cache), but as even blocks in a multiple of the thread count, so that no core idles
/// (5 cache-sized blocks on 2 threads would leave one idle for a fifth of the pass, 1 for
/// half). Each image's result does not depend on the blocking.
pub fn parallel_block(n: usize, most: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let blocks = n.div_ceil(most.max(1)).max(threads).div_ceil(threads) * threads;
    n.div_ceil(blocks).max(1)
}

/// Runs `f` on this thread's two scratch blocks of `a` and `b` floats (contents unspecified).
pub fn with_scratch<R>(a: usize, b: usize, f: impl FnOnce(&mut [f32], &mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| {
        let mut s = cell.borrow_mut();
        let [sa, sb] = &mut *s;
        if sa.len() < a {
            sa.resize(a, 0.0);
        }
        if sb.len() < b {
            sb.resize(b, 0.0);
        }
        f(&mut sa[..a], &mut sb[..b])
    })
}
