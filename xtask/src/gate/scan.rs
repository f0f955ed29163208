//! The console scanner: finds the required markers in order, forbidden patterns and
//! restart loops in a byte stream, as the bytes arrive.
//!
//! It works on bytes, not lines: a marker may arrive split across reads, and a prompt
//! (`login: `, `db> `) never ends its line. Patterns match within one console line, so
//! the scanner keeps only the current line: a complete line is searched once when its
//! end arrives, and the unfinished line once per batch of reads ([`Scanner::check`]).
//! Lines longer than [`MAX_LINE`] are cut (keeping an overlap), so a batch costs at most
//! its own length plus `MAX_LINE`: linear in the console, whatever it floods with.
//!
//! `\n` and `\r` end a line (for `^`); terminal escape sequences and NUL bytes are
//! skipped, so colouring firmware output does not hide `^Shell> `.

use std::collections::VecDeque;
use std::time::Instant;

use super::checks::Checks;

/// The longest line kept whole; longer ones are cut into pieces that overlap.
pub const MAX_LINE: usize = 4096;
/// How much of a cut line is kept, so a match across the cut is still found.
const OVERLAP: usize = 1024;
/// Starts a piece of a cut line: not a console byte (NULs are skipped), so `^` cannot
/// match at the cut.
const CONTINUED: u8 = 0;

/// What the scanner found.
#[derive(Debug, Clone)]
pub enum Found {
    /// Marker `index` (in order).
    Marker { index: usize, hit: Hit },
    /// Forbidden pattern `index`. Terminal: the scanner stops.
    Forbidden { index: usize, hit: Hit },
    /// The restart-loop pattern appeared `count` times since `first`. Terminal.
    RestartLoop { count: usize, first: Instant, hit: Hit },
}

/// Where something was found.
#[derive(Debug, Clone)]
pub struct Hit {
    /// When the byte that completed the match arrived.
    pub at: Instant,
    /// Console line number (1-based; lines end at `\n`).
    pub line_number: u64,
    /// The line as far as it had arrived (escape sequences removed).
    pub line: String,
}

/// A byte that ends a line or starts something that is not text.
fn is_special(b: u8) -> bool {
    matches!(b, b'\n' | b'\r' | 0x1b | 0)
}

/// The escape-sequence filter's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Escape {
    None,
    /// After ESC.
    Start,
    /// After ESC and an intermediate byte (`ESC ( B`).
    Intermediate,
    /// Inside a control sequence (`ESC [ ... final`).
    Csi,
}

pub struct Scanner<'c> {
    checks: &'c Checks,
    /// The current line (or piece of a cut line), escape sequences removed.
    line: Vec<u8>,
    /// Where searches start: 0, or 1 after [`CONTINUED`].
    base: usize,
    line_number: u64,
    /// (position in `line`, arrival) of the first byte of each read in this line.
    marks: Vec<(usize, Instant)>,
    escape: Escape,
    next_marker: usize,
    /// In `line`: where the next marker may start (after the previous one).
    marker_from: usize,
    /// In `line`: where the next restart may start.
    restart_from: usize,
    restarts: VecDeque<Instant>,
    /// A terminal finding was reported; nothing more is scanned.
    stopped: bool,
}

impl<'c> Scanner<'c> {
    pub fn new(checks: &'c Checks) -> Scanner<'c> {
        Scanner {
            checks,
            line: Vec::with_capacity(256),
            base: 0,
            line_number: 1,
            marks: Vec::new(),
            escape: Escape::None,
            next_marker: 0,
            marker_from: 0,
            restart_from: 0,
            restarts: VecDeque::new(),
            stopped: false,
        }
    }

    /// How many markers have been seen.
    pub fn markers_seen(&self) -> usize {
        self.next_marker
    }

    fn all_markers_seen(&self) -> bool {
        self.next_marker >= self.checks.markers.len()
    }

    /// Takes bytes that arrived at `at`. Complete lines are searched now; the
    /// unfinished line waits for [`Scanner::check`], so that a batch of reads searches
    /// it once. Findings are appended in console order.
    pub fn push(&mut self, bytes: &[u8], at: Instant, found: &mut Vec<Found>) {
        if self.stopped {
            return;
        }
        self.marks.push((self.line.len(), at));
        let mut rest = bytes;
        while let Some((&b, tail)) = rest.split_first() {
            // Plain text goes into the line a run at a time.
            if self.escape == Escape::None && !is_special(b) {
                let room = MAX_LINE - self.line.len();
                let run = tail.iter().position(|&c| is_special(c)).map_or(rest.len(), |i| i + 1).min(room);
                self.line.extend_from_slice(&rest[..run]);
                rest = &rest[run..];
                if self.line.len() >= MAX_LINE {
                    self.search(found);
                    if self.stopped {
                        return;
                    }
                    self.cut_line();
                }
                continue;
            }
            rest = tail;
            let Some(b) = self.unescape(b) else { continue };
            if b == b'\n' || b == b'\r' {
                self.search(found);
                if self.stopped {
                    return;
                }
                if b == b'\n' {
                    self.line_number += 1;
                }
                self.new_line(at);
                continue;
            }
            self.line.push(b);
            if self.line.len() >= MAX_LINE {
                self.search(found);
                if self.stopped {
                    return;
                }
                self.cut_line();
            }
        }
    }

    /// Searches the unfinished line (after a batch of [`Scanner::push`]es).
    pub fn check(&mut self, found: &mut Vec<Found>) {
        if !self.stopped {
            self.search(found);
        }
    }

    /// Drops escape sequences and NUL bytes; `None` for a byte that is not text.
    fn unescape(&mut self, b: u8) -> Option<u8> {
        const ESC: u8 = 0x1b;
        match self.escape {
            Escape::None => match b {
                ESC => {
                    self.escape = Escape::Start;
                    None
                }
                0 => None,
                _ => Some(b),
            },
            Escape::Start => {
                self.escape = match b {
                    b'[' => Escape::Csi,
                    0x20..=0x2f => Escape::Intermediate,
                    _ => Escape::None,
                };
                None
            }
            Escape::Intermediate => {
                self.escape = Escape::None;
                None
            }
            Escape::Csi => match b {
                0x20..=0x3f => None,
                0x40..=0x7e => {
                    self.escape = Escape::None;
                    None
                }
                // Not a control sequence after all: the byte is text.
                _ => {
                    self.escape = Escape::None;
                    self.unescape(b)
                }
            },
        }
    }

    fn new_line(&mut self, at: Instant) {
        self.line.clear();
        self.base = 0;
        self.marks.clear();
        self.marks.push((0, at));
        self.marker_from = 0;
        self.restart_from = 0;
    }

    /// Keeps the last [`OVERLAP`] bytes of an over-long line as a continued piece.
    fn cut_line(&mut self) {
        let cut = self.line.len() - OVERLAP;
        let shift = |pos: usize| (pos.max(cut) - cut) + 1;
        let last_before = self.marks.iter().rev().find(|(p, _)| *p <= cut).map(|(_, t)| *t);
        let mut marks: Vec<(usize, Instant)> = last_before.into_iter().map(|t| (1, t)).collect();
        marks.extend(self.marks.iter().filter(|(p, _)| *p > cut).map(|(p, t)| (shift(*p), *t)));
        self.marks = marks;
        self.marker_from = shift(self.marker_from);
        self.restart_from = shift(self.restart_from);
        let tail = self.line.split_off(cut);
        self.line.clear();
        self.line.push(CONTINUED);
        self.line.extend_from_slice(&tail);
        self.base = 1;
    }

    /// When the byte at `pos` of the line arrived.
    fn arrival(&self, pos: usize) -> Instant {
        let i = self.marks.partition_point(|(p, _)| *p <= pos);
        self.marks[i.saturating_sub(1)].1
    }

    fn hit(&self, end: usize) -> Hit {
        // The whole line as far as it has arrived: at a line's end, all of it.
        let text = &self.line[self.base..];
        Hit {
            at: self.arrival(end.saturating_sub(1)),
            line_number: self.line_number,
            line: super::results::printable(text),
        }
    }

    /// Finds everything in the current line, earliest match end first, until nothing
    /// more is found or a terminal finding stops the scan.
    fn search(&mut self, found: &mut Vec<Found>) {
        #[derive(Clone, Copy)]
        enum Kind {
            Marker,
            Forbidden(usize),
            Restart,
        }
        loop {
            let mut best: Option<(usize, Kind)> = None;
            let mut consider = |end: usize, kind: Kind| {
                if best.is_none_or(|(e, _)| end < e) {
                    best = Some((end, kind));
                }
            };
            let line = &self.line[..];
            if let Some(marker) = self.checks.markers.get(self.next_marker)
                && let Some(m) = marker.regex.find_at(line, self.marker_from.max(self.base))
            {
                consider(m.end(), Kind::Marker);
            }
            if self.checks.forbidden_set.is_match_at(line, self.base) {
                let all_seen = self.all_markers_seen();
                for i in self.checks.forbidden_set.matches_at(line, self.base).iter() {
                    let f = &self.checks.forbidden[i];
                    if f.before_last_marker && all_seen {
                        continue;
                    }
                    if let Some(m) = f.regex.find_at(line, self.base) {
                        consider(m.end(), Kind::Forbidden(i));
                    }
                }
            }
            if let Some(r) = &self.checks.restart
                && let Some(m) = r.regex.find_at(line, self.restart_from.max(self.base))
            {
                consider(m.end(), Kind::Restart);
            }
            let Some((end, kind)) = best else { return };
            let hit = self.hit(end);
            match kind {
                Kind::Marker => {
                    found.push(Found::Marker { index: self.next_marker, hit });
                    self.next_marker += 1;
                    self.marker_from = end;
                }
                Kind::Forbidden(index) => {
                    found.push(Found::Forbidden { index, hit });
                    self.stopped = true;
                    return;
                }
                Kind::Restart => {
                    self.restart_from = end.max(self.restart_from + 1);
                    let Some(rule) = &self.checks.restart else { return };
                    while self.restarts.front().is_some_and(|t| hit.at.duration_since(*t) > rule.window) {
                        self.restarts.pop_front();
                    }
                    self.restarts.push_back(hit.at);
                    if self.restarts.len() >= rule.count {
                        let first = self.restarts.front().copied().unwrap_or(hit.at);
                        found.push(Found::RestartLoop { count: self.restarts.len(), first, hit });
                        self.stopped = true;
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::{Config, Loaded};

    fn checks(extra: &str) -> Checks {
        let config: Config = toml::from_str(&format!("[gate]\n{extra}\n")).unwrap();
        Checks::compile(&Loaded::from_parts(config, "pipeline.toml".into(), ".".into())).unwrap()
    }

    /// Feeds `chunks` (one read each, a millisecond apart) and returns the findings.
    fn scan(checks: &Checks, chunks: &[&[u8]]) -> Vec<Found> {
        let t0 = Instant::now();
        let mut s = Scanner::new(checks);
        let mut found = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            s.push(c, t0 + Duration::from_millis(i as u64), &mut found);
            s.check(&mut found);
        }
        found
    }

    fn describe(found: &[Found]) -> Vec<String> {
        found
            .iter()
            .map(|f| match f {
                Found::Marker { index, .. } => format!("marker {index}"),
                Found::Forbidden { index, .. } => format!("forbidden {index}"),
                Found::RestartLoop { count, .. } => format!("restart loop {count}"),
            })
            .collect()
    }

    const BOOT: &[u8] = b"\x1b[0mConsole: serial\r\nTrying to mount root from cd9660:/dev/iso9660/CLAWDIE [ro]...\r\n\
        Starting colibri_daemon.\r\ncolibri_daemon: started pid 812\r\n\r\nFreeBSD/amd64 (clawdie) (ttyu0)\r\n\r\nlogin: ";

    #[test]
    fn a_good_boot_finds_every_marker_at_every_split() {
        let c = checks("");
        for split in 0..BOOT.len() {
            let found = scan(&c, &[&BOOT[..split], &BOOT[split..]]);
            assert_eq!(describe(&found), ["marker 0", "marker 1", "marker 2", "marker 3"], "split at {split}");
        }
        // One byte per read.
        let bytes: Vec<&[u8]> = BOOT.chunks(1).collect();
        assert_eq!(scan(&c, &bytes).len(), 4);
    }

    #[test]
    fn a_marker_is_timed_by_the_read_that_completed_it() {
        let c = checks("");
        let t0 = Instant::now();
        let mut s = Scanner::new(&c);
        let mut found = Vec::new();
        s.push(b"Trying to mount ", t0, &mut found);
        s.check(&mut found);
        s.push(b"root from x\n", t0 + Duration::from_secs(2), &mut found);
        let Found::Marker { hit, .. } = &found[0] else { panic!("{found:?}") };
        assert_eq!(hit.at, t0 + Duration::from_secs(2));
        assert_eq!(hit.line, "Trying to mount root from x");
    }

    #[test]
    fn markers_count_only_in_order() {
        let c = checks("");
        let found = scan(&c, &[b"login: \nTrying to mount root from\n"]);
        assert_eq!(describe(&found), ["marker 0"]);
    }

    #[test]
    fn anchored_patterns_match_only_at_the_start_of_a_line() {
        let c = checks("");
        assert!(scan(&c, &[b"savecore: reboot after panic: page fault\n"]).is_empty());
        let found = scan(&c, &[b"foo\r\npanic: page fault\n"]);
        assert_eq!(describe(&found), ["forbidden 0"]);
        // A prompt without a newline, behind colour codes.
        let found = scan(&c, &[b"\x1b[1m\x1b[33mShell> "]);
        assert_eq!(
            c.forbidden[match &found[0] {
                Found::Forbidden { index, .. } => *index,
                other => panic!("{other:?}"),
            }]
            .name,
            "uefi-shell"
        );
    }

    #[test]
    fn permission_denied_counts_only_on_colibri_lines() {
        let c = checks("");
        assert!(scan(&c, &[b"sshd: /etc/ssh/x: Permission denied\n"]).is_empty());
        let found = scan(&c, &[b"colibri_daemon: /var/db/colibri: Permission denied\n"]);
        assert_eq!(describe(&found), ["forbidden 14"]);
    }

    #[test]
    fn uptime_is_forbidden_only_before_the_last_marker() {
        let c = checks("markers = [{ text = \"login: \", within_secs = 5 }]");
        assert_eq!(describe(&scan(&c, &[b"Uptime: 3s\n"])), ["forbidden 15"]);
        assert_eq!(describe(&scan(&c, &[b"login: \nUptime: 3s\n"])), ["marker 0"]);
        // In the same read, the order of the bytes decides.
        assert_eq!(describe(&scan(&c, &[b"Uptime: 3s login: "])), ["forbidden 15"]);
    }

    #[test]
    fn a_forbidden_pattern_stops_the_scan() {
        let c = checks("");
        let found = scan(&c, &[b"Fatal trap 12: page fault\nTrying to mount root from\n"]);
        assert_eq!(describe(&found), ["forbidden 1"]);
    }

    #[test]
    fn restart_loops_count_within_the_window() {
        let c = checks("restart_loop = { regex = 'Starting x\\.', count = 3, within_secs = 10 }");
        let t0 = Instant::now();
        let mut s = Scanner::new(&c);
        let mut found = Vec::new();
        for secs in [0, 11, 22, 30] {
            s.push(b"Starting x.\n", t0 + Duration::from_secs(secs), &mut found);
        }
        assert!(found.is_empty(), "{found:?}");
        s.push(b"Starting x.\n", t0 + Duration::from_secs(31), &mut found);
        assert_eq!(describe(&found), ["restart loop 3"]);
        // Twice on one line counts twice.
        let found = scan(&c, &[b"Starting x. Starting x.\nStarting x.\n"]);
        assert_eq!(describe(&found), ["restart loop 3"]);
    }

    #[test]
    fn the_same_line_can_be_a_marker_and_a_restart() {
        let c = checks("");
        let found = scan(&c, &[b"Trying to mount root from\nStarting colibri_daemon.\n"]);
        assert_eq!(describe(&found), ["marker 0", "marker 1"]);
    }

    #[test]
    fn long_lines_are_cut_without_losing_matches() {
        let c = checks("markers = [{ text = \"login: \", within_secs = 5 }]");
        let mut console = vec![b'x'; MAX_LINE * 3 - 3];
        console.extend_from_slice(b"login: ");
        for piece in [1, 7, 4096, 65536] {
            let chunks: Vec<&[u8]> = console.chunks(piece).collect();
            assert_eq!(describe(&scan(&c, &chunks)), ["marker 0"], "reads of {piece}");
        }
        // `^` does not match at a cut.
        let mut console = vec![b'x'; MAX_LINE];
        console.extend_from_slice(b"panic: \n");
        assert!(scan(&c, &[&console]).is_empty());
    }

    #[test]
    fn a_flood_without_newlines_is_scanned_in_linear_time() {
        // 4 MiB in one line: a scanner that searched the whole line at every read
        // would do 2^22 * 64 steps here and not finish.
        let c = checks("");
        let block = vec![b'y'; 64 * 1024];
        let mut s = Scanner::new(&c);
        let mut found = Vec::new();
        let t0 = Instant::now();
        for _ in 0..64 {
            s.push(&block, t0, &mut found);
            s.check(&mut found);
        }
        s.push(b"\npanic: x", t0, &mut found);
        s.check(&mut found);
        assert_eq!(describe(&found), ["forbidden 0"]);
    }
}
