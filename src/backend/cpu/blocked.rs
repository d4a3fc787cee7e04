//! The register-blocked multiply-accumulate shared by the direct and Winograd kernels: P rows
//! of A times a (k x 8V) panel of B, the P x V result vectors kept in registers while k
//! streams past (6 x 2 accumulators + 2 B vectors + 1 broadcast fit the 16 AVX2 registers).
//! No packing: A's rows and B's panel are read where they lie, which for the small, thin
//! products here costs less than the GEMM library's copies.

use super::simd::{array, Kernel, Lanes, LANES};

/// Rows of A per block.
pub const ROWS: usize = 6;
/// 8-lane vectors of B's columns per block.
pub const VECS: usize = 2;

/// acc[i][j] += sum over t < k of a[i][t] * b[t * ldb + 8j .. 8j + 8], t in order.
#[inline(always)]
pub fn multiply_accumulate<L: Lanes, const P: usize, const V: usize>(acc: &mut [[L; V]; P], a: [&[f32]; P], b: &[f32], ldb: usize, k: usize) {
    if k == 0 {
        return;
    }
    for row in &a {
        assert!(row.len() >= k, "multiply_accumulate: a row too short");
    }
    assert!(b.len() >= (k - 1) * ldb + V * LANES, "multiply_accumulate: b too short");
    for t in 0..k {
        // SAFETY: the asserts above bound t * ldb + V * LANES <= b.len() and t < a[i].len().
        let bv: [L; V] = array(
            L::zero(),
            #[inline(always)]
            |j| unsafe { L::load_ptr(b.as_ptr().add(t * ldb + j * LANES)) },
        );
        for (i, acc_row) in acc.iter_mut().enumerate() {
            let av = L::splat(unsafe { *a[i].get_unchecked(t) });
            for (r, &bj) in acc_row.iter_mut().zip(&bv) {
                *r = r.mul_add(av, bj);
            }
        }
    }
}

/// c (m x n) = a (m x k, rows `lda` apart) * b (k x n, row-major); n a multiple of 8. Each
/// element sums over k in order, so the result does not depend on the blocking.
pub struct Gemm<'a> {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub a: &'a [f32],
    pub lda: usize,
    pub b: &'a [f32],
    pub c: &'a mut [f32],
}

impl Kernel for Gemm<'_> {
    type Output = ();
    #[inline(always)]
    fn run<L: Lanes>(mut self) {
        assert!(self.n.is_multiple_of(LANES) && self.c.len() >= self.m * self.n, "gemm: c too short or n not whole vectors");
        assert!(self.m == 0 || self.a.len() >= (self.m - 1) * self.lda + self.k, "gemm: a too short");
        let (m, n) = (self.m, self.n);
        for_each_block::<L, _>(&mut self, m, n);
    }
}

impl<L: Lanes> BlockFn<L> for Gemm<'_> {
    #[inline(always)]
    fn block<const P: usize, const V: usize>(&mut self, r0: usize, o0: usize) {
        gemm_block::<L, P, V>(self, r0, o0)
    }
}

/// A kernel's block: `P` rows from `row`, `V` 8-lane vectors of columns from `col`; sizes as
/// const generics so that its accumulators live in registers.
pub trait BlockFn<L: Lanes> {
    fn block<const P: usize, const V: usize>(&mut self, row: usize, col: usize);
}

/// Covers rows 0..rows and columns 0..cols (whole 8-lane vectors) with blocks of at most
/// ROWS x VECS, in order.
#[inline(always)]
pub fn for_each_block<L: Lanes, F: BlockFn<L>>(f: &mut F, rows: usize, cols: usize) {
    let mut r0 = 0;
    while r0 < rows {
        let p = ROWS.min(rows - r0);
        for o0 in (0..cols).step_by(LANES * VECS) {
            let two = cols - o0 >= LANES * VECS;
            macro_rules! go {
                ($p:literal) => {
                    if two {
                        f.block::<$p, 2>(r0, o0)
                    } else {
                        f.block::<$p, 1>(r0, o0)
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
        }
        r0 += p;
    }
}

/// c rows r0..r0+P, columns o0..o0+8V.
#[inline(always)]
fn gemm_block<L: Lanes, const P: usize, const V: usize>(g: &mut Gemm, r0: usize, o0: usize) {
    let mut acc = [[L::zero(); V]; P];
    let a: [&[f32]; P] = array(
        &[],
        #[inline(always)]
        |i| &g.a[(r0 + i) * g.lda..][..g.k],
    );
    multiply_accumulate(&mut acc, a, &g.b[o0..], g.n, g.k);
    for (i, row) in acc.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            v.store(&mut g.c[(r0 + i) * g.n + o0 + j * LANES..]);
        }
    }
}
