//! `biaslab datasets compose`: build the controlled object-centric / scene pair (with COCO boxes, masks and
//! instance-held-out train/test splits) from object cut-outs and real scene backgrounds.
use std::path::PathBuf;
use std::process::ExitCode;

use crate::data::compose::{compose, ComposeConfig, ObjectBackground};
use crate::data::index::resolve_data_dir;

#[derive(Debug, clap::Args)]
pub struct ComposeArgs {
    #[command(flatten)]
    pub dirs: super::DataDirArgs,
    /// Normalised dataset of RGBA cut-outs (alpha = object mask): a name under the data dir, or a directory.
    #[arg(long, default_value = "tuxpaint-stamps")]
    pub objects: String,
    /// Scene datasets used as backgrounds, comma-separated (names or directories).
    #[arg(long, value_delimiter = ',', default_value = "mate-backgrounds")]
    pub backgrounds: Vec<String>,
    /// Object-centric images in total (train + test).
    #[arg(long, default_value_t = 1000)]
    pub n_object: usize,
    /// Scene images in total (train + test).
    #[arg(long, default_value_t = 1000)]
    pub n_scene: usize,
    /// Output side in pixels (square).
    #[arg(long, default_value_t = 224)]
    pub size: u32,
    /// Seed of every random choice (per image: seed, split, index).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Share of each category's cut-outs (and of the images) held out as the test split.
    #[arg(long, default_value_t = 0.2)]
    pub test_fraction: f64,
    /// How object-centric images get their background: `flat-or-blur` (a flat colour or a heavily blurred
    /// background crop, as every set before algorithm version 2) or `sharp-crops` (sharp background crops,
    /// randomly flipped and hue-rotated, so the background is no shortcut shared with the scenes).
    #[arg(long, value_enum, default_value_t = ObjectBackground::FlatOrBlur)]
    pub object_background: ObjectBackground,
    /// Scene datasets whose images serve as object-centric backgrounds, comma-separated (default: those
    /// of --backgrounds).
    #[arg(long, value_delimiter = ',')]
    pub object_backgrounds: Option<Vec<String>>,
    /// Output datasets are named `<prefix>-{objects,scenes}-{train,test}`.
    #[arg(long, default_value = "compose")]
    pub prefix: String,
    /// Where to write the datasets (default: the data dir).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Rebuild even if the outputs exist.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: &ComposeArgs) -> anyhow::Result<ExitCode> {
    let data_dir = resolve_data_dir(args.dirs.data_dir.as_deref());
    let out = args.out.clone().unwrap_or_else(|| data_dir.clone());
    let cfg = ComposeConfig {
        objects: args.objects.clone(),
        backgrounds: args.backgrounds.clone(),
        n_object: args.n_object,
        n_scene: args.n_scene,
        size: args.size,
        seed: args.seed,
        test_fraction: args.test_fraction,
        prefix: args.prefix.clone(),
        object_background: args.object_background,
        object_backgrounds: args.object_backgrounds.clone(),
        force: args.force,
    };
    let summary = compose(&data_dir, &out, &cfg)?;
    if summary.already_present {
        for s in &summary.sets {
            println!(
                "{}: already present at {} (use --force to rebuild)",
                s.name,
                s.dir.display()
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "cut-outs: {} train / {} test in {} categories; backgrounds: {} (scenes), {} (objects, {})",
        summary.n_cutouts_train,
        summary.n_cutouts_test,
        summary.n_categories,
        summary.n_backgrounds,
        summary.n_object_backgrounds,
        cfg.object_background
    );
    for s in &summary.sets {
        println!(
            "{}: {} images, {} boxes → {}",
            s.name,
            s.n_images,
            s.n_annotations,
            s.dir.display()
        );
    }
    for s in &summary.skipped {
        eprintln!("skipped {}: {}", s.path.display(), s.reason);
    }
    // Skipped inputs are listed and counted, and the run goes on (same contract as the loader): the
    // outputs are complete for the inputs that could be read.
    if !summary.skipped.is_empty() {
        eprintln!("{} input file(s) skipped", summary.skipped.len());
    }
    Ok(ExitCode::SUCCESS)
}
