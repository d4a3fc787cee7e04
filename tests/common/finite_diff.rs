//! Finite differences for the gradient checks (tests/gradient_check.rs and each op family's).

/// sum of a[i] * b[i] in f64: the scalar loss L = sum(y * r) the checks differentiate.
pub fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Central differences of `loss` with respect to every element of `x`.
pub fn numeric_grad(x: &[f32], h: f32, mut loss: impl FnMut(&[f32]) -> f64) -> Vec<f64> {
    let mut x = x.to_vec();
    (0..x.len())
        .map(|i| {
            let keep = x[i];
            x[i] = keep + h;
            let up = loss(&x);
            x[i] = keep - h;
            let down = loss(&x);
            x[i] = keep;
            (up - down) / (2.0 * h as f64)
        })
        .collect()
}
