//! `meta.conf` and the fingerprint trust files, both UCL as pkg reads them (see
//! [`crate::ucl`]'s subset): nested objects such as meta.conf's `extra` and legacy
//! `cert` are read and tolerated, keys are compared without case, unknown keys are
//! ignored. Where pkg lets an ambiguity pass (a key given twice, a fingerprint in upper
//! case that can never match) this module refuses it and says why.

use camino::Utf8Path;

use crate::CatalogueKind;
use crate::archive::Compression;
use crate::error::{Context, Error, Result, bail};
use crate::ucl::{self, Value};

/// pkg downloads at most this much of meta.conf (`libpkg/pkg_repo.c`,
/// `PKG_REPO_MAX_META_SIZE`); a larger one is refused here too.
pub const MAX_META_SIZE: usize = 1 << 20;

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
    /// `("data.pkg", "data")`, `("packagesite.pkg", "packagesite.yaml")`. The archive is
    /// named as the client names it: after the inner file, up to its last dot.
    pub fn catalogue(&self, kind: CatalogueKind) -> (String, String) {
        match kind {
            CatalogueKind::Data => (format!("{}.pkg", archive_base(&self.data)), self.data.clone()),
            CatalogueKind::Packagesite => (format!("{}.pkg", archive_base(&self.manifests)), self.manifests.clone()),
        }
    }

    /// The same for the optional file list (`pkg repo -l`): `("files.pkg", "files")`.
    pub fn files(&self) -> (String, String) {
        (format!("{}.pkg", archive_base(&self.filesite)), self.filesite.clone())
    }

    /// Parses and checks meta.conf as pkg 2.8.4 reads it (`libpkg/pkg_repo_meta.c`,
    /// `pkg_repo_meta_parse` and its schema): `version` 1 or 2, a known packing format,
    /// the inner file names as strings that stay in the repository's top directory,
    /// `revision` and `eol` integers, `extra` an object, `cert` an object of strings
    /// `type` (`rsa`), `data` and `name`. Other keys are ignored, as pkg ignores them. A
    /// key given twice is refused (pkg merges it; which value wins is libucl's business).
    pub fn parse(text: &str) -> Result<MetaConf> {
        if text.len() > MAX_META_SIZE {
            bail!("it is {} bytes; pkg reads at most {MAX_META_SIZE}", text.len());
        }
        let members = ucl::parse(text)?;
        for (i, (key, _)) in members.iter().enumerate() {
            if members[..i].iter().any(|(k, _)| k == key) {
                bail!("`{key}` is given twice (pkg would merge the two; say it once)");
            }
        }
        let get = |key: &str| members.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        let string = |key: &str| -> Result<Option<&str>> {
            match get(key) {
                None => Ok(None),
                Some(Value::Str(s)) => Ok(Some(s.as_str())),
                Some(other) => bail!("`{key}` is {} but must be a string", other.kind()),
            }
        };
        let version = match get("version") {
            Some(Value::Int(v)) if (1..=2).contains(v) => *v as u32,
            Some(Value::Int(v)) => bail!("version {v} is not one pkg reads (1 or 2)"),
            Some(other) => bail!("`version` is {} but must be an integer", other.kind()),
            None => bail!("it has no `version`"),
        };
        let format = string("packing_format")?.unwrap_or("tzst");
        let Some(packing_format) = Compression::from_packing_format(format) else {
            bail!("packing_format `{format}` is not one of tzst, txz, tbz, tgz, tar");
        };
        for key in [
            "maintainer",
            "source",
            "conflicts",
            "fulldb",
            "data_archive",
            "conflicts_archive",
            "fulldb_archive",
            "source_identifier",
        ] {
            string(key)?;
        }
        for key in ["revision", "eol"] {
            if let Some(v) = get(key).filter(|v| !matches!(v, Value::Int(_))) {
                bail!("`{key}` is {} but must be an integer", v.kind());
            }
        }
        if let Some(v) = get("extra").filter(|v| !matches!(v, Value::Object(_))) {
            bail!("`extra` is {} but must be an object", v.kind());
        }
        match get("cert") {
            None => {}
            Some(Value::Object(cert)) => {
                for key in ["type", "data", "name"] {
                    match cert.iter().find(|(k, _)| k == key).map(|(_, v)| v) {
                        Some(Value::Str(_)) => {}
                        Some(other) => bail!("`cert.{key}` is {} but must be a string", other.kind()),
                        None => bail!("`cert` has no `{key}` (pkg's schema requires type, data and name)"),
                    }
                }
                if let Some((_, Value::Str(t))) = cert.iter().find(|(k, _)| k == "type")
                    && t != "rsa"
                {
                    bail!("`cert.type` is `{t}`; pkg's schema allows only rsa");
                }
            }
            Some(other) => bail!("`cert` is {} but must be an object", other.kind()),
        }
        let name = |key: &str, default: &str| -> Result<String> {
            let v = string(key)?.unwrap_or(default);
            if v.is_empty() || v.contains('/') || v.starts_with('.') || v.contains('\0') {
                bail!("{key} `{v}` is not a plain file name");
            }
            Ok(v.to_owned())
        };
        let meta = MetaConf {
            version,
            packing_format,
            manifests: name("manifests", "packagesite.yaml")?,
            manifests_archive: name("manifests_archive", "packagesite")?,
            data: name("data", "data")?,
            filesite: name("filesite", "files")?,
            filesite_archive: name("filesite_archive", "files")?,
        };
        // pkg repo names the archives it writes after the `*_archive` keys, but the
        // client fetches each one by the inner file's name (`libpkg/pkg_repo.c`,
        // `pkg_repo_fetch_remote_tmp`): when the two differ, clients never find it.
        for (key, written, inner) in [
            ("manifests_archive", &meta.manifests_archive, &meta.manifests),
            ("filesite_archive", &meta.filesite_archive, &meta.filesite),
        ] {
            if written != &archive_base(inner) {
                bail!(
                    "{key} `{written}` names an archive clients never fetch: they fetch `{}.pkg`, named after `{inner}`",
                    archive_base(inner)
                );
            }
        }
        Ok(meta)
    }
}

/// The archive a client fetches for an inner file: its name up to the last dot
/// (`packagesite.yaml` -> `packagesite`, `data` -> `data`).
fn archive_base(inner: &str) -> String {
    match inner.rfind('.') {
        Some(dot) if dot > 0 => inner[..dot].to_owned(),
        _ => inner.to_owned(),
    }
}

/// A trust file from a fingerprints directory (`trusted/NAME` or `revoked/NAME`): the
/// SHA-256 (lowercase hex) of a public key's exact bytes.
///
/// Read as pkg reads it (`libpkg/pkg_repo.c`, `pkg_repo_load_fingerprint`,
/// `pkg_repo_parse_fingerprint`): UCL, keys without case, a string `function` that is
/// `sha256` in any case, a string `fingerprint`; other keys ignored. pkg compares the
/// fingerprint exactly with the lowercase hex it computes, so one in upper case never
/// matches: it is refused here, as is a file pkg would skip without a word (no
/// `function` or `fingerprint`, another function).
pub fn parse_fingerprint(text: &str) -> Result<String> {
    let members = ucl::parse(text)?;
    let get = |key: &str| -> Result<Option<&str>> {
        match members.iter().find(|(k, _)| k == key).map(|(_, v)| v) {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s.as_str())),
            Some(other) => bail!("`{key}` is {} but must be a string", other.kind()),
        }
    };
    match get("function")? {
        Some(f) if f.eq_ignore_ascii_case("sha256") => {}
        Some(other) => bail!("function `{other}` is not sha256 (pkg says `Unsupported hashing function: {other}`)"),
        None => bail!("it has no `function`"),
    }
    let Some(fp) = get("fingerprint")? else { bail!("it has no `fingerprint`") };
    if fp.len() != 64 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("fingerprint `{fp}` is not 64 hex digits");
    }
    if fp.bytes().any(|b| b.is_ascii_uppercase()) {
        bail!(
            "fingerprint `{fp}` has upper-case hex digits; pkg compares it exactly with lowercase hex, so it would never match"
        );
    }
    Ok(fp.to_owned())
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
    fn tolerates_extra_and_a_legacy_cert_and_refuses_ambiguity() {
        let text = "version = 2;\nextra { built_by = \"poudriere\"; tags = [\"a\", \"b\"] }\ncert {\n  type = \"rsa\";\n  data = \"-----BEGIN PUBLIC KEY-----\\nMIIB\\n-----END PUBLIC KEY-----\\n\";\n  name = \"repo\";\n}\nrevision = 7;\nsomething_new = { a = 1 }\n";
        assert_eq!(MetaConf::parse(text).unwrap(), MetaConf::default());
        for (text, says) in [
            ("version = 2;\ndata = \"data\";\nDATA = \"x\";\n", "`data` is given twice"),
            ("version = \"2\";\n", "`version` is a string but must be an integer"),
            ("version = 2;\nextra = \"x\";\n", "`extra` is a string but must be an object"),
            ("version = 2;\ncert { type = \"ecc\"; data = \"x\"; name = \"n\" }\n", "only rsa"),
            ("version = 2;\ncert { type = \"rsa\"; name = \"n\" }\n", "`cert` has no `data`"),
            ("version = 2;\nrevision = \"x\";\n", "`revision` is a string"),
            ("version = 2;\nmanifests_archive = \"site\";\n", "clients never fetch: they fetch `packagesite.pkg`"),
            ("version = 2;\ndata = [\"data\"];\n", "`data` is an array"),
        ] {
            let err = MetaConf::parse(text).unwrap_err().to_string();
            assert!(err.contains(says), "{text:?}: {err}");
        }
        // The client names archives after the inner files.
        let m = MetaConf::parse(
            "version = 2;\nmanifests = \"site.json\";\nmanifests_archive = \"site\";\ndata = \"db\";\n",
        )
        .unwrap();
        assert_eq!(m.catalogue(CatalogueKind::Packagesite), ("site.pkg".into(), "site.json".into()));
        assert_eq!(m.catalogue(CatalogueKind::Data), ("db.pkg".into(), "db".into()));
        assert!(MetaConf::parse(&format!("version = 2;\nextra = \"{}\";\n", "x".repeat(MAX_META_SIZE))).is_err());
    }

    #[test]
    fn reads_fingerprint_files_as_strictly_as_pkg_compares_them() {
        let fp = "9f458105021fe487f134ba26d87a755969bb8cd9c29db888144e9685000a981a";
        assert_eq!(parse_fingerprint(&fingerprint_file(fp)).unwrap(), fp);
        assert_eq!(
            parse_fingerprint(&format!("FUNCTION = \"SHA256\"; Fingerprint = \"{fp}\"; comment = 1")).unwrap(),
            fp
        );
        let upper = fp.to_ascii_uppercase();
        let err = parse_fingerprint(&fingerprint_file(&upper)).unwrap_err().to_string();
        assert!(err.contains("upper-case") && err.contains("never match"), "{err}");
        assert!(
            parse_fingerprint("function: \"sha1\"\nfingerprint: \"ab\"\n")
                .unwrap_err()
                .to_string()
                .contains("Unsupported hashing function")
        );
        assert!(parse_fingerprint("function: \"sha256\"\n").is_err());
        assert!(parse_fingerprint(&format!("function: \"sha256\"\nfingerprint: \"{}\"\n", &fp[1..])).is_err());
    }
}
