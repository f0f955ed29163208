//! Fingerprints: a SHA-256 over a stage's inputs, compared with the last success's to
//! decide whether the stage can be skipped.
//!
//! Small files are hashed by content. Large ones (images, packages) by identity (size,
//! modification time, inode): hashing a 2 GB ISO on every `release` would make a no-op
//! release slow, and anything that rewrites the file changes its identity.
//!
//! What a stage produced is checked the same way before it is skipped: [`Produced`]
//! holds each file's [`FileId`], recorded in the stage's outputs.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A file's identity: its size, modification time and inode. One stat compares it, so
/// a no-op `release` stays fast; a file rewritten in place (even at the same size) or
/// replaced has another. Only bytes changed with the modification time forged back go
/// unseen: catching those would mean hashing every output on every release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub size: u64,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub inode: u64,
}

impl FileId {
    /// The identity `path` has now.
    pub fn of(path: &Utf8Path) -> Result<FileId> {
        let m = std::fs::metadata(path).with_context(|| format!("cannot stat {path}"))?;
        Ok(FileId { size: m.len(), mtime: m.mtime(), mtime_nsec: m.mtime_nsec(), inode: m.ino() })
    }
}

/// The files a stage produced, by the name its outputs give each, with the identity
/// each had when the stage ended ([`FileId`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Produced(BTreeMap<Utf8PathBuf, FileId>);

impl Produced {
    /// Records the identity of the file at `path` under `name`.
    pub fn add(&mut self, name: impl Into<Utf8PathBuf>, path: &Utf8Path) -> Result<()> {
        self.0.insert(name.into(), FileId::of(path)?);
        Ok(())
    }

    /// Whether every file recorded still has its identity; `path(name)` says where the
    /// file named `name` is. (A stage recorded before identities were has none: its
    /// other checks decide.)
    pub fn intact(&self, path: impl Fn(&Utf8Path) -> Utf8PathBuf) -> bool {
        self.0.iter().all(|(name, id)| FileId::of(&path(name)).is_ok_and(|now| now == *id))
    }
}

/// Builds a fingerprint. Every `add_*` call is tagged with a label so that moving a
/// value from one input to another changes the digest.
#[derive(Clone)]
pub struct Fingerprint {
    hasher: Sha256,
}

impl Default for Fingerprint {
    fn default() -> Self {
        Self::new()
    }
}

impl Fingerprint {
    pub fn new() -> Self {
        Fingerprint { hasher: Sha256::new() }
    }

    fn tag(&mut self, kind: &str, label: &str) {
        for part in [kind, label] {
            self.hasher.update((part.len() as u64).to_le_bytes());
            self.hasher.update(part.as_bytes());
        }
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.hasher.update((bytes.len() as u64).to_le_bytes());
        self.hasher.update(bytes);
    }

    /// A string value.
    pub fn str(&mut self, label: &str, value: &str) -> &mut Self {
        self.tag("str", label);
        self.bytes(value.as_bytes());
        self
    }

    /// Any serializable value (a settings table, an earlier stage's outputs).
    pub fn json<T: Serialize>(&mut self, label: &str, value: &T) -> &mut Self {
        self.tag("json", label);
        let text = serde_json::to_vec(value).unwrap_or_default();
        self.bytes(&text);
        self
    }

    /// A file's contents; a missing file counts as its own distinct value.
    pub fn file(&mut self, label: &str, path: &Utf8Path) -> Result<&mut Self> {
        self.tag("file", label);
        match std::fs::File::open(path) {
            Ok(mut f) => {
                let buf = read_plain(&mut f).with_context(|| format!("cannot read {path}"))?;
                self.bytes(&buf);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.bytes(b"\0missing"),
            Err(e) => return Err(e).with_context(|| format!("cannot read {path}")),
        }
        Ok(self)
    }

    /// A file's identity: size, modification time and inode, not its contents.
    pub fn identity(&mut self, label: &str, path: &Utf8Path) -> Result<&mut Self> {
        self.tag("identity", label);
        match std::fs::metadata(path) {
            Ok(m) => {
                for v in [m.len(), m.mtime() as u64, m.mtime_nsec() as u64, m.ino(), m.dev()] {
                    self.hasher.update(v.to_le_bytes());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.bytes(b"\0missing"),
            Err(e) => return Err(e).with_context(|| format!("cannot stat {path}")),
        }
        Ok(self)
    }

    /// Every regular file under a directory, by relative path and contents, in sorted
    /// order. Symlinks are recorded by their target.
    pub fn tree(&mut self, label: &str, dir: &Utf8Path) -> Result<&mut Self> {
        self.tree_except(label, dir, &[])
    }

    /// [`Fingerprint::tree`] leaving out some files (paths relative to `dir`).
    pub fn tree_except(&mut self, label: &str, dir: &Utf8Path, except: &[&str]) -> Result<&mut Self> {
        self.tag("tree", label);
        let mut entries = Vec::new();
        if dir.exists() {
            collect(dir, dir, &mut entries)?;
        } else {
            self.bytes(b"\0missing");
        }
        entries.retain(|e| !except.contains(&e.as_str()));
        entries.sort();
        for rel in entries {
            let path = dir.join(&rel);
            let meta = std::fs::symlink_metadata(&path).with_context(|| format!("cannot stat {path}"))?;
            self.bytes(rel.as_bytes());
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).with_context(|| format!("cannot read link {path}"))?;
                self.bytes(target.as_os_str().as_encoded_bytes());
            } else {
                self.hasher.update(meta.mode().to_le_bytes());
                self.file("", &path)?;
            }
        }
        Ok(self)
    }

    /// The digest as 64 lowercase hex characters.
    pub fn finish(&self) -> String {
        hex(&self.hasher.clone().finalize())
    }
}

fn collect(root: &Utf8Path, dir: &Utf8Path, out: &mut Vec<String>) -> Result<()> {
    for entry in dir.read_dir_utf8().with_context(|| format!("cannot read directory {dir}"))? {
        let entry = entry.with_context(|| format!("cannot read directory {dir}"))?;
        let ft = entry.file_type().with_context(|| format!("cannot stat {}", entry.path()))?;
        if ft.is_dir() {
            collect(root, entry.path(), out)?;
        } else {
            let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
            out.push(rel.as_str().to_owned());
        }
    }
    Ok(())
}

/// Reads a whole (small) file with plain reads: `read_to_end` first asks for the
/// file's size and position (two more system calls per file), which a fingerprint of
/// many small files pays for on every no-op release.
fn read_plain(f: &mut std::fs::File) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match f.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// SHA-256 of a file's contents, as lowercase hex.
pub fn sha256_file(path: &Utf8Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("cannot open {path}"))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).with_context(|| format!("cannot read {path}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

/// SHA-256 of bytes, as lowercase hex.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_separate_values() {
        let mut a = Fingerprint::new();
        a.str("x", "ab").str("y", "");
        let mut b = Fingerprint::new();
        b.str("x", "a").str("y", "b");
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn a_file_rewritten_at_the_same_size_is_no_longer_intact() {
        let dir = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(dir.path()).unwrap();
        std::fs::write(dir.join("a"), "one").unwrap();
        let mut produced = Produced::default();
        produced.add("a", &dir.join("a")).unwrap();
        assert!(produced.intact(|n| dir.join(n)));
        // The same bytes a tick later: another modification time.
        let before = FileId::of(&dir.join("a")).unwrap();
        while FileId::of(&dir.join("a")).unwrap() == before {
            std::fs::write(dir.join("a"), "two").unwrap();
        }
        assert!(!produced.intact(|n| dir.join(n)));
        // Replaced by another file whose time is set back: another inode.
        let mut produced = Produced::default();
        produced.add("a", &dir.join("a")).unwrap();
        let times = std::fs::File::open(dir.join("a")).unwrap().metadata().unwrap().modified().unwrap();
        std::fs::write(dir.join("b"), "two").unwrap();
        std::fs::File::options().write(true).open(dir.join("b")).unwrap().set_modified(times).unwrap();
        std::fs::rename(dir.join("b"), dir.join("a")).unwrap();
        assert!(!produced.intact(|n| dir.join(n)));
        std::fs::remove_file(dir.join("a")).unwrap();
        assert!(!produced.intact(|n| dir.join(n)), "a missing file is not intact");
    }

    #[test]
    fn sha256_of_empty() {
        assert_eq!(sha256_bytes(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
