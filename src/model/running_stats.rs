//! Batch-norm running statistics kept aside before a forward pass in train mode, so a step that is dropped
//! (a non-finite loss) leaves them as they were: the student's in the trainer, a momentum encoder's in MoCo
//! and DINO.
use tch::{nn::VarStore, Tensor};

/// Copies of every running mean and variance of a VarStore, beside the live tensors they came from.
#[derive(Debug, Default)]
pub struct RunningStats(Vec<(Tensor, Tensor)>);

impl RunningStats {
    /// Copies of `vs`'s batch-norm buffers (tch's `running_mean` and `running_var`, its only
    /// non-trainable variables in these models).
    pub fn save(vs: &VarStore) -> Self {
        RunningStats(
            vs.variables()
                .into_iter()
                .filter(|(n, _)| n.contains("running_"))
                .map(|(_, v)| {
                    let c = v.copy();
                    (v, c)
                })
                .collect(),
        )
    }

    /// Puts the saved values back into the live tensors.
    pub fn restore(self) {
        tch::no_grad(|| {
            for (mut v, saved) in self.0 {
                v.copy_(&saved);
            }
        });
    }
}
