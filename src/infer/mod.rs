//! Inference and analysis: running a trained network over images and measuring what it says.
//!
//! - [`evaluate`]: the logits of a whole dataset, and its metrics;
//! - [`tta`]: test-time augmentation (several views of an image, logits averaged);
//! - [`metrics`]: accuracy, loss, confusion matrix, per-class figures, calibration error;
//! - [`calibration`]: fitting a softmax temperature;
//! - [`explain`]: occlusion maps.
//!
//! May use: `net`, `store`, `data`, `tensor`. Prints nothing.

pub mod calibration;
pub mod evaluate;
pub mod explain;
pub mod metrics;
pub mod tta;
