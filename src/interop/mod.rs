//! Interoperability with the PyTorch world: reading `torch.save` checkpoints without Python and importing
//! torchvision / SwAV weights as biaslab runs.
pub mod import;
pub mod pickle;
pub mod torch_file;
