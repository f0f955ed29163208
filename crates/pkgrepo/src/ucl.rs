//! The part of UCL (libucl's configuration language) that pkg's files use: `meta.conf`
//! and the fingerprint trust files. pkg parses both with libucl, keys lower-cased
//! (`libpkg/pkg_repo_meta.c`, `pkg_repo_meta_load`; `libpkg/pkg_repo.c`,
//! `pkg_repo_load_fingerprint`), so nested objects such as meta.conf's `extra` and
//! `cert` are legal and must be read, not refused.
//!
//! Read: an object, with or without its braces; members `key = value`, `key: value` or
//! `key { ... }`, each optionally ended by `;` or `,`; values as double- or
//! single-quoted strings (with escapes), bare words (integers, booleans, other words as
//! strings), objects and arrays; `#`, `//` and `/* */` comments. Not read, and refused
//! with the line: heredocs, macros (`.include`), and nesting deeper than
//! [`MAX_DEPTH`]. The input is untrusted: nothing here grows without bound beyond the
//! input's own size.

use crate::error::{Result, bail};

/// How deep objects and arrays may nest.
pub(crate) const MAX_DEPTH: usize = 32;

/// A UCL value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Object(Vec<(String, Value)>),
    Array(Vec<Value>),
}

impl Value {
    /// What the value is, for messages: `a string`, `an object`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::Bool(_) => "a boolean",
            Value::Object(_) => "an object",
            Value::Array(_) => "an array",
        }
    }
}

/// Parses a UCL document into its top-level members, in order, keys lower-cased.
/// Repeated keys are kept as they come (the caller decides what a repeat means).
pub(crate) fn parse(text: &str) -> Result<Vec<(String, Value)>> {
    let s = text.as_bytes();
    let newlines = s.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i).collect();
    let mut p = Parser { s, i: 0, newlines };
    p.skip()?;
    let braced = p.peek() == Some(b'{');
    if braced {
        p.i += 1;
    }
    let members = p.members(braced, 1)?;
    p.skip()?;
    if p.i < p.s.len() {
        bail!("line {}: unexpected `{}` after the end of the document", p.line(), p.s[p.i] as char);
    }
    Ok(members)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    /// Where each newline is, to name lines in messages without rescanning.
    newlines: Vec<usize>,
}

fn is_word_byte(b: u8) -> bool {
    !(b.is_ascii_whitespace()
        || matches!(b, b'{' | b'}' | b'[' | b']' | b';' | b',' | b'=' | b':' | b'"' | b'\'' | b'#'))
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn line(&self) -> usize {
        1 + self.newlines.partition_point(|&n| n < self.i)
    }

    /// Skips whitespace and comments.
    fn skip(&mut self) -> Result<()> {
        loop {
            match self.peek() {
                Some(b) if b.is_ascii_whitespace() => self.i += 1,
                Some(b'#') => self.skip_line(),
                Some(b'/') if self.s.get(self.i + 1) == Some(&b'/') => self.skip_line(),
                Some(b'/') if self.s.get(self.i + 1) == Some(&b'*') => {
                    let line = self.line();
                    // UCL's multi-line comments nest.
                    let mut depth = 0usize;
                    loop {
                        if self.s[self.i..].starts_with(b"/*") {
                            depth += 1;
                            self.i += 2;
                        } else if self.s[self.i..].starts_with(b"*/") {
                            depth -= 1;
                            self.i += 2;
                            if depth == 0 {
                                break;
                            }
                        } else if self.i >= self.s.len() {
                            bail!("line {line}: the comment is never closed");
                        } else {
                            self.i += 1;
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn skip_line(&mut self) {
        while let Some(b) = self.peek() {
            self.i += 1;
            if b == b'\n' {
                break;
            }
        }
    }

    /// Members up to `}` (when `braced`) or the end of the input.
    fn members(&mut self, braced: bool, depth: usize) -> Result<Vec<(String, Value)>> {
        if depth > MAX_DEPTH {
            bail!("line {}: objects nest deeper than {MAX_DEPTH} levels", self.line());
        }
        let mut out = Vec::new();
        loop {
            self.skip()?;
            match self.peek() {
                None if braced => bail!("line {}: the object is never closed (`}}` missing)", self.line()),
                None => return Ok(out),
                Some(b'}') if braced => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'.') => bail!("line {}: UCL macros (`.include` ...) are not supported", self.line()),
                _ => {}
            }
            let line = self.line();
            let key = match self.peek() {
                Some(b'"' | b'\'') => self.quoted()?,
                Some(b) if is_word_byte(b) => self.word(),
                Some(b) => bail!("line {line}: `{}` where a key was expected", b as char),
                None => unreachable!("handled above"),
            };
            if key.is_empty() {
                bail!("line {line}: an empty key");
            }
            self.skip()?;
            if matches!(self.peek(), Some(b'=' | b':')) {
                self.i += 1;
                self.skip()?;
            } else if self.peek() != Some(b'{') {
                bail!("line {line}: `{key}` is not followed by `=`, `:` or `{{`");
            }
            let value = self.value(depth)?;
            out.push((key.to_ascii_lowercase(), value));
            self.skip()?;
            if matches!(self.peek(), Some(b';' | b',')) {
                self.i += 1;
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value> {
        let line = self.line();
        match self.peek() {
            Some(b'{') => {
                self.i += 1;
                Ok(Value::Object(self.members(true, depth + 1)?))
            }
            Some(b'[') => {
                self.i += 1;
                if depth + 1 > MAX_DEPTH {
                    bail!("line {line}: arrays nest deeper than {MAX_DEPTH} levels");
                }
                let mut items = Vec::new();
                loop {
                    self.skip()?;
                    match self.peek() {
                        Some(b']') => {
                            self.i += 1;
                            return Ok(Value::Array(items));
                        }
                        None => bail!("line {line}: the array is never closed (`]` missing)"),
                        _ => {}
                    }
                    items.push(self.value(depth + 1)?);
                    self.skip()?;
                    if matches!(self.peek(), Some(b',' | b';')) {
                        self.i += 1;
                    }
                }
            }
            Some(b'"' | b'\'') => Ok(Value::Str(self.quoted()?)),
            Some(b'<') if self.s[self.i..].starts_with(b"<<") => {
                bail!("line {line}: heredocs (`<<`) are not supported")
            }
            Some(b) if is_word_byte(b) => Ok(atom(&self.word())),
            Some(b) => bail!("line {line}: `{}` where a value was expected", b as char),
            None => bail!("line {line}: a value is missing at the end"),
        }
    }

    fn word(&mut self) -> String {
        let start = self.i;
        while self.peek().is_some_and(is_word_byte) {
            // `//` and `/*` start comments even inside a word's position.
            if self.s[self.i..].starts_with(b"//") || self.s[self.i..].starts_with(b"/*") {
                break;
            }
            self.i += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }

    /// A quoted string; `self.peek()` is its quote.
    fn quoted(&mut self) -> Result<String> {
        let line = self.line();
        let quote = self.s[self.i];
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let Some(b) = self.peek() else {
                bail!("line {line}: the string is never closed");
            };
            self.i += 1;
            match b {
                _ if b == quote => break,
                b'\\' if quote == b'\'' => match self.peek() {
                    Some(b'\'') => {
                        out.push(b'\'');
                        self.i += 1;
                    }
                    _ => out.push(b'\\'),
                },
                b'\\' => {
                    let Some(e) = self.peek() else {
                        bail!("line {line}: the string is never closed");
                    };
                    self.i += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let hex = self.s.get(self.i..self.i + 4).unwrap_or_default();
                            let code = std::str::from_utf8(hex).ok().and_then(|h| u32::from_str_radix(h, 16).ok());
                            let Some(c) = code.filter(|_| hex.len() == 4).and_then(char::from_u32) else {
                                bail!("line {line}: `\\u` is not followed by four hex digits of a character");
                            };
                            self.i += 4;
                            let mut buf = [0; 4];
                            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        }
                        other => bail!("line {line}: unknown escape `\\{}` in a string", other as char),
                    }
                }
                _ => out.push(b),
            }
        }
        String::from_utf8(out).map_err(|_| crate::error::Error::msg(format!("line {line}: the string is not UTF-8")))
    }
}

/// A bare word: an integer, a boolean, or else a string.
fn atom(word: &str) -> Value {
    match word.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" => return Value::Bool(true),
        "false" | "no" | "off" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(n) = word.parse::<i64>() {
        return Value::Int(n);
    }
    if word.contains(['.', 'e', 'E'])
        && let Ok(f) = word.parse::<f64>()
    {
        return Value::Float(f);
    }
    Value::Str(word.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_pkg_writes_and_nested_objects() {
        let text = "version = 2;\npacking_format = \"tzst\";\nextra {\n  built_by: \"poudriere\", n = [1, 2,]\n}\ncert = { type = \"rsa\"; data = \"-----BEGIN\\nX\"; name = 'k' }\n# comment\n/* a /* nested */ comment */ EOL: yes // tail\n";
        let m = parse(text).unwrap();
        let keys: Vec<&str> = m.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["version", "packing_format", "extra", "cert", "eol"]);
        assert_eq!(m[0].1, Value::Int(2));
        assert_eq!(m[1].1, Value::Str("tzst".into()));
        let Value::Object(extra) = &m[2].1 else { panic!() };
        assert_eq!(extra[1].1, Value::Array(vec![Value::Int(1), Value::Int(2)]));
        let Value::Object(cert) = &m[3].1 else { panic!() };
        assert_eq!(cert[1].1, Value::Str("-----BEGIN\nX".into()));
        assert_eq!(cert[2].1, Value::Str("k".into()));
        assert_eq!(m[4].1, Value::Bool(true));
        assert_eq!(parse("{ a: \"b\" }").unwrap(), [("a".to_owned(), Value::Str("b".into()))]);
        assert_eq!(parse("Function: \"SHA256\"\n").unwrap()[0].0, "function");
    }

    #[test]
    fn refuses_what_it_cannot_read_with_the_line() {
        for (text, says) in [
            ("a = \"x\n", "line 1: the string is never closed"),
            ("a = 1;\nb {\n", "line 3: the object is never closed"),
            ("a = [1, 2\n", "the array is never closed"),
            ("a = <<EOD\nx\nEOD\n", "heredocs"),
            (".include \"x\"\n", "macros"),
            ("a b c\n", "`a` is not followed by"),
            ("{ a = 1 } }", "after the end of the document"),
            ("a = \"\\q\"", "unknown escape"),
            ("/* open", "the comment is never closed"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text:?}: {err}");
        }
        let deep = "a = ".to_owned() + &"[".repeat(MAX_DEPTH + 5);
        assert!(parse(&deep).unwrap_err().to_string().contains("nest deeper"));
        let deep = "a ".to_owned() + &"{ a ".repeat(MAX_DEPTH + 5);
        assert!(parse(&deep).unwrap_err().to_string().contains("nest deeper"));
    }
}
