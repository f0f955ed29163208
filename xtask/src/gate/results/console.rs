//! `console.log`: the console as it arrives, each line with the time it began, written
//! as it comes (at most one line's start held in memory); complete lines mirrored to the
//! stage log and the display, made safe for a terminal ([`printable`]).

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::time::Instant;

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

use super::Clock;
use crate::run::Log;
use crate::ui::Ui;

/// Lines of the console kept in memory for reports.
const TAIL_LINES: usize = 200;
/// Longest console line copied into the stage log and shown (the console file has all
/// of it); a longer one is cut, saying so.
pub const LOG_LINE: usize = 1000;
/// The most of one console line held in memory: a longer line goes to the file as it
/// comes, so a guest that never ends its line cannot make the gate grow.
const LINE_HELD: usize = 64 * 1024;

/// The console as it arrives, written line by line with the time each line began, to a
/// temporary name that becomes `console.log` when the boot is over. Complete lines also
/// go to the stage log and the progress display. The file stops at its cap
/// (`gate.console_log_max_mib`), with a note where it was cut, and so does the stage
/// log's copy; the gate still reads and judges every byte.
pub struct ConsoleFile {
    path: Utf8PathBuf,
    tmp: Utf8PathBuf,
    out: BufWriter<File>,
    clock: Clock,
    /// The current line's bytes not yet in the file.
    line: Vec<u8>,
    line_at: Option<Instant>,
    /// Bytes of the current line so far, all of them (held or spilled).
    line_bytes: u64,
    /// The current line began in the file already (it was too long to hold); its
    /// start, as the stage log shows it.
    spilled: Option<String>,
    pub bytes: u64,
    pub lines: u64,
    tail: VecDeque<String>,
    /// The most console.log may hold, and what it holds so far.
    cap: u64,
    kept: u64,
    /// Console bytes that came after the cap was reached (not kept).
    dropped: u64,
    cut: bool,
    /// The stage log's copy has said that it stops.
    mirror_stopped: bool,
    error: Option<std::io::Error>,
}

impl ConsoleFile {
    /// A console file at `path` (written under a temporary name until [`finish`]) that
    /// keeps at most `cap` bytes.
    ///
    /// [`finish`]: ConsoleFile::finish
    pub fn create(path: &Utf8Path, clock: Clock, cap: u64) -> Result<ConsoleFile> {
        let tmp = crate::fsx::temp_beside(path);
        let file = File::create(&tmp).with_context(|| format!("cannot create {tmp}"))?;
        Ok(ConsoleFile {
            path: path.to_owned(),
            tmp,
            out: BufWriter::with_capacity(256 * 1024, file),
            clock,
            line: Vec::new(),
            line_at: None,
            line_bytes: 0,
            spilled: None,
            bytes: 0,
            lines: 0,
            tail: VecDeque::new(),
            cap,
            kept: 0,
            dropped: 0,
            cut: false,
            mirror_stopped: false,
            error: None,
        })
    }

    /// Whether a line has begun and not ended (a prompt, or a console cut short).
    pub fn has_partial(&self) -> bool {
        !self.line.is_empty() || self.spilled.is_some()
    }

    /// Whether console.log reached its cap.
    pub fn is_cut(&self) -> bool {
        self.cut
    }

    /// Takes bytes that arrived at `at`. The stage log gets the complete lines in one
    /// write, the display the last of them.
    pub fn push(&mut self, bytes: &[u8], at: Instant, log: &Log, ui: &Ui) {
        self.bytes += bytes.len() as u64;
        let mut mirror = String::new();
        let mut ended = false;
        let mut rest = bytes;
        while !rest.is_empty() {
            self.line_at.get_or_insert(at);
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.line.extend_from_slice(&rest[..i]);
                    self.line_bytes += i as u64;
                    rest = &rest[i + 1..];
                    self.end_line(&mut mirror);
                    ended = true;
                }
                None => {
                    self.line.extend_from_slice(rest);
                    self.line_bytes += rest.len() as u64;
                    rest = &[];
                    if self.line.len() > LINE_HELD {
                        self.spill();
                    }
                }
            }
        }
        let last = self.tail.back().filter(|_| ended).map(|l| &l[STAMP_LEN..]);
        show(&mirror, last, log, ui);
    }

    /// Writes what is held of an over-long line to the file (its time first, when it
    /// is the line's start), keeping its start for the stage log.
    fn spill(&mut self) {
        let line = std::mem::take(&mut self.line);
        if self.spilled.is_none() {
            let mut stamp = String::new();
            push_stamp(&mut stamp, self.clock, self.line_at.unwrap_or(self.clock.t0));
            self.keep(stamp.as_bytes());
            self.spilled = Some(printable(&line[..line.len().min(4 * LOG_LINE)]).chars().take(LOG_LINE).collect());
        }
        self.keep(&line);
        self.line = line;
        self.line.clear();
    }

    /// Writes console bytes to the file, up to its cap: the write that reaches it is
    /// cut there and followed by a note saying so; later bytes are only counted.
    fn keep(&mut self, bytes: &[u8]) {
        if self.cut {
            self.dropped += bytes.len() as u64;
            return;
        }
        let room = self.cap.saturating_sub(self.kept);
        let (now, over) = bytes.split_at(bytes.len().min(usize::try_from(room).unwrap_or(usize::MAX)));
        let written = self.out.write_all(now);
        self.kept += now.len() as u64;
        self.note_error(written);
        if over.is_empty() {
            return;
        }
        self.cut = true;
        self.dropped += over.len() as u64;
        let note = format!(
            "\n[console.log is cut here: it reached its cap of {} bytes (gate.console_log_max_mib); the gate went on reading and judging the console, which is not kept from here on]\n",
            self.cap
        );
        let written = self.out.write_all(note.as_bytes());
        self.note_error(written);
    }

    fn note_error(&mut self, written: std::io::Result<()>) {
        if let Err(e) = written
            && self.error.is_none()
        {
            self.error = Some(e);
        }
    }

    /// Writes the current line with its time, appends it to `mirror` (for the stage
    /// log, until console.log is cut) and to the tail. Every console line passes here:
    /// it allocates nothing in the common case (the tail's oldest entry is reused).
    fn end_line(&mut self, mirror: &mut String) {
        let at = self.line_at.take().unwrap_or(self.clock.t0);
        let total = std::mem::take(&mut self.line_bytes);
        let mut line = std::mem::take(&mut self.line);
        while line.last() == Some(&b'\r') {
            line.pop();
        }
        let mut entry = match self.tail.len() {
            TAIL_LINES => self.tail.pop_front().unwrap_or_default(),
            _ => String::with_capacity(128),
        };
        entry.clear();
        push_stamp(&mut entry, self.clock, at);
        let spilled = self.spilled.take();
        if spilled.is_none() {
            self.keep(entry.as_bytes());
        }
        self.keep(&line);
        self.keep(b"\n");
        self.lines += 1;
        let whole = match spilled {
            Some(start) => {
                entry.push_str(&start);
                false
            }
            None => push_printable(&mut entry, &line, LOG_LINE),
        };
        if !whole {
            push_cut(&mut entry, total);
        }
        if !self.cut {
            mirror.push_str(&entry);
            mirror.push('\n');
        } else if !self.mirror_stopped {
            mirror.push_str("[the console's copy in this log stops here, where console.log was cut]\n");
            self.mirror_stopped = true;
        }
        self.tail.push_back(entry);
        // The buffer is kept for the next line.
        self.line = line;
        self.line.clear();
    }

    /// The last `n` lines (with their times), the unfinished one included.
    pub fn tail(&self, n: usize) -> Vec<String> {
        let mut lines: Vec<String> = self.tail.iter().skip(self.tail.len().saturating_sub(n)).cloned().collect();
        if self.has_partial() {
            let mut entry = String::new();
            push_stamp(&mut entry, self.clock, self.line_at.unwrap_or(self.clock.t0));
            let whole = match &self.spilled {
                Some(start) => {
                    entry.push_str(start);
                    false
                }
                None => push_printable(&mut entry, &self.line, LOG_LINE),
            };
            if !whole {
                push_cut(&mut entry, self.line_bytes);
            }
            lines.push(entry);
            if lines.len() > n {
                lines.remove(0);
            }
        }
        lines
    }

    /// Ends the unfinished line and puts the file in place as `console.log` (ending
    /// with how much was not kept, when it was cut).
    pub fn finish(mut self, log: &Log, ui: &Ui) -> Result<Utf8PathBuf> {
        if self.has_partial() {
            let mut mirror = String::new();
            self.end_line(&mut mirror);
            show(&mirror, self.tail.back().map(|l| &l[STAMP_LEN..]), log, ui);
        }
        if self.cut {
            let note = format!("[{} bytes of console after the cut were not kept]\n", self.dropped);
            let written = self.out.write_all(note.as_bytes());
            self.note_error(written);
        }
        if let Some(e) = self.error.take() {
            return Err(e).with_context(|| format!("cannot write the console to {}", self.tmp));
        }
        let file =
            self.out.into_inner().map_err(|e| e.into_error()).with_context(|| format!("cannot write {}", self.tmp))?;
        file.sync_all().with_context(|| format!("cannot sync {}", self.tmp))?;
        std::fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("cannot rename {} to {}", self.tmp, self.path))?;
        Ok(self.path)
    }
}

/// How a line cut for the reports says so: `TEXT [... line cut: N bytes in all]`.
pub(super) const CUT_NOTE: &str = " [... line cut: ";

/// Says that a line shown was cut, and how long it was.
fn push_cut(entry: &mut String, bytes: u64) {
    use std::fmt::Write as _;
    let _ = write!(entry, "{CUT_NOTE}{bytes} bytes in all]");
}

/// Characters of a console line the display shows (a longer one is cut, saying so).
const SHOWN_LINE: usize = 120;

/// Copies console lines to the stage log (one write) and the last one to the display.
fn show(mirror: &str, last: Option<&str>, log: &Log, ui: &Ui) {
    if !mirror.is_empty() {
        log.bytes(mirror.as_bytes());
    }
    if let Some(line) = last.filter(|l| !l.trim().is_empty()) {
        ui.stage_line(&super::cut_line(line, SHOWN_LINE));
    }
}

/// Length of the time that begins each console line: `[    12.345] `.
pub(super) const STAMP_LEN: usize = 13;

/// Appends `[    12.345] ` (seconds since the boot began, to the millisecond).
fn push_stamp(out: &mut String, clock: Clock, at: Instant) {
    use std::fmt::Write as _;
    let ms = at.saturating_duration_since(clock.t0).as_millis();
    let _ = write!(out, "[{:>6}.{:03}] ", ms / 1000, ms % 1000);
}

/// Appends at most `max` characters of [`printable`]`(line)`; plain ASCII, the usual
/// console line, is copied as it is. Returns whether all of it fit.
fn push_printable(out: &mut String, line: &[u8], max: usize) -> bool {
    if line.iter().all(|&b| (0x20..0x7f).contains(&b) || b == b'\t') {
        let shown = &line[..line.len().min(max)];
        out.push_str(std::str::from_utf8(shown).unwrap_or_default());
        shown.len() == line.len()
    } else {
        let text = printable(line);
        let mut chars = text.chars();
        out.extend(chars.by_ref().take(max));
        chars.next().is_none()
    }
}

/// A console line as text that is safe on a terminal: escape sequences (which could
/// clear the operator's screen) and control characters other than tab are dropped.
pub fn printable(line: &[u8]) -> String {
    if line.iter().all(|&b| (0x20..0x7f).contains(&b) || b == b'\t') {
        return std::str::from_utf8(line).unwrap_or_default().to_owned();
    }
    let text = String::from_utf8_lossy(line);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                // A control sequence: parameters and intermediates, then a final byte.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // ESC, an intermediate byte, a final byte (character set selection).
                Some(' '..='/') => {
                    chars.next();
                }
                _ => {}
            },
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_drops_what_would_upset_a_terminal() {
        assert_eq!(printable(b"\x1b[0m\x1b[2J\x1b[01;01HBdsDxe: x\x07\r"), "BdsDxe: x");
        assert_eq!(printable(b"a\x1b(Bb\tc\xff"), "ab\tc\u{fffd}");
    }

    #[test]
    fn console_lines_carry_their_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = Utf8PathBuf::from_path_buf(dir.path().join("console.log")).unwrap();
        let clock = Clock::start();
        let mut c = ConsoleFile::create(&path, clock, 1 << 30).unwrap();
        let ui = Ui::new(crate::ui::Mode::Plain, false, false);
        let log = Log::sink();
        c.push(b"one\r\ntw", clock.t0, &log, &ui);
        c.push(b"o\nlogin: ", clock.t0 + std::time::Duration::from_millis(1500), &log, &ui);
        assert_eq!(c.tail(2), ["[     0.000] two", "[     1.500] login: "]);
        c.finish(&log, &ui).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, "[     0.000] one\n[     0.000] two\n[     1.500] login: \n");
    }

    #[test]
    fn a_line_that_never_ends_is_not_held_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let path = Utf8PathBuf::from_path_buf(dir.path().join("console.log")).unwrap();
        let clock = Clock::start();
        let mut c = ConsoleFile::create(&path, clock, 1 << 30).unwrap();
        let ui = Ui::new(crate::ui::Mode::Plain, false, false);
        let log = Log::sink();
        let block = vec![b'x'; 64 * 1024];
        for _ in 0..64 {
            c.push(&block, clock.t0, &log, &ui);
            assert!(c.line.len() <= LINE_HELD, "{} bytes held", c.line.len());
        }
        assert!(c.has_partial());
        // The report shows its start, cut, saying so.
        let cut = format!("[     0.000] {} [... line cut: {} bytes in all]", "x".repeat(LOG_LINE), 64 * 64 * 1024);
        assert_eq!(c.tail(1)[0], cut);
        c.push(b"x\nnext\n", clock.t0, &log, &ui);
        c.finish(&log, &ui).unwrap();
        let text = std::fs::read(&path).unwrap();
        let mut want = b"[     0.000] ".to_vec();
        want.extend(std::iter::repeat_n(b'x', 64 * 64 * 1024 + 1));
        want.extend_from_slice(b"\n[     0.000] next\n");
        assert!(text == want, "the file holds the whole line, once, with one time");
    }

    #[test]
    fn console_log_stops_at_its_cap_saying_where_and_how_much_it_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = Utf8PathBuf::from_path_buf(dir.path().join("console.log")).unwrap();
        let log_path = Utf8PathBuf::from_path_buf(dir.path().join("gate.log")).unwrap();
        let clock = Clock::start();
        let mut c = ConsoleFile::create(&path, clock, 1000).unwrap();
        let ui = Ui::new(crate::ui::Mode::Plain, false, false);
        let log = Log::open(&log_path).unwrap();
        // 100 lines of 20 bytes with their times: 3300 bytes of file, 2000 of console.
        for i in 0..100 {
            c.push(format!("line {i:>14}\n").as_bytes(), clock.t0, &log, &ui);
        }
        assert!(c.is_cut());
        assert_eq!((c.bytes, c.lines), (2000, 100));
        // The scanner's view is not the file's: the last lines are still reported.
        assert_eq!(c.tail(1), ["[     0.000] line             99"]);
        c.finish(&log, &ui).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let (kept, notes) = text.split_at(1000);
        assert!(kept.starts_with("[     0.000] line              0\n"), "{text}");
        assert!(notes.starts_with("\n[console.log is cut here: it reached its cap of 1000 bytes"), "{text}");
        assert!(notes.ends_with("]\n[2300 bytes of console after the cut were not kept]\n"), "{text}");
        // The stage log's copy stops there too, saying so, once.
        let copy = std::fs::read_to_string(&log_path).unwrap();
        assert_eq!(copy.matches("line ").count(), 30, "{copy}");
        assert_eq!(copy.matches("stops here, where console.log was cut").count(), 1, "{copy}");
    }
}
