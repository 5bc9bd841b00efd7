//! SwAV and SimCLR training: Sinkhorn, losses, queue, LARS, schedule, checkpoints, the trainer loop.
