//! SwAV's augmentations as pure functions of an image and an RNG, and the multi-crop groups built from them.
