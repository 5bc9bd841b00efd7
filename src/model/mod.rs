//! Backbones (torchvision parameter names), projector and prototypes.
