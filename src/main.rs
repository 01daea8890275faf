//! The `cnn` command: parse the command line, run the command, map the outcome to an exit code
//! (0 success, 2 usage error, 130 interrupted by Ctrl-C after saving a checkpoint, 1 any other
//! failure).

use clap::Parser;
use std::process::ExitCode;

// The matrix-multiply crate allocates its packing buffers on every call; mimalloc keeps freed
// memory for reuse where the system allocator returns it to the kernel and page-faults it back.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;
fn main() -> ExitCode {
    cnn::commands::huge_pages(false);
    ignore_file_size_signal();
    let cli = match cnn::commands::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors; clap knows which is which.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match cnn::commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if cnn::commands::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", cnn::error::one_line(&e));
            if e.downcast_ref::<cnn::error::UsageError>().is_some() {
                ExitCode::from(2)
            } else if e
                .downcast_ref::<cnn::commands::train::Interrupted>()
                .is_some()
            {
                // The shell's convention for a process ended by SIGINT.
                ExitCode::from(130)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// A write past the file-size limit (`ulimit -f`) raises SIGXFSZ, whose default action ends the
/// process without a word. Ignored, the write fails with EFBIG ("File too large") instead, and
/// the atomic writer reports it naming the file, removes its temporary file and leaves any
/// existing file as it was.
fn ignore_file_size_signal() {
    #[cfg(unix)]
    // SAFETY: sets a disposition to SIG_IGN at start-up, before any other thread exists; no
    // handler runs, so there is nothing to be signal-safe about.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
    }
}
