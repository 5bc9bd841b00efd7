//! Seeded randomness. Every random draw in biaslab comes from a ChaCha8 stream keyed by
//! `(seed, stream, index)`: `stream` separates uses (an epoch, a dataset split, bootstrap resamples…) and
//! `index` is the sample, image or resample, so a result never depends on the thread count or on the order
//! in which threads reach the samples. [`seeded_rng`] is the one constructor.
//!
//! Three key derivations ([`Mixing`]) exist because augmentation, dataset composition and the analyses were
//! seeded separately at first. Merging them into one would change every output made so far: every training
//! crop (so every trained run and its metrics), every composed dataset's images and splits, and every
//! bootstrap interval, sampled pair and cross-validation fold of the reports. Each is kept bit-identical
//! instead, and a test pins the first draws of each so none can drift.
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// How `(seed, stream, index)` becomes a ChaCha8 key. Each variant is a historical, frozen scheme: pick
/// the one the surrounding outputs were made with; new uses take [`Mixing::SplitMixChain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mixing {
    /// A chain of SplitMix64 finalisers (each word depends on all before it) fills the 32-byte key with
    /// four words; nearby seeds give unrelated streams. Used by augmentation (a sample's crops, with
    /// `stream` = epoch), the loader's epoch shuffle ([`SHUFFLE_INDEX`]) and invariance-set occlusions.
    SplitMixChain,
    /// `seed`, `stream` and `index` copied little-endian into the first 24 key bytes, the rest zero.
    /// Used by dataset composition (`data::compose`: each image, and the held-out split).
    RawKey,
    /// One multiplicative mix of the three inputs and a SplitMix64 finaliser to a `u64`, expanded by
    /// `seed_from_u64`. Used by the analyses (bootstrap resamples, sampled pairs and queries, folds).
    Multiplicative,
}

/// The `index` of an epoch's shuffle stream: above every sample index, so it never shares a stream with
/// a sample's crops.
pub const SHUFFLE_INDEX: u64 = u64::MAX;

/// SplitMix64 finaliser (Steele et al. 2014): spreads nearby integers over the whole 64-bit range.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The ChaCha8 stream for `index` in `stream` of a run (or report, or dataset) seeded with `seed`, keyed
/// by `mixing`.
pub fn seeded_rng(mixing: Mixing, seed: u64, stream: u64, index: u64) -> ChaCha8Rng {
    match mixing {
        Mixing::SplitMixChain => {
            let a = splitmix64(seed);
            let b = splitmix64(a ^ stream);
            let c = splitmix64(b ^ index);
            let d = splitmix64(c ^ 0x5157_4156); // "SWAV": a fourth independent word
            let mut key = [0u8; 32];
            for (chunk, word) in key.chunks_exact_mut(8).zip([a, b, c, d]) {
                chunk.copy_from_slice(&word.to_le_bytes());
            }
            ChaCha8Rng::from_seed(key)
        }
        Mixing::RawKey => {
            let mut key = [0u8; 32];
            key[..8].copy_from_slice(&seed.to_le_bytes());
            key[8..16].copy_from_slice(&stream.to_le_bytes());
            key[16..24].copy_from_slice(&index.to_le_bytes());
            ChaCha8Rng::from_seed(key)
        }
        Mixing::Multiplicative => {
            // the splitmix64 finaliser's constants double as multipliers that spread the three inputs
            let mut z = seed
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(stream.wrapping_mul(0xBF58_476D_1CE4_E5B9))
                .wrapping_add(index.wrapping_mul(0x94D0_49BB_1331_11EB));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ChaCha8Rng::seed_from_u64(z)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    const ALL: [Mixing; 3] = [
        Mixing::SplitMixChain,
        Mixing::RawKey,
        Mixing::Multiplicative,
    ];

    fn first_draws(m: Mixing, seed: u64, stream: u64, index: u64) -> [u64; 3] {
        let mut r = seeded_rng(m, seed, stream, index);
        [r.next_u64(), r.next_u64(), r.next_u64()]
    }

    #[test]
    fn streams_differ_by_each_coordinate_and_repeat_exactly() {
        for m in ALL {
            let first = |s, e, i| seeded_rng(m, s, e, i).next_u64();
            assert_eq!(first(1, 2, 3), first(1, 2, 3), "{m:?}");
            assert_ne!(first(1, 2, 3), first(2, 2, 3), "{m:?}");
            assert_ne!(first(1, 2, 3), first(1, 3, 3), "{m:?}");
            assert_ne!(first(1, 2, 3), first(1, 2, 4), "{m:?}");
            assert_ne!(first(1, 2, 3), first(1, 3, 2), "{m:?}");
        }
    }

    // Every crop, composed image and report interval made so far came from these streams: a change here
    // (a new mixing, a rand_chacha upgrade that changes ChaCha8) changes them all.
    #[test]
    fn first_draws_of_each_mixing_are_pinned() {
        let got: Vec<[u64; 3]> = ALL
            .iter()
            .flat_map(|&m| {
                [
                    first_draws(m, 0, 0, 0),
                    first_draws(m, 31, 2, 7),
                    first_draws(m, 31, 0, SHUFFLE_INDEX),
                ]
            })
            .collect();
        let want: Vec<[u64; 3]> = vec![
            // SplitMixChain: (0, 0, 0), (31, 2, 7), (31, 0, SHUFFLE_INDEX)
            [
                16962310440656508903,
                13925348969196578210,
                14277476477943939838,
            ],
            [1822602782227296468, 2333067501881720844, 936262686476869469],
            [
                15687652002293277644,
                11087335157995170448,
                15797662948899797916,
            ],
            // RawKey: (0, 0, 0), (31, 2, 7), (31, 0, SHUFFLE_INDEX)
            [
                15438444565445410878,
                11647726043916688255,
                4287315583106450476,
            ],
            [
                17701587182840816738,
                1892491421961511526,
                7541350306853583038,
            ],
            [
                17319165584403883777,
                12855499569819038018,
                9211325002868536667,
            ],
            // Multiplicative: (0, 0, 0), (31, 2, 7), (31, 0, SHUFFLE_INDEX)
            [
                13080132717333068652,
                8594738769458413623,
                12896916468484187878,
            ],
            [
                1525506943230962000,
                4246846115653841682,
                7860843285082748073,
            ],
            [
                17819720719778312237,
                5930485541558872578,
                12040043003279714867,
            ],
        ];
        assert_eq!(got, want);
    }
}
