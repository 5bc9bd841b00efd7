//! Analyses over embeddings Parquet files: collapse across crops, spectrum, alignment/uniformity, invariance, prototypes, kNN.
