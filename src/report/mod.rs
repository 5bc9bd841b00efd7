//! Report outputs: atomic Parquet/CSV writers, plots and summaries.
pub mod columns;
pub mod io;
pub mod names;
pub mod owned;
pub mod plot;
pub mod summary;
