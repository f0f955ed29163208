//! Reading `data` and `packagesite.yaml` together, each in its own thread, when pkg
//! wrote them alike: `data`'s `packages` array holds, byte for byte, the lines of
//! `packagesite.yaml`, a `,` where the lines have a newline (`pkg repo` writes each
//! package's JSON once and puts it in both).
//!
//! Then parsing both would parse every entry twice. Instead the packagesite side hands
//! its bytes to the data side, which compares them with `data`'s; the lines are shared
//! out by where they start (even blocks of [`BLOCK`] bytes to the data side, odd ones to
//! the packagesite side), so that each side parses half the entries while the other
//! reads on, and the two go on side by side, one at most a block or two ahead.
//! [`join`] puts the halves together.
//!
//! The result is what [`Catalogue::read`] gives for either file: every line was
//! compared with `data`'s bytes and parsed as one JSON value on its own, and `data`
//! is those lines joined by commas inside its `packages` array. Whatever does not fit
//! (bytes that differ, whitespace between entries, a line that is not JSON, a document
//! of another shape) makes either side give up with [`Apart`]: the caller then reads
//! each file on its own, which says what is wrong.

use std::io::{BufRead, Read};
use std::ops::Range;
use std::sync::mpsc::{Receiver, SyncSender};

use super::{Catalogue, Parsed, Spans, Window, entry, read_document};
use crate::error::{Error, Result};

/// Lines are shared out by the block of `packagesite.yaml` they start in.
const BLOCK: u64 = 1 << 18;

/// How many chunks of `packagesite.yaml` (of up to 64 KiB) its side may be ahead by.
const AHEAD: usize = 32;

/// The two files are not alike, or one cannot be read: read each on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Apart;

impl From<Error> for Apart {
    fn from(_: Error) -> Apart {
        Apart
    }
}

/// What the packagesite side hands the data side: its bytes as read.
pub struct ToData {
    to: SyncSender<Vec<u8>>,
    block: u64,
}

/// The data side's end of [`ToData`].
pub struct FromLines {
    from: Receiver<Vec<u8>>,
    block: u64,
}

/// The two ends that join the sides.
pub fn channel() -> (ToData, FromLines) {
    channel_with_block(BLOCK)
}

/// [`channel`], the lines shared out by blocks of `block` bytes (at least 1): smaller
/// blocks take turns more often (tests use them to take many turns on small files).
pub fn channel_with_block(block: u64) -> (ToData, FromLines) {
    let block = block.max(1);
    let (to, from) = std::sync::mpsc::sync_channel(AHEAD);
    (ToData { to, block }, FromLines { from, block })
}

/// The entries one side parsed: in order, with the blocks they start in.
#[derive(Debug, Default)]
pub struct Part {
    catalogue: Catalogue,
    /// Runs of entries: a block, and how many entries starting in it follow.
    runs: Vec<(u64, usize)>,
}

impl Part {
    /// The entries this side parsed.
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    fn add(&mut self, block: u64, parsed: Parsed) -> Result<(), Apart> {
        let Parsed::Entry(e) = parsed else { return Err(Apart) };
        self.catalogue.add(e)?;
        match self.runs.last_mut() {
            Some((b, count)) if *b == block => *count += 1,
            _ => self.runs.push((block, 1)),
        }
        Ok(())
    }
}

/// The block (of `size` bytes) a line starting at `at` is in, and whether the data
/// side parses it.
fn block(at: u64, size: u64) -> (u64, bool) {
    let b = at / size;
    (b, b.is_multiple_of(2))
}

/// The packagesite side: reads `packagesite.yaml` from `reader` to its end (unless the
/// data side gave up), hands every byte to the data side, and parses the lines that
/// start in odd blocks.
pub fn read_lines(reader: impl Read, to_data: ToData) -> Result<Part, Apart> {
    let size = to_data.block;
    let mut reader = std::io::BufReader::with_capacity(1 << 16, Tee { inner: reader, to: to_data.to });
    let mut part = Part::default();
    let mut line = Vec::new();
    let mut at = 0u64;
    loop {
        let (b, theirs) = block(at, size);
        let n = if theirs {
            reader.skip_until(b'\n').map_err(|_| Apart)?
        } else {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(|_| Apart)?;
            if n > 0 {
                let text = line.strip_suffix(b"\n").unwrap_or(&line);
                std::str::from_utf8(text).map_err(|_| Apart)?;
                part.add(b, entry(text))?;
            }
            n
        };
        if n == 0 {
            return Ok(part);
        }
        at += n as u64;
    }
}

/// A reader handing a copy of what it reads to the data side; a read fails once the
/// data side is gone.
struct Tee<R> {
    inner: R,
    to: SyncSender<Vec<u8>>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.to.send(buf[..n].to_vec()).map_err(|_| std::io::Error::other("the data side gave up"))?;
        }
        Ok(n)
    }
}

/// The data side: reads `data` from `reader`, compares its `packages` array with the
/// lines the packagesite side hands over, and parses the lines that start in even
/// blocks.
pub fn read_data(reader: impl Read, from_lines: FromLines) -> Result<Part, Apart> {
    let mut lines = Lines { from: from_lines.from, block: from_lines.block, buf: Vec::new(), pos: 0, ended: false };
    let mut part = Part::default();
    let mut w = Window::new(reader);
    let mut apart = false;
    // The reader of the whole document refuses a second array before reading it.
    read_document(&mut w, |w| {
        read_array(w, &mut lines, &mut part).map_err(|Apart| {
            apart = true;
            Error::msg("not alike")
        })
    })?;
    if apart {
        return Err(Apart);
    }
    Ok(part)
}

/// The `packages` array (its `[` next in `w`): each line of `packagesite.yaml`, then `,`,
/// and `]` after the last.
fn read_array<R: Read>(w: &mut Window<R>, lines: &mut Lines, part: &mut Part) -> Result<(), Apart> {
    w.pos += 1;
    let mut at = 0u64;
    loop {
        let Some((len, newline)) = lines.next() else {
            // No line (left): the array ends here.
            return match w.ensure(1)? && w.buf[w.pos] == b']' {
                true => {
                    w.pos += 1;
                    Ok(())
                }
                false => Err(Apart),
            };
        };
        let line = &lines.buf[lines.pos..lines.pos + len];
        if !w.ensure(len + 1)? || w.buf[w.pos..w.pos + len] != *line {
            return Err(Apart);
        }
        let more = newline && lines.more(len + 1);
        if w.buf[w.pos + len] != if more { b',' } else { b']' } {
            return Err(Apart);
        }
        let (b, ours) = block(at, lines.block);
        if ours {
            let line = &lines.buf[lines.pos..lines.pos + len];
            std::str::from_utf8(line).map_err(|_| Apart)?;
            part.add(b, entry(line))?;
        }
        w.pos += len + 1;
        let taken = len + usize::from(newline);
        lines.consume(taken);
        at += taken as u64;
        if !more {
            return Ok(());
        }
    }
}

/// `packagesite.yaml` as the data side has it: the bytes handed over and not yet
/// compared.
struct Lines {
    from: Receiver<Vec<u8>>,
    /// The size of the blocks the lines are shared out by.
    block: u64,
    buf: Vec<u8>,
    pos: usize,
    /// The packagesite side has handed over everything (or is gone).
    ended: bool,
}

impl Lines {
    /// Takes the next chunk handed over; false when there is none left.
    fn pull(&mut self) -> bool {
        if self.ended {
            return false;
        }
        match self.from.recv() {
            Ok(chunk) => {
                if self.pos >= self.buf.len() / 2 {
                    self.buf.drain(..self.pos);
                    self.pos = 0;
                }
                self.buf.extend_from_slice(&chunk);
                true
            }
            Err(_) => {
                self.ended = true;
                false
            }
        }
    }

    /// The next line's length, without its newline, and whether it has one; `None`
    /// when no byte is left.
    fn next(&mut self) -> Option<(usize, bool)> {
        let mut from = self.pos;
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[from..]) {
                return Some((from + i - self.pos, true));
            }
            from = self.buf.len() - self.pos;
            if !self.pull() {
                return (self.buf.len() > self.pos).then(|| (self.buf.len() - self.pos, false));
            }
            from += self.pos;
        }
    }

    /// Whether any byte follows the first `n` not yet consumed.
    fn more(&mut self, n: usize) -> bool {
        while self.buf.len() - self.pos <= n {
            if !self.pull() {
                return false;
            }
        }
        true
    }

    fn consume(&mut self, n: usize) {
        self.pos += n;
    }
}

/// The catalogue both sides read: their entries in the order of their lines.
pub fn join(data: Part, lines: Part) -> Result<Catalogue, Apart> {
    let order = order(&data, &lines);
    let Part { catalogue: mut c, .. } = data;
    let theirs = lines.catalogue;
    // The text of the packagesite side's entries goes after the data side's: an entry's
    // fields are wherever its spans say.
    let shift = c.offset()?;
    c.text.push_str(&theirs.text);
    c.offset()?;
    let mut mine = std::mem::take(&mut c.entries).into_iter();
    let mut theirs = theirs
        .entries
        .into_iter()
        .map(|e| e.map(|s| Spans { start: s.start + shift, ends: s.ends.map(|at| at + shift), ..s }));
    c.entries.reserve_exact(mine.len() + theirs.len());
    for (from_data, range) in order {
        match from_data {
            true => c.entries.extend(mine.by_ref().take(range.len())),
            false => c.entries.extend(theirs.by_ref().take(range.len())),
        }
    }
    c.text.shrink_to_fit();
    Ok(c)
}

/// The entries of both parts in the order of their lines: runs of entries of one part
/// (true: the data side's) or the other.
pub(crate) fn order(data: &Part, lines: &Part) -> Vec<(bool, Range<usize>)> {
    let mut order = Vec::with_capacity(data.runs.len() + lines.runs.len());
    let (mut a, mut b) = (data.runs.iter().peekable(), lines.runs.iter().peekable());
    let (mut i, mut j) = (0usize, 0usize);
    loop {
        let from_data = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) => x.0 < y.0,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return order,
        };
        let (runs, at) = if from_data { (&mut a, &mut i) } else { (&mut b, &mut j) };
        let n = runs.next().map_or(0, |r| r.1);
        order.push((from_data, *at..*at + n));
        *at += n;
    }
}

/// Both files read together, each from its own reader in its own thread, the lines
/// shared out by blocks of `block` bytes ([`channel_with_block`]): the catalogue, or
/// [`Apart`] when they are not alike (or either cannot be read).
pub fn read_pair(data: impl Read + Send, lines: impl Read + Send, block: u64) -> Result<Catalogue, Apart> {
    let (to_data, from_lines) = channel_with_block(block);
    let (d, l) = std::thread::scope(|s| {
        let l = s.spawn(move || read_lines(lines, to_data));
        let d = read_data(data, from_lines);
        (d, l.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
    });
    join(d?, l?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CatalogueKind;
    use crate::catalogue::tests::Trickle;

    /// Entries of many lengths: one far longer than a block, one with escapes, one that
    /// is JSON but not a package.
    fn entries(count: usize) -> Vec<String> {
        let mut seed = 7u64;
        (0..count)
            .map(|i| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let desc = "d".repeat(if i == count / 2 { 300_000 } else { (seed >> 40) as usize % 3000 });
                match i % 97 {
                    5 => r#"{"name":"broken","pkgsize":"big"}"#.to_owned(),
                    9 => format!(
                        r#"{{"name":"e\u00e9\"{i}","origin":"x/e","version":"1","abi":"FreeBSD:15:amd64","sum":"s","pkgsize":1,"path":"All/e{i}.pkg"}}"#
                    ),
                    _ => format!(
                        r#"{{"name":"p{i}","origin":"x/p{i}","version":"1.{i}","abi":"FreeBSD:15:amd64","sum":"s{i}","pkgsize":{},"path":"All/p{i}.pkg","repopath":"All/p{i}.pkg","desc":"{desc}","n":[{i},1.5e3,true,null]}}"#,
                        i * 1_000_003
                    ),
                }
            })
            .collect()
    }

    /// `data` and `packagesite.yaml` as pkg writes them for `entries`.
    fn files(entries: &[String]) -> (String, String) {
        let data = format!(r#"{{"groups":[],"expired_packages":[],"packages":[{}]}}"#, entries.join(","));
        let lines: String = entries.iter().map(|e| format!("{e}\n")).collect();
        (data, lines)
    }

    const BLOCKS: [u64; 5] = [1, 7, 1000, 65_536, BLOCK];

    /// Reads the pair together at every block size, through readers of several read
    /// sizes; whenever that succeeds, the catalogue must be what each file gives alone.
    /// Whether it succeeded, each time.
    fn together(data: &str, lines: &str) -> Vec<bool> {
        let alone = [
            Catalogue::parse(CatalogueKind::Data, data.as_bytes()),
            Catalogue::parse(CatalogueKind::Packagesite, lines.as_bytes()),
        ];
        let mut outcomes = Vec::new();
        for (block, step) in BLOCKS.into_iter().zip([3, 1 << 16, 5, 1 << 20, 4093]) {
            let pair = read_pair(Trickle(data.as_bytes(), step), Trickle(lines.as_bytes(), step + 2), block);
            if let Ok(c) = &pair {
                for a in &alone {
                    let a = a.as_ref().expect("read together, so each reads alone");
                    assert!(a.entries().eq(c.entries()), "block {block}");
                }
            }
            outcomes.push(pair.is_ok());
        }
        outcomes
    }

    #[test]
    fn files_pkg_wrote_alike_are_read_together_as_each_reads_alone() {
        let entries = entries(600);
        let (data, lines) = files(&entries);
        assert_eq!(together(&data, &lines), [true; 5]);
        let c = read_pair(data.as_bytes(), lines.as_bytes(), 1000).unwrap();
        assert_eq!(c.len(), 600);
        assert!(c.entry(5).unwrap_err().contains("entry `broken`"));
        assert_eq!(c.entry(9).unwrap().name, format!("e\u{e9}\"9"));
        // Without the last newline; with `packages` not the last member; empty.
        assert_eq!(together(&data, lines.trim_end()), [true; 5]);
        let first = format!(r#"{{"packages":[{}],"groups":[]}}"#, entries.join(","));
        assert_eq!(together(&first, &lines), [true; 5]);
        assert_eq!(together(r#"{"groups":[],"packages":[]}"#, ""), [true; 5]);
        // The sample pkg 2.8.4 wrote.
        let sample = |archive: &str, inner: &str| {
            let path = format!("{}/tests/data/pkg-repo/production-pubkey/{archive}", env!("CARGO_MANIFEST_DIR"));
            let mut text = String::new();
            crate::archive::scan(camino::Utf8Path::new(&path), |h, r| {
                if h.name == inner {
                    r.read_to_string(&mut text)?;
                }
                Ok(())
            })
            .unwrap();
            text
        };
        let (data, lines) = (sample("data.pkg", "data"), sample("packagesite.pkg", "packagesite.yaml"));
        assert!(!lines.is_empty());
        assert_eq!(together(&data, &lines), [true; 5]);
    }

    #[test]
    fn files_not_alike_are_read_apart() {
        let entries = entries(300);
        let (data, lines) = files(&entries);
        let apart = |data: &str, lines: &str, why: &str| {
            assert_eq!(together(data, lines), [false; 5], "{why}");
        };
        // One byte of a late entry differs.
        let late = lines.rfind("\"sum\":\"s2").unwrap() + 8;
        let mut changed = lines.clone().into_bytes();
        changed[late] = b'X';
        apart(&data, &String::from_utf8(changed).unwrap(), "a byte differs");
        apart(&data.replacen("},{", "}, {", 1), &lines, "whitespace between entries");
        apart(&data, &lines.replacen('\n', "\n\n", 1), "a blank line");
        apart(&data, &lines.replace('\n', "\r\n"), "CRLF lines");
        let (fewer_data, _) = files(&entries[..299]);
        apart(&fewer_data, &lines, "a line more");
        let (_, fewer_lines) = files(&entries[..299]);
        apart(&data, &fewer_lines, "an entry more");
        // Two entries on one line (data alike byte for byte), and one entry on two.
        apart(&data, &lines.replacen('\n', ",", 1), "two entries on a line");
        let split = lines.replacen(r#","origin""#, "\n\"origin\"", 1);
        apart(&data, &split, "an entry on two lines");
        apart(&data.replace("]}", "],\"packages\":[]}"), &lines, "two `packages` arrays");
        apart(&format!("{data} x"), &lines, "not JSON after the document");
        apart(&data.replace("s1", "s\u{1}"), &lines.replace("s1", "s\u{1}"), "a control character in a string");
    }
}
