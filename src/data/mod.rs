//! Data acquisition and access: manifests, registry fetch, safe extraction, format readers (Qt rcc), the meme
//! renderer, the scene composer, robust decoding, and the normalised index every later stage reads.

pub mod check;
pub mod coco;
pub mod compose;
pub mod confine;
pub mod decode;
pub mod extract;
pub mod fetch;
pub mod index;
pub mod inspect;
pub mod jpeg_scaled;
pub mod kind;
pub mod manifest;
pub mod meme;
pub mod normalize;
pub mod object_only;
pub mod rcc;
pub mod segmentation;
pub mod source;

pub use index::ImageRecord;
pub use kind::DatasetKind;
