//! The register-blocked multiply-accumulate shared by the direct and Winograd kernels: P rows
//! of A times a (k x NV) panel of B (N lanes a vector), the P x V result vectors kept in
//! registers while k streams past (6 x 2 accumulators + 2 B vectors + 1 broadcast fit the 16
//! AVX2 registers).
//! No packing: A's rows and B's panel are read where they lie, which for the small, thin
//! products here costs less than the GEMM library's copies.

use super::simd::{array, Kernel, Lanes, LANES};

/// Rows of A per block.
pub const ROWS: usize = 6;
/// Vectors of B's columns per block.
pub const VECS: usize = 2;
/// ... where the lanes are wider than 8 (AVX-512 has 32 registers: 6 x 4 accumulators, 4 B
/// vectors and 1 broadcast).
pub const WIDE_VECS: usize = 4;

/// acc[i][j] += sum over t < k of a[i][t * a_step] * b[t * ldb + Nj .. Nj + N], t in order
/// (a_step 1: A's rows lie along memory; a_step lda: its columns do, as A^T's rows).
#[inline(always)]
pub fn multiply_accumulate<L: Lanes, const P: usize, const V: usize>(acc: &mut [[L; V]; P], a: [&[f32]; P], a_step: usize, b: &[f32], ldb: usize, k: usize) {
    if k == 0 {
        return;
    }
    for row in &a {
        assert!(row.len() > (k - 1) * a_step, "multiply_accumulate: a row too short");
    }
    assert!(b.len() >= (k - 1) * ldb + V * L::N, "multiply_accumulate: b too short");
    for t in 0..k {
        // SAFETY: the asserts above bound t * ldb + V * N <= b.len() and t * a_step < a[i].len().
        let bv: [L; V] = array(
            #[inline(always)]
            |j| unsafe { L::load_ptr(b.as_ptr().add(t * ldb + j * L::N)) },
        );
        for (i, acc_row) in acc.iter_mut().enumerate() {
            let av = L::splat(unsafe { *a[i].get_unchecked(t * a_step) });
            for (r, &bj) in acc_row.iter_mut().zip(&bv) {
                *r = r.mul_add(av, bj);
            }
        }
    }
}

/// c (m x n) = a (m x k) * b (k x n, row-major), or c += a b with `accumulate`; n a multiple
/// of the lanes. Each element sums over k in order (after c's value when accumulating), so the
/// result does not depend on the blocking. Both operands are read where they lie: no packing
/// copies, which for the thin products here cost more than they save.
pub struct Gemm<'a> {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    /// Element (i, t) of A at a[i * a_row + t * a_col]: (lda, 1) for A row-major, (1, lda)
    /// for A stored transposed.
    pub a: &'a [f32],
    pub a_row: usize,
    pub a_col: usize,
    pub b: &'a [f32],
    pub c: &'a mut [f32],
    pub accumulate: bool,
}

impl Kernel for Gemm<'_> {
    type Output = ();
    fn lanes_fit(&self, lanes: usize) -> bool {
        self.n.is_multiple_of(lanes)
    }
    #[inline(always)]
    fn run<L: Lanes>(mut self) {
        assert!(self.n.is_multiple_of(L::N) && self.c.len() >= self.m * self.n, "gemm: c too short or n not whole vectors");
        assert!(self.m == 0 || self.k == 0 || self.a.len() > (self.m - 1) * self.a_row + (self.k - 1) * self.a_col, "gemm: a too short");
        let (m, n) = (self.m, self.n);
        let mut r0 = 0;
        // AVX-512 with only two vectors of columns (the 32-channel outputs): 12 x 2
        // accumulators, for 6-8% on Winograd's products. (Not in `for_each_block`: the direct
        // kernels' short rows ran slower so.)
        if L::N > LANES && n == VECS * L::N {
            while m - r0 >= 2 * ROWS {
                gemm_block::<L, { 2 * ROWS }, VECS>(&mut self, r0, 0);
                r0 += 2 * ROWS;
            }
        }
        for_each_block_from::<L, _>(&mut self, r0, m, n);
    }
}

impl<L: Lanes> BlockFn<L> for Gemm<'_> {
    #[inline(always)]
    fn block<const P: usize, const V: usize>(&mut self, r0: usize, o0: usize) {
        gemm_block::<L, P, V>(self, r0, o0)
    }
}

/// A kernel's block: `P` rows from `row`, `V` vectors of columns from `col`; sizes as
/// const generics so that its accumulators live in registers.
pub trait BlockFn<L: Lanes> {
    fn block<const P: usize, const V: usize>(&mut self, row: usize, col: usize);
}

/// Covers rows 0..rows and columns 0..cols (whole vectors) with blocks of at most ROWS rows
/// and VECS vectors (AVX-512, with 32 registers: `WIDE_VECS`), in order.
#[inline(always)]
pub fn for_each_block<L: Lanes, F: BlockFn<L>>(f: &mut F, rows: usize, cols: usize) {
    for_each_block_from(f, 0, rows, cols);
}

/// `for_each_block` from row r0 on.
#[inline(always)]
fn for_each_block_from<L: Lanes, F: BlockFn<L>>(f: &mut F, mut r0: usize, rows: usize, cols: usize) {
    while r0 < rows {
        let p = ROWS.min(rows - r0);
        let mut o0 = 0;
        while o0 < cols {
            let vecs = (cols - o0) / L::N;
            let v = if L::N > LANES && vecs >= WIDE_VECS { WIDE_VECS } else { vecs.min(VECS) };
            macro_rules! go {
                ($p:literal) => {
                    match v {
                        WIDE_VECS => f.block::<$p, WIDE_VECS>(r0, o0),
                        VECS => f.block::<$p, VECS>(r0, o0),
                        _ => f.block::<$p, 1>(r0, o0),
                    }
                };
            }
            match p {
                1 => go!(1),
                2 => go!(2),
                3 => go!(3),
                4 => go!(4),
                5 => go!(5),
                _ => go!(6),
            }
            o0 += v * L::N;
        }
        r0 += p;
    }
}

/// c rows r0..r0+P, columns o0..o0+NV.
#[inline(always)]
fn gemm_block<L: Lanes, const P: usize, const V: usize>(g: &mut Gemm, r0: usize, o0: usize) {
    let n = g.n;
    let mut acc: [[L; V]; P] = if g.accumulate {
        array(
            #[inline(always)]
            |i| {
                array(
                    #[inline(always)]
                    |j| L::load(&g.c[(r0 + i) * n + o0 + j * L::N..]),
                )
            },
        )
    } else {
        [[L::zero(); V]; P]
    };
    let a: [&[f32]; P] = array(
        #[inline(always)]
        |i| &g.a[(r0 + i) * g.a_row..],
    );
    multiply_accumulate(&mut acc, a, g.a_col, &g.b[o0..], n, g.k);
    for (i, row) in acc.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            v.store(&mut g.c[(r0 + i) * n + o0 + j * L::N..]);
        }
    }
}
