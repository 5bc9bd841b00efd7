//! Feature queue of past projected features of the `crops_for_assign` crops (SwAV reference), used for the
//! assignments only: small batches get enough samples for the equipartition constraint to be meaningful.
use tch::{Device, Kind, Tensor};

/// `features`: `[n_assign, queue_length, D]`, newest first. `in_use` turns on once the queue is full (the
/// reference's `use_the_queue`: the last row is non-zero) and stays on.
#[derive(Debug)]
pub struct Queue {
    pub features: Tensor,
    pub in_use: bool,
}

impl Queue {
    pub fn new(n_assign: usize, queue_length: i64, dim: i64, device: Device) -> Self {
        Queue {
            features: Tensor::zeros([n_assign as i64, queue_length, dim], (Kind::Float, device)),
            in_use: false,
        }
    }

    pub fn len(&self) -> i64 {
        self.features.size()[1]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether queued features should be used for slot `i` now (full or already in use).
    pub fn ready(&mut self, i: usize) -> bool {
        if !self.in_use {
            let last = self.features.get(i as i64).get(self.len() - 1);
            self.in_use = tch::no_grad(|| last.ne(0.0).any().int64_value(&[]) != 0);
        }
        self.in_use
    }

    /// Shifts slot `i` by B rows and puts the batch's features `[B, D]` at the front.
    pub fn push(&mut self, i: usize, batch: &Tensor) {
        tch::no_grad(|| {
            let b = batch.size()[0];
            let l = self.len();
            let mut slot = self.features.get(i as i64);
            if b >= l {
                slot.copy_(&batch.narrow(0, 0, l));
                return;
            }
            let old = slot.narrow(0, 0, l - b).copy();
            slot.narrow(0, b, l - b).copy_(&old);
            slot.narrow(0, 0, b).copy_(&batch.detach());
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Queue;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn push_shifts_newest_first_and_turns_on_when_full() {
        let mut q = Queue::new(1, 4, 1, Device::Cpu);
        let batch = |a: f32, b: f32| Tensor::from_slice(&[a, b]).reshape([2, 1]);
        q.push(0, &batch(1.0, 2.0));
        assert!(!q.ready(0), "half-full queue must not be used");
        q.push(0, &batch(3.0, 4.0));
        assert!(q.ready(0));
        let v: Vec<f32> =
            Vec::try_from(q.features.get(0).flatten(0, -1).to_kind(Kind::Float)).unwrap();
        assert_eq!(v, vec![3.0, 4.0, 1.0, 2.0]);
        q.push(0, &batch(5.0, 6.0));
        let v: Vec<f32> = Vec::try_from(q.features.get(0).flatten(0, -1)).unwrap();
        assert_eq!(v, vec![5.0, 6.0, 3.0, 4.0]);
    }
}
