//! The network: its description and the graph that runs it.
//!
//! - [`spec`]: the architecture text format (one layer a line) and [`presets`];
//! - [`graph`]: builds a [`graph::Network`] from a spec with [`graph::BuildOptions`], infers
//!   every shape, runs forward and backward through the layers and names every parameter;
//! - [`loss`]: softmax cross-entropy (and the squared-error alternative) on the logits.
//!
//! May use: `layers`, `kernels` (through the layers' options), `tensor`, `rng`. Prints nothing
//! and reads no environment: every option arrives as a value.

pub mod graph;
pub mod loss;
pub mod presets;
pub mod spec;

pub use graph::{BuildLimits, BuildOptions, Network};
