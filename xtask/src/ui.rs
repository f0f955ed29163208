//! The only module that writes to the terminal (stdout for results, stderr for progress).
//!
//! On a terminal: an indicatif bar for the pipeline and a spinner for the running stage
//! carrying the latest line of its command. Off a terminal, or with CI set: plain lines,
//! one per event. NO_COLOR turns colour off.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use terminal::{stderr, stdout};

/// The terminal's two streams, opened nowhere else: clippy's `disallowed_methods`
/// (clippy.toml) refuses `std::io::stdout` and `std::io::stderr` outside this module.
#[allow(clippy::disallowed_methods)]
mod terminal {
    pub fn stdout() -> std::io::Stdout {
        std::io::stdout()
    }

    pub fn stderr() -> std::io::Stderr {
        std::io::stderr()
    }
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bars and spinners on a terminal.
    Fancy,
    /// One line per event (CI, pipes, logs).
    Plain,
}

/// The display. Shared by reference; safe to use from worker threads.
pub struct Ui {
    mode: Mode,
    color: bool,
    verbose: bool,
    multi: MultiProgress,
    pipeline: Mutex<Option<ProgressBar>>,
    spinner: Mutex<Option<(ProgressBar, String)>>,
    /// The running stage's name (both modes).
    stage: Mutex<Option<String>>,
    /// Plain mode: when the last progress line was printed (to keep CI logs short).
    last_plain: Mutex<Option<Instant>>,
}

impl Ui {
    /// Picks fancy or plain output from the environment.
    pub fn from_env(verbose: bool) -> Ui {
        let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0");
        let term = stderr().is_terminal() && std::env::var("TERM").map_or(true, |t| t != "dumb");
        let mode = if term && !ci { Mode::Fancy } else { Mode::Plain };
        // In CI (or with no terminal) the output has no escape sequence at all.
        let color = term && !ci && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Ui::new(mode, color, verbose)
    }

    pub fn new(mode: Mode, color: bool, verbose: bool) -> Ui {
        let multi = MultiProgress::with_draw_target(match mode {
            Mode::Fancy => ProgressDrawTarget::stderr_with_hz(10),
            Mode::Plain => ProgressDrawTarget::hidden(),
        });
        Ui {
            mode,
            color,
            verbose,
            multi,
            pipeline: Mutex::new(None),
            spinner: Mutex::new(None),
            stage: Mutex::new(None),
            last_plain: Mutex::new(None),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.color { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() }
    }

    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }
    pub fn green(&self, text: &str) -> String {
        self.paint("32", text)
    }
    pub fn red(&self, text: &str) -> String {
        self.paint("31;1", text)
    }
    pub fn yellow(&self, text: &str) -> String {
        self.paint("33", text)
    }
    pub fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }

    /// Writes a line to stderr without tearing the bars. In plain mode, escape sequences
    /// (a command's colours, quoted from its log) are left out.
    pub fn eprintln(&self, line: &str) {
        match self.mode {
            Mode::Fancy => self.multi.suspend(|| {
                let _ = writeln!(stderr().lock(), "{line}");
            }),
            Mode::Plain => {
                let _ = writeln!(stderr().lock(), "{}", plain_text(line));
            }
        }
    }

    /// Writes a result line to stdout (what the command was asked for: a plan, a table,
    /// generated text). In plain mode, escape sequences are left out.
    pub fn println(&self, line: &str) {
        match self.mode {
            Mode::Fancy => self.multi.suspend(|| {
                let _ = writeln!(stdout().lock(), "{line}");
            }),
            Mode::Plain => {
                let _ = writeln!(stdout().lock(), "{}", plain_text(line));
            }
        }
    }

    /// Tells the operator what a stop signal makes the program wait for (see
    /// [`crate::proc::Teardown`]). The first signal takes the bars away: what follows is
    /// the teardown, line by line.
    pub fn teardown(&self, event: &crate::proc::Teardown) {
        use crate::proc::Teardown;
        if matches!(event, Teardown::Interrupted(_) | Teardown::Abandoned) {
            self.clear_bars();
        }
        if !matches!(event, Teardown::Interrupted(_)) {
            self.stage_event(&event.to_string());
        }
    }

    /// Takes every bar and spinner off the terminal for good.
    fn clear_bars(&self) {
        if self.mode != Mode::Fancy {
            return;
        }
        if let Some((sp, _)) = self.spinner.lock().unwrap_or_else(|e| e.into_inner()).take() {
            sp.finish_and_clear();
        }
        if let Some(bar) = self.pipeline.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
        let _ = self.multi.clear();
        self.multi.set_draw_target(ProgressDrawTarget::hidden());
    }

    /// Writes raw text to stdout (generated files such as Makefile.crates).
    pub fn print_raw(&self, text: &str) {
        let mut out = stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
    }

    /// Starts the pipeline bar.
    pub fn pipeline_start(&self, total: usize) {
        if self.mode == Mode::Fancy && total > 1 {
            let bar = self.multi.add(ProgressBar::new(total as u64));
            bar.set_style(
                ProgressStyle::with_template("{prefix:>9} [{bar:28}] {pos}/{len} stages  {elapsed}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix("release");
            // Its clock ticks while a stage runs, not only when a stage ends.
            bar.enable_steady_tick(Duration::from_millis(500));
            *self.pipeline.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
        }
    }

    /// Advances the pipeline bar by one stage.
    pub fn pipeline_advance(&self) {
        if let Some(bar) = &*self.pipeline.lock().unwrap_or_else(|e| e.into_inner()) {
            bar.inc(1);
        }
    }

    /// Removes the pipeline bar.
    pub fn pipeline_finish(&self) {
        if let Some(bar) = self.pipeline.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
    }

    /// A stage begins.
    pub fn stage_start(&self, stage: &str) {
        *self.stage.lock().unwrap_or_else(|e| e.into_inner()) = Some(stage.to_owned());
        match self.mode {
            Mode::Fancy => {
                let sp = self.multi.add(ProgressBar::new_spinner());
                sp.set_style(
                    ProgressStyle::with_template("{prefix:>9} {spinner} {elapsed:>4} {wide_msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                sp.set_prefix(stage.to_owned());
                sp.enable_steady_tick(Duration::from_millis(120));
                *self.spinner.lock().unwrap_or_else(|e| e.into_inner()) = Some((sp, stage.to_owned()));
            }
            Mode::Plain => self.eprintln(&format!("[{stage}] started")),
        }
    }

    /// The latest line of the running command: the spinner's message on a terminal;
    /// only with --verbose in plain mode (the stage log has every line anyway).
    pub fn stage_line(&self, line: &str) {
        match self.mode {
            Mode::Fancy => {
                if let Some((sp, _)) = &*self.spinner.lock().unwrap_or_else(|e| e.into_inner()) {
                    sp.set_message(plain_text(line).chars().take(200).collect::<String>());
                }
            }
            Mode::Plain => {
                if self.verbose {
                    let stage = self.current_stage();
                    self.eprintln(&format!("[{stage}] | {line}"));
                }
            }
        }
    }

    /// An event worth a line of its own in both modes.
    pub fn stage_event(&self, line: &str) {
        let stage = self.current_stage();
        match self.mode {
            Mode::Fancy => {
                if let Some((sp, _)) = &*self.spinner.lock().unwrap_or_else(|e| e.into_inner()) {
                    sp.set_message(plain_text(line).into_owned());
                }
                self.eprintln(&format!("{} {line}", self.dim(&format!("{stage:>9}"))));
            }
            Mode::Plain => self.eprintln(&format!("[{stage}] {line}")),
        }
    }

    fn current_stage(&self) -> String {
        self.stage.lock().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_else(|| "xtask".into())
    }

    /// A stage ends. `verdict` is a short word: ok, skipped, failed, interrupted.
    pub fn stage_end(&self, stage: &str, verdict: &str, detail: &str) {
        *self.stage.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if let Some((sp, _)) = self.spinner.lock().unwrap_or_else(|e| e.into_inner()).take() {
            sp.finish_and_clear();
        }
        let word = match verdict {
            "ok" => self.green(verdict),
            "failed" | "interrupted" => self.red(verdict),
            _ => self.yellow(verdict),
        };
        match self.mode {
            Mode::Fancy => self.eprintln(&format!("{} {word} {detail}", self.bold(&format!("{stage:>9}")))),
            Mode::Plain => self.eprintln(format!("[{stage}] {verdict} {detail}").trim_end()),
        }
    }

    /// A bar for counted work (files, bytes). In plain mode it prints a line at most
    /// every few seconds.
    pub fn progress(&self, label: &str, total: u64, bytes: bool) -> Progress<'_> {
        let bar = match self.mode {
            Mode::Fancy => {
                let bar = self.multi.add(ProgressBar::new(total));
                let template = if bytes {
                    "{prefix:>9} [{bar:28}] {bytes}/{total_bytes} {bytes_per_sec} {wide_msg}"
                } else {
                    "{prefix:>9} [{bar:28}] {pos}/{len} {wide_msg}"
                };
                bar.set_style(
                    ProgressStyle::with_template(template)
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> "),
                );
                bar.set_prefix(label.to_owned());
                Some(bar)
            }
            Mode::Plain => None,
        };
        Progress { ui: self, bar, label: label.to_owned(), total: AtomicU64::new(total), done: Mutex::new(0), bytes }
    }

    /// Prints an error: `error: ...` then the cause chain and hints.
    pub fn error(&self, err: &anyhow::Error) {
        self.eprintln(&format!("{} {}", self.red("error:"), render_error(err)));
    }
}

/// Counted progress; see [`Ui::progress`].
pub struct Progress<'a> {
    ui: &'a Ui,
    bar: Option<ProgressBar>,
    label: String,
    total: AtomicU64,
    done: Mutex<u64>,
    bytes: bool,
}

impl Progress<'_> {
    /// Sets what the count goes up to, once it is known.
    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
    }

    /// Adds `n` to the count, with a message naming the latest item.
    pub fn inc(&self, n: u64, msg: &str) {
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        *done += n;
        let total = self.total.load(Ordering::Relaxed);
        match &self.bar {
            Some(bar) => {
                bar.inc(n);
                bar.set_message(msg.to_owned());
            }
            None => {
                let mut last = self.ui.last_plain.lock().unwrap_or_else(|e| e.into_inner());
                let due = last.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) || *done >= total;
                if due {
                    *last = Some(Instant::now());
                    let amount = if self.bytes {
                        format!("{} / {}", bytes(*done), bytes(total))
                    } else {
                        format!("{}/{}", *done, total)
                    };
                    self.ui.eprintln(&format!("[{}] {amount} {msg}", self.label));
                }
            }
        }
    }
}

impl Drop for Progress<'_> {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `error` text: the message, then each cause on its own line, then every help line the
/// error carries ([`crate::failure`]), each as `help: ...`.
pub fn render_error(err: &anyhow::Error) -> String {
    let mut out = render_message(err);
    for line in crate::failure::help_lines(err) {
        out.push_str(&format!("\nhelp: {line}"));
    }
    out
}

/// An error's messages without its help: the message, then each cause on its own line.
/// For text that becomes part of another message (which carries the help lines on).
pub fn render_message(err: &anyhow::Error) -> String {
    let mut out = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !out.contains(&cause) {
            out.push_str(&format!("\n  caused by: {cause}"));
        }
    }
    out
}

/// `text` without escape sequences or other control characters (tabs and newlines
/// stay; a carriage return goes; any other control character shows as `?`): what a
/// command printed, made safe to show as plain text.
pub fn plain_text(text: &str) -> std::borrow::Cow<'_, str> {
    let special = |c: char| c.is_control() && c != '\n' && c != '\t';
    if !text.chars().any(special) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // CSI: parameters and intermediates, then one final byte.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC (a window title, a link): up to BEL or ESC \.
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' || (c == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\r' => {}
            c if special(c) => out.push('?'),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `1m 05s`, `3.2s`, `45ms`.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        let s = d.as_secs();
        if s < 3600 { format!("{}m {:02}s", s / 60, s % 60) } else { format!("{}h {:02}m", s / 3600, (s % 3600) / 60) }
    }
}

/// `1.5 MB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_has_no_escape_sequence() {
        assert_eq!(plain_text("plain\ttext"), "plain\ttext");
        assert_eq!(plain_text("\x1b[31;1merror:\x1b[0m red"), "error: red");
        assert_eq!(plain_text("\x1b]0;title\x07a\x1b]8;;http://x\x1b\\b\r"), "ab");
        assert_eq!(plain_text("bell\x07 nul\0 del\x7f c1\u{9b}"), "bell? nul? del? c1?");
        assert!(!plain_text("\x1b\x1b[\x1b]").contains('\x1b'));
    }
}
