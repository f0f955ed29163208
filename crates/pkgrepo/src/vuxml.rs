//! VuXML (the FreeBSD ports security team's vuln.xml) read and matched as `pkg audit -f
//! FILE` does in pkg 2.8.4: libpkg/pkg_audit.c (`vulnxml_start_element`,
//! `vulnxml_end_element`, `pkg_audit_version_match`, `pkg_audit_is_vulnerable`). See
//! docs/reference/pkg-audit.md.
//!
//! What is read: each `<vuln vid="...">` with its `<topic>`, each `<package>` of its
//! `<affects>` with its `<name>`s (shell globs, matched with fnmatch) and `<range>`s of
//! at most two bounds (`lt`, `le`, `eq`, `ge`, `gt`), and its `<cvename>`s. Element
//! names are compared without case. An entry whose first package has no name is
//! dropped. A package is affected by an entry when one of the entry's names matches its
//! name and, for that package element, some range has both bounds satisfied (a missing
//! bound is satisfied) by its version as [`crate::version::compare`] orders them.

use std::cmp::Ordering;

use quick_xml::events::Event;

/// The most a VuXML file may weigh (the ports tree's vuln.xml is a few MiB).
pub const MAX_VUXML: u64 = 256 << 20;

/// One `<vuln>` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// The `vid` attribute.
    pub vid: String,
    /// `<topic>`.
    pub topic: String,
    /// Each `<package>` of `<affects>`.
    pub packages: Vec<Affected>,
    /// `<cvename>`s.
    pub cves: Vec<String>,
}

/// A `<package>`: names (globs) and version ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Affected {
    /// `<name>`s: shell globs of package names.
    pub names: Vec<String>,
    /// `<range>`s: the package is affected when one holds.
    pub ranges: Vec<Range>,
}

/// A `<range>`: up to two bounds, both of which must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Range {
    /// At most two bounds.
    pub bounds: Vec<Bound>,
}

/// `<lt>1.2</lt>` and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bound {
    /// How the version compares.
    pub op: Op,
    /// The bound's version.
    pub version: String,
}

/// A bound's comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<lt>`: less than.
    Lt,
    /// `<le>`: at most.
    Le,
    /// `<eq>`: equal.
    Eq,
    /// `<ge>`: at least.
    Ge,
    /// `<gt>`: greater than.
    Gt,
}

impl Op {
    fn of(name: &str) -> Option<Op> {
        Some(match name.to_ascii_lowercase().as_str() {
            "lt" => Op::Lt,
            "le" => Op::Le,
            "eq" => Op::Eq,
            "ge" => Op::Ge,
            "gt" => Op::Gt,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Eq => "=",
            Op::Ge => ">=",
            Op::Gt => ">",
        };
        write!(f, "{op}{}", self.version)
    }
}

/// A VuXML document that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Byte offset where reading stopped.
    pub offset: u64,
    /// What is wrong there.
    pub message: String,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not VuXML at byte {}: {}", self.offset, self.message)
    }
}

impl std::error::Error for Error {}

/// Where in an entry the reader is (pkg_audit.c's `vulnxml_parse_state`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Init,
    Vuln,
    Topic,
    Package,
    Name,
    Range,
    Bound(Op),
    Cve,
}

/// Reads every entry of a VuXML document.
pub fn parse(bytes: &[u8]) -> Result<Vec<Entry>, Error> {
    let doc = std::str::from_utf8(bytes)
        .map_err(|e| Error { offset: e.valid_up_to() as u64, message: "not UTF-8 text".to_owned() })?;
    let mut reader = quick_xml::Reader::from_str(doc);
    let mut entries: Vec<Entry> = Vec::new();
    let mut state = State::Init;
    let mut text = String::new();
    let mut depth = 0usize;
    loop {
        let at = reader.buffer_position();
        let event = reader.read_event().map_err(|e| Error { offset: at, message: e.to_string() })?;
        match event {
            Event::Start(e) => {
                depth += 1;
                let name = e.local_name().as_ref().to_ascii_lowercase();
                text.clear();
                state = match (state, name.as_str()) {
                    (State::Init, "vuln") => {
                        let mut entry = Entry::default();
                        for a in e.attributes().flatten() {
                            if a.key.local_name().as_ref().eq_ignore_ascii_case("vid") {
                                entry.vid = a.value.into_owned();
                            }
                        }
                        entries.push(entry);
                        State::Vuln
                    }
                    (State::Vuln, "topic") => State::Topic,
                    (State::Vuln, "package") => {
                        current(&mut entries).packages.push(Affected::default());
                        State::Package
                    }
                    (State::Vuln, "cvename") => State::Cve,
                    (State::Package, "name") => State::Name,
                    (State::Package, "range") => {
                        last_package(&mut entries).ranges.push(Range::default());
                        State::Range
                    }
                    (State::Range, bound) => Op::of(bound).map_or(State::Range, State::Bound),
                    (s, _) => s,
                };
            }
            Event::Text(t) => {
                if matches!(state, State::Topic | State::Name | State::Bound(_) | State::Cve) {
                    text.push_str(&t);
                }
            }
            Event::CData(t) => {
                if matches!(state, State::Topic | State::Name | State::Bound(_) | State::Cve) {
                    text.push_str(&t);
                }
            }
            Event::GeneralRef(r) => {
                if matches!(state, State::Topic | State::Name | State::Bound(_) | State::Cve) {
                    let name: &str = &r;
                    let numeric = name
                        .strip_prefix("#x")
                        .map(|h| u32::from_str_radix(h, 16))
                        .or_else(|| name.strip_prefix('#').map(str::parse));
                    match numeric {
                        Some(Ok(n)) => text.extend(char::from_u32(n)),
                        Some(Err(_)) => {}
                        None => text.push_str(match name {
                            "amp" => "&",
                            "lt" => "<",
                            "gt" => ">",
                            "quot" => "\"",
                            "apos" => "'",
                            _ => "",
                        }),
                    }
                }
            }
            Event::End(e) => {
                depth = depth.saturating_sub(1);
                let name = e.local_name().as_ref().to_ascii_lowercase();
                state = match (state, name.as_str()) {
                    (State::Vuln, "vuln") => {
                        let keep = current(&mut entries).packages.first().is_some_and(|p| !p.names.is_empty());
                        if !keep {
                            entries.pop();
                        }
                        State::Init
                    }
                    (State::Topic, "topic") => {
                        current(&mut entries).topic = text.trim().to_owned();
                        State::Vuln
                    }
                    (State::Cve, "cvename") => {
                        current(&mut entries).cves.push(text.trim().to_owned());
                        State::Vuln
                    }
                    (State::Package, "package") => State::Vuln,
                    (State::Name, "name") => {
                        last_package(&mut entries).names.push(text.trim().to_owned());
                        State::Package
                    }
                    (State::Range, "range") => State::Package,
                    (State::Bound(op), _) if Op::of(&name) == Some(op) => {
                        let range = last_package(&mut entries).ranges.last_mut().expect("inside a range");
                        if range.bounds.len() < 2 {
                            range.bounds.push(Bound { op, version: text.trim().to_owned() });
                        }
                        State::Range
                    }
                    (s, _) => s,
                };
                text.clear();
            }
            // pkg refuses a document that ends inside an element ("Invalid end of XML",
            // pkg_audit.c's yxml_eof check after the parse loop).
            Event::Eof if depth != 0 => {
                return Err(Error { offset: at, message: "the document ends inside an element".to_owned() });
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(entries)
}

fn current(entries: &mut [Entry]) -> &mut Entry {
    entries.last_mut().expect("inside a vuln")
}

fn last_package(entries: &mut [Entry]) -> &mut Affected {
    current(entries).packages.last_mut().expect("inside a package")
}

impl Entry {
    /// The first of this entry's packages that affects `name` at `version`, with the
    /// range that matched.
    pub fn affects(&self, name: &str, version: &str) -> Option<(&Affected, &Range)> {
        self.packages.iter().filter(|p| p.names.iter().any(|g| fnmatch(g.as_bytes(), name.as_bytes()))).find_map(|p| {
            let range = p.ranges.iter().find(|r| r.bounds.iter().all(|b| b.holds(version)))?;
            Some((p, range))
        })
    }
}

impl Bound {
    /// Whether `version` satisfies this bound (`pkg_audit_version_match`).
    pub fn holds(&self, version: &str) -> bool {
        match crate::version::compare(version, &self.version) {
            Ordering::Less => matches!(self.op, Op::Lt | Op::Le),
            Ordering::Equal => matches!(self.op, Op::Eq | Op::Le | Op::Ge),
            Ordering::Greater => matches!(self.op, Op::Gt | Op::Ge),
        }
    }
}

impl Range {
    /// The versions this range says fix it: its upper bound (`< V`: V; `<= V`: after V).
    pub fn fixed_in(&self) -> Option<String> {
        self.bounds.iter().find_map(|b| match b.op {
            Op::Lt => Some(b.version.clone()),
            Op::Le => Some(format!("after {}", b.version)),
            _ => None,
        })
    }
}

/// fnmatch(3) with no flags: `*`, `?`, `[...]` (with `!` or `^` and ranges) and `\`
/// escapes; `/` and leading dots are ordinary characters.
pub fn fnmatch(pattern: &[u8], name: &[u8]) -> bool {
    // Iterative with one backtrack point for the last `*`: linear in practice.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, n));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    n += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = bracket(pattern, p, name[n]) {
                        if matched {
                            p = next;
                            n += 1;
                            continue;
                        }
                    } else if name[n] == b'[' {
                        p += 1;
                        n += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if pattern[p + 1] == name[n] {
                        p += 2;
                        n += 1;
                        continue;
                    }
                }
                c => {
                    if c == name[n] {
                        p += 1;
                        n += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, sn)) => {
                p = sp + 1;
                n = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// A bracket expression at `pattern[p] == b'['`: whether `c` matches and where the
/// expression ends; `None` when it is not closed (then `[` is an ordinary character).
fn bracket(pattern: &[u8], p: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = p + 1;
    let negate = matches!(pattern.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let mut lo = *pattern.get(i)?;
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if lo == b'\\' {
            i += 1;
            lo = *pattern.get(i)?;
        }
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&h| h != b']') {
            let mut hi = pattern[i + 2];
            i += 2;
            if hi == b'\\' {
                i += 1;
                hi = *pattern.get(i)?;
            }
            matched |= lo <= c && c <= hi;
        } else {
            matched |= lo == c;
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<vuxml xmlns="http://www.vuxml.org/apps/vuxml-1">
  <vuln vid="0a1b2c3d-0000-11ef-8000-000000000001">
    <topic>colibri -- remote crash &amp; worse</topic>
    <affects>
      <package>
        <name>colibri</name>
        <name>colibri-devel</name>
        <range><lt>0.9.1</lt></range>
        <range><ge>1.0</ge><lt>1.0.3_1</lt></range>
      </package>
    </affects>
    <references><cvename>CVE-2026-0001</cvename></references>
  </vuln>
  <VULN vid="no-names"><affects><package><range><lt>1</lt></range></package></affects></VULN>
  <vuln vid="glob"><topic>py glob</topic><affects><package><name>py3*-foo</name><range><le>2.0</le></range></package></affects></vuln>
</vuxml>
"#;

    #[test]
    fn reads_entries_as_pkg_audit_does() {
        let entries = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(entries.len(), 2, "the entry without a name is dropped");
        let e = &entries[0];
        assert_eq!(e.vid, "0a1b2c3d-0000-11ef-8000-000000000001");
        assert_eq!(e.topic, "colibri -- remote crash & worse");
        assert_eq!(e.cves, ["CVE-2026-0001"]);
        assert_eq!(e.packages[0].names, ["colibri", "colibri-devel"]);
        assert_eq!(e.packages[0].ranges[1].bounds.len(), 2);
        assert!(e.affects("colibri", "0.9.0").is_some());
        assert!(e.affects("colibri", "0.9.0_3").is_some());
        assert!(e.affects("colibri", "0.9.1").is_none());
        assert!(e.affects("colibri", "1.0.3").is_some());
        assert!(e.affects("colibri", "1.0.3_1").is_none());
        assert!(e.affects("colibri-devel", "1.0").is_some());
        assert!(e.affects("colibri2", "0.1").is_none());
        assert_eq!(e.packages[0].ranges[0].fixed_in().as_deref(), Some("0.9.1"));
        assert!(entries[1].affects("py311-foo", "2.0").is_some());
        assert!(entries[1].affects("py311-foo", "2.0_1").is_none());
    }

    #[test]
    fn globs_match_as_fnmatch() {
        for (p, n, want) in [
            ("a*b", "axxb", true),
            ("a*b", "axxbc", false),
            ("*", "", true),
            ("a?c", "abc", true),
            ("[ab]x", "bx", true),
            ("[!ab]x", "bx", false),
            ("[a-c]x", "cx", true),
            ("a\\*", "a*", true),
            ("a\\*", "ab", false),
            ("[", "[", true),
            ("**a**b", "xaxb", true),
        ] {
            assert_eq!(fnmatch(p.as_bytes(), n.as_bytes()), want, "{p} vs {n}");
        }
    }

    #[test]
    fn a_document_cut_inside_an_entry_is_refused() {
        let cut = &SAMPLE[..SAMPLE.find("<references>").unwrap()];
        let e = parse(cut.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("ends inside an element"), "{e}");
    }

    #[test]
    fn broken_documents_are_errors_or_empty_never_panics() {
        for doc in ["<vuln", "<vuxml><vuln vid='x'><affects><package><name>a</name><range><lt>", "\u{0}\u{ff}", "</a>"]
        {
            let _ = parse(doc.as_bytes());
        }
    }
}
