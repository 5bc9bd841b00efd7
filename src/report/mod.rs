//! Report outputs: atomic Parquet/CSV writers, plots and summaries.
pub mod io;
