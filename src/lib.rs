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
//! # Rooms
//! Arrows point down only (see `docs/ARCHITECTURE.md`):
//!
//! ```text
//! commands ──► train ──► infer ──► store ──► net ──► layers ──► kernels
//!     └──────────┴─────────┴──► data        (tensor, rng, error: everywhere)
//! ```
//!
//! - [`commands`]: the command line, one thin driver per subcommand, plots; all printing;
//! - [`train`]: optimizers, schedules, the training loop, checkpoints;
//! - [`infer`]: evaluation, test-time augmentation, calibration, metrics, explanations;
//! - [`store`]: the model file (container, typed model), atomic writes;
//! - [`net`]: the architecture format and presets, the layer graph, the loss;
//! - [`layers`]: the `Layer` trait and one file (or folder) per layer;
//! - [`kernels`]: matrix products, im2col, Winograd, transposes, sums, and their references;
//! - [`data`]: dataset readers, batching, augmentation, normalisation, digit-photo preparation.

pub mod commands;
pub mod data;
pub mod error;
pub mod infer;
pub mod kernels;
pub mod layers;
pub mod net;
pub mod rng;
pub mod store;
pub mod tensor;
pub mod train;
