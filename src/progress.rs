//! Progress bars for long work, with time estimates; hidden with `--quiet` or when stderr is not a terminal.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

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
        let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
        let style =
            ProgressStyle::with_template("{msg:>24} [{bar:30}] {pos}/{len} {elapsed_precise} (eta {eta}) {prefix}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(message.into());
        bar
    }
}
