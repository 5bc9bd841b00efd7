//! Learning-rate schedule: linear warm-up then cosine, a plain function of the step (SwAV reference
//! `main_swav.py`: `warmup_lr_schedule` = linspace(start_warmup, base_lr), then cosine to final_lr).

/// Learning rate at global step `step` (0-based).
///
/// Warm-up covers `warmup_steps` steps from `start_warmup` to `base_lr` inclusive (numpy linspace); the
/// cosine covers the remaining `total_steps - warmup_steps` from `base_lr` towards `final_lr`. Steps past
/// the end stay at `final_lr`.
pub fn lr_at(
    step: usize,
    total_steps: usize,
    warmup_steps: usize,
    start_warmup: f64,
    base_lr: f64,
    final_lr: f64,
) -> f64 {
    if step < warmup_steps {
        if warmup_steps == 1 {
            return start_warmup;
        }
        return start_warmup + (base_lr - start_warmup) * step as f64 / (warmup_steps - 1) as f64;
    }
    let cos_steps = total_steps.saturating_sub(warmup_steps);
    let t = step - warmup_steps;
    if cos_steps == 0 || t >= cos_steps {
        return final_lr;
    }
    final_lr
        + 0.5
            * (base_lr - final_lr)
            * (1.0 + (std::f64::consts::PI * t as f64 / cos_steps as f64).cos())
}
