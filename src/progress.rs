//! Progress bars for long work, with time estimates; hidden with `--quiet` or when stderr is not a terminal.

use std::sync::OnceLock;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Every bar of the process is drawn by one `MultiProgress`, so an outer bar (the cells of a sweep) stays on screen
/// above the bars of the current step instead of the two overwriting each other.
fn screen() -> &'static MultiProgress {
    static SCREEN: OnceLock<MultiProgress> = OnceLock::new();
    SCREEN.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

/// Whether progress bars may be drawn. Library code takes this so that tests and `--quiet` stay silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub visible: bool,
}

impl Progress {
    pub const HIDDEN: Progress = Progress { visible: false };

    pub fn new(quiet: bool) -> Self {
        Progress { visible: !quiet }
    }

    /// A bar over `len` steps with a message and an estimate of the time left.
    pub fn bar(&self, len: u64, message: impl Into<String>) -> ProgressBar {
        if !self.visible {
            return ProgressBar::hidden();
        }
        let bar = screen().add(ProgressBar::new(len));
        let style =
            ProgressStyle::with_template("{msg:>24} [{bar:30}] {pos}/{len} {elapsed_precise} (eta {eta}) {prefix}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(message.into());
        bar
    }

    /// Prints a line to stderr above the bars (a plain line when no bar is drawn, e.g. in a log file).
    pub fn println(&self, line: &str) {
        if !self.visible || screen().is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = screen().println(line);
        }
    }
}
