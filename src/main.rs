//! The `gradleak` command: parses arguments, calls the library, prints. No measurement logic lives here.

mod cli;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    // Behave like other Unix tools when the reader of our output goes away (`gradleak ... | head`).
    // SAFETY: restoring the default disposition of SIGPIPE before any thread is started.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    // SAFETY: no other thread and no tensor exist yet.
    unsafe { gradleak::limits::reuse_freed_memory() };
    install_panic_hook();
    gradleak::io::remove_temporary_files_on_signals();
    let matches = negative_numbers(cli::Cli::command()).get_matches();
    let args = cli::Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: every context layer joined by ": ", no backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Every flag that takes a value accepts a negative number after a space (`--lr -1`), so that the value reaches the
/// flag's own range check ("--lr must be in (0, 10], got -1") instead of clap's "unexpected argument '-1'" and the
/// usage. A flag of real numbers takes any value that starts with `-` (`-inf`, which is no "number" to clap): its
/// parser then names the flag when it is not a number. Otherwise anything else that starts with `-` is a flag.
fn negative_numbers(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| {
            if !arg.get_action().takes_values() {
                return arg;
            }
            let real = arg.get_value_parser().type_id() == std::any::TypeId::of::<f64>();
            arg.allow_negative_numbers(true).allow_hyphen_values(real)
        })
        .mut_subcommands(negative_numbers)
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
    use clap::{CommandFactory, FromArgMatches};

    #[test]
    fn a_negative_number_after_a_space_is_a_value_and_other_dashes_are_flags() {
        let parse = |args: &[&str]| {
            let matches = super::negative_numbers(super::cli::Cli::command()).try_get_matches_from(args)?;
            super::cli::Cli::from_arg_matches(&matches)
        };
        let cli = parse(&["gradleak", "train", "--lr", "-1", "--threads", "-2"]).unwrap();
        assert_eq!(cli.global.threads, -2);
        assert!(format!("{:?}", cli.command).contains("lr: -1.0"), "{:?}", cli.command);
        assert!(parse(&["gradleak", "train", "--lr", "-1e-3"]).is_ok());
        assert!(parse(&["gradleak", "train", "--lr", "-inf"]).is_ok(), "reaches --lr's own check");
        // A real-valued flag takes what follows and says it is not a number; another flag does not.
        let e = parse(&["gradleak", "train", "--lr", "--quiet"]).unwrap_err();
        assert!(e.to_string().contains("'--lr <LR>'"), "{e}");
        let e = parse(&["gradleak", "train", "--out", "--quiet"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue, "{e}");
    }

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
