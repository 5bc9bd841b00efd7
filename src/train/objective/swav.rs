//! SwAV (Caron et al. 2020; main_swav.py's train loop): codes of the `crops_for_assign` crops by Sinkhorn
//! (with the feature queue once it is on), predicted from every other crop by the swapped-prediction loss.
use std::time::Instant;

use tch::{Device, Kind, Tensor};

use super::{near_uniform, Method, Objective, ObjectiveLoss, StepContext, COLLAPSE_TOP_SHARE};
use crate::error::Result;
use crate::model::swav::{SwavModel, SwavOutput};
use crate::train::config::TrainConfig;
use crate::train::queue::Queue;
use crate::train::sinkhorn::sinkhorn;
use crate::train::swav_loss::swav_loss;

/// Checkpoint name of the queue (unchanged since the first checkpoints, so those still resume).
pub const QUEUE_KEY: &str = "queue.features";

pub struct Swav {
    crops_for_assign: Vec<usize>,
    temperature: f64,
    epsilon: f64,
    sinkhorn_iterations: usize,
    queue_length: i64,
    epoch_queue_starts: usize,
    feat_dim: i64,
    k: i64,
    device: Device,
    queue: Option<Queue>,
    /// This step's embeddings of the assignment crops, pushed once the step is known to be good.
    pending: Vec<(usize, Tensor)>,
}

impl Swav {
    pub fn new(cfg: &TrainConfig, device: Device) -> Self {
        Swav {
            crops_for_assign: cfg.crops_for_assign.clone(),
            temperature: cfg.temperature,
            epsilon: cfg.epsilon,
            sinkhorn_iterations: cfg.sinkhorn_iterations,
            queue_length: cfg.queue_length,
            epoch_queue_starts: cfg.epoch_queue_starts,
            feat_dim: cfg.feat_dim,
            k: cfg.nmb_prototypes.first().copied().unwrap_or(1),
            device,
            queue: None,
            pending: Vec::new(),
        }
    }

    fn new_queue(&self) -> Queue {
        Queue::new(
            self.crops_for_assign.len(),
            self.queue_length,
            self.feat_dim,
            self.device,
        )
    }
}

impl Objective for Swav {
    fn method(&self) -> Method {
        Method::Swav
    }

    fn loss(
        &mut self,
        ctx: &StepContext,
        student: &SwavModel,
        _crops: &[Tensor],
        out: &SwavOutput,
    ) -> Result<ObjectiveLoss> {
        // main_swav.py: the queue is built at epoch_queue_starts and kept from then on
        if self.queue.is_none() && self.queue_length > 0 && ctx.epoch >= self.epoch_queue_starts {
            self.queue = Some(self.new_queue());
        }
        let bs = ctx.batch;
        let v_total = out.embedding.size()[0] / bs;
        let mut sinkhorn_seconds = 0.0;
        let mut codes = Vec::new();
        let mut q_per_head: Vec<Vec<Tensor>> = (0..out.scores.len()).map(|_| Vec::new()).collect();
        self.pending.clear();
        for (i, &c) in self.crops_for_assign.iter().enumerate() {
            let use_queue = self.queue.as_mut().is_some_and(|q| q.ready(i));
            for (h, scores) in out.scores.iter().enumerate() {
                let q = tch::no_grad(|| {
                    let mut s = scores.narrow(0, c as i64 * bs, bs).detach(); // [B, K]
                    if use_queue {
                        if let Some(queue) = &self.queue {
                            let w = &student.prototypes.heads[h].ws; // [K, D]
                            let qs = queue.features.get(i as i64).matmul(&w.tr()); // [L, K]
                            s = Tensor::cat(&[s, qs], 0);
                        }
                    }
                    let t0 = Instant::now();
                    let q = sinkhorn(&s, self.epsilon, self.sinkhorn_iterations).narrow(0, 0, bs);
                    sinkhorn_seconds += t0.elapsed().as_secs_f64();
                    q
                });
                if h == 0 {
                    codes.push(q.argmax(1, false));
                }
                q_per_head[h].push(q);
            }
            if self.queue.is_some() {
                self.pending
                    .push((i, out.embedding.narrow(0, c as i64 * bs, bs).detach()));
            }
        }
        let mut loss = Tensor::zeros([], (Kind::Float, ctx.device));
        for (h, scores) in out.scores.iter().enumerate() {
            let per_crop: Vec<Tensor> =
                (0..v_total).map(|v| scores.narrow(0, v * bs, bs)).collect();
            loss += swav_loss(
                &per_crop,
                &q_per_head[h],
                &self.crops_for_assign,
                self.temperature,
            );
        }
        let loss = loss / out.scores.len() as f64;
        Ok(ObjectiveLoss {
            codes: Some(Tensor::cat(&codes, 0)),
            sinkhorn_seconds,
            ..ObjectiveLoss::plain(loss)
        })
    }

    fn rollback(&mut self) {
        self.pending.clear();
    }

    fn after_step(&mut self, _ctx: &StepContext) {
        if let Some(queue) = self.queue.as_mut() {
            for (i, z) in self.pending.drain(..) {
                queue.push(i, &z);
            }
        }
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        self.queue
            .iter()
            .map(|q| (QUEUE_KEY.to_string(), q.features.shallow_clone()))
            .collect()
    }

    fn prepare_restore(&mut self, saved: &dyn Fn(&str) -> bool, queue_in_use: bool) {
        if saved(QUEUE_KEY) {
            let mut q = self.new_queue();
            q.in_use = queue_in_use;
            self.queue = Some(q);
        }
    }

    fn needs_full_batches(&self) -> bool {
        self.queue_length > 0
    }

    fn queue_in_use(&self) -> bool {
        self.queue.as_ref().is_some_and(|q| q.in_use)
    }

    fn normaliser(&self, _batch: i64) -> (f64, &'static str) {
        ((self.k as f64).ln(), "ln K")
    }

    fn collapse_advice(&self) -> &'static str {
        crate::train::COLLAPSE_ADVICE
    }

    fn collapsed(&self, ratio: f64, top_share: Option<f64>, _l: &ObjectiveLoss) -> bool {
        near_uniform(ratio) || top_share.is_some_and(|t| t > COLLAPSE_TOP_SHARE)
    }
}
