//! Reads the variable assignments of a port Makefile, enough to evaluate the simple
//! shapes ports use (`=`, `?=`, `+=`, `:=`, continuation lines, `${VAR}` references).
//! Anything beyond that (conditionals that change a variable, `${VAR:modifiers}`,
//! `!=`) is reported as "cannot evaluate", never guessed.

use std::collections::BTreeMap;

use anyhow::{Result, bail};

/// One assignment's value and how it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Assign {
    value: String,
    line: usize,
    /// Set inside a `.if` block: its value depends on conditions we do not evaluate.
    conditional: bool,
    /// Assigned with `!=` (a shell command).
    shell: bool,
}

/// The variables of one Makefile (plus defaults the caller supplies).
#[derive(Debug, Clone, Default)]
pub struct MakeVars {
    vars: BTreeMap<String, Assign>,
    file: String,
}

impl MakeVars {
    /// Parses Makefile text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> MakeVars {
        let mut vars: BTreeMap<String, Assign> = BTreeMap::new();
        let mut depth = 0usize;
        let mut logical = String::new();
        let mut start_line = 0;
        for (i, raw) in text.lines().enumerate() {
            if logical.is_empty() {
                start_line = i + 1;
            }
            // A continuation: the backslash, the newline and the whitespace around
            // them become one space.
            let raw = if logical.is_empty() { raw } else { raw.trim_start() };
            if let Some(stripped) = raw.strip_suffix('\\') {
                logical.push_str(stripped.trim_end());
                logical.push(' ');
                continue;
            }
            logical.push_str(raw);
            let line = std::mem::take(&mut logical);
            let trimmed = line.trim_start();
            if trimmed.starts_with('#') || trimmed.is_empty() {
                continue;
            }
            if let Some(directive) = trimmed.strip_prefix('.') {
                let word = directive.split_whitespace().next().unwrap_or("");
                if word.starts_with("if") {
                    depth += 1;
                } else if word == "endif" {
                    depth = depth.saturating_sub(1);
                }
                continue;
            }
            let Some((name, op, value)) = split_assignment(&line) else { continue };
            let value = strip_comment(value).trim().to_owned();
            let conditional = depth > 0;
            let entry = vars.entry(name.to_owned());
            match op {
                "?=" => {
                    entry.or_insert(Assign { value, line: start_line, conditional, shell: false });
                }
                "+=" => {
                    let a =
                        entry.or_insert(Assign { value: String::new(), line: start_line, conditional, shell: false });
                    if !a.value.is_empty() && !value.is_empty() {
                        a.value.push(' ');
                    }
                    a.value.push_str(&value);
                    a.conditional |= conditional;
                }
                "!=" => {
                    vars.insert(name.to_owned(), Assign { value, line: start_line, conditional, shell: true });
                }
                _ => {
                    vars.insert(name.to_owned(), Assign { value, line: start_line, conditional, shell: false });
                }
            }
        }
        MakeVars { vars, file: file.to_owned() }
    }

    /// Sets a variable the framework would provide (e.g. `EXTRACT_SUFX=.tar.gz`) unless
    /// the Makefile sets it.
    pub fn default(&mut self, name: &str, value: &str) {
        self.vars.entry(name.to_owned()).or_insert(Assign {
            value: value.to_owned(),
            line: 0,
            conditional: false,
            shell: false,
        });
    }

    /// Whether the Makefile (or a default) sets the variable.
    pub fn is_set(&self, name: &str) -> bool {
        self.vars.contains_key(name)
    }

    /// The names of every variable set, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.vars.keys().map(String::as_str)
    }

    /// The unexpanded value.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(|a| a.value.as_str())
    }

    /// The line a variable was set on (0 for defaults).
    pub fn line(&self, name: &str) -> Option<usize> {
        self.vars.get(name).map(|a| a.line)
    }

    /// The fully expanded value of a variable, or an error naming the variable that
    /// cannot be evaluated.
    pub fn get(&self, name: &str) -> Result<String> {
        self.expand_var(name, 0)
    }

    /// Like [`MakeVars::get`], with a fallback when the variable is unset.
    pub fn get_or(&self, name: &str, fallback: &str) -> Result<String> {
        if self.is_set(name) { self.get(name) } else { Ok(fallback.to_owned()) }
    }

    fn expand_var(&self, name: &str, depth: usize) -> Result<String> {
        if depth > 32 {
            bail!("{}: variable {name} refers to itself", self.file);
        }
        let Some(a) = self.vars.get(name) else {
            bail!("{}: variable {name} is not set", self.file);
        };
        if a.conditional {
            bail!("{}:{}: cannot evaluate {name}: it is set inside a .if block", self.file, a.line);
        }
        if a.shell {
            bail!("{}:{}: cannot evaluate {name}: it is set by a shell command (!=)", self.file, a.line);
        }
        self.expand(&a.value, depth + 1, name)
    }

    /// Expands `${VAR}` and `$(VAR)` references in a string.
    pub fn expand(&self, text: &str, depth: usize, context: &str) -> Result<String> {
        let mut out = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c != '$' {
                out.push(c);
                continue;
            }
            let Some(&(_, open)) = chars.peek() else {
                out.push('$');
                break;
            };
            let close = match open {
                '{' => '}',
                '(' => ')',
                '$' => {
                    chars.next();
                    out.push('$');
                    continue;
                }
                _ => bail!("{}: cannot evaluate {context}: single-letter variable `${open}`", self.file),
            };
            chars.next();
            let rest = &text[i + 2..];
            let Some(end) = rest.find(close) else {
                bail!("{}: cannot evaluate {context}: unterminated `${open}`", self.file);
            };
            let inner = &rest[..end];
            if inner.contains(':') || inner.contains('$') {
                bail!("{}: cannot evaluate {context}: `${open}{inner}{close}` uses make modifiers", self.file);
            }
            out.push_str(&self.expand_var(inner, depth)?);
            for _ in 0..inner.chars().count() + 1 {
                chars.next();
            }
        }
        Ok(out)
    }
}

/// Splits `NAME<op> value`, where op is one of `=`, `?=`, `+=`, `:=`, `!=`.
fn split_assignment(line: &str) -> Option<(&str, &'static str, &str)> {
    let eq = line.find('=')?;
    let (left, value) = (&line[..eq], &line[eq + 1..]);
    let (name, op) = match left.chars().last()? {
        '?' => (&left[..left.len() - 1], "?="),
        '+' => (&left[..left.len() - 1], "+="),
        ':' => (&left[..left.len() - 1], ":="),
        '!' => (&left[..left.len() - 1], "!="),
        _ => (left, "="),
    };
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-') {
        return None;
    }
    Some((name, op, value))
}

fn strip_comment(value: &str) -> &str {
    // `#` starts a comment unless escaped as `\#`.
    let bytes = value.as_bytes();
    for i in 0..bytes.len() {
        if bytes[i] == b'#' && (i == 0 || bytes[i - 1] != b'\\') {
            return &value[..i];
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    const MK: &str = "PORTNAME=\tcolibri\nDISTVERSIONPREFIX=\tv\nDISTVERSION=\t0.9.0 # comment\nDISTNAME?=\t${PORTNAME}-${DISTVERSION}\nUSE_RC_SUBR=\tcolibri_daemon \\\n\t\tcolibri_bridge\nCARGO_INSTALL_PATH=\ta\nCARGO_INSTALL_PATH+=\tb\n.if ${PORT_OPTIONS:MX}\nEXTRA=\tyes\n.endif\nBAD=\t${PORTNAME:tu}\n";

    #[test]
    fn evaluates_simple_shapes() {
        let v = MakeVars::parse(MK, "Makefile");
        assert_eq!(v.get("DISTNAME").unwrap(), "colibri-0.9.0");
        assert_eq!(v.get("DISTVERSION").unwrap(), "0.9.0");
        assert_eq!(v.get("USE_RC_SUBR").unwrap(), "colibri_daemon colibri_bridge");
        assert_eq!(v.get("CARGO_INSTALL_PATH").unwrap(), "a b");
    }

    #[test]
    fn refuses_what_it_cannot_evaluate() {
        let v = MakeVars::parse(MK, "Makefile");
        assert!(v.get("EXTRA").unwrap_err().to_string().contains(".if"));
        assert!(v.get("BAD").unwrap_err().to_string().contains("modifiers"));
        assert!(v.get("NOPE").unwrap_err().to_string().contains("not set"));
    }
}
