//! Rayon batches → tch tensors: the only place data meets tch.
