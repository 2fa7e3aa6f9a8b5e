//! Every random choice gradleak makes, named by its purpose.
//!
//! A run has one user seed. Each purpose (a [`Stream`]) turns that seed, and the purpose's own keys (an update's
//! index, a layer's name, a probe), into an independent generator. The seed and the stream alone fix the draws,
//! whatever the thread count, the chunking of the work or what else is measured. Changing a stream's derivation
//! changes stored results, so each derivation is written once, here, and never edited; a new purpose gets a new
//! variant.
//!
//! Generators are ChaCha8 (`rand_chacha`), whose output for a given seed and stream is fixed by its specification.
//! Layer names are hashed with [`layer_key`] (FNV-1a), whose value is fixed by its definition too (std's
//! `DefaultHasher` promises no such thing across Rust releases).

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// The purpose of a random draw, with the keys that make it independent of every other draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream<'a> {
    /// A model's initial weights.
    ModelInit,
    /// The DLG code's uniform re-initialisation of a model (`attack --init-uniform`).
    UniformReinit,
    /// The order of training samples in each epoch.
    TrainingOrder,
    /// Dropout masks while training.
    TrainingDropout,
    /// The victims of a set of shared updates and their batch companions.
    Victims,
    /// Dropout masks of one shared update's batch.
    UpdateDropout { update: u64 },
    /// Noise (DP-SGD, `noise`) of one shared update.
    UpdateNoise { update: u64 },
    /// The random projection of one layer's gradient.
    Sketch { layer: &'a str },
    /// The victims a reference attack reconstructs: dummies and noise of one update.
    AttackUpdate { update: u64 },
    /// The samples whose sensitivity `gradleak sensitivity` measures.
    SensitivitySamples,
    /// Hutchinson probe `probe` of sample `sample`.
    Probe { probe: u64, sample: u64 },
    /// Dropout masks of one chunk of sensitivity samples (keyed by its first sample).
    SensitivityDropout { first_sample: u64 },
    /// Noise of one sample's shared gradient under differentiation.
    SensitivityNoise { sample: u64 },
    /// Bootstrap resamples of one layer's input sensitivity (keyed by the layer's index in the model).
    SensitivityBootstrap { layer: u64 },
    /// Bootstrap resamples of one layer's latent sensitivity (keyed by the layer's name).
    LatentBootstrap { layer: &'a str },
    /// The resamples themselves, from a layer's latent-bootstrap seed.
    LatentResamples,
    /// The permutation of samples into training, validation and test parts of an estimate.
    Folds,
    /// Bootstrap resamples of the pointwise V-information.
    VinfoBootstrap,
    /// The fits of fold `fold` (the seed handed to a predictive family).
    FoldFit { fold: u64 },
    /// Repetition `repeat` (from 1) of an estimate's protocol: its partition and fits.
    Repeat { repeat: u64 },
    /// A neural family's minibatch order, from its fit seed.
    MlpOrder,
    /// A neural family's initial weights, from its fit seed.
    MlpInit,
    /// Generic bootstrap resamples from a seed that is already purpose-specific.
    Resamples,
    /// Bootstrap resamples of layer rankings: paired layer comparisons and the rank agreement's interval.
    RankBootstrap,
    /// Bootstrap resamples of one layer's (or `all` layers') Fisher bounds over victims.
    FisherBootstrap { layer: &'a str },
    /// The dummies of a gradient-matching family's attack on one victim's update.
    FamilyAttack { update: u64 },
}

/// The golden-ratio increment of SplitMix64, used to spread purposes apart.
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// The SplitMix64 finaliser: a bijective mix of 64 bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// SplitMix64 of `x`: the hash that orders samples in seeded splits and subsets, easy to reproduce in any language.
pub fn splitmix64(x: u64) -> u64 {
    mix(x.wrapping_add(GOLDEN))
}

/// A stable 64-bit key of a layer name (FNV-1a over its UTF-8 bytes).
pub fn layer_key(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// A generator keyed by a purpose constant, then a ChaCha stream (an update, a sample).
fn keyed(seed: u64, purpose: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ purpose.wrapping_mul(GOLDEN));
    rng.set_stream(stream);
    rng
}

/// A seed derived for a measurement purpose: SplitMix64 of `seed + purpose * golden`.
fn measurement(seed: u64, purpose: u64) -> u64 {
    mix(seed.wrapping_add(purpose.wrapping_mul(GOLDEN)))
}

/// A seed derived for an estimator purpose: `seed ^ (purpose * golden + c)`, mixed.
fn estimator(seed: u64, purpose: u64) -> u64 {
    mix(seed ^ purpose.wrapping_mul(GOLDEN).wrapping_add(0x632b_e59b_d9b4_e019))
}

// Purpose constants of the sensitivity streams.
const PROBES: u64 = 0x5e45_0001;
const SENSITIVITY_BOOTSTRAP: u64 = 0x5e45_0002;
const SENSITIVITY_NOISE: u64 = 0x5e45_0003;
const SENSITIVITY_DROPOUT: u64 = 0x5e45_0004;
const LATENT_BOOTSTRAP: u64 = 0x5e45_1001;
const RANK_BOOTSTRAP: u64 = 0x5e45_2001;
const FISHER_BOOTSTRAP: u64 = 0x5e45_3001;

/// The generator of `stream` under the user's `seed`.
pub fn rng(seed: u64, stream: Stream) -> ChaCha8Rng {
    match stream {
        Stream::ModelInit
        | Stream::UniformReinit
        | Stream::TrainingOrder
        | Stream::Victims
        | Stream::SensitivitySamples
        | Stream::LatentResamples
        | Stream::MlpOrder
        | Stream::Resamples => ChaCha8Rng::seed_from_u64(seed),
        Stream::TrainingDropout => keyed(seed, 3, 0),
        Stream::UpdateNoise { update } => keyed(seed, 1, update),
        Stream::UpdateDropout { update } => keyed(seed, 2, update),
        Stream::AttackUpdate { update } => keyed(seed, 0xa77a, update),
        Stream::FamilyAttack { update } => keyed(seed, 0xfa77, update),
        Stream::Sketch { layer } => ChaCha8Rng::seed_from_u64(seed ^ layer_key(layer)),
        Stream::Probe { probe, sample } => {
            let mut rng = ChaCha8Rng::seed_from_u64(measurement(seed, PROBES.wrapping_add(probe << 20)));
            rng.set_stream(sample);
            rng
        }
        Stream::SensitivityDropout { first_sample } => {
            let mut rng = ChaCha8Rng::seed_from_u64(measurement(seed, SENSITIVITY_DROPOUT));
            rng.set_stream(first_sample);
            rng
        }
        Stream::SensitivityNoise { sample } => keyed(measurement(seed, SENSITIVITY_NOISE), 0, sample),
        Stream::MlpInit => ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_1417),
        Stream::SensitivityBootstrap { .. }
        | Stream::LatentBootstrap { .. }
        | Stream::Folds
        | Stream::VinfoBootstrap
        | Stream::FoldFit { .. }
        | Stream::Repeat { .. }
        | Stream::RankBootstrap
        | Stream::FisherBootstrap { .. } => ChaCha8Rng::seed_from_u64(derive(seed, stream)),
    }
}

/// The seed of `stream` under `seed`, for a purpose whose seed is handed on (to a predictive family, to a
/// per-layer computation) rather than drawn from directly.
pub fn derive(seed: u64, stream: Stream) -> u64 {
    match stream {
        Stream::SensitivityBootstrap { layer } => measurement(measurement(seed, SENSITIVITY_BOOTSTRAP), layer),
        Stream::LatentBootstrap { layer } => measurement(measurement(seed, LATENT_BOOTSTRAP), layer_key(layer)),
        Stream::Folds => estimator(seed, 1),
        Stream::VinfoBootstrap => estimator(seed, 2),
        Stream::FoldFit { fold } => estimator(seed, 100 + fold),
        Stream::Repeat { repeat } => estimator(seed, 0x7e9e_a700 + repeat),
        Stream::RankBootstrap => measurement(seed, RANK_BOOTSTRAP),
        Stream::FisherBootstrap { layer } => measurement(measurement(seed, FISHER_BOOTSTRAP), layer_key(layer)),
        Stream::MlpInit => seed ^ 0x5eed_1417,
        Stream::Sketch { layer } => seed ^ layer_key(layer),
        // Streams drawn from directly are seeded by the user's seed itself.
        _ => seed,
    }
}

/// A seeded ordering of samples: sort samples by [`order_key`] and take a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Within each class, the samples that go to the test split of a dataset without an official split.
    Split,
    /// The training samples of a seeded training subset (`training.samples`).
    TrainingSubset,
}

/// The sort key of sample `index` in the seeded ordering `order`.
pub fn order_key(seed: u64, order: Order, index: u64) -> u64 {
    match order {
        Order::Split => splitmix64(seed ^ index),
        Order::TrainingSubset => splitmix64(seed ^ splitmix64(index)),
    }
}

/// `numel` Gaussian values of standard deviation `std` (an f32 tensor) from `rng`: reproducible whatever the
/// thread or the chunking of the work, unlike libtorch's global generator.
pub fn gaussian(rng: &mut ChaCha8Rng, numel: i64, std: f64) -> tch::Tensor {
    let values: Vec<f32> = (0..numel).map(|_| StandardNormal.sample(rng)).collect();
    tch::Tensor::from_slice(&values) * std
}

/// `n` standard-normal f64 values from `rng`.
pub fn standard_normal_f64(rng: &mut ChaCha8Rng, n: usize) -> Vec<f64> {
    (0..n).map(|_| StandardNormal.sample(rng)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn layer_keys_are_fnv1a() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(layer_key(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(layer_key("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(layer_key("foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn splitmix64_matches_its_reference() {
        // The first outputs of SplitMix64 seeded with 0 (Vigna's reference implementation): x_i = i * golden.
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64(GOLDEN), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn streams_are_fixed_by_seed_and_keys() {
        let draw = |s: Stream| rng(7, s).random::<u64>();
        assert_eq!(draw(Stream::UpdateNoise { update: 3 }), draw(Stream::UpdateNoise { update: 3 }));
        assert_ne!(draw(Stream::UpdateNoise { update: 3 }), draw(Stream::UpdateNoise { update: 4 }));
        assert_ne!(draw(Stream::UpdateNoise { update: 3 }), draw(Stream::UpdateDropout { update: 3 }));
        assert_ne!(draw(Stream::Sketch { layer: "fc1" }), draw(Stream::Sketch { layer: "fc2" }));
        assert_ne!(derive(7, Stream::Folds), derive(7, Stream::VinfoBootstrap));
    }
}
