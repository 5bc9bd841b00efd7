//! NT-Xent (SimCLR, Chen et al. 2020) over two views, as a pure function: the baseline SwAV is compared to.
use tch::{Kind, Tensor};

/// Default temperature: 0.1, the value SimCLR's Table 5 finds best with ℓ2-normalised embeddings, and the
/// SwAV temperature, so the two methods differ in their objective only.
pub const DEFAULT_SIMCLR_TEMPERATURE: f64 = 0.1;

/// NT-Xent: for each of the 2B embeddings, cross-entropy of its positive (the other view of the same
/// image) against the 2B−1 others, with cosine similarities divided by τ; mean over the 2B anchors.
///
/// # Shapes
/// `z1`, `z2`: `[B, D]` (normalised here, so any scale works); returns a scalar.
pub fn simclr_loss(z1: &Tensor, z2: &Tensor, temperature: f64) -> Tensor {
    let b = z1.size()[0];
    let z = crate::model::l2_normalize(&Tensor::cat(&[z1, z2], 0)); // [2B, D]
    let sim = z.matmul(&z.tr()) / temperature; // [2B, 2B]
    let eye = Tensor::eye(2 * b, (Kind::Bool, z.device()));
    // −inf on the diagonal removes each anchor from its own denominator
    let sim = sim.masked_fill(&eye, f64::NEG_INFINITY);
    let idx = Tensor::arange(2 * b, (Kind::Int64, z.device()));
    let targets = (idx + b).remainder(2 * b);
    sim.cross_entropy_for_logits(&targets)
}
