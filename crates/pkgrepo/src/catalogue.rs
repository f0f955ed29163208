//! The package entries of a catalogue: `data` (one JSON object, packages in its
//! `packages` array) and `packagesite.yaml` (one JSON object per line).

use serde::Deserialize;

use crate::CatalogueKind;
use crate::error::{Context, Result, bail};

/// One package as a catalogue lists it: the fields verification needs (pkg writes many
/// more, which are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Package {
    /// `colibri`.
    pub name: String,
    /// The port it was built from: `sysutils/colibri`.
    pub origin: String,
    /// `0.9.0`.
    pub version: String,
    /// What it runs on: `FreeBSD:15:amd64`, or with `*` parts for any.
    pub abi: String,
    /// The whole file's checksum, as written (see [`Sum`](crate::sum::Sum)).
    pub sum: String,
    /// The file's size in bytes.
    pub pkgsize: u64,
    /// The file, relative to the repository: `All/colibri-0.9.0.pkg`.
    pub path: String,
    /// The same path again in the catalogues pkg writes (it must equal `path`).
    #[serde(default)]
    pub repopath: Option<String>,
}

/// A catalogue's entries: each either a package or the reason it could not be read.
#[derive(Debug, Clone)]
pub struct Catalogue {
    /// In catalogue order.
    pub entries: Vec<Result<Package, String>>,
}

impl Catalogue {
    /// Parses the inner file of a catalogue archive.
    pub fn parse(kind: CatalogueKind, bytes: &[u8]) -> Result<Catalogue> {
        let text = std::str::from_utf8(bytes).context("it is not UTF-8")?;
        let objects: Vec<serde_json::Value> = match kind {
            CatalogueKind::Data => {
                let mut doc: serde_json::Value = serde_json::from_str(text).context("it is not JSON")?;
                match doc.get_mut("packages").map(serde_json::Value::take) {
                    Some(serde_json::Value::Array(list)) => list,
                    _ => bail!("it has no `packages` array"),
                }
            }
            CatalogueKind::Packagesite => text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("line {} is not JSON", i + 1)))
                .collect::<Result<_>>()?,
        };
        let entries = objects
            .into_iter()
            .map(|v| {
                let label = v.get("name").and_then(|n| n.as_str()).unwrap_or("(unnamed)").to_owned();
                serde_json::from_value::<Package>(v).map_err(|e| format!("entry `{label}` is incomplete: {e}"))
            })
            .collect();
        Ok(Catalogue { entries })
    }

    /// The entries that are complete packages.
    pub fn packages(&self) -> impl Iterator<Item = &Package> {
        self.entries.iter().filter_map(|e| e.as_ref().ok())
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
    let p: Vec<&str> = package.split(':').collect();
    let w: Vec<&str> = want.split(':').collect();
    p.len() == w.len() && p.iter().zip(&w).all(|(a, b)| *a == "*" || a.eq_ignore_ascii_case(b))
}

#[cfg(test)]
mod tests {
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
        assert!(c.entries[1].as_ref().unwrap_err().contains("entry `b`"));
        let c = Catalogue::parse(CatalogueKind::Packagesite, format!("{obj}\n{obj}\n").as_bytes()).unwrap();
        assert_eq!(c.packages().count(), 2);
    }
}
