//! Analyses over embeddings Parquet files: collapse across crops, spectrum, alignment/uniformity, invariance, prototypes, kNN.
pub(crate) mod analyses;
pub mod backgrounds;
pub mod blocks;
pub mod budget;
pub mod collapse;
#[cfg(test)]
mod determinism_tests;
pub mod embed;
pub mod embeddings;
pub mod invariance;
pub mod invariance_sets;
pub mod knn;
pub mod linear;
pub mod name_that_dataset;
pub mod paired;
pub mod parquet_footer;
pub mod prototypes;
pub mod reduce;
pub mod run;
pub mod spectrum;
pub mod stats;
pub(crate) mod table;
pub mod uniformity;
