//! `--class-weight`: per-class loss weights for imbalanced catalogues, as Keras's
//! `class_weight` and scikit-learn's `compute_class_weight("balanced")`.

use anyhow::{bail, Result};

/// How the loss weights each class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClassWeight {
    /// Every sample counts once.
    None,
    /// weight_c = n_samples / (n_classes * n_c), from the training split's counts.
    Balanced,
}

impl ClassWeight {
    pub fn parse(text: &str) -> Result<ClassWeight> {
        match text {
            "none" => Ok(ClassWeight::None),
            "balanced" => Ok(ClassWeight::Balanced),
            _ => bail!("'{text}' is not a class weighting; use balanced or none"),
        }
    }
}

/// How many training images each of `classes` classes has.
pub fn class_counts(labels: &[u8], classes: usize) -> Vec<usize> {
    let mut counts = vec![0; classes];
    for &l in labels {
        if let Some(c) = counts.get_mut(l as usize) {
            *c += 1;
        }
    }
    counts
}

/// Keras's balanced weights n_samples / (n_classes * n_c); an error names a class with no
/// training images (its weight would be infinite).
pub fn balanced_weights(counts: &[usize], class_names: &[String]) -> Result<Vec<f32>> {
    let total: usize = counts.iter().sum();
    let classes = counts.len();
    counts
        .iter()
        .enumerate()
        .map(|(c, &n)| {
            if n == 0 {
                let name = class_names.get(c).map_or_else(|| c.to_string(), |s| s.clone());
                bail!("class '{name}' has no training images, so --class-weight balanced cannot weight it; add images or drop the class");
            }
            // In f64, so the weight does not depend on summation order.
            Ok((total as f64 / (classes as f64 * n as f64)) as f32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balanced_is_the_keras_formula() {
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let counts = class_counts(&[0, 0, 0, 0, 0, 0, 1, 1, 2, 2, 2, 2], 3);
        assert_eq!(counts, vec![6, 2, 4]);
        // 12 / (3 * 6), 12 / (3 * 2), 12 / (3 * 4)
        assert_eq!(balanced_weights(&counts, &names).unwrap(), vec![12.0 / 18.0, 2.0, 1.0]);
        let err = balanced_weights(&[3, 0, 1], &names).unwrap_err().to_string();
        assert!(err.contains("'b' has no training images"), "{err}");
        assert!(ClassWeight::parse("heavy").is_err());
    }
}
