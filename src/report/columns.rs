//! Column names of the analysis reports (`biaslab analyze`): stable names notebooks and the experiment
//! runner read. One constant per column; the files are named by the `FILE_*` constants.
pub const FILE_COLLAPSE: &str = "collapse";
pub const FILE_SPECTRUM: &str = "spectrum";
pub const FILE_SINGULAR_VALUES: &str = "singular_values";
pub const FILE_UNIFORMITY: &str = "uniformity";
pub const FILE_INVARIANCE: &str = "invariance";
pub const FILE_PROTOTYPES: &str = "prototypes";
pub const FILE_KNN: &str = "knn";
pub const FILE_NAME_THAT_DATASET: &str = "name_that_dataset";
pub const FILE_SUMMARY: &str = "summary.md";

// Group and provenance (every row).
/// The group key (the dataset name with the default `--group-by dataset`).
pub const DATASET: &str = "dataset";
pub const GROUP_BY: &str = "group_by";
pub const INPUT_FILE: &str = "input_file";
pub const INPUT_SHA256: &str = "input_sha256";
pub const SEED: &str = "seed";
/// Why a row's numbers are missing (bad or insufficient input), else null.
pub const NOTE: &str = "note";

// collapse
pub const N_IMAGES: &str = "n_images";
pub const N_CROPS: &str = "n_crops";
pub const S_SCENE: &str = "s_scene";
pub const S_CAT: &str = "s_cat";
pub const S_BASE: &str = "s_base";
pub const COLLAPSE_INDEX: &str = "collapse_index";
pub const COLLAPSE_INDEX_LO: &str = "collapse_index_lo";
pub const COLLAPSE_INDEX_HI: &str = "collapse_index_hi";
/// Why the collapse index is null: Δcat's interval includes 0 (issue 20); null where it is given.
pub const COLLAPSE_INDEX_NOTE: &str = "collapse_index_note";
/// Δscene = S_scene − S_base and Δcat = S_cat − S_base, the collapse index's parts, with intervals.
pub const DELTA_SCENE: &str = "delta_scene";
pub const DELTA_SCENE_LO: &str = "delta_scene_lo";
pub const DELTA_SCENE_HI: &str = "delta_scene_hi";
pub const DELTA_CAT: &str = "delta_cat";
pub const DELTA_CAT_LO: &str = "delta_cat_lo";
pub const DELTA_CAT_HI: &str = "delta_cat_hi";
/// Same-instance retrieval@1: share of crops whose object instance (`set_id`) is also in another scene and
/// whose nearest crop of another scene is that instance; Wilson interval, chance, and the queries counted.
pub const INSTANCE_AT_1: &str = "instance_at_1";
pub const INSTANCE_AT_1_LO: &str = "instance_at_1_lo";
pub const INSTANCE_AT_1_HI: &str = "instance_at_1_hi";
pub const INSTANCE_CHANCE: &str = "instance_chance";
pub const N_INSTANCE_QUERIES: &str = "n_instance_queries";
/// `all` (the crops as given) or `object-only` (a box's object pixels alone on the neutral fill).
pub const PIXELS: &str = "pixels";
/// On an object-only row: Δscene of the group's whole boxes minus Δscene of its object-only crops, with a
/// bootstrap interval (paired when both cover the same images): the part of the scene pull that came from
/// shared context rather than merged objects.
pub const CONTEXT_DELTA_SCENE: &str = "context_delta_scene";
pub const CONTEXT_DELTA_SCENE_LO: &str = "context_delta_scene_lo";
pub const CONTEXT_DELTA_SCENE_HI: &str = "context_delta_scene_hi";
pub const AUROC: &str = "auroc";
pub const AUROC_LO: &str = "auroc_lo";
pub const AUROC_HI: &str = "auroc_hi";
pub const SCENE_LEAK_AT_1: &str = "scene_leak_at_1";
pub const CODE_AGREEMENT_SCENE: &str = "code_agreement_scene";
pub const CODE_AGREEMENT_CAT: &str = "code_agreement_cat";
/// `exact` or `sampled`.
pub const PAIRS: &str = "pairs";
pub const N_PAIRS: &str = "n_pairs";
pub const N_SCENE_PAIRS: &str = "n_scene_pairs";
pub const N_CAT_PAIRS: &str = "n_cat_pairs";
pub const BOOTSTRAP_RESAMPLES: &str = "bootstrap_resamples";

// spectrum
pub const N: &str = "n";
pub const DIM: &str = "dim";
pub const RANKME: &str = "rankme";
pub const ALPHA_REQ: &str = "alpha_req";
pub const N_DEAD: &str = "n_dead";
/// min(n − 1, dim): the largest possible rank of the centred covariance; `n_dead` counts within it.
pub const RANK_CAP: &str = "rank_cap";
pub const RANK: &str = "rank";
pub const VALUE: &str = "value";

// uniformity
pub const ALIGNMENT: &str = "alignment";
pub const UNIFORMITY: &str = "uniformity";
pub const N_ALIGN_PAIRS: &str = "n_align_pairs";

// invariance
pub const TRANSFORM: &str = "transform";
pub const K: &str = "k";
pub const SCORE: &str = "score";
pub const PERCENTILE: &str = "percentile";
pub const N_SETS: &str = "n_sets";
pub const N_LABELS: &str = "n_labels";

// prototypes
pub const N_PROTOTYPES: &str = "n_prototypes";
pub const ENTROPY: &str = "entropy";
pub const PERPLEXITY_RATIO: &str = "perplexity_ratio";
pub const DEAD: &str = "dead";
/// Where K came from: `option`, `column n_prototypes` or `largest code + 1`.
pub const K_SOURCE: &str = "k_source";

// knn / name that dataset
pub const ACCURACY: &str = "accuracy";
/// 95% Wilson interval of `accuracy`.
pub const ACCURACY_LO: &str = "accuracy_lo";
pub const ACCURACY_HI: &str = "accuracy_hi";
/// Share of the most frequent class among the scored rows (always guessing it).
pub const CHANCE: &str = "chance";
/// Cross-validation folds (name that dataset).
pub const FOLDS: &str = "folds";
pub const PROTOCOL: &str = "protocol";
pub const N_QUERIES: &str = "n_queries";
pub const N_BANK: &str = "n_bank";
pub const N_CLASSES: &str = "n_classes";
pub const N_TRAIN: &str = "n_train";
pub const N_TEST: &str = "n_test";
