//! What a run is: its training config (config.json) and its inputs (inputs.json: the resolved data
//! directories and the sampling that picks the images). `train --resume` compares what it was asked for
//! with these and refuses any difference that would change the trajectory, naming it, so a resumed run
//! never continues another run's weights on other data or another recipe.
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::report::io::write_bytes_atomic;
use crate::train::TrainConfig;

/// The run's inputs, beside config.json.
pub const INPUTS_FILE: &str = "inputs.json";

/// Config fields a resume may change: where it runs (`device`; on the CPU the result is the same) and
/// what the loader derives from the data (`steps_per_epoch`, checked against the data separately).
const RESUMABLE_FIELDS: [&str; 2] = ["device", "steps_per_epoch"];

/// Everything besides the config that decides which images a step sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunInputs {
    /// Resolved dataset directories, in `--data` order.
    pub data: Vec<String>,
    pub object_crops: bool,
    pub max_images: Option<usize>,
}

impl RunInputs {
    pub fn write(&self, run_dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::Invalid(format!("serialising run inputs: {e}")))?;
        write_bytes_atomic(&run_dir.join(INPUTS_FILE), &json)
    }

    /// The saved inputs; `None` for runs written before they were saved.
    pub fn read(run_dir: &Path) -> Result<Option<RunInputs>> {
        crate::run_dir::read_json_if_present(&run_dir.join(INPUTS_FILE))
    }

    /// One line per difference between the saved inputs and `asked` (empty when they agree).
    pub fn differences(&self, asked: &RunInputs) -> Vec<String> {
        let mut out = Vec::new();
        if self.data != asked.data {
            out.push(format!(
                "--data: the run trained on {}, asked for {}",
                self.data.join(" + "),
                asked.data.join(" + ")
            ));
        }
        if self.object_crops != asked.object_crops {
            out.push(format!(
                "--object-crops: the run used {}, asked for {}",
                self.object_crops, asked.object_crops
            ));
        }
        if self.max_images != asked.max_images {
            let show = |v: Option<usize>| v.map_or("all images".to_string(), |n| n.to_string());
            out.push(format!(
                "--max-images: the run used {}, asked for {}",
                show(self.max_images),
                show(asked.max_images)
            ));
        }
        out
    }
}

/// Fields of `asked` that differ from the run's `saved` config, one `field: run has A, asked for B` line
/// each. `only` limits the comparison to those fields (the flags given on the command line); `None`
/// compares every field but `RESUMABLE_FIELDS` (a config file was given).
pub fn config_differences(
    saved: &TrainConfig,
    asked: &TrainConfig,
    only: Option<&[&str]>,
) -> Result<Vec<String>> {
    let to_map = |c: &TrainConfig| match serde_json::to_value(c) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::Invalid(
            "a config serialises to a JSON object".into(),
        )),
        Err(e) => Err(Error::Invalid(format!("serialising config: {e}"))),
    };
    // What the asked config becomes on the run's data (a MoCo queue cut to an epoch's images), as the run
    // itself was fitted when it started.
    let mut fitted = asked.clone();
    fitted.fit_to_data(saved.steps_per_epoch);
    let (a, b) = (to_map(saved)?, to_map(&fitted)?);
    let mut out = Vec::new();
    for (k, va) in &a {
        let wanted = match only {
            Some(keys) => keys.contains(&k.as_str()),
            None => !RESUMABLE_FIELDS.contains(&k.as_str()),
        };
        let vb = b.get(k).unwrap_or(&serde_json::Value::Null);
        if wanted && !same_value(va, vb) {
            out.push(format!("{k}: the run has {va}, asked for {vb}"));
        }
    }
    Ok(out)
}

/// Equality of config values, with floats equal within a relative 1e-12: config.json is read back by
/// serde_json's default float parser, which may miss the written value by an ulp.
fn same_value(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        // integers (seeds, counts) compare exactly
        (Value::Number(x), Value::Number(y)) if x.is_f64() && y.is_f64() => {
            match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) if x.is_finite() && y.is_finite() => {
                    (x - y).abs() <= 1e-12 * x.abs().max(y.abs()) || x == y
                }
                _ => x == y,
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_value(x, y))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::Method;

    #[test]
    fn config_differences_name_each_field_and_ignore_the_device() {
        let saved = TrainConfig::default();
        let asked = TrainConfig {
            epochs: saved.epochs + 1,
            method: Method::Simclr,
            device: "cuda".into(),
            steps_per_epoch: 99,
            ..saved.clone()
        };
        let d = config_differences(&saved, &asked, None).unwrap();
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d.iter().any(|l| l.starts_with("epochs: ")), "{d:?}");
        assert!(
            d.iter()
                .any(|l| l.contains("\"swav\"") && l.contains("\"simclr\"")),
            "{d:?}"
        );
        let d = config_differences(&saved, &asked, Some(&["epochs"])).unwrap();
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(config_differences(&saved, &saved, None).unwrap().is_empty());
        // an ulp from a JSON round trip is no difference; a real change is
        let ulp = TrainConfig {
            epsilon: f64::from_bits(saved.epsilon.to_bits() + 1),
            ..saved.clone()
        };
        assert!(config_differences(&saved, &ulp, None).unwrap().is_empty());
        let other = TrainConfig {
            epsilon: saved.epsilon * 1.5,
            ..saved.clone()
        };
        assert_eq!(config_differences(&saved, &other, None).unwrap().len(), 1);
    }

    #[test]
    fn inputs_round_trip_and_differences_name_the_flag() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(RunInputs::read(d.path()).unwrap(), None);
        let a = RunInputs {
            data: vec!["/d/shots/ds/imgs".into()],
            object_crops: false,
            max_images: None,
        };
        a.write(d.path()).unwrap();
        assert_eq!(RunInputs::read(d.path()).unwrap().as_ref(), Some(&a));
        let b = RunInputs {
            data: vec!["/d/shots/ds_imgs".into()],
            max_images: Some(10),
            ..a.clone()
        };
        let diff = a.differences(&b);
        assert_eq!(diff.len(), 2, "{diff:?}");
        assert!(diff[0].starts_with("--data") && diff[0].contains("ds_imgs"));
        assert!(diff[1].starts_with("--max-images"));
    }
}
