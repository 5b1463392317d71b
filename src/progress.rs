//! A progress bar on a terminal, nothing otherwise.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gpupg_export::Progress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Bar {
    bar: ProgressBar,
    copy_bytes: AtomicU64,
}

impl Bar {
    /// A bar on stderr when it is a terminal and `quiet` is off; hidden otherwise.
    pub fn new(quiet: bool) -> Bar {
        let bar = ProgressBar::hidden();
        if !quiet && std::io::stderr().is_terminal() {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        Bar {
            bar,
            copy_bytes: AtomicU64::new(0),
        }
    }
}

impl Progress for Bar {
    fn start(&self, estimated_rows: Option<u64>) {
        match estimated_rows {
            Some(n) => {
                self.bar.set_length(n);
                self.bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/~{human_len} rows, {msg}, eta {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
            }
            None => self.bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {human_pos} rows, {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        }
        self.bar.enable_steady_tick(Duration::from_millis(200));
    }

    fn advance(&self, rows: u64, copy_bytes: u64) {
        self.bar.inc(rows);
        // The estimate comes from statistics: never let the bar overflow it.
        if let Some(len) = self.bar.length() {
            if self.bar.position() > len {
                self.bar.set_length(self.bar.position());
            }
        }
        let total = self.copy_bytes.fetch_add(copy_bytes, Ordering::Relaxed) + copy_bytes;
        let secs = self.bar.elapsed().as_secs_f64().max(1e-3);
        self.bar.set_message(format!(
            "{:.2} GB, {:.2} GB/s",
            total as f64 / 1e9,
            total as f64 / 1e9 / secs
        ));
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
