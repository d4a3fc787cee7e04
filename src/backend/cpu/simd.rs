//! f32 lanes for the hand-blocked CPU kernels: 16 in AVX-512 registers or 8 in AVX2 + FMA
//! ones where the CPU has them (detected at run time, never assumed), else 8 in a plain array.
//! All compute each lane with the same fused multiply-adds in the same order, so they give
//! bit-identical results whatever the width; a kernel is written once, generic over `Lanes`
//! (stepping by `L::N`), and run through `dispatch`.

use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

/// The narrowest lanes: kernels take channel counts in whole multiples of this.
pub const LANES: usize = 8;

pub trait Lanes: Copy {
    /// Lanes per vector: 8, or 16 for AVX-512.
    const N: usize;
    fn zero() -> Self;
    fn splat(v: f32) -> Self;
    /// Reads N floats from `s[0..N]`.
    fn load(s: &[f32]) -> Self;
    /// Reads N floats at `p`.
    ///
    /// # Safety
    /// `p..p + N` must be readable.
    unsafe fn load_ptr(p: *const f32) -> Self;
    /// Writes the N lanes to `d[0..N]`.
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
    const N: usize = LANES;
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
pub use x86::{Avx2, Avx512};

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
        const N: usize = LANES;
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

    /// AVX-512 lanes, 16 wide. Only built by `dispatch` after it has detected AVX-512F.
    #[derive(Clone, Copy)]
    pub struct Avx512(__m512);

    // SAFETY (every method): an Avx512 value only exists inside `dispatch`'s AVX-512 branch,
    // so the feature is present; loads and stores are bounds-checked on the slice first.
    impl Lanes for Avx512 {
        const N: usize = 16;
        #[inline(always)]
        fn zero() -> Self {
            unsafe { Avx512(_mm512_setzero_ps()) }
        }
        #[inline(always)]
        fn splat(v: f32) -> Self {
            unsafe { Avx512(_mm512_set1_ps(v)) }
        }
        #[inline(always)]
        fn load(s: &[f32]) -> Self {
            assert!(s.len() >= Self::N);
            unsafe { Avx512(_mm512_loadu_ps(s.as_ptr())) }
        }
        #[inline(always)]
        unsafe fn load_ptr(p: *const f32) -> Self {
            Avx512(_mm512_loadu_ps(p))
        }
        #[inline(always)]
        fn store(self, d: &mut [f32]) {
            assert!(d.len() >= Self::N);
            unsafe { _mm512_storeu_ps(d.as_mut_ptr(), self.0) }
        }
        #[inline(always)]
        fn mul_add(self, a: Self, b: Self) -> Self {
            unsafe { Avx512(_mm512_fmadd_ps(a.0, b.0, self.0)) }
        }
        #[inline(always)]
        fn add(self, b: Self) -> Self {
            unsafe { Avx512(_mm512_add_ps(self.0, b.0)) }
        }
        #[inline(always)]
        fn sub(self, b: Self) -> Self {
            unsafe { Avx512(_mm512_sub_ps(self.0, b.0)) }
        }
        #[inline(always)]
        fn mul(self, b: Self) -> Self {
            unsafe { Avx512(_mm512_mul_ps(self.0, b.0)) }
        }
        #[inline(always)]
        fn relu(self) -> Self {
            // As AVX2's max_ps: the second operand unless the first is greater.
            unsafe { Avx512(_mm512_max_ps(self.0, _mm512_setzero_ps())) }
        }
    }
}

/// [f(0), f(1), ..., f(N - 1)]: `std::array::from_fn` may stay out of line, and with it the
/// closure, outside the SIMD code; this always inlines. Nothing is written first: arrays of
/// vectors too many for the registers were otherwise zeroed on the stack by a memset call
/// before every use (2.3 KB per Winograd F(4x4) tile and channel vector with AVX-512).
/// Mark the closure `#[inline(always)]` too: one left out of line is compiled without the
/// kernel's target features, and every intrinsic in it becomes a call (a Winograd transform
/// ran 2x slower so).
#[inline(always)]
pub fn array<T: Copy, const N: usize>(mut f: impl FnMut(usize) -> T) -> [T; N] {
    let mut out = [MaybeUninit::<T>::uninit(); N];
    for (i, o) in out.iter_mut().enumerate() {
        o.write(f(i));
    }
    // SAFETY: every element was written above; [MaybeUninit<T>; N] has [T; N]'s layout.
    unsafe { std::mem::transmute_copy(&out) }
}

/// A kernel generic over its lanes, run by `dispatch` with the best lanes this CPU has.
pub trait Kernel {
    type Output;
    /// Whether every vector loop of the kernel covers its rows in whole vectors of `lanes`
    /// (channel counts are multiples of 8; 16-lane vectors need multiples of 16).
    fn lanes_fit(&self, lanes: usize) -> bool;
    fn run<L: Lanes>(self) -> Self::Output;
}

/// `Simd::limit_to`'s cap as `Simd as u8`; above every level until set.
static LIMIT: AtomicU8 = AtomicU8::new(u8::MAX);

/// The instruction sets the kernels are built for, narrowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Simd {
    Portable,
    Avx2,
    Avx512,
}

impl Simd {
    /// The widest this CPU runs, capped by `GPU_CNN_CPU_SIMD` (`portable` or `avx2`, to
    /// measure one against another) and by `limit_to`. Every level gives the same bits.
    pub fn best() -> Simd {
        static FROM_ENV: OnceLock<Simd> = OnceLock::new();
        let env = *FROM_ENV.get_or_init(|| match std::env::var("GPU_CNN_CPU_SIMD").as_deref() {
            Ok("portable") => Simd::Portable,
            Ok("avx2") => Simd::Avx2,
            _ => Simd::Avx512,
        });
        let limit = match LIMIT.load(Ordering::Relaxed) {
            0 => Simd::Portable,
            1 => Simd::Avx2,
            _ => Simd::Avx512,
        };
        Simd::best_detected().min(env).min(limit)
    }

    /// Caps what `dispatch` runs, for the whole process from now on (tests compare levels).
    pub fn limit_to(level: Simd) {
        LIMIT.store(level as u8, Ordering::Relaxed);
    }

    /// The widest this CPU runs.
    fn best_detected() -> Simd {
        static DETECTED: OnceLock<Simd> = OnceLock::new();
        *DETECTED.get_or_init(|| Simd::detected().into_iter().max().unwrap_or(Simd::Portable))
    }

    /// Every level this CPU can run, narrowest first.
    pub fn detected() -> Vec<Simd> {
        let mut levels = vec![Simd::Portable];
        #[cfg(target_arch = "x86_64")]
        if has_fast_fma() {
            levels.push(Simd::Avx2);
            if std::arch::is_x86_feature_detected!("avx512f") {
                levels.push(Simd::Avx512);
            }
        }
        levels
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<K: Kernel>(k: K) -> K::Output {
    k.run::<Avx2>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn run_avx512<K: Kernel>(k: K) -> K::Output {
    k.run::<Avx512>()
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

/// Runs `k` with the widest lanes of `Simd::best` that fit it.
pub fn dispatch<K: Kernel>(k: K) -> K::Output {
    let level = Simd::best();
    #[cfg(target_arch = "x86_64")]
    {
        if level == Simd::Avx512 && k.lanes_fit(Avx512::N) {
            // SAFETY: best() never exceeds what was detected: AVX-512F, with AVX2 + FMA.
            return unsafe { run_avx512(k) };
        }
        if level >= Simd::Avx2 {
            // SAFETY: as above: AVX2 + FMA.
            return unsafe { run_avx2(k) };
        }
    }
    let _ = level;
    k.run::<Portable>()
}

/// A closure run as a kernel: see `vectorized`.
struct Plain<F>(F);

impl<R, F: FnOnce() -> R> Kernel for Plain<F> {
    type Output = R;
    fn lanes_fit(&self, _: usize) -> bool {
        true
    }
    #[inline(always)]
    fn run<L: Lanes>(self) -> R {
        (self.0)()
    }
}

/// Runs plain loops compiled for AVX-512 or AVX2 where the CPU has them, so the compiler
/// vectorises them 16 or 8 lanes wide instead of SSE2's 4. Rust never fuses a multiply and an
/// add on its own, so the results are the same bits either way. For float loops only: through
/// this closure LLVM left loops with u32 multiplies, per-lane shifts or index selects scalar
/// (dropout's hash, max-pool's argmax), which vectorise as a `Kernel` holding its operands as
/// fields.
pub fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    dispatch(Plain(f))
}
