//! `cnn`: a convolutional neural network image classifier written from scratch on `ndarray`.
//!
//! # Shape legend
//! Every tensor is `f32`, batch first, in standard (row-major, contiguous) layout:
//!
//! | letter | meaning |
//! |---|---|
//! | `N` | images in the batch |
//! | `C` | channels (feature maps) |
//! | `H`, `W` | height and width in pixels |
//! | `F` | features of a flat (dense) activation |
//! | `K` | classes, the width of the softmax head |
//!
//! Convolutional activations are `N×C×H×W`, dense activations `N×F`, logits `N×K`.
//! Functions that change a shape say so on a `Shapes:` line.
//!
//! # Data flow
//! files → [`data`] → batches → [`graph`] (made of [`layers`]) → [`loss`] → gradients → [`optim`];
//! [`model_file`] stores what `graph` and `data` need to rebuild the same network and
//! preprocessing; [`commands`] wire these together and own all printing.

pub mod calibration;
pub mod checkpoint;
pub mod cli;
pub mod commands;
pub mod data;
pub mod error;
pub mod explain;
pub mod fsutil;
pub mod graph;
pub mod kernels;
pub mod layers;
pub mod loss;
pub mod metrics;
pub mod model_file;
pub mod optim;
pub mod plot;
pub mod preprocess;
pub mod rng;
pub mod schedule;
pub mod spec;
pub mod tensor;
pub mod tta;
