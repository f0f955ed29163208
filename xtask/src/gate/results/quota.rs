//! How much of the console the results quote: result.json and junit.xml stay under
//! [`FILE_LIMIT`] whatever the console printed. Each is rendered with the full
//! [`Quota`], then with less until it fits; every line, tail or output cut says so.

use anyhow::Result;

use super::Attempt;
use super::console::LOG_LINE;
use crate::gate::probe::OUTPUT_LIMIT;

/// The most result.json or junit.xml may hold.
pub const FILE_LIMIT: usize = 64 * 1024;

/// How much of the console a result quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// The console's last lines (junit.xml's `system-out`).
    pub tail: usize,
    /// Characters of any one quoted line.
    pub chars: usize,
    /// Bytes of each probe's output.
    pub output: usize,
}

impl Quota {
    /// What the results quote when it fits (a line the console file cut keeps its note).
    pub const FULL: Quota = Quota { tail: 50, chars: LOG_LINE + 60, output: OUTPUT_LIMIT };
    /// The least they quote, however little fits.
    const FLOOR: Quota = Quota { tail: 5, chars: 80, output: 256 };

    /// Half of each, down to the floor; `None` once everything is at the floor.
    fn less(self) -> Option<Quota> {
        let f = Quota::FLOOR;
        let less = Quota {
            tail: (self.tail / 2).max(f.tail),
            chars: (self.chars / 2).max(f.chars),
            output: (self.output / 2).max(f.output),
        };
        (less != self).then_some(less)
    }
}

/// `render` with the full quota, then with less until what it gives fits in
/// [`FILE_LIMIT`] (or the quota is at its floor: what is left is the configuration's own
/// size, not the console's).
pub fn fitted(render: impl Fn(Quota) -> Result<Vec<u8>>) -> Result<Vec<u8>> {
    let mut quota = Quota::FULL;
    loop {
        let bytes = render(quota)?;
        match quota.less() {
            Some(less) if bytes.len() > FILE_LIMIT => quota = less,
            _ => return Ok(bytes),
        }
    }
}

/// A quoted line of at most `chars` characters: a longer one is cut, saying so. A line
/// the console file cut already keeps its note (how long the line was) after the cut.
pub fn cut_line(line: &str, chars: usize) -> String {
    let (text, note) = match line.rfind(super::console::CUT_NOTE) {
        Some(i) if line.ends_with(']') => line.split_at(i),
        _ => (line, " [... cut]"),
    };
    match text.char_indices().nth(chars) {
        None => line.to_owned(),
        Some((end, _)) => format!("{}{note}", &text[..end]),
    }
}

impl Attempt {
    /// A copy that quotes at most `q` of the console: each quoted line cut to
    /// `q.chars`, the tail to its last `q.tail` lines, each probe's output to `q.output`
    /// bytes. Every cut says so.
    pub fn quoting(&self, q: Quota) -> Attempt {
        let mut a = self.clone();
        let stamp = super::console::STAMP_LEN;
        if let Some(line) = a.decided_by.as_mut().and_then(|d| d.line.as_mut()) {
            *line = cut_line(line, q.chars);
        }
        let left_out = a.tail.len().saturating_sub(q.tail);
        a.tail = a.tail[left_out..].iter().map(|l| cut_line(l, stamp + q.chars)).collect();
        if left_out > 0 {
            a.tail.insert(0, format!("[{left_out} earlier console lines left out; console.log has them]"));
        }
        a.stderr = a.stderr.lines().map(|l| cut_line(l, q.chars)).collect::<Vec<_>>().join("\n");
        for p in &mut a.probes {
            if p.output.len() > q.output {
                let mut end = q.output;
                while !p.output.is_char_boundary(end) {
                    end -= 1;
                }
                p.output.truncate(end);
                p.output_cut = true;
            }
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_line_is_cut_saying_so_and_a_short_one_is_kept() {
        assert_eq!(cut_line("login: ", 80), "login: ");
        assert_eq!(cut_line(&"é".repeat(100), 3), "ééé [... cut]");
        let cut = "[     0.002] xxxxxx [... line cut: 100000000 bytes in all]";
        assert_eq!(cut_line(cut, 15), "[     0.002] xx [... line cut: 100000000 bytes in all]");
        assert_eq!(cut_line(cut, 80), cut);
    }

    #[test]
    fn fitting_halves_the_quota_until_it_fits() {
        let sizes = std::cell::RefCell::new(Vec::new());
        let out = fitted(|q| {
            sizes.borrow_mut().push(q);
            Ok(vec![0; q.tail * 3000])
        })
        .unwrap();
        assert!(out.len() <= FILE_LIMIT);
        assert_eq!(sizes.borrow().iter().map(|q| q.tail).collect::<Vec<_>>(), [50, 25, 12]);
        // At the floor it stops, whatever the size.
        let out = fitted(|_| Ok(vec![0; 2 * FILE_LIMIT])).unwrap();
        assert_eq!(out.len(), 2 * FILE_LIMIT);
    }
}
