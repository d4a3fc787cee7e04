//! Eight f32 lanes for the hand-blocked CPU kernels: AVX2 + FMA registers where the CPU has
//! them (detected at run time; AVX-512 is never assumed), else a plain array. Both compute each
//! lane with the same fused multiply-adds in the same order, so they give bit-identical
//! results; a kernel is written once, generic over `Lanes`, and run through `dispatch`.

pub const LANES: usize = 8;

pub trait Lanes: Copy {
    fn zero() -> Self;
    fn splat(v: f32) -> Self;
    /// Reads 8 floats from `s[0..8]`.
    fn load(s: &[f32]) -> Self;
    /// Reads 8 floats at `p`.
    ///
    /// # Safety
    /// `p..p + 8` must be readable.
    unsafe fn load_ptr(p: *const f32) -> Self;
    /// Writes the 8 lanes to `d[0..8]`.
    fn store(self, d: &mut [f32]);
    /// self + a * b, rounded once.
    fn mul_add(self, a: Self, b: Self) -> Self;
    fn add(self, b: Self) -> Self;
    fn sub(self, b: Self) -> Self;
    fn mul(self, b: Self) -> Self;
    /// The lane-wise maximum with zero (ReLU).
    fn relu(self) -> Self;
}

/// The portable lanes: `f32::mul_add` is the same single rounding as the FMA instruction.
#[derive(Clone, Copy)]
pub struct Portable([f32; LANES]);

impl Lanes for Portable {
    #[inline(always)]
    fn zero() -> Self {
        Portable([0.0; LANES])
    }
    #[inline(always)]
    fn splat(v: f32) -> Self {
        Portable([v; LANES])
    }
    #[inline(always)]
    fn load(s: &[f32]) -> Self {
        Portable(s[..LANES].try_into().unwrap())
    }
    #[inline(always)]
    unsafe fn load_ptr(p: *const f32) -> Self {
        Portable(std::ptr::read_unaligned(p as *const [f32; LANES]))
    }
    #[inline(always)]
    fn store(self, d: &mut [f32]) {
        d[..LANES].copy_from_slice(&self.0);
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        let mut r = self.0;
        for ((r, a), b) in r.iter_mut().zip(a.0).zip(b.0) {
            *r = a.mul_add(b, *r);
        }
        Portable(r)
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        Portable(std::array::from_fn(|i| self.0[i] + b.0[i]))
    }
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        Portable(std::array::from_fn(|i| self.0[i] - b.0[i]))
    }
    #[inline(always)]
    fn mul(self, b: Self) -> Self {
        Portable(std::array::from_fn(|i| self.0[i] * b.0[i]))
    }
    #[inline(always)]
    fn relu(self) -> Self {
        // As _mm256_max_ps(x, 0): zero unless x > 0 (so -0.0 and NaN become +0.0).
        Portable(self.0.map(|v| if v > 0.0 { v } else { 0.0 }))
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::Avx2;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Lanes, LANES};
    use std::arch::x86_64::*;

    /// AVX2 + FMA lanes. Only built by `dispatch` after it has detected both features.
    #[derive(Clone, Copy)]
    pub struct Avx2(__m256);

    // SAFETY (every method): an Avx2 value only exists inside `dispatch`'s AVX2 + FMA branch,
    // so the features are present; loads and stores are bounds-checked on the slice first.
    impl Lanes for Avx2 {
        #[inline(always)]
        fn zero() -> Self {
            unsafe { Avx2(_mm256_setzero_ps()) }
        }
        #[inline(always)]
        fn splat(v: f32) -> Self {
            unsafe { Avx2(_mm256_set1_ps(v)) }
        }
        #[inline(always)]
        fn load(s: &[f32]) -> Self {
            assert!(s.len() >= LANES);
            unsafe { Avx2(_mm256_loadu_ps(s.as_ptr())) }
        }
        #[inline(always)]
        unsafe fn load_ptr(p: *const f32) -> Self {
            Avx2(_mm256_loadu_ps(p))
        }
        #[inline(always)]
        fn store(self, d: &mut [f32]) {
            assert!(d.len() >= LANES);
            unsafe { _mm256_storeu_ps(d.as_mut_ptr(), self.0) }
        }
        #[inline(always)]
        fn mul_add(self, a: Self, b: Self) -> Self {
            unsafe { Avx2(_mm256_fmadd_ps(a.0, b.0, self.0)) }
        }
        #[inline(always)]
        fn add(self, b: Self) -> Self {
            unsafe { Avx2(_mm256_add_ps(self.0, b.0)) }
        }
        #[inline(always)]
        fn sub(self, b: Self) -> Self {
            unsafe { Avx2(_mm256_sub_ps(self.0, b.0)) }
        }
        #[inline(always)]
        fn mul(self, b: Self) -> Self {
            unsafe { Avx2(_mm256_mul_ps(self.0, b.0)) }
        }
        #[inline(always)]
        fn relu(self) -> Self {
            // max_ps returns its second operand unless the first is greater: zero for NaN, -0.0.
            unsafe { Avx2(_mm256_max_ps(self.0, _mm256_setzero_ps())) }
        }
    }
}

/// [f(0), f(1), ..., f(N - 1)]: `std::array::from_fn` may stay out of line, and with it the
/// closure, outside the AVX2 code; this always inlines.
#[inline(always)]
pub fn array<T: Copy, const N: usize>(fill: T, mut f: impl FnMut(usize) -> T) -> [T; N] {
    let mut out = [fill; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = f(i);
    }
    out
}

/// A kernel generic over its lanes, run by `dispatch` with the best lanes this CPU has.
pub trait Kernel {
    type Output;
    fn run<L: Lanes>(self) -> Self::Output;
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<K: Kernel>(k: K) -> K::Output {
    k.run::<Avx2>()
}

/// Whether this CPU runs the hand-blocked kernels fast: fused multiply-add in hardware (AVX2 +
/// FMA on x86-64; always on aarch64). Elsewhere `f32::mul_add` is a slow library call, and the
/// backend takes its GEMM paths instead.
pub fn has_fast_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(target_arch = "aarch64")]
    {
        true
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// Runs `k` with AVX2 + FMA lanes where the CPU has them, else with portable lanes.
pub fn dispatch<K: Kernel>(k: K) -> K::Output {
    #[cfg(target_arch = "x86_64")]
    if has_fast_fma() {
        // SAFETY: both features were just detected.
        return unsafe { run_avx2(k) };
    }
    k.run::<Portable>()
}

/// A closure run as a kernel: see `vectorized`.
struct Plain<F>(F);

impl<R, F: FnOnce() -> R> Kernel for Plain<F> {
    type Output = R;
    #[inline(always)]
    fn run<L: Lanes>(self) -> R {
        (self.0)()
    }
}

/// Runs plain loops compiled for AVX2 where the CPU has it, so the compiler vectorises them 8
/// lanes wide instead of SSE2's 4. Rust never fuses a multiply and an add on its own, so the
/// results are the same bits either way. For float loops only: through this closure LLVM left
/// loops with u32 multiplies, per-lane shifts or index selects scalar (dropout's hash,
/// max-pool's argmax), which vectorise as a `Kernel` holding its operands as fields.
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    dispatch(Plain(f))
}
