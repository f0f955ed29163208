//! The console scanner: finds the required markers in order, forbidden patterns,
//! restart loops and heartbeats in a byte stream, as the bytes arrive.
//!
//! It works on bytes, not lines: a marker may arrive split across reads, and a prompt
//! (`login: `, `db> `) never ends its line. Patterns match within one console line, so
//! the scanner keeps only the current line: a complete line is searched once when its
//! end arrives, and the unfinished line once per batch of reads ([`Scanner::check`]).
//! An unfinished line is searched with a byte after it that the console never gives,
//! so `$` means the end of a line only once the line has ended. Lines longer than
//! [`MAX_LINE`] are cut (keeping an overlap), so a batch costs at most its own length
//! plus `MAX_LINE`: linear in the console, whatever it floods with.
//!
//! `\n` and `\r` end a line (for `^`); terminal escape sequences and NUL bytes are
//! skipped ([`Escapes`]), so colouring firmware output does not hide `^Shell> `.

use std::time::Instant;

use super::checks::Checks;

mod escapes;
#[cfg(test)]
mod tests;

pub use escapes::Escapes;

/// The longest line kept whole; longer ones are cut into pieces that overlap.
pub const MAX_LINE: usize = 4096;
/// How much of a cut line is kept, so a match across the cut is still found.
const OVERLAP: usize = 1024;
/// Not a console byte (NULs are skipped): starts a piece of a cut line, so `^` cannot
/// match at the cut, and follows an unfinished line while it is searched, so `$`
/// cannot match at its provisional end.
const NOT_TEXT: u8 = 0;
/// Services the restart rule counts at once; a console that names more (a flood of
/// made-up names) makes it forget the quietest, never grow.
const RESTART_KEYS: usize = 64;

/// What the scanner found.
#[derive(Debug, Clone)]
pub enum Found {
    /// Marker `index` (in order).
    Marker { index: usize, hit: Hit },
    /// Forbidden pattern `index`. Terminal: the scanner stops.
    Forbidden { index: usize, hit: Hit },
    /// The restart-loop pattern appeared `count` times since `first`. Terminal.
    RestartLoop { count: usize, first: Instant, hit: Hit },
    /// The heartbeat line (looked for once every marker has been seen).
    Heartbeat { hit: Hit },
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

/// How far a line has come when it is searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// It ended (`\n` or `\r`).
    Line,
    /// It is too long and is being cut.
    Cut,
    /// More of it may come.
    Unfinished,
}

pub struct Scanner<'c> {
    checks: &'c Checks,
    /// The current line (or piece of a cut line), escape sequences removed.
    line: Vec<u8>,
    /// Where searches start: 0, or 1 after [`NOT_TEXT`].
    base: usize,
    line_number: u64,
    /// (position in `line`, arrival) of the first byte of each read in this line.
    marks: Vec<(usize, Instant)>,
    escapes: Escapes,
    next_marker: usize,
    /// In `line`: where the next marker may start (after the previous one).
    marker_from: usize,
    /// In `line`: where the next restart may start.
    restart_from: usize,
    /// In `line`: where the next heartbeat may start.
    beat_from: usize,
    /// Start times within the window, per service (one entry without a `service` group).
    restarts: Vec<(Vec<u8>, Vec<Instant>)>,
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
            escapes: Escapes::default(),
            next_marker: 0,
            marker_from: 0,
            restart_from: 0,
            beat_from: 0,
            restarts: Vec::new(),
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

    /// The current (unfinished) line as far as it has arrived, escape sequences removed.
    pub fn current_line(&self) -> &[u8] {
        &self.line[self.base..]
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
            if self.escapes.in_text() && !is_special(b) {
                // Looked for within the room the line has left only: a read of plain
                // text longer than a line is not searched again for each cut.
                let room = MAX_LINE - self.line.len();
                let window = &tail[..tail.len().min(room.saturating_sub(1))];
                let run = window.iter().position(|&c| is_special(c)).map_or(window.len() + 1, |i| i + 1);
                self.line.extend_from_slice(&rest[..run]);
                rest = &rest[run..];
                if self.line.len() >= MAX_LINE {
                    self.search(found, End::Cut);
                    if self.stopped {
                        return;
                    }
                    self.cut_line();
                }
                continue;
            }
            rest = tail;
            let Some(b) = self.escapes.byte(b) else { continue };
            if b == b'\n' || b == b'\r' {
                self.search(found, End::Line);
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
                self.search(found, End::Cut);
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
            self.search(found, End::Unfinished);
        }
    }

    fn new_line(&mut self, at: Instant) {
        self.line.clear();
        self.base = 0;
        self.marks.clear();
        self.marks.push((0, at));
        self.marker_from = 0;
        self.restart_from = 0;
        self.beat_from = 0;
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
        self.beat_from = shift(self.beat_from);
        let tail = self.line.split_off(cut);
        self.line.clear();
        self.line.push(NOT_TEXT);
        self.line.extend_from_slice(&tail);
        self.base = 1;
    }

    /// When the byte at `pos` of the line arrived.
    fn arrival(&self, pos: usize) -> Instant {
        let i = self.marks.partition_point(|(p, _)| *p <= pos);
        self.marks[i.saturating_sub(1)].1
    }

    fn hit(&self, end: usize, len: usize) -> Hit {
        // The whole line as far as it has arrived: at a line's end, all of it.
        let text = &self.line[self.base..len];
        Hit {
            at: self.arrival(end.saturating_sub(1)),
            line_number: self.line_number,
            line: super::results::printable(text),
        }
    }

    /// Finds everything in the current line, earliest match end first, until nothing
    /// more is found or a terminal finding stops the scan. A line that has not ended is
    /// searched with [`NOT_TEXT`] after it.
    fn search(&mut self, found: &mut Vec<Found>, end: End) {
        let len = self.line.len();
        if end != End::Line {
            self.line.push(NOT_TEXT);
        }
        self.search_line(found, len, end);
        self.line.truncate(len);
    }

    fn search_line(&mut self, found: &mut Vec<Found>, len: usize, line_end: End) {
        #[derive(Clone, Copy)]
        enum Kind {
            Marker,
            Forbidden(usize),
            Restart(usize, usize),
            Heartbeat,
        }
        loop {
            let mut best: Option<(usize, Kind)> = None;
            let mut consider = |end: usize, kind: Kind| {
                // A match that takes in the byte after an unfinished line ends with it.
                let end = end.min(len);
                if best.is_none_or(|(e, _)| end < e) {
                    best = Some((end, kind));
                }
            };
            let line = &self.line[..];
            let all_seen = self.all_markers_seen();
            if let Some(marker) = self.checks.markers.get(self.next_marker)
                && let Some(m) = marker.regex.find_at(line, self.marker_from.max(self.base))
            {
                consider(m.end(), Kind::Marker);
            }
            if self.checks.forbidden_set.is_match_at(line, self.base) {
                for i in self.checks.forbidden_set.matches_at(line, self.base).iter() {
                    let f = &self.checks.forbidden[i];
                    if f.before_last_marker && all_seen {
                        continue;
                    }
                    // What excuses a line may come later in it.
                    if f.except.is_some() && line_end == End::Unfinished {
                        continue;
                    }
                    if let Some(end) = self.forbidden_end(i) {
                        consider(end, Kind::Forbidden(i));
                    }
                }
            }
            if let Some(r) = &self.checks.restart
                && let Some(m) = r.regex.find_at(line, self.restart_from.max(self.base))
            {
                // Only a line that restarts something pays for the groups.
                let service = if r.per_service {
                    r.regex.captures_at(line, m.start()).and_then(|c| c.name("service"))
                } else {
                    None
                };
                let (from, to) = service.map_or((0, 0), |s| (s.start(), s.end()));
                consider(m.end(), Kind::Restart(from, to));
            }
            if all_seen
                && let Some(h) = &self.checks.heartbeat
                && let Some(m) = h.regex.find_at(line, self.beat_from.max(self.base))
            {
                consider(m.end(), Kind::Heartbeat);
            }
            let Some((end, kind)) = best else { return };
            let hit = self.hit(end, len);
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
                Kind::Restart(from, to) => {
                    self.restart_from = end.max(self.restart_from + 1);
                    let service = self.line[from..to].to_vec();
                    if let Some(loop_found) = self.restarted(service, hit) {
                        found.push(loop_found);
                        self.stopped = true;
                        return;
                    }
                }
                Kind::Heartbeat => {
                    self.beat_from = end.max(self.beat_from + 1);
                    found.push(Found::Heartbeat { hit });
                }
            }
        }
    }

    /// Where forbidden pattern `i` matches the line, skipping a line its exception
    /// matches and a crash of a process the operator expects.
    fn forbidden_end(&self, i: usize) -> Option<usize> {
        let f = &self.checks.forbidden[i];
        let line = &self.line[..];
        if f.except.as_ref().is_some_and(|e| e.is_match_at(line, self.base)) {
            return None;
        }
        if !f.has_process || self.checks.expected_crashes.is_empty() {
            return f.regex.find_at(line, self.base).map(|m| m.end());
        }
        let mut from = self.base;
        while let Some(c) = f.regex.captures_at(line, from) {
            let m = c.get(0)?;
            let expected =
                c.name("process").is_some_and(|p| self.checks.expected_crashes.iter().any(|e| e == p.as_bytes()));
            if !expected {
                return Some(m.end());
            }
            from = if m.end() > m.start() { m.end() } else { m.end() + 1 };
            if from > line.len() {
                return None;
            }
        }
        None
    }

    /// Counts a start of `service` at `hit.at`; the restart loop once it is one too many.
    fn restarted(&mut self, service: Vec<u8>, hit: Hit) -> Option<Found> {
        let rule = self.checks.restart.as_ref()?;
        for (_, times) in &mut self.restarts {
            times.retain(|t| hit.at.duration_since(*t) <= rule.window);
        }
        self.restarts.retain(|(_, times)| !times.is_empty());
        let i = match self.restarts.iter().position(|(s, _)| *s == service) {
            Some(i) => i,
            None => {
                if self.restarts.len() >= RESTART_KEYS {
                    self.restarts.remove(0);
                }
                self.restarts.push((service, Vec::new()));
                self.restarts.len() - 1
            }
        };
        let times = &mut self.restarts[i].1;
        times.push(hit.at);
        if times.len() >= rule.count {
            let first = times[0];
            return Some(Found::RestartLoop { count: times.len(), first, hit });
        }
        None
    }
}
