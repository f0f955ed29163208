//! The package entries of a catalogue: `data` (one JSON object, packages in its
//! `packages` array) and `packagesite.yaml` (one JSON object per line).
//!
//! Both are read as a stream ([`Catalogue::read`]): of each entry only the fields
//! verification needs are kept (the rest is checked for syntax and skipped), all of them
//! in one string, so a catalogue of a whole ports tree is never held whole, as text or as
//! a tree of values, nor as a string per field. What is accepted is what a JSON parser of the
//! whole document accepts (the document must be UTF-8 and JSON), with one refusal more:
//! an entry naming one of [`Package`]'s fields twice, or a `data` with two `packages`
//! arrays, which two readers could take differently.

use std::borrow::Cow;
use std::io::{BufRead, Read};

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::CatalogueKind;
use crate::error::{Context, Error, Result, bail};

pub mod twin;

/// One package as a catalogue lists it: the fields verification needs (pkg writes many
/// more, which are ignored), borrowed from the [`Catalogue`] that holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Package<'a> {
    /// `colibri`.
    pub name: &'a str,
    /// The port it was built from: `sysutils/colibri`.
    pub origin: &'a str,
    /// `0.9.0`.
    pub version: &'a str,
    /// What it runs on: `FreeBSD:15:amd64`, or with `*` parts for any.
    pub abi: &'a str,
    /// The whole file's checksum, as written (see [`Sum`](crate::sum::Sum)).
    pub sum: &'a str,
    /// The file's size in bytes.
    pub pkgsize: u64,
    /// The file, relative to the repository: `All/colibri-0.9.0.pkg`.
    pub path: &'a str,
    /// The same path again in the catalogues pkg writes (it must equal `path`).
    pub repopath: Option<&'a str>,
}

/// An entry as it is parsed: each string borrowed from the catalogue's bytes unless it
/// has escapes.
#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    origin: Cow<'a, str>,
    #[serde(borrow)]
    version: Cow<'a, str>,
    #[serde(borrow)]
    abi: Cow<'a, str>,
    #[serde(borrow)]
    sum: Cow<'a, str>,
    pkgsize: u64,
    #[serde(borrow)]
    path: Cow<'a, str>,
    #[serde(borrow, default)]
    repopath: Option<Cow<'a, str>>,
}

/// Where one package's fields are in [`Catalogue`]'s text: each field ends where the
/// next starts.
#[derive(Debug, Clone)]
struct Spans {
    start: u32,
    /// The ends of name, origin, version, abi, sum, path and repopath.
    ends: [u32; 7],
    pkgsize: u64,
    repopath: bool,
}

/// A catalogue's entries, held compactly: the fields of every package one after
/// another in one string, and where each is (a catalogue of a whole ports tree is tens
/// of thousands of entries; a string of its own for every field would be hundreds of
/// thousands of allocations to make, scatter and free).
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    text: String,
    /// In catalogue order: a package, or why that entry is not one.
    entries: Vec<Result<Spans, String>>,
}

impl Catalogue {
    /// Parses the inner file of a catalogue archive, held whole.
    pub fn parse(kind: CatalogueKind, bytes: &[u8]) -> Result<Catalogue> {
        Catalogue::read(kind, bytes)
    }

    /// Reads the inner file of a catalogue archive from `reader` as a stream: only
    /// the entries' fields are kept. Fails when the file as a whole cannot be read: not
    /// UTF-8, not JSON, no `packages` array.
    pub fn read(kind: CatalogueKind, reader: impl Read) -> Result<Catalogue> {
        let mut c = Catalogue::default();
        match kind {
            CatalogueKind::Data => read_data(reader, &mut c)?,
            CatalogueKind::Packagesite => read_lines(reader, &mut c)?,
        }
        c.text.shrink_to_fit();
        c.entries.shrink_to_fit();
        Ok(c)
    }

    /// How many entries it has (packages or not).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entry `i`: a package, or why that entry is not one. Panics past the end.
    pub fn entry(&self, i: usize) -> Result<Package<'_>, &str> {
        match &self.entries[i] {
            Ok(s) => Ok(self.package(s)),
            Err(e) => Err(e),
        }
    }

    /// The entries, in catalogue order.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = Result<Package<'_>, &str>> + '_ {
        self.entries.iter().map(|e| match e {
            Ok(s) => Ok(self.package(s)),
            Err(e) => Err(e.as_str()),
        })
    }

    /// The entries that are complete packages.
    pub fn packages(&self) -> impl Iterator<Item = Package<'_>> + '_ {
        self.entries().filter_map(Result::ok)
    }

    fn package(&self, s: &Spans) -> Package<'_> {
        let field = |i: usize| {
            let from = if i == 0 { s.start } else { s.ends[i - 1] };
            &self.text[from as usize..s.ends[i] as usize]
        };
        Package {
            name: field(0),
            origin: field(1),
            version: field(2),
            abi: field(3),
            sum: field(4),
            pkgsize: s.pkgsize,
            path: field(5),
            repopath: s.repopath.then(|| field(6)),
        }
    }

    /// Adds a package entry.
    fn push(&mut self, raw: Raw) -> Result<()> {
        let start = self.offset()?;
        let mut ends = [0u32; 7];
        let repopath = raw.repopath.as_deref();
        let fields =
            [&*raw.name, &*raw.origin, &*raw.version, &*raw.abi, &*raw.sum, &*raw.path, repopath.unwrap_or("")];
        for (end, field) in ends.iter_mut().zip(fields) {
            self.text.push_str(field);
            *end = self.offset()?;
        }
        self.entries.push(Ok(Spans { start, ends, pkgsize: raw.pkgsize, repopath: repopath.is_some() }));
        Ok(())
    }

    /// The length of the text so far, which entries' spans count in 32 bits.
    fn offset(&self) -> Result<u32> {
        u32::try_from(self.text.len()).map_err(|_| Error::msg("its entries hold more than 4 GiB of text"))
    }

    /// Adds an entry: a package, or why it is not one.
    fn add(&mut self, entry: Result<Raw, String>) -> Result<()> {
        match entry {
            Ok(raw) => self.push(raw),
            Err(why) => {
                self.entries.push(Err(why));
                Ok(())
            }
        }
    }
}

/// What reading one entry's JSON gave.
enum Parsed<'a> {
    /// A package, or why the (well-formed) entry is not one.
    Entry(Result<Raw<'a>, String>),
    /// The bytes are not one JSON value.
    NotJson(serde_json::Error),
}

/// One entry from exactly its bytes.
fn entry(bytes: &[u8]) -> Parsed<'_> {
    match serde_json::from_slice::<Raw>(bytes) {
        Ok(p) => Parsed::Entry(Ok(p)),
        Err(e) if e.is_data() => match serde_json::from_slice::<serde_json::Value>(bytes) {
            // Well-formed but not a package: the entry's problem, named by its name.
            Ok(v) => {
                let label = v.get("name").and_then(|n| n.as_str()).unwrap_or("(unnamed)").to_owned();
                Parsed::Entry(Err(format!("entry `{label}` is incomplete: {}", without_position(&e))))
            }
            Err(syntax) => Parsed::NotJson(syntax),
        },
        Err(e) => Parsed::NotJson(e),
    }
}

/// A serde_json error's message without the ` at line L column C` it adds.
fn without_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let at = format!(" at line {} column {}", e.line(), e.column());
    text.strip_suffix(&at).map_or(text.clone(), str::to_owned)
}

/// packagesite.yaml: one object per line; blank lines are skipped.
fn read_lines(reader: impl Read, c: &mut Catalogue) -> Result<()> {
    let mut reader = std::io::BufReader::with_capacity(1 << 16, reader);
    let mut line = Vec::new();
    let mut number = 0usize;
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        number += 1;
        let text = std::str::from_utf8(&line).context("it is not UTF-8")?;
        let text = text.strip_suffix('\n').map_or(text, |t| t.strip_suffix('\r').unwrap_or(t));
        if text.trim().is_empty() {
            continue;
        }
        match entry(text.as_bytes()) {
            Parsed::Entry(e) => c.add(e)?,
            Parsed::NotJson(e) => return Err(Error::caused(format!("line {number} is not JSON"), e)),
        }
    }
}

/// The bytes of `data` read so far and not yet consumed.
struct Window<R> {
    reader: R,
    buf: Vec<u8>,
    /// Where the unconsumed bytes start.
    pos: usize,
    /// The length of the value consumed last, which ends at `pos`.
    last: usize,
    eof: bool,
}

impl<R: Read> Window<R> {
    fn new(reader: R) -> Window<R> {
        Window { reader, buf: Vec::new(), pos: 0, last: 0, eof: false }
    }

    /// Reads until `n` unconsumed bytes are in the window; false when the stream ends
    /// before.
    fn ensure(&mut self, n: usize) -> Result<bool> {
        while self.buf.len() - self.pos < n {
            if !self.fill()? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Reads more: at least as much as is buffered, so that a long value is scanned a
    /// bounded number of times.
    fn fill(&mut self) -> Result<bool> {
        if self.eof {
            return Ok(false);
        }
        self.buf.drain(..self.pos);
        self.pos = 0;
        let want = (self.buf.len()).max(1 << 16);
        let before = self.buf.len();
        (&mut self.reader).take(want as u64).read_to_end(&mut self.buf)?;
        self.eof = self.buf.len() == before;
        Ok(!self.eof)
    }

    /// The next byte that is not JSON whitespace, not consumed; `None` at the end.
    fn peek(&mut self) -> Result<Option<u8>> {
        loop {
            while let Some(&b) = self.buf.get(self.pos) {
                if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                    return Ok(Some(b));
                }
                self.pos += 1;
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// Consumes `byte` (after whitespace) or fails.
    fn expect(&mut self, byte: u8) -> Result<()> {
        match self.peek()? {
            Some(b) if b == byte => {
                self.pos += 1;
                Ok(())
            }
            Some(b) => Err(not_json(format!("expected `{}`, found `{}`", byte as char, (b as char).escape_default()))),
            None => Err(not_json(format!("expected `{}`, found the end", byte as char))),
        }
    }

    /// Parses the next JSON value as `T` from exactly its bytes (which must be UTF-8)
    /// and consumes them, reading further when the window ends inside the value. A
    /// well-formed value that is not a `T` is left unconsumed: [`Next::Other`].
    fn next<T: serde::de::DeserializeOwned>(&mut self) -> Result<Next<T>> {
        self.next_with(|rest| {
            let mut stream = serde_json::Deserializer::from_slice(rest).into_iter::<T>();
            (stream.next(), stream.byte_offset())
        })
    }

    /// [`Window::next`] with the parsing done by `parse`: given the unconsumed bytes, it
    /// returns what serde_json's stream deserializer gave for the first value and where
    /// that value ends. What it gives must not borrow the window (it may convert a
    /// borrowing value); it is called again for the same value only when that value is
    /// a number or a literal the window ends with.
    fn next_with<U>(
        &mut self,
        mut parse: impl FnMut(&[u8]) -> (Option<serde_json::Result<U>>, usize),
    ) -> Result<Next<U>> {
        loop {
            let rest = &self.buf[self.pos..];
            let (parsed, end) = parse(rest);
            match parsed {
                Some(Err(e)) if e.is_data() => return Ok(Next::Other(e)),
                Some(Err(e)) if !e.is_eof() || self.eof => return Err(Error::caused("it is not JSON", e)),
                None if self.eof => return Err(not_json("expected a value, found the end".into())),
                // A number or literal the window ends with may go on past it; a string,
                // an object or an array ends with its closing character.
                Some(Ok(value))
                    if self.eof
                        || end < rest.len()
                        || matches!(rest.get(end.wrapping_sub(1)), Some(b'"' | b'}' | b']')) =>
                {
                    std::str::from_utf8(&rest[..end]).context("it is not UTF-8")?;
                    self.pos += end;
                    self.last = end;
                    return Ok(Next::Value(value));
                }
                _ => {}
            }
            self.fill()?;
        }
    }

    /// Consumes the next JSON value, whatever it is; returns its bytes.
    fn skip(&mut self) -> Result<&[u8]> {
        match self.next::<IgnoredAny>()? {
            Next::Value(_) => Ok(&self.buf[self.pos - self.last..self.pos]),
            Next::Other(e) => Err(Error::caused("it is not JSON", e)),
        }
    }
}

/// What [`Window::next`] found.
enum Next<T> {
    Value(T),
    /// A well-formed value of another type (not consumed).
    Other(serde_json::Error),
}

fn not_json(message: String) -> Error {
    Error::caused("it is not JSON", message)
}

/// data: `{"groups":...,"packages":[ENTRY,...],...}`; the entries are read one by one,
/// every other member is checked and skipped.
fn read_data(reader: impl Read, c: &mut Catalogue) -> Result<()> {
    read_document(&mut Window::new(reader), |w| read_array(w, c))
}

/// The `data` document in `w`, its `packages` array read by `array` (given the window
/// with the array's `[` next), every other member checked and skipped.
fn read_document<R: Read>(w: &mut Window<R>, mut array: impl FnMut(&mut Window<R>) -> Result<()>) -> Result<()> {
    if w.peek()? != Some(b'{') {
        // Not an object: JSON or not, it has no `packages` array.
        w.skip()?;
        if w.peek()?.is_some() {
            return Err(not_json("trailing characters after the document".into()));
        }
        bail!("it has no `packages` array");
    }
    w.pos += 1;
    let mut packages = false;
    if w.peek()? == Some(b'}') {
        w.pos += 1;
    } else {
        loop {
            let key = match w.next::<String>()? {
                Next::Value(key) => key,
                Next::Other(e) => return Err(Error::caused("it is not JSON", e)),
            };
            w.expect(b':')?;
            if key == "packages" && w.peek()? == Some(b'[') {
                if packages {
                    bail!("it has two `packages` arrays");
                }
                packages = true;
                array(w)?;
            } else {
                w.skip()?;
            }
            match w.peek()? {
                Some(b',') => w.pos += 1,
                Some(b'}') => {
                    w.pos += 1;
                    break;
                }
                _ => return Err(not_json("expected `,` or `}` after a member of the document".into())),
            }
        }
    }
    if w.peek()?.is_some() {
        return Err(not_json("trailing characters after the document".into()));
    }
    if !packages {
        bail!("it has no `packages` array");
    }
    Ok(())
}

/// The entries of the `packages` array, `[` next in the window.
fn read_array<R: Read>(w: &mut Window<R>, c: &mut Catalogue) -> Result<()> {
    w.pos += 1;
    if w.peek()? == Some(b']') {
        w.pos += 1;
        return Ok(());
    }
    loop {
        // Each package is kept as it is parsed, its strings copied from the window.
        let parsed = w.next_with(|rest| {
            let mut stream = serde_json::Deserializer::from_slice(rest).into_iter::<Raw>();
            let parsed = stream.next().map(|r| r.map(|raw| c.push(raw)));
            (parsed, stream.byte_offset())
        })?;
        match parsed {
            Next::Value(pushed) => pushed?,
            Next::Other(_) => match entry(w.skip()?) {
                Parsed::Entry(e) => c.add(e)?,
                Parsed::NotJson(e) => return Err(Error::caused("it is not JSON", e)),
            },
        }
        match w.peek()? {
            Some(b',') => w.pos += 1,
            Some(b']') => {
                w.pos += 1;
                return Ok(());
            }
            _ => return Err(not_json("expected `,` or `]` after an entry of `packages`".into())),
        }
    }
}

/// Whether a package's ABI is acceptable to a client of `want`: equal component by
/// component without regard to case, where the package may say `*` for a whole
/// component (pkg's noarch packages, `FreeBSD:15:*`).
///
/// pkg 2.8.4 also accepts an ABI that is a case-insensitive prefix of the client's, or
/// any shell pattern matching it (`libpkg/utils.c`, `is_valid_abi`): so `FreeBSD`,
/// `F` and even an empty ABI pass there. A release must name what it runs on, so this
/// accepts only the forms above; every ABI accepted here pkg accepts too.
pub fn abi_matches(package: &str, want: &str) -> bool {
    let (mut p, mut w) = (package.split(':'), want.split(':'));
    loop {
        match (p.next(), w.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == "*" || a.eq_ignore_ascii_case(b) => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn abi() {
        assert!(abi_matches("FreeBSD:15:amd64", "FreeBSD:15:amd64"));
        assert!(abi_matches("FreeBSD:15:*", "FreeBSD:15:amd64"));
        assert!(!abi_matches("FreeBSD:14:amd64", "FreeBSD:15:amd64"));
        assert!(!abi_matches("FreeBSD:15:amd64", "FreeBSD:15:*"));
        assert!(abi_matches("freebsd:15:AMD64", "FreeBSD:15:amd64"), "pkg compares without case");
        // Prefixes pkg would accept are refused: they name no architecture.
        for lax in ["FreeBSD:15", "FreeBSD", ""] {
            assert!(!abi_matches(lax, "FreeBSD:15:amd64"), "{lax:?}");
        }
    }

    #[test]
    fn both_layouts() {
        let obj = r#"{"name":"a","origin":"x/a","version":"1","abi":"FreeBSD:15:amd64","sum":"s","pkgsize":3,"path":"All/a-1.pkg"}"#;
        let data = format!(r#"{{"groups":[],"expired_packages":[],"packages":[{obj},{{"name":"b"}}]}}"#);
        let c = Catalogue::parse(CatalogueKind::Data, data.as_bytes()).unwrap();
        assert_eq!(c.packages().count(), 1);
        assert!(c.entry(1).unwrap_err().contains("entry `b`"));
        assert_eq!(c.entry(0).unwrap().repopath, None);
        let p = c.entry(0).unwrap();
        assert_eq!((p.name, p.origin, p.version, p.path, p.pkgsize), ("a", "x/a", "1", "All/a-1.pkg", 3));
        let c = Catalogue::parse(CatalogueKind::Packagesite, format!("{obj}\n{obj}\n").as_bytes()).unwrap();
        assert_eq!(c.packages().count(), 2);
    }

    /// The entries as a parser of the whole document reads them: name, origin,
    /// version, abi, sum, path and pkgsize, or `None` when one is missing.
    fn whole(data: &[u8]) -> Vec<Option<(Vec<String>, u64)>> {
        let doc: serde_json::Value = serde_json::from_slice(data).unwrap();
        doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                let fields = ["name", "origin", "version", "abi", "sum", "path"]
                    .map(|k| v.get(k).and_then(|s| s.as_str()).map(str::to_owned));
                let fields: Option<Vec<String>> = fields.into_iter().collect();
                Some((fields?, v.get("pkgsize")?.as_u64()?))
            })
            .collect()
    }

    /// A reader that hands out at most `.1` bytes a call, as a pipe or a decompressor
    /// might.
    pub(crate) struct Trickle<'a>(pub(crate) &'a [u8], pub(crate) usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.1).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_long_data_streams_across_its_windows_as_the_whole_document_reads() {
        // Entries of many lengths (one far longer than a window), so that the window
        // ends inside strings, numbers, keys and between entries.
        let mut entries = Vec::new();
        for i in 0..3000usize {
            let desc = "d".repeat(if i == 1500 { 200_000 } else { i % 97 });
            entries.push(format!(
                r#"{{"name":"p{i}","origin":"x/p{i}","version":"1.{i}","abi":"FreeBSD:15:amd64","sum":"s{i}","pkgsize":{},"path":"All/p{i}.pkg","desc":"{desc}","n":[{i},1.5e3,true,null]}}"#,
                i * 1_000_003
            ));
        }
        entries.push(r#"{"name":"broken","pkgsize":"big"}"#.into());
        let data =
            format!(r#"{{"groups":[{{"a":[1,2]}}], "packages" : [ {} ] , "after":12345678}}"#, entries.join(" ,\n"));
        let want = whole(data.as_bytes());
        let got = Catalogue::read(CatalogueKind::Data, Trickle(data.as_bytes(), 7)).unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.entries().zip(&want) {
            match (g, w) {
                (Ok(g), Some((w, size))) => {
                    assert_eq!([g.name, g.origin, g.version, g.abi, g.sum, g.path].as_slice(), w.as_slice());
                    assert_eq!(g.pkgsize, *size);
                }
                (Err(g), None) => assert!(g.contains("entry `broken`"), "{g}"),
                _ => panic!("{g:?} but the whole document gives {w:?}"),
            }
        }
    }

    #[test]
    fn what_is_not_one_json_document_with_one_packages_array_is_refused() {
        let refused = |data: &str, why: &str| {
            let e = Catalogue::parse(CatalogueKind::Data, data.as_bytes()).unwrap_err();
            assert!(format!("{e:#}").contains(why), "{data}: {e:#}");
        };
        refused(r#"{"packages":[]} x"#, "not JSON");
        refused(r#"{"packages":[],"packages":[]}"#, "two `packages` arrays");
        refused(r#"{"groups":[]}"#, "no `packages` array");
        refused(r#"[1,2]"#, "no `packages` array");
        refused(r#"{"packages":[{"name":"a"}"#, "not JSON");
        refused(r#"{"packages":[{"name":"a"},]}"#, "not JSON");
        refused("{\"packages\":[],\"x\":\"\u{0}\"}", "not JSON");
        let bad_utf8 = b"{\"packages\":[],\"x\":\"\xff\"}";
        let e = Catalogue::parse(CatalogueKind::Data, &bad_utf8[..]).unwrap_err();
        assert!(format!("{e:#}").contains("UTF-8"), "{e:#}");
        let e = Catalogue::parse(CatalogueKind::Packagesite, &b"{}\n{\n"[..]).unwrap_err();
        assert!(format!("{e:#}").contains("line 2 is not JSON"), "{e:#}");
    }
}
