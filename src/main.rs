//! The `gradleak` command: parses arguments, calls the library, prints. No measurement logic lives here.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Behave like other Unix tools when the reader of our output goes away (`gradleak ... | head`).
    // SAFETY: restoring the default disposition of SIGPIPE before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: every context layer joined by ": ", no backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
