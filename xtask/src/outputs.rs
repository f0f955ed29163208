//! What a stage produced, as state.json keeps it: compact JSON text, held as text.
//!
//! A signed repository's outputs list every package (35,000 in a full ports tree);
//! as a `serde_json::Value` tree that is a map and a dozen strings per package, over a
//! hundred megabytes, copied whenever a record is. As text it is one string the size of
//! its JSON, parsed into the stage's own outputs type only where it is read.
//!
//! Outputs larger than [`INLINE_LIMIT`] are not written into state.json, which every
//! command reads and rewrites several times: they go once into a file of their own,
//! `STATE_DIR/outputs/SHA256.json` (named by the SHA-256 of their text, so it never
//! changes and the runs that carry the record over share it), and state.json names
//! that digest. Such outputs are read from their file only when a stage reads them,
//! and checked against the digest then.

use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// Outputs up to this size stay in state.json; larger ones get a file of their own.
pub const INLINE_LIMIT: usize = 64 * 1024;

/// The most an outputs file may hold (a million packages' outputs are about 400 MB).
const MAX_STORED: u64 = 1 << 30;

/// The directory, in the state directory, of the outputs too large for state.json.
pub const STORED_DIR: &str = "outputs";

/// A stage's outputs: one JSON value as compact text (no whitespace outside strings),
/// in memory or in its file.
#[derive(Debug, Clone)]
pub struct Outputs(Repr);

#[derive(Debug, Clone)]
enum Repr {
    /// The text, and its SHA-256 once computed.
    Inline { text: Box<RawValue>, digest: OnceLock<String> },
    /// In `STATE_DIR/outputs/SHA256.json`, read on first use.
    Stored(Arc<Stored>),
}

#[derive(Debug)]
struct Stored {
    sha256: String,
    bytes: u64,
    /// The state directory, once the state that names the file is attached to it.
    root: OnceLock<Utf8PathBuf>,
    /// The file's text once read and checked against the digest (its JSON is checked by
    /// whoever parses it).
    text: OnceLock<String>,
}

/// How state.json names outputs kept in a file of their own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredRef {
    /// SHA-256 (hex) of the compact text: the file is `outputs/SHA256.json`.
    pub sha256: String,
    /// Its size in bytes.
    pub bytes: u64,
}

impl Outputs {
    /// The outputs `value` serializes to.
    pub fn new<T: Serialize>(value: &T) -> Result<Outputs> {
        let text = serde_json::to_string(value).context("cannot serialize a stage's outputs")?;
        Ok(Outputs::inline(RawValue::from_string(text).context("a stage's outputs are not JSON")?))
    }

    fn inline(text: Box<RawValue>) -> Outputs {
        Outputs(Repr::Inline { text, digest: OnceLock::new() })
    }

    /// No outputs: JSON `null`.
    pub fn null() -> Outputs {
        Outputs::inline(RawValue::from_string("null".into()).expect("null is JSON"))
    }

    /// Outputs state.json names by `r`, in the file [`Outputs::attach`] will locate.
    pub fn stored(r: StoredRef) -> Outputs {
        Outputs(Repr::Stored(Arc::new(Stored {
            sha256: r.sha256,
            bytes: r.bytes,
            root: OnceLock::new(),
            text: OnceLock::new(),
        })))
    }

    /// Tells outputs kept in a file which state directory holds it.
    pub fn attach(&self, root: &Utf8Path) {
        if let Repr::Stored(s) = &self.0 {
            let _ = s.root.set(root.to_owned());
        }
    }

    /// The outputs read as `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(self.text()?)
    }

    /// The compact JSON text (read from its file when kept in one).
    pub fn text(&self) -> serde_json::Result<&str> {
        match &self.0 {
            Repr::Inline { text, .. } => Ok(text.get()),
            Repr::Stored(s) => s.text().map_err(|e| serde_json::Error::io(std::io::Error::other(format!("{e:#}")))),
        }
    }

    /// The size of the compact text in bytes.
    pub fn bytes(&self) -> usize {
        match &self.0 {
            Repr::Inline { text, .. } => text.get().len(),
            Repr::Stored(s) => usize::try_from(s.bytes).unwrap_or(usize::MAX),
        }
    }

    /// SHA-256 (hex) of the compact text.
    pub fn sha256(&self) -> &str {
        match &self.0 {
            Repr::Inline { text, digest } => {
                digest.get_or_init(|| crate::fingerprint::sha256_bytes(text.get().as_bytes()))
            }
            Repr::Stored(s) => &s.sha256,
        }
    }

    /// Whether state.json names these outputs by digest rather than holding them.
    pub fn kept_apart(&self) -> bool {
        matches!(self.0, Repr::Stored(_)) || self.bytes() > INLINE_LIMIT
    }

    /// For outputs kept apart and still only in memory: writes their file in `root`
    /// unless it is there already. Whether it wrote one.
    pub fn store(&self, root: &Utf8Path) -> Result<bool> {
        match &self.0 {
            Repr::Inline { text, .. } if self.kept_apart() => {
                let path = stored_path(root, self.sha256());
                // Named by its digest: a file of that name holds that text already (a
                // damaged one is caught when it is read).
                if path.exists() {
                    return Ok(false);
                }
                crate::fsx::write_atomic(&path, text.get().as_bytes())
                    .with_context(|| format!("cannot keep a stage's outputs in {path}"))?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The digest of the file state.json names for these outputs, if kept apart.
    pub fn stored_ref(&self) -> Option<StoredRef> {
        self.kept_apart().then(|| StoredRef { sha256: self.sha256().to_owned(), bytes: self.bytes() as u64 })
    }
}

/// Removes the files of `STATE_DIR/outputs` that no run's state.json names. Removes
/// nothing when any state.json cannot be read (it may name any of them). Called with
/// the state directory locked, after state.json is written.
pub fn collect_garbage(root: &Utf8Path) -> Result<usize> {
    /// Of a state.json, only the digests it names.
    #[derive(Deserialize)]
    struct Names {
        #[serde(default)]
        records: std::collections::BTreeMap<String, Record>,
    }
    #[derive(Deserialize)]
    struct Record {
        #[serde(default)]
        last_success: Option<Success>,
    }
    #[derive(Deserialize)]
    struct Success {
        #[serde(default)]
        outputs_file: Option<StoredRef>,
    }
    let dir = root.join(STORED_DIR);
    let Ok(entries) = dir.read_dir_utf8() else { return Ok(0) };
    let mut named = std::collections::BTreeSet::new();
    let runs = root.join("runs");
    for run in runs.read_dir_utf8().with_context(|| format!("cannot read {runs}"))? {
        let run = run.with_context(|| format!("cannot read {runs}"))?;
        let path = run.path().join("state.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read {path}")),
        };
        let names: Names = serde_json::from_slice(&bytes).with_context(|| format!("cannot read {path}"))?;
        for rec in names.records.into_values() {
            named.extend(rec.last_success.and_then(|s| s.outputs_file).map(|r| r.sha256));
        }
    }
    let mut removed = 0;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {dir}"))?;
        let name = entry.file_name();
        // Only files of the form SHA256.json; anything else (a temporary file being
        // written) is left alone.
        let Some(digest) =
            name.strip_suffix(".json").filter(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()))
        else {
            continue;
        };
        if !named.contains(digest) {
            std::fs::remove_file(entry.path()).with_context(|| format!("cannot remove {}", entry.path()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Where outputs with this digest are kept.
pub fn stored_path(root: &Utf8Path, sha256: &str) -> Utf8PathBuf {
    root.join(STORED_DIR).join(format!("{sha256}.json"))
}

impl Stored {
    fn text(&self) -> Result<&str> {
        if let Some(t) = self.text.get() {
            return Ok(t);
        }
        let root =
            self.root.get().context("outputs kept in a file were read before their state directory was known")?;
        let path = stored_path(root, &self.sha256);
        let bytes = crate::fsx::read_bounded(&path, MAX_STORED)?;
        let got = crate::fingerprint::sha256_bytes(&bytes);
        if bytes.len() as u64 != self.bytes || got != self.sha256 {
            anyhow::bail!(
                "{path} is damaged: state.json names {} bytes with SHA-256 {}, the file has {} bytes with SHA-256 {got}",
                self.bytes,
                self.sha256,
                bytes.len()
            );
        }
        let text = String::from_utf8(bytes).with_context(|| format!("{path} is not UTF-8"))?;
        Ok(self.text.get_or_init(|| text))
    }
}

impl PartialEq for Outputs {
    /// The same text: compared by digest once either is kept in a file.
    fn eq(&self, other: &Outputs) -> bool {
        match (&self.0, &other.0) {
            (Repr::Inline { text: a, .. }, Repr::Inline { text: b, .. }) => a.get() == b.get(),
            _ => self.bytes() == other.bytes() && self.sha256() == other.sha256(),
        }
    }
}

impl Serialize for Outputs {
    /// The JSON value itself (read from its file when kept in one).
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let text = self.text().map_err(serde::ser::Error::custom)?;
        let raw: &RawValue = serde_json::from_str(text).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Outputs {
    /// Any JSON value, made compact (state.json is written indented; a value written
    /// compact reads back as the same text).
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Outputs, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        let compact = compact(raw.get());
        if compact.len() == raw.get().len() {
            return Ok(Outputs::inline(raw));
        }
        RawValue::from_string(compact).map(Outputs::inline).map_err(serde::de::Error::custom)
    }
}

/// `json` (valid JSON) without the whitespace outside its strings.
fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indented_json_reads_back_as_the_compact_text_of_the_same_value() {
        let value = serde_json::json!({
            "b": [1, 2.5, {"c": "a \"quoted\" \\ string\twith spaces \n"}],
            "a": null, "e": [], "d": {}, "ü": "ß"
        });
        let pretty = serde_json::to_string_pretty(&value).unwrap();
        let outputs: Outputs = serde_json::from_str(&pretty).unwrap();
        assert_eq!(outputs.text().unwrap(), serde_json::to_string(&value).unwrap());
        assert_eq!(outputs.parse::<serde_json::Value>().unwrap(), value);
        // Written inside an indented document and read back: the same text.
        #[derive(Serialize, Deserialize)]
        struct Doc {
            outputs: Outputs,
        }
        let doc = serde_json::to_string_pretty(&Doc { outputs: outputs.clone() }).unwrap();
        let again: Doc = serde_json::from_str(&doc).unwrap();
        assert_eq!(again.outputs, outputs);
    }

    #[test]
    fn typed_outputs_round_trip_and_null_is_null() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct O {
            repo: String,
            packages: Vec<u32>,
        }
        let o = O { repo: "/r".into(), packages: vec![1, 2] };
        let outputs = Outputs::new(&o).unwrap();
        assert_eq!(outputs.parse::<O>().unwrap(), o);
        assert_eq!(Outputs::null().text().unwrap(), "null");
        assert!(outputs.parse::<Vec<u8>>().is_err());
    }
}
