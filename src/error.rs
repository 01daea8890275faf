//! Errors. Library code returns `anyhow::Result` with messages that name the file, the field and
//! the values; a [`UsageError`] marks a mistake in the command line itself (exit code 2).

/// A mistake in how the program was called (bad flag value, unknown preset): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Returns early with a [`UsageError`].
#[macro_export]
macro_rules! usage {
    ($($t:tt)*) => { return Err($crate::error::UsageError(format!($($t)*)).into()) };
}
