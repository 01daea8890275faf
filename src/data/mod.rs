//! Datasets: everything between files on disk and a batch tensor.

pub mod image;
