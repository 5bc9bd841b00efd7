//! Sinkhorn-Knopp equal-partition assignments (SwAV reference `distributed_sinkhorn`), in the log domain so
//! float32 never overflows: the reference's `exp(S/ε)` is inf for S/ε > 88 (e.g. ε 0.01, |S| ~ 1).
use tch::{Kind, Tensor};

/// Soft codes Q for prototype scores S.
///
/// Same iteration as the reference: Q = exp(S/ε)ᵀ (K×B), divide by its sum, then `iters` times rows to
/// sum 1/K and columns to sum 1/B, finally ×B and transpose back. Each normalisation is a log-sum-exp
/// subtraction, which is the same arithmetic without forming exp(S/ε).
///
/// # Shapes
/// `scores`: `[B, K]`; returns Q `[B, K]`, each row summing to 1, each column to ≈ B/K. Runs under no_grad.
pub fn sinkhorn(scores: &Tensor, epsilon: f64, iters: usize) -> Tensor {
    tch::no_grad(|| {
        let (b, k) = (scores.size()[0] as f64, scores.size()[1] as f64);
        let mut log_q = (scores.to_kind(Kind::Float) / epsilon).tr(); // [K, B]
        log_q = &log_q - log_q.logsumexp([0i64, 1].as_slice(), false);
        for _ in 0..iters {
            // rows (prototypes) to 1/K
            log_q = &log_q - log_q.logsumexp([1i64].as_slice(), true) - k.ln();
            // columns (samples) to 1/B
            log_q = &log_q - log_q.logsumexp([0i64].as_slice(), true) - b.ln();
        }
        (log_q.exp() * b).tr().contiguous() // [B, K]
    })
}
