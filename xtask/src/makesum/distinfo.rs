//! distinfo exactly as `make makesum` writes it (docs/reference/ports-cargo.md): a TIMESTAMP
//! line, then `SHA256 (NAME) = HEX` and `SIZE (NAME) = BYTES` per distfile in DISTFILES
//! order; and its TIMESTAMP rule: when nothing but the timestamp would change, the file
//! is left as it is.

use anyhow::{Result, bail};

use super::Distfile;

/// The text of a distinfo.
pub fn render(timestamp: u64, files: &[Distfile]) -> String {
    let mut out = format!("TIMESTAMP = {timestamp}\n");
    for f in files {
        out.push_str(&format!("SHA256 ({}) = {}\n", f.name, f.sha256));
        out.push_str(&format!("SIZE ({}) = {}\n", f.name, f.size));
    }
    out
}

/// Everything after the TIMESTAMP line (the part the TIMESTAMP rule compares).
pub fn body(text: &str) -> &str {
    match text.strip_prefix("TIMESTAMP = ") {
        Some(rest) => rest.split_once('\n').map_or("", |(_, body)| body),
        None => text,
    }
}

/// What to do with the distinfo: the text it should hold, and whether that differs
/// from what is there (`None`: no distinfo yet).
pub fn decide(old: Option<&str>, files: &[Distfile], now: u64) -> (String, bool) {
    let new = render(now, files);
    match old {
        Some(old) if body(old) == body(&new) => (old.to_owned(), false),
        _ => (new, true),
    }
}

/// The files a distinfo lists, in its order, with their SHA-256 and size (the size is
/// absent when the file has no SIZE line).
pub fn parse(text: &str, what: &str) -> Result<Vec<Distfile>> {
    let mut files: Vec<Distfile> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with("TIMESTAMP = ") {
            continue;
        }
        let parsed = line.split_once(" (").and_then(|(key, rest)| {
            let (name, value) = rest.rsplit_once(") = ")?;
            Some((key, name, value))
        });
        let Some((key, name, value)) = parsed else {
            bail!("{what}:{}: not a distinfo line: `{line}`", n + 1);
        };
        let entry = |files: &mut Vec<Distfile>| -> usize {
            match files.iter().position(|f| f.name == name) {
                Some(i) => i,
                None => {
                    files.push(Distfile { name: name.to_owned(), size: 0, sha256: String::new() });
                    files.len() - 1
                }
            }
        };
        match key {
            "SHA256" => {
                if value.len() != 64 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    bail!("{what}:{}: `{value}` is not a SHA-256", n + 1);
                }
                let i = entry(&mut files);
                files[i].sha256 = value.to_ascii_lowercase();
            }
            "SIZE" => {
                let size = value.parse().map_err(|_| anyhow::anyhow!("{what}:{}: `{value}` is not a size", n + 1))?;
                let i = entry(&mut files);
                files[i].size = size;
            }
            // Other digests (older distinfo files) are not ours to check.
            _ => {}
        }
    }
    Ok(files.into_iter().filter(|f| !f.sha256.is_empty()).collect())
}

/// A unified diff from the current distinfo to the one that should be there.
pub fn diff(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    similar::TextDiff::from_lines(old, new).unified_diff().context_radius(1).header(old_name, new_name).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, size: u64) -> Distfile {
        Distfile { name: name.into(), size, sha256: "ab".repeat(32) }
    }

    #[test]
    fn renders_makesums_format() {
        let text = render(1761234694, &[file("rust/crates/a-1.0.0.crate", 10), file("x_GH0.tar.gz", 20)]);
        assert_eq!(
            text,
            format!(
                "TIMESTAMP = 1761234694\nSHA256 (rust/crates/a-1.0.0.crate) = {h}\nSIZE (rust/crates/a-1.0.0.crate) = 10\nSHA256 (x_GH0.tar.gz) = {h}\nSIZE (x_GH0.tar.gz) = 20\n",
                h = "ab".repeat(32)
            )
        );
        assert_eq!(
            parse(&text, "distinfo").unwrap(),
            vec![file("rust/crates/a-1.0.0.crate", 10), file("x_GH0.tar.gz", 20)]
        );
    }

    #[test]
    fn only_a_new_timestamp_keeps_the_old_file() {
        let files = [file("a", 1)];
        let old = render(100, &files);
        assert_eq!(decide(Some(&old), &files, 200), (old.clone(), false));
        let (new, changed) = decide(Some(&old), &[file("a", 2)], 200);
        assert!(changed && new.starts_with("TIMESTAMP = 200\n"));
        assert!(decide(None, &files, 200).1);
        assert!(decide(Some("TIMESTAMP = 1781913600\n"), &files, 200).1);
    }

    #[test]
    fn reads_the_ripgrep_sample() {
        let text = include_str!("../../tests/data/ports/ripgrep-15.1.0/distinfo");
        let files = parse(text, "distinfo").unwrap();
        assert_eq!(files.len(), 52);
        assert_eq!(files[0].name, "rust/crates/aho-corasick-1.1.3.crate");
        assert_eq!(files[0].size, 183311);
        assert_eq!(render(1761234694, &files), text);
    }
}
