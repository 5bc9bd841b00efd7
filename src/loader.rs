//! Rayon batches → tch tensors: the only place data meets tch.
//!
//! An epoch is a seeded permutation of the samples cut into batches. A producer thread decodes and augments
//! each batch in a rayon pool of `threads` workers, stacks every crop position into one `[B, 3, S, S]` f32
//! tensor and hands it over a bounded channel of `prefetch` batches: memory is bounded by batch size ×
//! (prefetch + 2), never by dataset size. A file that fails to decode is dropped from its batch and returned
//! in `Batch::skipped` — the batch is then simply smaller (not topped up, so every epoch visits each sample
//! exactly once and batch contents do not depend on which files are bad elsewhere). A batch whose every file
//! failed is still yielded, with zero-row tensors, so its skips are reported.
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use rayon::prelude::*;
use tch::Tensor;

use crate::augment::reduction::{eval_max_factor, multicrop_max_factor};
use crate::augment::{EvalTransform, MultiCropConfig, MultiCropTransform};
use crate::data::decode::{decode_rgb, decode_rgb_reduced, DecodeLimits, PixelGrid, Reduced, Skip};
use crate::data::object_only::keep_object_only;
use crate::data::source::Sample;
use crate::error::{Error, Result};
use crate::rng::{seeded_rng, Mixing, SHUFFLE_INDEX};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderOptions {
    pub batch_size: usize,
    pub seed: u64,
    pub shuffle: bool,
    /// Drop a last batch shorter than `batch_size` (SwAV's DataLoader uses drop_last=True).
    pub drop_last: bool,
    /// Batches decoded ahead of the consumer.
    pub prefetch: usize,
    /// Rayon workers decoding and augmenting.
    pub threads: usize,
}

impl Default for LoaderOptions {
    fn default() -> Self {
        Self {
            // main_swav.py `--batch_size` default 64 (per GPU).
            batch_size: 64,
            seed: 31,
            shuffle: true,
            drop_last: true,
            prefetch: 2,
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        }
    }
}

impl LoaderOptions {
    fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::config("loader options", "batch_size", "must be ≥ 1"));
        }
        if self.threads == 0 {
            return Err(Error::config("loader options", "threads", "must be ≥ 1"));
        }
        Ok(())
    }
}

/// One batch of multi-crop views.
#[derive(Debug)]
pub struct Batch {
    /// One `[B, 3, S, S]` f32 tensor per crop, in `nmb_crops` order (group 0's crops first).
    pub crops: Vec<Tensor>,
    /// Indices into the loader's samples, row order of every tensor.
    pub indices: Vec<usize>,
    /// Files of this batch that could not be used.
    pub skipped: Vec<Skip>,
}

/// One batch of evaluation images.
#[derive(Debug)]
pub struct EvalBatch {
    /// `[B, 3, S, S]` f32.
    pub images: Tensor,
    pub indices: Vec<usize>,
    pub skipped: Vec<Skip>,
}

fn build_pool(threads: usize) -> Result<Arc<rayon::ThreadPool>> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("biaslab-loader-{i}"))
        .build()
        .map(Arc::new)
        .map_err(|e| Error::Invalid(format!("cannot start {threads} loader threads: {e}")))
}

/// Stacks equal-length CHW vectors into a `[B, 3, S, S]` tensor.
fn stack(rows: &[&[f32]], size: usize) -> Tensor {
    let mut buf = Vec::with_capacity(rows.len() * 3 * size * size);
    for r in rows {
        buf.extend_from_slice(r);
    }
    Tensor::from_slice(&buf).view([rows.len() as i64, 3, size as i64, size as i64])
}

/// Iterator over the batches of one epoch; dropping it stops the producer after its current batch.
pub struct BatchIter<T> {
    rx: Option<Receiver<T>>,
    handle: Option<JoinHandle<()>>,
}

impl<T> Iterator for BatchIter<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl<T> Drop for BatchIter<T> {
    fn drop(&mut self) {
        // Closing the channel first makes the producer's next send fail, so the join cannot deadlock.
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Runs `make` on each chunk of `order` in a producer thread, sending results through a bounded channel.
fn spawn_batches<T: Send + 'static>(
    order: Vec<usize>,
    batch_size: usize,
    drop_last: bool,
    prefetch: usize,
    make: impl Fn(&[usize]) -> T + Send + 'static,
) -> BatchIter<T> {
    let (tx, rx) = sync_channel(prefetch);
    let handle = std::thread::Builder::new()
        .name("biaslab-loader-producer".into())
        .spawn(move || {
            for chunk in order.chunks(batch_size) {
                if drop_last && chunk.len() < batch_size {
                    break;
                }
                if tx.send(make(chunk)).is_err() {
                    break; // consumer gone
                }
            }
        });
    match handle {
        Ok(h) => BatchIter {
            rx: Some(rx),
            handle: Some(h),
        },
        // The OS refused a thread: an empty epoch is the only answer an iterator can give; say so on stderr.
        Err(e) => {
            eprintln!("biaslab loader: cannot spawn producer thread: {e}");
            BatchIter {
                rx: None,
                handle: None,
            }
        }
    }
}

/// Decodes sample `s`; with `reduce`, a JPEG at the largest DCT reduction `max_factor` allows (crops are
/// drawn on the full image's frame either way, so they cover the same regions; see `augment::reduction`).
/// A sample whose path leads out of its dataset root is a skip without its file ever being opened.
fn decode_sample(
    s: &Sample,
    limits: &DecodeLimits,
    reduce: bool,
    max_factor: impl FnOnce(u32, u32) -> f64,
) -> Result<Reduced, Skip> {
    let path = s.readable_path()?;
    if reduce {
        decode_rgb_reduced(path, limits, max_factor)
    } else {
        let image = decode_rgb(path, limits)?;
        let grid = PixelGrid::full(image.width(), image.height());
        Ok(Reduced { image, grid })
    }
}

/// Multi-crop training loader (SwAV / SimCLR views).
pub struct MultiCropLoader {
    samples: Arc<Vec<Sample>>,
    transform: Arc<MultiCropTransform>,
    opts: LoaderOptions,
    limits: DecodeLimits,
    reduce: bool,
    pool: Arc<rayon::ThreadPool>,
}

impl MultiCropLoader {
    pub fn new(samples: Vec<Sample>, cfg: MultiCropConfig, opts: LoaderOptions) -> Result<Self> {
        opts.validate()?;
        let transform = MultiCropTransform::new(cfg)?;
        Ok(Self {
            samples: Arc::new(samples),
            transform: Arc::new(transform),
            pool: build_pool(opts.threads)?,
            opts,
            limits: DecodeLimits::default(),
            reduce: true,
        })
    }

    /// Replaces the default decode limits.
    pub fn with_limits(mut self, limits: DecodeLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Whether JPEGs large enough for it decode at a DCT reduction (default on; off decodes every file at
    /// full size, as `benches/loader.rs` compares).
    pub fn with_dct_reduction(mut self, on: bool) -> Self {
        self.reduce = on;
        self
    }

    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    pub fn options(&self) -> &LoaderOptions {
        &self.opts
    }

    pub fn config(&self) -> &MultiCropConfig {
        self.transform.config()
    }

    /// Batches per epoch (before skips).
    pub fn num_batches(&self) -> usize {
        let (n, b) = (self.samples.len(), self.opts.batch_size);
        if self.opts.drop_last {
            n / b
        } else {
            n.div_ceil(b)
        }
    }

    /// The sample order of `epoch`: a permutation seeded by (seed, epoch), or 0..n without shuffle.
    pub fn order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.samples.len()).collect();
        if self.opts.shuffle {
            order.shuffle(&mut seeded_rng(
                Mixing::SplitMixChain,
                self.opts.seed,
                epoch as u64,
                SHUFFLE_INDEX,
            ));
        }
        order
    }

    /// Decodes and augments sample `index` as epoch `epoch` would (CHW vectors per crop).
    pub fn load_sample(&self, epoch: usize, index: usize) -> Result<Vec<Vec<f32>>, Skip> {
        load_one(
            &self.samples,
            &self.transform,
            &self.limits,
            self.reduce,
            self.opts.seed,
            epoch,
            index,
        )
    }

    /// The batches of `epoch`, decoded in the background.
    pub fn epoch(&self, epoch: usize) -> BatchIter<Batch> {
        let (samples, transform, limits, pool) = (
            self.samples.clone(),
            self.transform.clone(),
            self.limits.clone(),
            self.pool.clone(),
        );
        let (seed, reduce) = (self.opts.seed, self.reduce);
        let sizes: Vec<usize> = transform
            .config()
            .crop_sizes()
            .into_iter()
            .map(|s| s as usize)
            .collect();
        spawn_batches(
            self.order(epoch),
            self.opts.batch_size,
            self.opts.drop_last,
            self.opts.prefetch,
            move |chunk| {
                let results: Vec<_> = pool.install(|| {
                    chunk
                        .par_iter()
                        .map(|&i| {
                            let r = load_one(&samples, &transform, &limits, reduce, seed, epoch, i);
                            (i, r)
                        })
                        .collect()
                });
                let mut indices = Vec::with_capacity(chunk.len());
                let mut views = Vec::with_capacity(chunk.len());
                let mut skipped = Vec::new();
                for (i, r) in results {
                    match r {
                        Ok(v) => {
                            indices.push(i);
                            views.push(v);
                        }
                        Err(s) => skipped.push(s),
                    }
                }
                let crops = sizes
                    .iter()
                    .enumerate()
                    .map(|(k, &s)| {
                        stack(
                            &views.iter().map(|v| v[k].as_slice()).collect::<Vec<_>>(),
                            s,
                        )
                    })
                    .collect();
                Batch {
                    crops,
                    indices,
                    skipped,
                }
            },
        )
    }
}

fn load_one(
    samples: &[Sample],
    transform: &MultiCropTransform,
    limits: &DecodeLimits,
    reduce: bool,
    seed: u64,
    epoch: usize,
    index: usize,
) -> Result<Vec<Vec<f32>>, Skip> {
    let s = &samples[index];
    let d = decode_sample(s, limits, reduce, |w, h| {
        multicrop_max_factor(transform.config(), w, h, s.bbox)
    })?;
    let mut rng = seeded_rng(Mixing::SplitMixChain, seed, epoch as u64, index as u64);
    Ok(transform.apply_on_grid(&d.image, &d.grid, s.bbox, &mut rng))
}

/// Deterministic evaluation loader (no shuffle, no randomness, keeps the last short batch).
pub struct EvalLoader {
    samples: Arc<Vec<Sample>>,
    transform: EvalTransform,
    batch_size: usize,
    prefetch: usize,
    limits: DecodeLimits,
    reduce: bool,
    /// Object-only crops: pixels outside each box's object mask become the neutral fill.
    object_only: bool,
    pool: Arc<rayon::ThreadPool>,
}

impl EvalLoader {
    pub fn new(
        samples: Vec<Sample>,
        transform: EvalTransform,
        batch_size: usize,
        threads: usize,
    ) -> Result<Self> {
        LoaderOptions {
            batch_size,
            threads,
            ..LoaderOptions::default()
        }
        .validate()?;
        if transform.size == 0 {
            return Err(Error::config("eval transform", "size", "must be ≥ 1"));
        }
        Ok(Self {
            samples: Arc::new(samples),
            transform,
            batch_size,
            prefetch: 2,
            limits: DecodeLimits::default(),
            reduce: true,
            object_only: false,
            pool: build_pool(threads)?,
        })
    }

    /// Object-only crops (context control): each sample's pixels outside its object mask are replaced by
    /// the neutral fill before the box is cut; a sample without a usable mask is skipped with the reason.
    /// Masks live on the full image's grid, so such images are decoded at full size.
    pub fn with_object_only(mut self, on: bool) -> Self {
        self.object_only = on;
        self
    }

    /// Whether JPEGs large enough for it decode at a DCT reduction (default on): the centre square's side
    /// stays at least `transform.size` source pixels.
    pub fn with_dct_reduction(mut self, on: bool) -> Self {
        self.reduce = on;
        self
    }

    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// All samples in order, `batch_size` at a time.
    pub fn batches(&self) -> BatchIter<EvalBatch> {
        let (samples, t, limits, pool, object_only) = (
            self.samples.clone(),
            self.transform,
            self.limits.clone(),
            self.pool.clone(),
            self.object_only,
        );
        let reduce = self.reduce && !object_only;
        let size = t.size as usize;
        spawn_batches(
            (0..samples.len()).collect(),
            self.batch_size,
            false,
            self.prefetch,
            move |chunk| {
                let results: Vec<_> = pool.install(|| {
                    chunk
                        .par_iter()
                        .map(|&i| {
                            let s = &samples[i];
                            let max_factor = |w, h| eval_max_factor(t.size, w, h, s.bbox);
                            let r =
                                decode_sample(s, &limits, reduce, max_factor).and_then(|mut d| {
                                    if object_only {
                                        keep_object_only(&mut d.image, s, &limits)?;
                                    }
                                    Ok(t.apply_on_grid(&d.image, &d.grid, s.bbox))
                                });
                            (i, r)
                        })
                        .collect()
                });
                let (mut indices, mut rows, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
                for (i, r) in results {
                    match r {
                        Ok(v) => {
                            indices.push(i);
                            rows.push(v);
                        }
                        Err(s) => skipped.push(s),
                    }
                }
                EvalBatch {
                    images: stack(&rows.iter().map(Vec::as_slice).collect::<Vec<_>>(), size),
                    indices,
                    skipped,
                }
            },
        )
    }
}
