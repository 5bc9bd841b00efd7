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

/// File name of the metrics table inside a run directory.
pub const METRICS_FILE: &str = "metrics.parquet";

/// What one step measured.
#[derive(Debug, Clone, PartialEq)]
pub struct StepMetrics {
    pub step: usize,
    pub epoch: usize,
    pub loss: f64,
    /// loss / ln K (K of the first head): ≈ 1 means predictions as uniform as a collapsed model's.
    pub loss_over_ln_k: f64,
    pub lr: f64,
    /// Entropy (nats) of the histogram of argmax codes of the assignment crops in this batch.
    pub proto_entropy: f64,
    /// Share of the batch's assignment crops taken by the most used prototype.
    pub top_proto_share: f64,
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
    DataFrame::new(
        rows.len(),
        vec![
            col_u(COL_STEP, &|r| r.step as u64),
            col_u(COL_EPOCH, &|r| r.epoch as u64),
            col_f(COL_LOSS, &|r| r.loss),
            col_f(COL_LOSS_OVER_LN_K, &|r| r.loss_over_ln_k),
            col_f(COL_LR, &|r| r.lr),
            col_f(COL_PROTO_ENTROPY, &|r| r.proto_entropy),
            col_f(COL_SECONDS, &|r| r.seconds),
        ],
    )
    .map_err(|e| Error::polars("building metrics frame", e))
}

/// Reads back the rows of a metrics frame (fields not stored come back as 0/false).
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
    Ok((0..step.len())
        .map(|i| StepMetrics {
            step: step[i] as usize,
            epoch: epoch[i] as usize,
            loss: loss[i],
            loss_over_ln_k: lk[i],
            lr: lr[i],
            proto_entropy: ent[i],
            top_proto_share: 0.0,
            collapsed: false,
            seconds: sec[i],
            sinkhorn_seconds: 0.0,
        })
        .collect())
}
