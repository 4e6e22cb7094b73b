//! A progress bar on stderr for work that takes more than a second, hidden under `--quiet` or
//! when stderr is not a terminal.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress over a known number of items.
pub struct Progress {
    bar: ProgressBar,
    start: Instant,
    visible: bool,
    enabled: bool,
}

impl Progress {
    /// A bar over `total` items labelled `what`; it draws only once a second has passed.
    pub fn new(total: usize, what: &str, quiet: bool) -> Progress {
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::hidden());
        bar.set_style(
            ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({per_sec}, {eta} left)")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_message(what.to_string());
        Progress {
            bar,
            start: Instant::now(),
            visible: false,
            enabled: !quiet && std::io::stderr().is_terminal(),
        }
    }

    /// Marks `n` more items done.
    pub fn advance(&mut self, n: usize) {
        if self.enabled && !self.visible && self.start.elapsed() > Duration::from_secs(1) {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.visible = true;
        }
        self.bar.inc(n as u64);
    }

    /// Removes the bar.
    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}
