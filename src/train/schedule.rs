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

#[cfg(test)]
mod tests {
    use super::lr_at;

    #[test]
    fn one_warmup_step_starts_at_start_warmup_and_cosine_is_monotone() {
        assert_eq!(lr_at(0, 5, 1, 0.0, 1.0, 0.1), 0.0);
        // first cosine step is base_lr, then strictly decreasing towards final_lr
        let v: Vec<f64> = (1..5).map(|s| lr_at(s, 5, 1, 0.0, 1.0, 0.1)).collect();
        assert_eq!(v[0], 1.0);
        assert!(v.windows(2).all(|w| w[1] < w[0]), "{v:?}");
        assert!(v[3] > 0.1);
    }

    #[test]
    fn no_warmup_no_steps_is_final_lr() {
        assert_eq!(lr_at(0, 0, 0, 0.0, 1.0, 0.25), 0.25);
    }
}
