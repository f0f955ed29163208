//! CARGO_CRATES from a Cargo.lock, exactly as the ports framework's `make cargo-crates`
//! writes it (docs/reference/ports-cargo.md), plus the lock's checksums for makesum.
//!
//! Like the framework, the lock file is read line by line, not as TOML: `name`,
//! `version`, `source` and `checksum` lines fill the current package; a `[[package]]`
//! line and the end of the file close it.

use anyhow::{Result, bail};

use crate::failure;

/// The crates.io source string cargo writes (also for sparse-protocol fetches).
pub const CRATES_IO: &str = "registry+https://github.com/rust-lang/crates.io-index";

/// A registry crate from Cargo.lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crate {
    pub name: String,
    pub version: String,
    /// SHA-256 of the `.crate` file, as Cargo.lock records it.
    pub checksum: Option<String>,
}

impl Crate {
    /// `NAME-VERSION`, the CARGO_CRATES entry.
    pub fn entry(&self) -> String {
        format!("{}-{}", self.name, self.version)
    }
}

/// A git source and the crates it provides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    /// The `source` value, e.g. `git+https://github.com/a/b?rev=x#<sha>`.
    pub source: String,
    pub crates: Vec<String>,
}

impl GitSource {
    /// `name1,name2@git+https://...\#sha`, the CARGO_CRATES entry.
    pub fn entry(&self) -> String {
        format!("{}@{}", self.crates.join(","), self.source.replace('#', "\\#"))
    }
}

/// What CARGO_CRATES lists for one Cargo.lock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Crates {
    /// Registry crates, in Cargo.lock's order.
    pub registry: Vec<Crate>,
    /// Git sources, in order of first appearance.
    pub git: Vec<GitSource>,
}

impl Crates {
    /// Every CARGO_CRATES entry: registry crates first, then git sources.
    pub fn entries(&self) -> Vec<String> {
        self.registry.iter().map(Crate::entry).chain(self.git.iter().map(GitSource::entry)).collect()
    }

    /// The text of Makefile.crates: `CARGO_CRATES=<TAB>first \`, `<TAB><TAB>next \`, the
    /// last without ` \`; empty for no crates.
    pub fn makefile(&self) -> String {
        let entries = self.entries();
        let mut out = String::new();
        for (i, e) in entries.iter().enumerate() {
            out.push_str(if i == 0 { "CARGO_CRATES=\t" } else { "\t\t" });
            out.push_str(e);
            out.push_str(if i + 1 == entries.len() { "\n" } else { " \\\n" });
        }
        out
    }
}

#[derive(Default)]
struct Pending {
    name: Option<String>,
    version: Option<String>,
    source: Option<String>,
    checksum: Option<String>,
}

/// Reads a Cargo.lock's text. `what` names it in errors.
pub fn parse(text: &str, what: &str) -> Result<Crates> {
    if text.contains('\r') {
        bail!(
            failure!(
                "{what} has CRLF line endings; the ports framework would silently produce an empty CARGO_CRATES from it"
            )
            .help("convert it to LF (cargo writes LF)")
        );
    }
    let mut out = Crates::default();
    let mut cur = Pending::default();
    for (n, line) in text.lines().enumerate() {
        if line == "[[package]]" {
            close(&mut cur, &mut out);
            continue;
        }
        if line.starts_with("[[patch.unused]]") {
            bail!(
                failure!(
                    "{what}:{}: a [[patch.unused]] section; the ports framework mishandles it (it overwrites the last crate)",
                    n + 1
                )
                .help("remove the unused [patch] entry from Cargo.toml and run `cargo update --workspace`")
            );
        }
        if let Some(v) = value(line, "name") {
            cur.name = Some(v);
        } else if let Some(v) = value(line, "version") {
            cur.version = Some(v);
        } else if let Some(v) = value(line, "source") {
            cur.source = Some(v);
        } else if let Some(v) = value(line, "checksum") {
            cur.checksum = Some(v);
        }
    }
    close(&mut cur, &mut out);
    Ok(out)
}

/// The value of a `key = "value"` line (the key at the start of the line).
fn value(line: &str, key: &str) -> Option<String> {
    let rest = line.strip_prefix(key)?.strip_prefix(" = \"")?;
    let v = rest.strip_suffix('"')?;
    Some(v.replace('"', ""))
}

fn close(cur: &mut Pending, out: &mut Crates) {
    let p = std::mem::take(cur);
    let (Some(name), Some(version), Some(source)) = (p.name, p.version, p.source) else { return };
    if source == CRATES_IO {
        out.registry.push(Crate { name, version, checksum: p.checksum });
    } else if source.starts_with("git+") {
        match out.git.iter_mut().find(|g| g.source == source) {
            Some(g) => g.crates.push(name),
            None => out.git.push(GitSource { source, crates: vec![name] }),
        }
    }
    // Anything else (path dependencies and workspace members have no source; other
    // registries) is left out, as the framework does.
}

/// Splits a CARGO_CRATES registry entry into name and version as cargo.mk does
/// (`C/^([-_a-zA-Z0-9]+)-([0-9].*)/`, docs/reference/ports-cargo.md): the name is the
/// longest run of `[-_a-zA-Z0-9]` that is followed by `-` and a digit, so the split is at
/// the last such `-` before the first other character (`md-5-0.10.6` is `md-5` and
/// `0.10.6`).
pub fn split_entry(entry: &str) -> Option<(&str, &str)> {
    let bytes = entry.as_bytes();
    let name_chars = bytes.iter().take_while(|b| b.is_ascii_alphanumeric() || **b == b'-' || **b == b'_').count();
    (1..name_chars.min(bytes.len().saturating_sub(1)))
        .rev()
        .find(|&i| bytes[i] == b'-' && bytes[i + 1].is_ascii_digit())
        .map(|i| (&entry[..i], &entry[i + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: &str = r#"# This file is automatically @generated by Cargo.
version = 4

[[package]]
name = "app"
version = "0.1.0"
dependencies = [
 "base64 0.9.3",
 "base64 0.10.1",
 "gitdep",
]

[[package]]
name = "base64"
version = "0.9.3"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "489d6c0ed21b11d038c31b6ceccca973e65d73ba3bd8ecb9a2babf5546164643"

[[package]]
name = "base64"
version = "0.10.1"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "0b25d992356d2eb0ed82172f5248873db5560c4721f564b13cb5193bda5e668e"

[[package]]
name = "gitdep"
version = "1.0.0"
source = "git+https://github.com/acct/proj?rev=abc#0123456789abcdef0123456789abcdef01234567"

[[package]]
name = "gitdep-macros"
version = "1.0.0"
source = "git+https://github.com/acct/proj?rev=abc#0123456789abcdef0123456789abcdef01234567"

[[package]]
name = "local"
version = "0.2.0"

[[package]]
name = "other"
version = "1.0.0"
source = "sparse+https://my.registry/index/"
"#;

    #[test]
    fn several_versions_git_and_path() {
        let crates = parse(LOCK, "Cargo.lock").unwrap();
        assert_eq!(
            crates.makefile(),
            "CARGO_CRATES=\tbase64-0.9.3 \\\n\t\tbase64-0.10.1 \\\n\t\tgitdep,gitdep-macros@git+https://github.com/acct/proj?rev=abc\\#0123456789abcdef0123456789abcdef01234567\n"
        );
        assert_eq!(
            crates.registry[1].checksum.as_deref(),
            Some("0b25d992356d2eb0ed82172f5248873db5560c4721f564b13cb5193bda5e668e")
        );
    }

    #[test]
    fn no_crates_gives_empty_output() {
        assert_eq!(
            parse("version = 4\n\n[[package]]\nname = \"a\"\nversion = \"1.0.0\"\n", "x").unwrap().makefile(),
            ""
        );
    }

    #[test]
    fn crlf_is_refused() {
        assert!(parse("[[package]]\r\n", "x").is_err());
    }

    #[test]
    fn split_at_first_dash_digit() {
        assert_eq!(split_entry("aho-corasick-1.1.3"), Some(("aho-corasick", "1.1.3")));
        assert_eq!(split_entry("r-efi-5.3.0"), Some(("r-efi", "5.3.0")));
        assert_eq!(split_entry("nodash"), None);
        // The name is the longest one cargo.mk's pattern allows.
        assert_eq!(split_entry("md-5-0.10.6"), Some(("md-5", "0.10.6")));
        assert_eq!(split_entry("utf-8-0.7.6"), Some(("utf-8", "0.7.6")));
        assert_eq!(split_entry("sha-1-0.10.1"), Some(("sha-1", "0.10.1")));
        assert_eq!(split_entry("ripemd-160-0.9.1"), Some(("ripemd-160", "0.9.1")));
        assert_eq!(split_entry("foo-1.0.0-alpha-1"), Some(("foo", "1.0.0-alpha-1")));
        assert_eq!(split_entry("x-1"), Some(("x", "1")));
        assert_eq!(split_entry("-1.0"), None);
        assert_eq!(split_entry("a.b-1.0"), None);
    }
}
