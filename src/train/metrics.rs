//! Per-step training metrics and their `metrics.parquet` frame (column names as consts).
use polars::prelude::*;

use crate::error::{Error, Result};

pub const COL_STEP: &str = "step";
pub const COL_EPOCH: &str = "epoch";
pub const COL_LOSS: &str = "loss";
pub const COL_LOSS_OVER_LN_K: &str = "loss_over_ln_k";
pub const COL_LR: &str = "lr";
pub const COL_PROTO_ENTROPY: &str = "proto_entropy";
pub const COL_SECONDS: &str = "seconds";
/// What `loss_over_ln_k` divides by, per method: "ln K" (SwAV, DINO), "ln(2B-1)" (SimCLR), "ln(1+moco_k)"
/// (MoCo). The column keeps its first name so reports written before MoCo and DINO read unchanged.
pub const COL_LOSS_NORMALISER: &str = "loss_normaliser";
/// DINO's collapse signals (null for the other methods).
pub const COL_TEACHER_ENTROPY: &str = "teacher_entropy";
pub const COL_TEACHER_STUDENT_KL: &str = "teacher_student_kl";
/// Columns a checkpoint's history keeps beyond `metrics.parquet`'s: the epoch summary's collapse verdict
/// needs them, so a run resumed mid-epoch summarises that epoch as the uninterrupted run does.
pub const COL_TOP_PROTO_SHARE: &str = "top_proto_share";
pub const COL_COLLAPSED: &str = "collapsed";
pub const COL_SINKHORN_SECONDS: &str = "sinkhorn_seconds";

/// File name of the metrics table inside a run directory.
pub const METRICS_FILE: &str = "metrics.parquet";

/// What one step measured.
#[derive(Debug, Clone, PartialEq)]
pub struct StepMetrics {
    pub step: usize,
    pub epoch: usize,
    pub loss: f64,
    /// loss / the loss of uniform predictions (`normaliser`): ≈ 1 means predictions as uniform as a
    /// collapsed model's.
    pub loss_over_ln_k: f64,
    /// The normaliser's name ("ln K", "ln(2B-1)", "ln(1+moco_k)").
    pub normaliser: String,
    pub lr: f64,
    /// Entropy (nats) of the histogram of argmax codes of the assignment crops in this batch (SwAV's codes,
    /// DINO's teacher outputs); NaN (null in the table) for methods that train no prototypes.
    pub proto_entropy: f64,
    /// Share of the batch's assignment crops taken by the most used prototype (NaN as `proto_entropy`).
    pub top_proto_share: f64,
    /// DINO: mean entropy of the teacher's outputs and mean KL(teacher ‖ student), nats.
    pub teacher_entropy: Option<f64>,
    pub teacher_student_kl: Option<f64>,
    /// Whether this step looks collapsed (see `COLLAPSE_ADVICE`).
    pub collapsed: bool,
    pub seconds: f64,
    /// Time spent in Sinkhorn within `seconds` (not stored in the table).
    pub sinkhorn_seconds: f64,
}

/// Builds the metrics frame from step rows.
pub fn metrics_frame(rows: &[StepMetrics]) -> Result<DataFrame> {
    let col_u = |name: &str, f: &dyn Fn(&StepMetrics) -> u64| {
        Column::new(name.into(), rows.iter().map(f).collect::<Vec<u64>>())
    };
    let col_f = |name: &str, f: &dyn Fn(&StepMetrics) -> f64| {
        Column::new(name.into(), rows.iter().map(f).collect::<Vec<f64>>())
    };
    // null where the method has no such number
    let col_o = |name: &str, f: &dyn Fn(&StepMetrics) -> Option<f64>| {
        Column::new(
            name.into(),
            rows.iter().map(f).collect::<Vec<Option<f64>>>(),
        )
    };
    DataFrame::new(
        rows.len(),
        vec![
            col_u(COL_STEP, &|r| r.step as u64),
            col_u(COL_EPOCH, &|r| r.epoch as u64),
            col_f(COL_LOSS, &|r| r.loss),
            col_f(COL_LOSS_OVER_LN_K, &|r| r.loss_over_ln_k),
            Column::new(
                COL_LOSS_NORMALISER.into(),
                rows.iter()
                    .map(|r| r.normaliser.as_str())
                    .collect::<Vec<&str>>(),
            ),
            col_f(COL_LR, &|r| r.lr),
            col_o(COL_PROTO_ENTROPY, &|r| {
                Some(r.proto_entropy).filter(|x| !x.is_nan())
            }),
            col_o(COL_TEACHER_ENTROPY, &|r| r.teacher_entropy),
            col_o(COL_TEACHER_STUDENT_KL, &|r| r.teacher_student_kl),
            col_f(COL_SECONDS, &|r| r.seconds),
        ],
    )
    .map_err(|e| Error::polars("building metrics frame", e))
}

/// The metrics frame plus the per-step fields `metrics.parquet` leaves out: what a checkpoint stores so a
/// resumed run continues its metrics exactly (see `checkpoint::HISTORY_FILE`).
pub fn history_frame(rows: &[StepMetrics]) -> Result<DataFrame> {
    let mut df = metrics_frame(rows)?;
    let extra = [
        Column::new(
            COL_TOP_PROTO_SHARE.into(),
            rows.iter()
                .map(|r| Some(r.top_proto_share).filter(|x| !x.is_nan()))
                .collect::<Vec<Option<f64>>>(),
        ),
        Column::new(
            COL_COLLAPSED.into(),
            rows.iter().map(|r| r.collapsed).collect::<Vec<bool>>(),
        ),
        Column::new(
            COL_SINKHORN_SECONDS.into(),
            rows.iter()
                .map(|r| r.sinkhorn_seconds)
                .collect::<Vec<f64>>(),
        ),
    ];
    for c in extra {
        df.with_column(c)
            .map_err(|e| Error::polars("building history frame", e))?;
    }
    Ok(df)
}

/// Reads back the rows of a metrics or history frame (fields not stored come back as 0/false).
pub fn rows_from_frame(df: &DataFrame) -> Result<Vec<StepMetrics>> {
    let ctx = |e| Error::polars("reading metrics frame", e);
    let u = |name: &str| -> Result<Vec<u64>> {
        Ok(df
            .column(name)
            .map_err(ctx)?
            .u64()
            .map_err(ctx)?
            .iter()
            .map(|x| x.unwrap_or(0))
            .collect())
    };
    let f = |name: &str| -> Result<Vec<f64>> {
        Ok(df
            .column(name)
            .map_err(ctx)?
            .f64()
            .map_err(ctx)?
            .iter()
            .map(|x| x.unwrap_or(f64::NAN))
            .collect())
    };
    let (step, epoch, loss, lk, lr, ent, sec) = (
        u(COL_STEP)?,
        u(COL_EPOCH)?,
        f(COL_LOSS)?,
        f(COL_LOSS_OVER_LN_K)?,
        f(COL_LR)?,
        f(COL_PROTO_ENTROPY)?,
        f(COL_SECONDS)?,
    );
    // Present in a checkpoint's history frame only.
    let opt_f = |name: &str| -> Result<Option<Vec<f64>>> {
        if df.column(name).is_err() {
            return Ok(None);
        }
        f(name).map(Some)
    };
    let top = opt_f(COL_TOP_PROTO_SHARE)?;
    let sink = opt_f(COL_SINKHORN_SECONDS)?;
    // Written since MoCo and DINO: earlier tables had ln K or ln(2B − 1) without saying which.
    let opt_nullable = |name: &str| -> Result<Option<Vec<Option<f64>>>> {
        match df.column(name) {
            Err(_) => Ok(None),
            Ok(c) => Ok(Some(c.f64().map_err(ctx)?.iter().collect())),
        }
    };
    let t_ent = opt_nullable(COL_TEACHER_ENTROPY)?;
    let t_kl = opt_nullable(COL_TEACHER_STUDENT_KL)?;
    let normaliser: Option<Vec<String>> = match df.column(COL_LOSS_NORMALISER) {
        Err(_) => None,
        Ok(c) => Some(
            c.str()
                .map_err(ctx)?
                .iter()
                .map(|x| x.unwrap_or("").to_string())
                .collect(),
        ),
    };
    let collapsed: Option<Vec<bool>> = match df.column(COL_COLLAPSED) {
        Err(_) => None,
        Ok(c) => Some(
            c.bool()
                .map_err(ctx)?
                .iter()
                .map(|x| x.unwrap_or(false))
                .collect(),
        ),
    };
    Ok((0..step.len())
        .map(|i| StepMetrics {
            step: step[i] as usize,
            epoch: epoch[i] as usize,
            loss: loss[i],
            loss_over_ln_k: lk[i],
            normaliser: normaliser
                .as_ref()
                .map_or_else(String::new, |v| v[i].clone()),
            lr: lr[i],
            proto_entropy: ent[i],
            top_proto_share: top.as_ref().map_or(0.0, |v| v[i]),
            teacher_entropy: t_ent.as_ref().and_then(|v| v[i]),
            teacher_student_kl: t_kl.as_ref().and_then(|v| v[i]),
            collapsed: collapsed.as_ref().is_some_and(|v| v[i]),
            seconds: sec[i],
            sinkhorn_seconds: sink.as_ref().map_or(0.0, |v| v[i]),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_frame_round_trips_every_field() {
        let rows: Vec<StepMetrics> = (0..3)
            .map(|i| StepMetrics {
                step: i,
                epoch: i / 2,
                loss: 2.5 + i as f64 / 7.0,
                loss_over_ln_k: 0.9 + i as f64 / 11.0,
                normaliser: "ln K".into(),
                lr: 0.1 / (i + 1) as f64,
                proto_entropy: 1.0 / 3.0,
                top_proto_share: 0.25 * i as f64,
                teacher_entropy: (i == 2).then_some(4.5),
                teacher_student_kl: (i == 2).then_some(0.25),
                collapsed: i == 1,
                seconds: 0.5,
                sinkhorn_seconds: 0.125,
            })
            .collect();
        let back = rows_from_frame(&history_frame(&rows).unwrap()).unwrap();
        assert_eq!(back, rows);
        // metrics.parquet's frame leaves the extra fields out; they read back as 0/false
        let plain = rows_from_frame(&metrics_frame(&rows).unwrap()).unwrap();
        assert!(!plain[1].collapsed && plain[2].top_proto_share == 0.0);
    }
}
