//! Dropout: both backends draw the same mask (bit-equal outputs), the mask depends on (seed,
//! step, layer) and nothing else, rate 0 is the identity, the kept fraction is 1 - rate within
//! a binomial bound, and the backward (the same op on dy) drops the same elements.

#[macro_use]
mod common;
use common::{assert_same_bits, uniform_vec};
use gpu_cnn::backend::cpu::CpuBackend;
use gpu_cnn::backend::dropout::{step_key, DropoutMask};
use gpu_cnn::backend::Backend;
use gpu_cnn::rng::Rng;

/// Inputs with no zeros (a dropped element is then the only source of a 0 output).
fn nonzero_inputs(len: usize, seed: u64) -> Vec<f32> {
    uniform_vec(&mut Rng::new(seed), len).iter().map(|v| if *v >= 0.0 { v + 0.5 } else { v - 0.5 }).collect()
}

/// Dropout of `x` on `b` with the key of (seed, step).
fn dropout<B: Backend>(b: &B, x: &[f32], seed: u64, step: u64, mask: &DropoutMask) -> Vec<f32> {
    let mut key = b.indices(2).unwrap();
    b.upload_indices(&mut key, &step_key(seed, step));
    let mut input = b.tensor(x.len()).unwrap();
    b.upload(&mut input, x);
    let mut y = b.tensor(x.len()).unwrap();
    b.dropout(&input, &mut y, x.len(), &key, mask);
    b.download(&y).unwrap()
}

fn kept(y: &[f32]) -> Vec<bool> {
    y.iter().map(|v| *v != 0.0).collect()
}

// The GPU's mask is the CPU's, element for element, and so are the values (one f32 multiply
// each, correctly rounded on both): bit-equal outputs, on 7x13x13x5 values, on 300,007 values
// (1,172 workgroups and an odd tail) and at a step past 2^32.
gpu_test! {
    fn masks_are_equal_on_both_backends(gpu: &GpuBackend) {
        let cpu = CpuBackend::new();
        for (len, rate, layer, step) in [(7 * 13 * 13 * 5, 0.25, 3, 11), (300_007, 0.5, 0, 0), (1001, 0.1, 17, 1 << 40)] {
            let x = nonzero_inputs(len, len as u64);
            let mask = DropoutMask::new(rate, layer).unwrap();
            let (want, got) = (dropout(&cpu, &x, 42, step, &mask), dropout(gpu, &x, 42, step, &mask));
            assert_same_bits(&format!("dropout of {len} at rate {rate}"), &got, &want);
            // Twice on the GPU: the same bits.
            assert_same_bits("dropout repeated", &dropout(gpu, &x, 42, step, &mask), &got);
        }
    }
}

backend_test! {
    fn rate_zero_is_the_identity<B>(b: &B) {
        let x = nonzero_inputs(5000, 1);
        assert_same_bits("rate 0", &dropout(b, &x, 7, 3, &DropoutMask::new(0.0, 2).unwrap()), &x);
    }
}

// The kept count K of L elements at rate r is Binomial(L, 1 - r) if the hash is a fair coin:
// sd = sqrt(L r (1 - r)) = 145 for L = 100,000, r = 0.3. Allowing 6 sd (a false failure once in
// ~5e8) bounds |K / L - 0.7| by 0.0087; a biased threshold (e.g. rate misread as 1 - rate, or
// off by 1%) is far outside. Kept values are x / (1 - rate) exactly: one f32 multiply by the
// f32 scale.
backend_test! {
    fn the_kept_fraction_is_one_minus_rate<B>(b: &B) {
        let len = 100_000;
        let x = nonzero_inputs(len, 2);
        for (rate, layer, step) in [(0.3f32, 0, 0), (0.3, 5, 1234), (0.5, 1, 9), (0.1, 2, 77)] {
            let mask = DropoutMask::new(rate, layer).unwrap();
            let y = dropout(b, &x, 3, step, &mask);
            let count = kept(&y).iter().filter(|k| **k).count() as f64;
            let p = 1.0 - rate as f64;
            let sd = (len as f64 * p * (1.0 - p)).sqrt();
            assert!((count - len as f64 * p).abs() <= 6.0 * sd, "rate {rate}: kept {count} of {len}, expected {} +- {}", len as f64 * p, 6.0 * sd);
            for (yi, xi) in y.iter().zip(&x) {
                assert!(*yi == 0.0 || yi.to_bits() == (xi * mask.scale).to_bits(), "a kept value is x * scale");
            }
        }
    }
}

// The backward is the same op on dy with the same key: dx is dy * scale exactly where the
// forward kept x, and 0 where it dropped it.
backend_test! {
    fn the_backward_drops_the_forwards_elements<B>(b: &B) {
        let len = 7 * 13 * 13 * 3;
        let (x, dy) = (nonzero_inputs(len, 4), nonzero_inputs(len, 5));
        let mask = DropoutMask::new(0.4, 6).unwrap();
        let (y, dx) = (dropout(b, &x, 9, 21, &mask), dropout(b, &dy, 9, 21, &mask));
        assert_eq!(kept(&y), kept(&dx), "forward and backward masks differ");
        let expected: Vec<f32> = dy.iter().zip(kept(&y)).map(|(g, k)| if k { g * mask.scale } else { 0.0 }).collect();
        assert_same_bits("dx", &dx, &expected);
    }
}

// The mask is a function of (seed, step, layer): the same three give the same mask (a resumed
// run, on a fresh backend, redraws it), changing any one gives an unrelated mask. Two
// independent masks at rate 0.5 disagree on half the elements: on 20,000 that is 10,000 +- 71
// (sd); 40%-60% is 28 sd wide, and a mask that ignored the step would disagree on none.
backend_test! {
    fn the_mask_depends_on_seed_step_and_layer<B>(b: &B) {
        let len = 20_000;
        let x = nonzero_inputs(len, 8);
        let mask = DropoutMask::new(0.5, 1).unwrap();
        let base = kept(&dropout(b, &x, 5, 100, &mask));
        assert_eq!(kept(&dropout(b, &x, 5, 100, &mask)), base, "same (seed, step, layer), different mask");
        assert_eq!(kept(&dropout(&CpuBackend::new(), &x, 5, 100, &mask)), base, "a fresh CPU backend draws a different mask");
        let other_layer = DropoutMask::new(0.5, 2).unwrap();
        for (what, other) in [
            ("step + 1", dropout(b, &x, 5, 101, &mask)),
            ("seed + 1", dropout(b, &x, 6, 100, &mask)),
            ("next layer", dropout(b, &x, 5, 100, &other_layer)),
        ] {
            let differ = kept(&other).iter().zip(&base).filter(|(a, b)| a != b).count() as f64 / len as f64;
            assert!((0.4..=0.6).contains(&differ), "{what}: masks differ on {differ} of the elements, expected ~0.5");
        }
    }
}
