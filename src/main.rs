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
    // SAFETY: no other thread and no tensor exist yet.
    unsafe { gradleak::limits::reuse_freed_memory() };
    install_panic_hook();
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

/// A panic is a bug of gradleak, not of the user's input: one line that says so, with the version to report,
/// instead of a backtrace (the full one when `RUST_BACKTRACE` is set). The exit code stays non-zero (101).
fn install_panic_hook() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
            default_hook(info);
            return;
        }
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        let place = info.location().map(|l| format!("{}:{}", l.file(), l.line()));
        eprintln!("{}", internal_error_line(&message, place.as_deref()));
    }));
}

/// The one line a panic prints: its message's first line (libtorch's messages carry a C++ backtrace after it,
/// escaped as `\\n` inside a tch error), where it happened, and the version.
fn internal_error_line(message: &str, place: Option<&str>) -> String {
    let first = message.lines().next().unwrap_or_default();
    let first = first.split("\\n").next().unwrap_or_default();
    let place = place.map(|p| format!(" at {p}")).unwrap_or_default();
    format!("error: internal error: {first}{place} (gradleak {}); please report it", env!("CARGO_PKG_VERSION"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_panic_is_one_line_with_the_version() {
        let torch =
            "called `Result::unwrap()` on an `Err` value: Torch(\"shape '[0, -1]' is invalid\\nException raised \
                     from ...\\nframe #0: ...\")\nmore";
        let line = super::internal_error_line(torch, Some("src/x.rs:7"));
        assert_eq!(
            line,
            format!(
                "error: internal error: called `Result::unwrap()` on an `Err` value: Torch(\"shape '[0, -1]' is invalid \
                 at src/x.rs:7 (gradleak {}); please report it",
                env!("CARGO_PKG_VERSION")
            )
        );
        assert!(!line.contains('\n'));
    }
}
