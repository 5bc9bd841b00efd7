//! SimCLR (Chen et al. 2020): NT-Xent between the two views of each image against the rest of the batch
//! (the loss itself is the pure function in `simclr_loss.rs`).
use tch::Tensor;

use super::{near_uniform, Method, Objective, ObjectiveLoss, StepContext};
use crate::augment::CropRecipe;
use crate::error::{Error, Result};
use crate::model::swav::{SwavModel, SwavOutput};
use crate::train::config::TrainConfig;
use crate::train::simclr_loss::simclr_loss;

/// SimCLR's defaults: SwAV's as in `TrainConfig::default`, with two views (Chen et al. 2020): one group of 2
/// crops at the large crop size with SwAV's large-crop scales, assigned as a pair.
pub fn defaults() -> TrainConfig {
    let swav = TrainConfig::default();
    TrainConfig {
        method: Method::Simclr,
        crops: two_views(&swav.crops, swav.crops.min_scale_crops[0]),
        crops_for_assign: vec![0, 1],
        // SwAV's feature queue; this method has none
        queue_length: 0,
        ..swav
    }
}

/// Two views in one group at the first group's size, from `min_scale` to the first group's max scale,
/// with the rest of `recipe` (jitter, grayscale, blur) as it is.
pub fn two_views(recipe: &CropRecipe, min_scale: f64) -> CropRecipe {
    CropRecipe {
        nmb_crops: vec![2],
        size_crops: vec![recipe.size_crops[0]],
        min_scale_crops: vec![min_scale],
        max_scale_crops: vec![recipe.max_scale_crops[0]],
        ..recipe.clone()
    }
}

/// Exactly two views: the loss pairs view 1 with view 2.
pub fn validate(cfg: &TrainConfig, bad: &dyn Fn(&str, String) -> Error) -> Result<()> {
    let v = cfg.total_crops();
    if v != 2 {
        return Err(bad(
            "nmb_crops",
            format!("{} uses exactly 2 views, got {v} crops", cfg.method),
        ));
    }
    Ok(())
}

pub struct Simclr {
    temperature: f64,
}

impl Simclr {
    pub fn new(cfg: &TrainConfig) -> Self {
        Simclr {
            temperature: cfg.temperature,
        }
    }
}

impl Objective for Simclr {
    fn method(&self) -> Method {
        Method::Simclr
    }

    fn loss(
        &mut self,
        ctx: &StepContext,
        _student: &SwavModel,
        _crops: &[Tensor],
        out: &SwavOutput,
    ) -> Result<ObjectiveLoss> {
        let bs = ctx.batch;
        let z1 = out.embedding.narrow(0, 0, bs);
        let z2 = out.embedding.narrow(0, bs, bs);
        Ok(ObjectiveLoss::plain(simclr_loss(
            &z1,
            &z2,
            self.temperature,
        )))
    }

    /// NT-Xent is a cross-entropy over the 2B − 1 other embeddings: uniform similarities give ln(2B − 1).
    fn normaliser(&self, batch: i64) -> (f64, &'static str) {
        (((2 * batch - 1) as f64).ln(), "ln(2B-1)")
    }

    fn collapse_advice(&self) -> &'static str {
        "training looks collapsed (loss ≈ ln(2B − 1): positives no closer than negatives). Try a lower \
         base_lr, a longer warm-up (warmup_epochs) or a larger temperature."
    }

    fn collapsed(&self, ratio: f64, _top_share: Option<f64>, _l: &ObjectiveLoss) -> bool {
        near_uniform(ratio)
    }
}
