//! Bundles: what one machine's stage produced, carried to another machine as one file
//! and checked there before anything of it is used.
//!
//! # The format
//!
//! A bundle is a POSIX ustar archive (`tar -tvf` lists it) of exactly this shape:
//!
//! 1. `bundle.json`, the [`Manifest`]: the format's name and version, the caller's
//!    metadata (`meta`: for mother-build, the run's identity and the stage's outputs),
//!    and every file that follows, in order, with its size and SHA-256;
//! 2. each file of the manifest, in the manifest's order, as a regular file entry whose
//!    name and size are the manifest's;
//! 3. the end of the archive (zero blocks), and nothing after it but zeros.
//!
//! No compression: the packages a bundle carries are compressed already, and the
//! benchmark (`cargo bench -p xtask --bench bundle`) shows zstd costing time for
//! nothing.
//!
//! # Writing
//!
//! [`write`] reads each file once: it writes the manifest with placeholder digests of
//! the same length, streams the files while hashing them, then writes the real manifest
//! over the placeholder (the output is a temporary file renamed into place at the end).
//!
//! # Reading
//!
//! [`read`] trusts nothing in the bytes. It reads the manifest (at most
//! [`Limits::manifest_bytes`], refused beyond), checks its paths (relative, no `..`, no
//! duplicates, at most [`Limits::files`] files, at most [`Limits::total_bytes`] in
//! all), lets the caller accept or refuse it before any file is written, then streams
//! each entry into a directory the caller gives, hashing as it writes: an entry that is
//! not a regular file (a symlink, a link, a directory, a device, an extension header), is
//! not the next file of the manifest (missing, extra, duplicated, renamed), or does not
//! match its size or digest is refused. Memory stays bounded whatever the input: one
//! 512-byte header and one copy buffer besides the manifest. On refusal the caller's
//! directory may hold some files: [`read`]'s caller stages into a directory it discards.
//! It starts no process and prints nothing.

mod pipe;
mod read;
mod write;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use read::{Limits, open, read};
pub use write::write;

/// The format's name, in every manifest.
pub const FORMAT: &str = "mother-build-bundle";
/// The format's version this crate writes and reads.
pub const VERSION: u32 = 1;
/// The name of the first entry: the manifest.
pub const MANIFEST: &str = "bundle.json";

/// The first entry of a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// The caller's metadata, carried as it is.
    pub meta: serde_json::Value,
    /// The files that follow, in order.
    pub files: Vec<FileEntry>,
}

/// One file of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Its path in the bundle: relative, `/`-separated, no `.` or `..`.
    pub path: String,
    pub size: u64,
    /// SHA-256 of its bytes, 64 lowercase hex digits.
    pub sha256: String,
}

impl Manifest {
    /// The sum of the files' sizes.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// What went wrong with a bundle: refused (its bytes are not a bundle, or not the
/// bundle they claim to be), or an input/output error on this machine.
#[derive(Debug)]
pub enum Error {
    /// The bundle is refused: the message says what in it is wrong.
    Refused(String),
    /// The caller refused the manifest ([`read`]'s `accept`).
    Rejected(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// Reading or writing a file failed.
    Io { what: String, source: std::io::Error },
}

impl Error {
    pub(crate) fn refused(message: impl Into<String>) -> Error {
        Error::Refused(message.into())
    }

    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Refused(m) => f.write_str(m),
            Error::Rejected(e) => write!(f, "{e}"),
            Error::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            Error::Rejected(e) => e.source(),
            Error::Refused(_) => None,
        }
    }
}

/// `Result<T, bundle::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The longest path a bundle holds (what a ustar header's name and prefix can carry).
pub const MAX_PATH: usize = 255;

/// Checks a path of the manifest: relative, `/`-separated normal components, not the
/// manifest's own name, at most [`MAX_PATH`] bytes, no NUL, no backslash.
pub fn check_path(path: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::refused(format!("the path {path:?} in the manifest {why}")));
    if path.is_empty() {
        return bad("is empty");
    }
    if path.len() > MAX_PATH {
        return bad(&format!("is longer than {MAX_PATH} bytes"));
    }
    if path == MANIFEST {
        return bad("is the manifest's own name");
    }
    if path.bytes().any(|b| b == 0 || b == b'\\' || b.is_ascii_control()) {
        return bad("holds a NUL, a backslash or a control character");
    }
    if path.starts_with('/') {
        return bad("is absolute");
    }
    for part in path.split('/') {
        match part {
            "" => return bad("has an empty component (`//` or a trailing `/`)"),
            "." | ".." => return bad("has a `.` or `..` component"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
