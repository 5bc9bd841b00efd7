//! Name that dataset (Torralba & Efros 2011): can a linear classifier tell from an embedding which dataset
//! a crop came from? The linear classifier of `analyze::linear` (logistic regression on L2-normalised
//! embeddings plus a bias); held-out accuracy against chance (the share of the
//! largest dataset among held-out rows). The split is by image_id so crops of one image never straddle it.
use std::collections::BTreeMap;

use rand::Rng;

use crate::analyze::collapse::sample_without_replacement;
use crate::analyze::embeddings::Embeddings;
use crate::analyze::linear::{features, LinearClassifier};
use crate::analyze::stats::seeded_rng;
use crate::error::{Error, Result};

/// Share of image_ids held out for testing.
pub const TEST_SHARE: f64 = 0.2;
/// Training rows above this are subsampled (seeded) to bound time.
pub const MAX_TRAIN: usize = 20_000;
const STREAM_SPLIT: u64 = 31;
const STREAM_TRAIN: u64 = 32;

#[derive(Debug, Clone, PartialEq)]
pub struct NameThatDatasetResult {
    pub accuracy: f64,
    pub chance: f64,
    pub n_classes: usize,
    pub n_train: usize,
    pub n_test: usize,
}

fn fnv1a(s: &str) -> u64 {
    // FNV-1a 64-bit offset basis and prime (Fowler–Noll–Vo reference).
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

pub fn name_that_dataset(e: &Embeddings, seed: u64) -> Result<NameThatDatasetResult> {
    let classes: BTreeMap<&str, usize> = {
        let set: std::collections::BTreeSet<&str> = e.datasets.iter().map(String::as_str).collect();
        set.into_iter().enumerate().map(|(i, s)| (s, i)).collect()
    };
    let c = classes.len();
    if c < 2 {
        return Err(Error::Invalid(format!(
            "name-that-dataset: column `dataset` has {c} distinct value(s); needs at least two"
        )));
    }
    let is_test =
        |r: usize| seeded_rng(seed, STREAM_SPLIT, fnv1a(&e.image_ids[r])).gen::<f64>() < TEST_SHARE;
    let (test, mut train): (Vec<usize>, Vec<usize>) = (0..e.len()).partition(|&r| is_test(r));
    if train.len() > MAX_TRAIN {
        train = sample_without_replacement(train.len(), MAX_TRAIN, seed, STREAM_TRAIN)
            .into_iter()
            .map(|i| train[i])
            .collect();
    }
    if test.is_empty() || train.is_empty() {
        return Err(Error::Invalid(format!(
            "name-that-dataset: the image_id split left {} train and {} test rows",
            train.len(),
            test.len()
        )));
    }
    let y = |rows: &[usize]| -> Vec<usize> {
        rows.iter()
            .map(|&r| classes[e.datasets[r].as_str()])
            .collect()
    };
    let model = LinearClassifier::fit(&features(e, &train), &y(&train), e.dim, c);
    let yte = y(&test);
    let accuracy = model.accuracy(&features(e, &test), &yte);
    let mut counts = vec![0usize; c];
    yte.iter().for_each(|&t| counts[t] += 1);
    let chance = counts.iter().copied().max().unwrap_or(0) as f64 / yte.len() as f64;
    Ok(NameThatDatasetResult {
        accuracy,
        chance,
        n_classes: c,
        n_train: train.len(),
        n_test: test.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::embeddings::{from_rows, row};

    #[test]
    fn separable_datasets_are_named_and_single_dataset_is_an_error() {
        let rows: Vec<_> = (0..200)
            .map(|i| {
                let c = i % 2;
                let j = (i as f32 * 0.7).sin() * 0.3;
                let mut r = row(
                    i,
                    &format!("i{i}"),
                    None,
                    None,
                    if c == 0 {
                        vec![1.0, j, 0.2]
                    } else {
                        vec![j, 1.0, 0.2]
                    },
                );
                r.dataset = ["objects", "scenes"][c].to_string();
                r
            })
            .collect();
        let e = from_rows(&rows).unwrap();
        let r = name_that_dataset(&e, 3).unwrap();
        assert_eq!(r.accuracy, 1.0);
        assert!(r.chance < 0.75 && r.n_test > 10 && r.n_train + r.n_test == 200);
        let one = from_rows(&rows[..1]).unwrap();
        assert!(name_that_dataset(&one, 3)
            .unwrap_err()
            .to_string()
            .contains("`dataset`"));
    }
}
