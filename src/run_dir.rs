//! The run directory contract and the weights-only [`Encoder`] over it.
//!
//! A run directory holds `config.json` (the training config, written before the first step), one
//! `checkpoint-NNNNNNNN/` directory (tensors, meta, metrics history), `latest` naming that checkpoint, and
//! for an imported run `import.json` (what came from the file). Training writes it; `embed`, `eval`,
//! `invariance` and the trainer's per-epoch kNN read it through an [`Encoder`], which holds the model
//! tensors only: the optimiser (LARS buffers), queue and metrics history stay with the trainer.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Kind, Tensor};

use crate::error::{Error, IoContext, Result};
use crate::model::config::Arch;
use crate::model::SwavModel;
use crate::train::checkpoint;
use crate::train::config::TrainConfig;

/// A checkpoint's tensors (model, LARS buffers, queue) as one safetensors file.
pub const TENSORS_FILE: &str = "state.safetensors";
/// A checkpoint's position, RNG seed and config.
pub const META_FILE: &str = "meta.json";
/// Names the run's latest checkpoint directory; a run without it has no checkpoint yet.
pub const LATEST_FILE: &str = "latest";
/// The training config, in the run directory (and inside each checkpoint's meta).
pub const CONFIG_FILE: &str = "config.json";
/// Per-step metrics of every step the checkpoint covers (`metrics::history_frame`).
pub const HISTORY_FILE: &str = "history.parquet";
/// What an imported run was made from ([`ImportRecord`]); absent for a run biaslab trained.
pub const IMPORT_FILE: &str = "import.json";
/// Prefix of the model's tensors in a checkpoint (the others are `lars.*` and the queue).
pub const MODEL_PREFIX: &str = "model.";

/// Whether `run_dir` holds a checkpoint (training can resume from it, an encoder can open it).
pub fn has_checkpoint(run_dir: &Path) -> bool {
    run_dir.join(LATEST_FILE).exists()
}

/// Directory of the latest checkpoint in `run_dir`. A folder that is missing, or has no `latest`, is
/// "not a run directory", said once about the folder the user named rather than as an I/O error on a file
/// inside it they never named.
pub fn latest_dir(run_dir: &Path) -> Result<PathBuf> {
    let p = run_dir.join(LATEST_FILE);
    let name = match std::fs::read_to_string(&p) {
        Ok(name) => name,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(not_a_run_dir(run_dir));
        }
        Err(e) => return Err(Error::io(&p, e)),
    };
    let name = name.trim();
    if name.is_empty() || name.contains('/') || name.contains("..") {
        return Err(Error::format(
            &p,
            format!("not a checkpoint name: {name:?}"),
        ));
    }
    Ok(run_dir.join(name))
}

/// The error for a folder without a checkpoint: what is missing, and what writes one.
fn not_a_run_dir(run_dir: &Path) -> Error {
    let why = if run_dir.is_dir() {
        format!("no `{LATEST_FILE}` checkpoint file in it")
    } else if run_dir.exists() {
        "not a directory".to_string()
    } else {
        "no such directory".to_string()
    };
    Error::format(
        run_dir,
        format!(
            "not a run directory ({why}; `biaslab train --out DIR` or `biaslab import` writes one)"
        ),
    )
}

/// What an imported run was made from; `embed` reads it to refuse layers the file did not have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportRecord {
    pub source: PathBuf,
    pub sha256: String,
    pub format: String,
    pub nested_under: Option<String>,
    pub arch: Arch,
    pub backbone_tensors: usize,
    /// Whether `projection_head.*` came from the file (otherwise it is randomly initialised and unusable).
    pub projection_head: bool,
    /// Whether `prototypes.*` came from the file (otherwise no prototype codes are written).
    pub prototypes: bool,
    /// File entries no part of the model used (torchvision's classifier `fc.*`…).
    pub unused: Vec<String>,
    /// BatchNorm's `num_batches_tracked` counters: only used by PyTorch when BN momentum is None; skipped.
    pub bn_batch_counters: usize,
    pub non_tensor_entries: usize,
    /// What `--allow-unexpected` let through: non-tensor entries and tensors no part of the model took
    /// (besides `fc.*`); empty for an import that needed no such permission.
    #[serde(default)]
    pub unexpected: Vec<String>,
}

impl ImportRecord {
    /// The record of `run_dir`, or `None` for a run biaslab trained.
    pub fn read(run_dir: &Path) -> Result<Option<ImportRecord>> {
        read_json_if_present(&run_dir.join(IMPORT_FILE))
    }
}

/// A JSON file of the run contract that may be absent (`import.json`, `inputs.json`, `config.json` before
/// the first step): `None` when it is not there, an error naming the file when it does not parse.
pub fn read_json_if_present<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    if !path.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(path).ctx_io(path)?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::format(path, e.to_string()))
}

/// Which representation an encoder returns (also the `--layer` flag of `embed`, `eval` and `invariance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EmbedLayer {
    /// Pooled backbone features (what linear probes and kNN use).
    Backbone,
    /// The projection head's L2-normalised output (the space SwAV's prototypes live in).
    Projector,
}

/// A run's model opened for inference: the model tensors of its latest checkpoint on one device, with the
/// run's config and import record. Use it through [`Encoder::view`].
pub struct Encoder {
    run_dir: PathBuf,
    cfg: TrainConfig,
    device: Device,
    step: usize,
    import: Option<ImportRecord>,
    // Owns the variables `model` reads; dropping it would free them.
    _vs: VarStore,
    model: SwavModel,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("run_dir", &self.run_dir)
            .field("device", &self.device)
            .field("step", &self.step)
            .finish()
    }
}

impl Encoder {
    /// Opens the latest checkpoint of `run_dir` on `device`: builds the model its config describes and
    /// copies the `model.*` tensors in (every variable must be there, with its shape); the LARS buffers and
    /// queue in the file are dropped unread by any model.
    pub fn open(run_dir: &Path, device: Device) -> Result<Encoder> {
        let (meta, tensors) = checkpoint::load(run_dir)?;
        let origin = latest_dir(run_dir)?;
        meta.config.validate(&origin.display().to_string())?;
        let import = ImportRecord::read(run_dir)?;
        // Seeded as the trainer seeds it, so a variable the copy below did not reach could not differ.
        let (vs, model) =
            SwavModel::new_seeded(&meta.config.model_config(), meta.config.seed, device);
        let dst: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .map(|(n, v)| (format!("{MODEL_PREFIX}{n}"), v))
            .collect();
        checkpoint::copy_into(&origin, &tensors, &dst)?;
        Ok(Encoder {
            run_dir: run_dir.to_path_buf(),
            cfg: meta.config,
            device,
            step: meta.step,
            import,
            _vs: vs,
            model,
        })
    }

    /// The borrowed encoder every embedding function takes (the trainer hands out the same type).
    pub fn view(&self) -> EncoderView<'_> {
        EncoderView {
            cfg: &self.cfg,
            model: &self.model,
            device: self.device,
            step: self.step,
            // Prototypes and projector are trained unless an import's file lacked them.
            projector: self.import.as_ref().is_none_or(|r| r.projection_head),
            prototypes: self.import.as_ref().is_none_or(|r| r.prototypes),
        }
    }

    /// The run's import record (`None` for a run biaslab trained).
    pub fn import_record(&self) -> Option<&ImportRecord> {
        self.import.as_ref()
    }

    /// The run directory it was opened from.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }
}

/// A model ready to embed: an opened run's ([`Encoder::view`]) or a trainer's current weights
/// (`Trainer::encoder`). Forward passes run in eval mode under `no_grad`.
#[derive(Debug, Clone, Copy)]
pub struct EncoderView<'a> {
    cfg: &'a TrainConfig,
    model: &'a SwavModel,
    device: Device,
    step: usize,
    projector: bool,
    prototypes: bool,
}

impl<'a> EncoderView<'a> {
    /// A view of `model` trained with `cfg` on `device` after `step` global steps (the trainer's own).
    pub fn of_trained(
        cfg: &'a TrainConfig,
        model: &'a SwavModel,
        device: Device,
        step: usize,
    ) -> Self {
        EncoderView {
            cfg,
            model,
            device,
            step,
            projector: true,
            prototypes: true,
        }
    }

    /// The run's training config.
    pub fn config(&self) -> &'a TrainConfig {
        self.cfg
    }

    /// Global steps the weights were trained for.
    pub fn step(&self) -> usize {
        self.step
    }

    /// Default eval crop: the run's largest training crop (the resolution the model saw most of).
    pub fn crop_size(&self) -> u32 {
        self.cfg
            .crops
            .size_crops
            .iter()
            .copied()
            .max()
            .unwrap_or(224) as u32
    }

    /// K of the first prototype head, from the run's config.
    pub fn n_prototypes(&self) -> Option<i64> {
        self.cfg.nmb_prototypes.first().copied()
    }

    /// Whether prototype codes mean something: SwAV and DINO train them (an import only if its file had
    /// them); a SimCLR or MoCo run's prototypes are never trained.
    pub fn has_prototypes(&self) -> bool {
        self.prototypes && self.cfg.method.trains_prototypes()
    }

    /// Refuses a layer the weights do not have: an import without a projection head has no projector.
    pub fn check_layer(&self, layer: EmbedLayer, origin: &Path) -> Result<()> {
        if layer == EmbedLayer::Projector && !self.projector {
            return Err(Error::format(
                origin,
                "imported without a projection head, so there is no projector layer (use --layer backbone)",
            ));
        }
        Ok(())
    }

    /// Embeds `images` `[N, 3, H, W]` at `layer`, on the encoder's device.
    pub fn embed(&self, images: &Tensor, layer: EmbedLayer) -> Tensor {
        tch::no_grad(|| {
            let x = images.to_device(self.device).to_kind(Kind::Float);
            let f = self.model.backbone.forward_t(&x, false); // [N, d]
            match layer {
                EmbedLayer::Backbone => f,
                EmbedLayer::Projector => self.model.head.forward_t(&f, false), // [N, feat_dim]
            }
        })
    }

    /// SwAV code of each image: argmax over the first head's prototype scores, `[N]` int64.
    pub fn prototype_argmax(&self, images: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let z = self.embed(images, EmbedLayer::Projector);
            self.model.prototypes.forward(&z)[0].argmax(1, false)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::CropRecipe;
    use crate::train::{Method, Trainer};

    /// A small-image ResNet-18 at width 4, two crop sizes, one prototype head of K = 12.
    fn tiny_cfg() -> TrainConfig {
        TrainConfig {
            crops: CropRecipe {
                nmb_crops: vec![2, 2],
                size_crops: vec![24, 16],
                ..CropRecipe::default()
            },
            crops_for_assign: vec![0, 1],
            feat_dim: 16,
            nmb_prototypes: vec![12],
            queue_length: 0,
            epoch_queue_starts: 0,
            batch_size: 6,
            steps_per_epoch: 3,
            width: 4,
            hidden_mlp: 32,
            ..Default::default()
        }
    }

    /// A trainer whose weights (a convolution, a BN statistic, the prototypes) differ from its seeded
    /// initialisation, saved as a run at `step` 7: an encoder that re-initialised instead of loading differs.
    fn saved_run(dir: &Path, cfg: TrainConfig) -> Trainer {
        let mut t = Trainer::new(cfg, Device::Cpu).unwrap();
        tch::no_grad(|| {
            for (name, mut v) in t.var_store().variables() {
                if name == "conv1.weight"
                    || name == "bn1.running_mean"
                    || name.starts_with("prototypes")
                {
                    let _ = v.g_add_scalar_(0.25);
                }
            }
        });
        t.step = 7;
        t.save_checkpoint(dir).unwrap();
        t
    }

    fn images() -> Tensor {
        tch::manual_seed(3);
        Tensor::rand([4, 3, 24, 24], (Kind::Float, Device::Cpu))
    }

    #[test]
    fn encoder_embeds_as_the_trainer_that_saved_the_run() {
        let d = tempfile::tempdir().unwrap();
        let t = saved_run(d.path(), tiny_cfg());
        assert!(has_checkpoint(d.path()));
        let enc = Encoder::open(d.path(), Device::Cpu).unwrap();
        let (a, b) = (t.encoder(), enc.view());
        let x = images();
        for layer in [EmbedLayer::Backbone, EmbedLayer::Projector] {
            assert!(a.embed(&x, layer).equal(&b.embed(&x, layer)), "{layer:?}");
        }
        assert!(a.prototype_argmax(&x).equal(&b.prototype_argmax(&x)));
        // the perturbed weights were loaded, not re-initialised from the seed
        let fresh = Trainer::new(tiny_cfg(), Device::Cpu).unwrap();
        assert!(!fresh
            .encoder()
            .embed(&x, EmbedLayer::Backbone)
            .equal(&b.embed(&x, EmbedLayer::Backbone)));
        assert_eq!(b.step(), 7);
        assert_eq!(b.crop_size(), 24);
        assert_eq!(b.n_prototypes(), Some(12));
        assert!(b.has_prototypes());
        assert!(enc.import_record().is_none());
    }

    #[test]
    fn simclr_runs_have_no_prototype_codes() {
        let d = tempfile::tempdir().unwrap();
        let cfg = TrainConfig {
            method: Method::Simclr,
            crops: CropRecipe {
                nmb_crops: vec![2],
                size_crops: vec![16],
                min_scale_crops: vec![0.14],
                max_scale_crops: vec![1.0],
                ..CropRecipe::default()
            },
            crops_for_assign: vec![0, 1],
            ..tiny_cfg()
        };
        saved_run(d.path(), cfg);
        let enc = Encoder::open(d.path(), Device::Cpu).unwrap();
        assert!(!enc.view().has_prototypes());
    }

    #[test]
    fn import_without_head_refuses_the_projector_layer() {
        let d = tempfile::tempdir().unwrap();
        saved_run(d.path(), tiny_cfg());
        let rec = ImportRecord {
            source: "r18.pth".into(),
            sha256: String::new(),
            format: "torch".into(),
            nested_under: None,
            arch: Arch::Resnet18,
            backbone_tensors: 1,
            projection_head: false,
            prototypes: false,
            unused: Vec::new(),
            bn_batch_counters: 0,
            non_tensor_entries: 0,
            unexpected: Vec::new(),
        };
        std::fs::write(
            d.path().join(IMPORT_FILE),
            serde_json::to_vec(&rec).unwrap(),
        )
        .unwrap();
        let enc = Encoder::open(d.path(), Device::Cpu).unwrap();
        assert_eq!(enc.import_record(), Some(&rec));
        let v = enc.view();
        let err = v
            .check_layer(EmbedLayer::Projector, d.path())
            .unwrap_err()
            .to_string();
        assert!(err.contains("no projector layer"), "{err}");
        v.check_layer(EmbedLayer::Backbone, d.path()).unwrap();
        assert!(!v.has_prototypes());
    }

    #[test]
    fn latest_must_name_a_checkpoint_inside_the_run() {
        let d = tempfile::tempdir().unwrap();
        assert!(!has_checkpoint(d.path()));
        let err = Encoder::open(d.path(), Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not a run directory (no `latest` checkpoint file in it"),
            "{err}"
        );
        // regression (issue 23): `embed --run runs/nope` said "runs/nope/latest: No such file or directory
        // (os error 2): No such file or directory (os error 2)"
        let nope = d.path().join("nope");
        let err = Encoder::open(&nope, Device::Cpu).unwrap_err();
        assert_eq!(
            format!("{:#}", anyhow::Error::from(err)),
            format!(
                "{}: not a run directory (no such directory; `biaslab train --out DIR` or `biaslab import` writes one)",
                nope.display()
            )
        );
        std::fs::write(d.path().join(LATEST_FILE), "../elsewhere").unwrap();
        let err = latest_dir(d.path()).unwrap_err().to_string();
        assert!(err.contains("not a checkpoint name"), "{err}");
    }
}
