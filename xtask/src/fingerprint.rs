//! Fingerprints: a SHA-256 over a stage's inputs, compared with the last success's to
//! decide whether the stage can be skipped.
//!
//! Small files are hashed by content. Large ones (images, packages) by identity (size,
//! modification time, inode): hashing a 2 GB ISO on every `release` would make a no-op
//! release slow, and anything that rewrites the file changes its identity.
//!
//! What a stage produced is checked the same way before it is skipped: see
//! [`identity::Produced`](crate::identity::Produced).

use std::io::Read;
use std::os::unix::fs::MetadataExt;

use anyhow::{Context, Result};
use camino::Utf8Path;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::identity::Identity;

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

    /// An earlier stage's outputs (none: `null`): their text, or for outputs kept in a
    /// file of their own (large ones: see [`crate::outputs`]) their digest, so that a
    /// fingerprint never reads tens of megabytes.
    pub fn outputs(&mut self, label: &str, outputs: Option<&crate::outputs::Outputs>) -> &mut Self {
        match outputs {
            Some(o) if o.kept_apart() => {
                self.tag("outputs-sha256", label);
                self.bytes(o.sha256().as_bytes());
                self
            }
            _ => self.json(label, &outputs),
        }
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

    /// A file's identity (device, inode, size, modification time; not its change time,
    /// which a hard link moves), not its contents.
    pub fn identity(&mut self, label: &str, path: &Utf8Path) -> Result<&mut Self> {
        self.tag("identity", label);
        match std::fs::metadata(path) {
            Ok(m) => {
                let id = Identity::of(&m);
                for v in [id.size, id.mtime.0 as u64, id.mtime.1 as u64, id.ino, id.dev] {
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

/// A writer that passes what it writes on to `out` and hashes those bytes (SHA-256) in
/// a thread of its own, a megabyte at a time: writing a large file (an SBOM of a ports
/// tree is tens of megabytes) and hashing it take about as long each, and go on side by
/// side.
pub struct Sha256Writer<W> {
    out: W,
    piece: Vec<u8>,
    hashing: Option<(std::sync::mpsc::SyncSender<Vec<u8>>, std::thread::JoinHandle<String>)>,
}

/// How much is handed to the hashing thread at once.
const PIECE: usize = 1 << 20;

impl<W: std::io::Write> Sha256Writer<W> {
    pub fn new(out: W) -> Sha256Writer<W> {
        Sha256Writer { out, piece: Vec::new(), hashing: None }
    }

    /// SHA-256 (hex) of everything written.
    pub fn hex(mut self) -> String {
        let piece = std::mem::take(&mut self.piece);
        let Some((to, thread)) = self.hashing.take() else { return hex(&Sha256::digest(&piece)) };
        // The thread ends when the channel closes; a send fails only if it is gone.
        let _ = to.send(piece);
        drop(to);
        thread.join().unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// Hands the piece written so far to the hashing thread (started by the first).
    fn hand_over(&mut self) {
        let piece = std::mem::replace(&mut self.piece, Vec::with_capacity(PIECE));
        let (to, _) = self.hashing.get_or_insert_with(|| {
            let (to, pieces) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
            let thread = std::thread::spawn(move || {
                let mut hasher = Sha256::new();
                for piece in pieces {
                    hasher.update(&piece);
                }
                hex(&hasher.finalize())
            });
            (to, thread)
        });
        let _ = to.send(piece);
    }
}

impl<W: std::io::Write> std::io::Write for Sha256Writer<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(buf)?;
        self.piece.extend_from_slice(&buf[..n]);
        if self.piece.len() >= PIECE {
            self.hand_over();
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// SHA-256 of bytes, as lowercase hex.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_hashes_what_it_writes_whatever_the_pieces() {
        use std::io::Write;
        for len in [0, 1, PIECE - 1, PIECE, PIECE + 1, 3 * PIECE + PIECE / 2] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let mut w = Sha256Writer::new(Vec::new());
            // Written in uneven slices, as a serializer writes.
            for part in bytes.chunks(70_001) {
                w.write_all(part).unwrap();
            }
            let copy = w.out.clone();
            assert_eq!(copy, bytes);
            assert_eq!(w.hex(), sha256_bytes(&bytes), "{len} bytes");
        }
    }

    #[test]
    fn labels_separate_values() {
        let mut a = Fingerprint::new();
        a.str("x", "ab").str("y", "");
        let mut b = Fingerprint::new();
        b.str("x", "a").str("y", "b");
        assert_ne!(a.finish(), b.finish());
    }

    #[test]
    fn sha256_of_empty() {
        assert_eq!(sha256_bytes(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
