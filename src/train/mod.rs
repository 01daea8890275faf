//! Training: the optimizers and learning-rate schedules, the loop that runs the epochs, and the
//! checkpoints that let a run stop and resume exactly.
//!
//! - [`config`]: a run's settings and cursor, as stored in checkpoints;
//! - [`optim`], [`schedule`]: what changes the weights, and by how much at each step;
//!   [`lookahead`]: the slow copy the weights are pulled back to;
//! - [`recipe`]: the settings a network trains with where the command line says nothing;
//! - [`trainer`]: the epochs and steps, validation, best-model keeping, the time budget; it
//!   reports what happens through [`trainer::Events`] and prints nothing itself;
//! - [`checkpoint`]: the run's state in a file; [`diverge`]: catching a run that diverges;
//! - [`memory`]: whether a run fits in the machine's memory.
//!
//! May use: `net`, `infer` (validation and the final test figures), `store`, `data`, `tensor`,
//! `rng`, `error`.

pub mod adapt;
pub mod checkpoint;
pub mod config;
pub mod diverge;
pub mod lookahead;
pub mod memory;
pub mod optim;
pub mod recipe;
pub mod schedule;
pub mod trainer;
