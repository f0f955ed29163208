//! The flat UCL pkg writes: `meta.conf` (`key = value;`) and the fingerprint trust files
//! (`function: "sha256"` / `fingerprint: "<hex>"`). Only flat `key = value` objects are
//! read; anything else is an error that names the line.

use camino::Utf8Path;

use crate::CatalogueKind;
use crate::archive::Compression;
use crate::error::{Context, Error, Result, bail};

/// Parses flat UCL: one `key = value` or `key: value` per line, an optional `;` or `,`
/// after it, values quoted or bare, `#` comments.
pub(crate) fn parse_flat(text: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("//") {
            continue;
        }
        let Some(split) = line.find(['=', ':']) else {
            bail!("line {}: `{line}` is not `key = value`", i + 1);
        };
        let key = line[..split].trim();
        let mut value = line[split + 1..].trim();
        value = value.strip_suffix([';', ',']).unwrap_or(value).trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            bail!("line {}: `{key}` is not a plain key", i + 1);
        }
        let value = if let Some(inner) = value.strip_prefix('"') {
            let Some(inner) = inner.strip_suffix('"') else {
                bail!("line {}: unterminated string", i + 1);
            };
            if inner.contains('"') || inner.contains('\\') {
                bail!("line {}: escapes in strings are not supported", i + 1);
            }
            inner.to_owned()
        } else {
            if value.is_empty() || value.contains(char::is_whitespace) || value.starts_with(['{', '[']) {
                bail!("line {}: `{value}` is not a plain value", i + 1);
            }
            value.to_owned()
        };
        out.push((key.to_owned(), value));
    }
    Ok(out)
}

/// What meta.conf says about the repository. `Default` is what pkg writes when given no
/// options (version 2, zstd, the usual file names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaConf {
    /// The repository format: 1 or 2.
    pub version: u32,
    /// How catalogue archives are compressed.
    pub packing_format: Compression,
    /// Inner file of the packagesite archive (`packagesite.yaml`).
    pub manifests: String,
    /// Archive holding it, without `.pkg` (`packagesite`).
    pub manifests_archive: String,
    /// Inner file of the data archive, and the archive's name without `.pkg` (`data`).
    pub data: String,
    /// Inner file of the files archive (`files`).
    pub filesite: String,
    /// The files archive, without `.pkg` (`files`).
    pub filesite_archive: String,
}

impl Default for MetaConf {
    fn default() -> MetaConf {
        MetaConf {
            version: 2,
            packing_format: Compression::Zstd,
            manifests: "packagesite.yaml".into(),
            manifests_archive: "packagesite".into(),
            data: "data".into(),
            filesite: "files".into(),
            filesite_archive: "files".into(),
        }
    }
}

impl MetaConf {
    /// Reads and checks `DIR/meta.conf`.
    pub fn load(dir: &Utf8Path) -> Result<MetaConf> {
        let path = dir.join("meta.conf");
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        MetaConf::parse(&text).map_err(|e| Error::caused(format!("{path} is not usable"), e))
    }

    /// The archive file name and the name of the file inside it, for a catalogue:
    /// `("data.pkg", "data")`, `("packagesite.pkg", "packagesite.yaml")`.
    pub fn catalogue(&self, kind: CatalogueKind) -> (String, String) {
        match kind {
            CatalogueKind::Data => (format!("{}.pkg", self.data), self.data.clone()),
            CatalogueKind::Packagesite => (format!("{}.pkg", self.manifests_archive), self.manifests.clone()),
        }
    }

    /// The same for the optional file list (`pkg repo -l`): `("files.pkg", "files")`.
    pub fn files(&self) -> (String, String) {
        (format!("{}.pkg", self.filesite_archive), self.filesite.clone())
    }

    /// Parses and checks meta.conf: a version pkg understands, a known packing format,
    /// and file names that stay in the repository's top directory.
    pub fn parse(text: &str) -> Result<MetaConf> {
        let pairs = parse_flat(text)?;
        let get = |key: &str| pairs.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let version: u32 = match get("version") {
            Some(v) => v.parse().map_err(|_| Error::msg(format!("version `{v}` is not a number")))?,
            None => bail!("it has no `version`"),
        };
        if !(1..=2).contains(&version) {
            bail!("version {version} is not one pkg reads (1 or 2)");
        }
        let format = get("packing_format").unwrap_or("tzst");
        let Some(packing_format) = Compression::from_packing_format(format) else {
            bail!("packing_format `{format}` is not one of tzst, txz, tbz, tgz, tar");
        };
        let name = |key: &str, default: &str| -> Result<String> {
            let v = get(key).unwrap_or(default);
            if v.is_empty() || v.contains('/') || v.starts_with('.') {
                bail!("{key} `{v}` is not a plain file name");
            }
            Ok(v.to_owned())
        };
        Ok(MetaConf {
            version,
            packing_format,
            manifests: name("manifests", "packagesite.yaml")?,
            manifests_archive: name("manifests_archive", "packagesite")?,
            data: name("data", "data")?,
            filesite: name("filesite", "files")?,
            filesite_archive: name("filesite_archive", "files")?,
        })
    }
}

/// A trust file from a fingerprints directory (`trusted/NAME` or `revoked/NAME`):
/// the SHA-256 (lowercase hex) of a public key's exact bytes.
pub fn parse_fingerprint(text: &str) -> Result<String> {
    let pairs = parse_flat(text)?;
    let get = |key: &str| pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    match get("function") {
        Some("sha256") => {}
        Some(other) => bail!("function `{other}` is not sha256"),
        None => bail!("it has no `function`"),
    }
    let Some(fp) = get("fingerprint") else { bail!("it has no `fingerprint`") };
    let fp = fp.to_ascii_lowercase();
    if fp.len() != 64 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("fingerprint `{fp}` is not 64 hex digits");
    }
    Ok(fp)
}

/// The trust file pkg expects for a public key's fingerprint.
pub fn fingerprint_file(fingerprint: &str) -> String {
    format!("function: \"sha256\"\nfingerprint: \"{fingerprint}\"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_default_meta_conf() {
        let text = "version = 2;\npacking_format = \"tzst\";\nmanifests = \"packagesite.yaml\";\ndata = \"data\";\nfilesite = \"files\";\nmanifests_archive = \"packagesite\";\nfilesite_archive = \"files\";\n";
        let m = MetaConf::parse(text).unwrap();
        assert_eq!(m.version, 2);
        assert_eq!(m.packing_format, Compression::Zstd);
        assert_eq!(m.manifests, "packagesite.yaml");
        assert!(MetaConf::parse("version = 9;\n").is_err());
        assert!(MetaConf::parse("version = 2;\ndata = \"../x\";\n").is_err());
        assert!(MetaConf::parse("version = 2;\npacking_format = \"rar\";\n").is_err());
        assert_eq!(MetaConf::parse("version = 2;\n").unwrap(), MetaConf::default());
        assert_eq!(m.catalogue(CatalogueKind::Packagesite), ("packagesite.pkg".into(), "packagesite.yaml".into()));
        assert_eq!(m.files(), ("files.pkg".into(), "files".into()));
    }

    #[test]
    fn reads_fingerprint_files() {
        let fp = "9f458105021fe487f134ba26d87a755969bb8cd9c29db888144e9685000a981a";
        assert_eq!(parse_fingerprint(&fingerprint_file(fp)).unwrap(), fp);
        assert!(parse_fingerprint("function: \"sha1\"\nfingerprint: \"ab\"\n").is_err());
    }
}
