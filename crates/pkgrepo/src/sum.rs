//! A package's `sum` in the catalogue, and hashing files to check it.
//!
//! `2$` + BLAKE2b-512 of the whole .pkg file in pkg's base32 (pkg 2.8+); a value
//! without `$` is the bare SHA-256 hex pkg wrote up to 2.7. Other hash types are refused
//! rather than guessed at.

use std::fmt;
use std::io::Read;

use camino::Utf8Path;
use sha2::{Digest, Sha256};

use crate::base32;
use crate::error::{Context, Result, bail};
use crate::hex;

/// A parsed `sum`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Sum {
    /// `2$<base32 of BLAKE2b-512>`, the digest part without `2$`.
    Blake2b(String),
    /// Bare lowercase SHA-256 hex.
    Sha256(String),
}

impl Sum {
    /// The sum pkg 2.8 writes for a package file with these bytes: `2$` and the
    /// BLAKE2b-512 of the bytes in pkg's base32.
    pub fn of(bytes: &[u8]) -> Sum {
        let digest = blake2b_simd::Params::new().hash_length(64).hash(bytes);
        Sum::Blake2b(base32::encode(digest.as_bytes()))
    }

    /// Parses a catalogue's `sum` value.
    pub fn parse(text: &str) -> Result<Sum> {
        match text.split_once('$') {
            Some(("2", digest)) => {
                if digest.len() != 103 || !digest.bytes().all(base32::is_digit) {
                    bail!("`{text}` is not a BLAKE2b-512 sum in pkg's base32 (103 characters)");
                }
                Ok(Sum::Blake2b(digest.to_owned()))
            }
            Some((kind, _)) => {
                bail!("`{text}` uses hash type {kind}, which is not supported (only 2$ and bare SHA-256)")
            }
            None => {
                if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                    bail!("`{text}` is neither a `2$` BLAKE2b sum nor 64 lowercase hex digits of SHA-256");
                }
                Ok(Sum::Sha256(text.to_owned()))
            }
        }
    }

    /// The catalogue form (also what `Display` writes).
    pub fn text(&self) -> String {
        match self {
            Sum::Blake2b(d) => format!("2${d}"),
            Sum::Sha256(d) => d.clone(),
        }
    }

    /// Whether `digests` (of the same file) match this sum.
    pub fn matches(&self, digests: &Digests) -> bool {
        match self {
            Sum::Blake2b(d) => digests.blake2b.as_deref() == Some(d.as_str()),
            Sum::Sha256(d) => digests.sha256.as_deref() == Some(d.as_str()),
        }
    }

    /// The digests a file must be hashed for to be checked against this sum.
    pub(crate) fn needs(&self) -> Want {
        match self {
            Sum::Blake2b(_) => Want { blake2b: true, sha256: false },
            Sum::Sha256(_) => Want { blake2b: false, sha256: true },
        }
    }
}

impl fmt::Display for Sum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// Which digests to compute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Want {
    pub(crate) blake2b: bool,
    pub(crate) sha256: bool,
}

impl Want {
    pub(crate) fn or(self, other: Want) -> Want {
        Want { blake2b: self.blake2b || other.blake2b, sha256: self.sha256 || other.sha256 }
    }
}

/// What hashing a file gave: its size and the digests that were asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Digests {
    /// Bytes read.
    pub size: u64,
    /// pkg's base32 of BLAKE2b-512 (the `2$` form without its prefix).
    pub blake2b: Option<String>,
    /// SHA-256, lowercase hex.
    pub sha256: Option<String>,
}

/// Feeds bytes to the digests wanted.
pub(crate) struct Hasher {
    blake2b: Option<blake2b_simd::State>,
    sha256: Option<Sha256>,
    size: u64,
}

impl Hasher {
    pub(crate) fn new(want: Want) -> Hasher {
        Hasher {
            blake2b: want.blake2b.then(|| blake2b_simd::Params::new().hash_length(64).to_state()),
            sha256: want.sha256.then(Sha256::new),
            size: 0,
        }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.size += bytes.len() as u64;
        if let Some(b) = &mut self.blake2b {
            b.update(bytes);
        }
        if let Some(s) = &mut self.sha256 {
            s.update(bytes);
        }
    }

    pub(crate) fn finish(self) -> Digests {
        Digests {
            size: self.size,
            blake2b: self.blake2b.map(|b| base32::encode(b.finalize().as_bytes())),
            sha256: self.sha256.map(|s| hex(&s.finalize())),
        }
    }
}

/// Hashes a file in one pass. Calls `progress` with each chunk's length.
pub(crate) fn hash_file(path: &Utf8Path, want: Want, progress: &dyn Fn(u64)) -> Result<Digests> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {path}"))?;
    // A buffer the size of the file, up to a megabyte: a package is often a few
    // kilobytes, and zeroing a megabyte for each of thousands costs more than reading it.
    let len = f.metadata().map_or(u64::MAX, |m| m.len());
    let size = usize::try_from(len.saturating_add(1)).unwrap_or(usize::MAX).clamp(1, 1 << 20);
    hash_open(f, want, &mut vec![0u8; size], progress).with_context(|| format!("cannot read {path}"))
}

/// The digests `want` of the open file `f` from where it is to its end, read through
/// `buf` (not empty).
pub(crate) fn hash_open(
    mut f: std::fs::File,
    want: Want,
    buf: &mut [u8],
    progress: &dyn Fn(u64),
) -> std::io::Result<Digests> {
    let mut hasher = Hasher::new(want);
    loop {
        let n = match f.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        progress(n as u64);
    }
    Ok(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms() {
        let b = format!("2${}", "y".repeat(103));
        assert!(matches!(Sum::parse(&b), Ok(Sum::Blake2b(_))));
        assert!(matches!(Sum::parse(&"a".repeat(64)), Ok(Sum::Sha256(_))));
        assert!(Sum::parse("1$abc").unwrap_err().to_string().contains("hash type 1"));
        assert!(Sum::parse("2$short").is_err());
        assert!(Sum::parse(&"A".repeat(64)).is_err());
    }

    #[test]
    fn hashing_a_file_gives_the_sums_of_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = Utf8Path::from_path(dir.path()).unwrap().join("a.pkg");
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
        std::fs::write(&path, &bytes).unwrap();
        let seen = std::sync::atomic::AtomicU64::new(0);
        let d = hash_file(&path, Want { blake2b: true, sha256: true }, &|n| {
            seen.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        })
        .unwrap();
        assert_eq!((d.size, seen.into_inner()), (3_000_000, 3_000_000));
        assert!(Sum::of(&bytes).matches(&d));
        assert_eq!(d.sha256.as_deref(), Some(hex(&Sha256::digest(&bytes)).as_str()));
        assert!(hash_file(&path.with_file_name("absent"), Want::default(), &|_| {}).is_err());
    }
}
