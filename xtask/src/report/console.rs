//! The gate's console as the report shows it: read once, streaming, whatever its size;
//! what is kept is bounded (its first and last lines, a few lines around each marker and
//! around the deciding line, every line cut to a width), and the report says what it left
//! out.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::Read;

use camino::Utf8Path;

/// Lines kept from the start of the console.
const HEAD_LINES: u64 = 200;
/// Lines kept from its end.
const TAIL_LINES: usize = 800;
/// Lines kept on each side of a marked line.
const CONTEXT: u64 = 3;
/// Bytes of one line kept (the rest of a longer line is left out, saying so).
const LINE_BYTES: usize = 300;
/// Bytes read at a time.
const CHUNK: usize = 256 * 1024;

/// What marks a console line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    /// A marker appeared on it.
    Marker(String),
    /// It decided the verdict (what kind of decision).
    Deciding(String),
}

/// One console line as shown.
#[derive(Debug, Clone)]
pub struct Line {
    pub number: u64,
    /// Printable text (escape sequences and control characters dropped), cut to a width.
    pub text: String,
    /// Bytes of the line left out.
    pub cut_bytes: usize,
    pub marks: Vec<Mark>,
    /// Lines left out just before this one.
    pub gap_before: u64,
}

/// The console as the report shows it.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub lines: Vec<Line>,
    pub total_lines: u64,
    pub bytes: u64,
    /// Lines left out, in all.
    pub left_out: u64,
    /// Why the console could not be read, if it could not.
    pub error: Option<String>,
}

/// Reads the console at `path`, keeping what the report shows; `marks` are 1-based line
/// numbers with what marks them.
pub fn read(path: &Utf8Path, marks: &[(u64, Mark)]) -> View {
    let mut by_line: BTreeMap<u64, Vec<Mark>> = BTreeMap::new();
    for (n, m) in marks {
        by_line.entry(*n).or_default().push(m.clone());
    }
    let near = |n: u64| by_line.range(n.saturating_sub(CONTEXT)..=n + CONTEXT).next().is_some();
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) => return View { error: Some(format!("cannot read {path}: {e}")), ..View::default() },
    };
    let mut kept: BTreeMap<u64, (Vec<u8>, usize)> = BTreeMap::new();
    let mut tail: VecDeque<(u64, Vec<u8>, usize)> = VecDeque::with_capacity(TAIL_LINES + 1);
    let mut line: Vec<u8> = Vec::with_capacity(LINE_BYTES);
    let mut cut = 0usize;
    let mut number = 1u64;
    let mut bytes = 0u64;
    let mut buf = vec![0u8; CHUNK];
    let mut end_line = |number: u64, line: &mut Vec<u8>, cut: usize| {
        if number <= HEAD_LINES || near(number) {
            kept.insert(number, (line.clone(), cut));
        } else {
            let mut reused = if tail.len() == TAIL_LINES { tail.pop_front().map(|t| t.1) } else { None }
                .unwrap_or_else(|| Vec::with_capacity(LINE_BYTES));
            reused.clear();
            reused.extend_from_slice(line);
            tail.push_back((number, reused, cut));
        }
        line.clear();
    };
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return View { error: Some(format!("cannot read {path}: {e}")), ..View::default() },
        };
        bytes += n as u64;
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    take(&mut line, &mut cut, &rest[..i]);
                    end_line(number, &mut line, cut);
                    cut = 0;
                    number += 1;
                    rest = &rest[i + 1..];
                }
                None => {
                    take(&mut line, &mut cut, rest);
                    rest = &[];
                }
            }
        }
    }
    let total_lines = if line.is_empty() && cut == 0 {
        number - 1
    } else {
        end_line(number, &mut line, cut);
        number
    };
    for (n, text, cut) in tail {
        kept.insert(n, (text, cut));
    }
    let mut lines = Vec::with_capacity(kept.len());
    let mut previous = 0u64;
    for (n, (text, cut)) in kept {
        let line = Line {
            number: n,
            text: crate::gate::printable(&text),
            cut_bytes: cut,
            marks: by_line.remove(&n).unwrap_or_default(),
            gap_before: n - previous - 1,
        };
        previous = n;
        lines.push(line);
    }
    let left_out = total_lines - lines.len() as u64;
    View { lines, total_lines, bytes, left_out, error: None }
}

/// Appends to the line at most [`LINE_BYTES`], counting the rest as cut.
fn take(line: &mut Vec<u8>, cut: &mut usize, bytes: &[u8]) {
    let room = LINE_BYTES.saturating_sub(line.len());
    let (keep, drop) = bytes.split_at(bytes.len().min(room));
    line.extend_from_slice(keep);
    *cut += drop.len();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_head_the_tail_and_what_is_marked() {
        let dir = tempfile::tempdir().unwrap();
        let path = camino::Utf8PathBuf::from_path_buf(dir.path().join("console.log")).unwrap();
        let mut text = String::new();
        for i in 1..=5000 {
            text.push_str(&format!("line {i}\n"));
        }
        text.push_str(&"x".repeat(1000));
        std::fs::write(&path, &text).unwrap();
        let v = read(&path, &[(2500, Mark::Deciding("forbidden".into()))]);
        assert_eq!(v.total_lines, 5001);
        assert_eq!(v.lines.len() as u64 + v.left_out, 5001);
        let decided = v.lines.iter().find(|l| !l.marks.is_empty()).unwrap();
        assert_eq!((decided.number, decided.text.as_str()), (2500, "line 2500"));
        assert_eq!(v.lines[0].text, "line 1");
        let last = v.lines.last().unwrap();
        assert_eq!((last.number, last.text.len(), last.cut_bytes), (5001, LINE_BYTES, 700));
        assert!(v.lines.iter().any(|l| l.number == 2497 && l.gap_before > 0));
    }
}
