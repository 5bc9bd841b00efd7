//! The SwAV swapped-prediction loss (reference `main_swav.py` train loop), as a pure function.
use tch::{Kind, Tensor};

/// Swapped prediction: for each assignment crop c, −1/(V−1) Σ_{v≠c} mean_b Σ_k q_c log softmax(s_v/τ),
/// averaged over `crops_for_assign`.
///
/// # Shapes
/// `outputs`: per crop v, prototype scores `[B, K]` (V entries); `q`: per entry of `crops_for_assign`, the
/// codes `[B, K]` of that crop. Returns a scalar.
pub fn swav_loss(
    outputs: &[Tensor],
    q: &[Tensor],
    crops_for_assign: &[usize],
    temperature: f64,
) -> Tensor {
    let v_total = outputs.len();
    let log_p: Vec<Tensor> = outputs
        .iter()
        .map(|s| (s / temperature).log_softmax(1, Kind::Float))
        .collect();
    let mut loss = Tensor::zeros([], (Kind::Float, outputs[0].device()));
    for (qc, &c) in q.iter().zip(crops_for_assign) {
        let mut subloss = Tensor::zeros([], (Kind::Float, outputs[0].device()));
        for (v, lp) in log_p.iter().enumerate() {
            if v == c {
                continue;
            }
            subloss = subloss
                - (qc * lp)
                    .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
                    .mean(Kind::Float);
        }
        loss = loss + subloss / (v_total as f64 - 1.0);
    }
    loss / crops_for_assign.len() as f64
}
