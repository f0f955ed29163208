//! Catalogue archives: a tar, compressed per meta.conf's `packing_format` (zstd by
//! default; also xz, gzip, bzip2, or none), always named `*.pkg`. Clients detect the
//! compression by magic, and so does this module.
//!
//! The catalogue of a full ports tree decompresses to tens of megabytes (and `files`
//! to hundreds), so archives are read as a stream ([`read_entries`], [`scan`]): each
//! entry is handed over as it is decompressed, and nothing holds the whole archive.
//! [`Archive`] holds one whole, for the small ones and for writing.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::rc::Rc;

use camino::Utf8Path;

use crate::error::{Context, Error, Result, bail};

/// Decompressed archives larger than this are refused (a catalogue of thousands of
/// packages is a few megabytes).
const MAX_ARCHIVE: u64 = 512 << 20;

/// How an archive is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zstd (`tzst`, pkg's default).
    Zstd,
    /// xz (`txz`).
    Xz,
    /// gzip (`tgz`).
    Gzip,
    /// bzip2 (`tbz`).
    Bzip2,
    /// A plain tar (`tar`).
    None,
}

impl Compression {
    /// Recognises the compression from the first bytes.
    pub fn detect(bytes: &[u8]) -> Option<Compression> {
        if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Some(Compression::Zstd)
        } else if bytes.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Some(Compression::Xz)
        } else if bytes.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if bytes.starts_with(b"BZh") {
            Some(Compression::Bzip2)
        } else if bytes.len() >= 262 && &bytes[257..262] == b"ustar" {
            Some(Compression::None)
        } else {
            None
        }
    }

    /// meta.conf's `packing_format` word for it.
    pub fn packing_format(self) -> &'static str {
        match self {
            Compression::Zstd => "tzst",
            Compression::Xz => "txz",
            Compression::Gzip => "tgz",
            Compression::Bzip2 => "tbz",
            Compression::None => "tar",
        }
    }

    /// The compression a `packing_format` names.
    pub fn from_packing_format(word: &str) -> Option<Compression> {
        [Compression::Zstd, Compression::Xz, Compression::Gzip, Compression::Bzip2, Compression::None]
            .into_iter()
            .find(|c| c.packing_format() == word)
    }

    fn compress(self, tar: &[u8]) -> Result<Vec<u8>> {
        let mut e = self.encoder(Vec::new())?;
        e.write_all(tar)?;
        Ok(e.finish()?)
    }

    /// A writer that compresses into `out` (zstd level 10, xz 6, gzip and bzip2 at
    /// their best).
    pub(crate) fn encoder<W: Write>(self, out: W) -> Result<Encoder<W>> {
        Ok(match self {
            Compression::Zstd => Encoder::Zstd(zstd::Encoder::new(out, 10)?),
            Compression::Xz => Encoder::Xz(liblzma::write::XzEncoder::new(out, 6)),
            Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(out, flate2::Compression::best())),
            Compression::Bzip2 => Encoder::Bzip2(bzip2::write::BzEncoder::new(out, bzip2::Compression::best())),
            Compression::None => Encoder::None(out),
        })
    }
}

/// A compressing writer of any [`Compression`].
pub(crate) enum Encoder<W: Write> {
    Zstd(zstd::Encoder<'static, W>),
    Xz(liblzma::write::XzEncoder<W>),
    Gzip(flate2::write::GzEncoder<W>),
    Bzip2(bzip2::write::BzEncoder<W>),
    None(W),
}

impl<W: Write> Encoder<W> {
    /// Ends the compressed stream; gives back the writer.
    pub(crate) fn finish(self) -> std::io::Result<W> {
        match self {
            Encoder::Zstd(e) => e.finish(),
            Encoder::Xz(e) => e.finish(),
            Encoder::Gzip(e) => e.finish(),
            Encoder::Bzip2(e) => e.finish(),
            Encoder::None(w) => Ok(w),
        }
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Encoder::Zstd(e) => e,
            Encoder::Xz(e) => e,
            Encoder::Gzip(e) => e,
            Encoder::Bzip2(e) => e,
            Encoder::None(w) => w,
        }
    }
}

impl<W: Write> Write for Encoder<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.writer().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer().flush()
    }
}

/// What went wrong below the tar reader, kept aside: the tar reader (and a caller's
/// parser) sees only an I/O error, the report says what it was.
#[derive(Default)]
struct Trouble {
    /// The decompressor failed with this.
    decoder: Option<String>,
    /// More than [`MAX_ARCHIVE`] bytes came out.
    too_big: bool,
}

/// The decompressed bytes, counted against [`MAX_ARCHIVE`], the decompressor's errors
/// noted in `trouble`.
struct Decoded<'a> {
    inner: Box<dyn Read + 'a>,
    read: u64,
    trouble: Rc<RefCell<Trouble>>,
}

impl Read for Decoded<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                self.trouble.borrow_mut().decoder.get_or_insert_with(|| e.to_string());
                return Err(e);
            }
        };
        self.read += n as u64;
        if self.read > MAX_ARCHIVE {
            self.trouble.borrow_mut().too_big = true;
            return Err(std::io::Error::other(format!("it decompresses to more than {MAX_ARCHIVE} bytes")));
        }
        Ok(n)
    }
}

/// A regular-file entry of an archive, as [`read_entries`] meets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHeader {
    /// The name exactly as stored (invalid UTF-8 replaced).
    pub name: String,
    /// Its size in bytes, as the tar header says.
    pub size: u64,
    /// Modification time.
    pub mtime: u64,
}

/// The decompressed stream of `whole`, compressed as `compression` says.
fn decoder<'r>(compression: Compression, whole: impl Read + 'r) -> Result<Box<dyn Read + 'r>> {
    Ok(match compression {
        Compression::Zstd => Box::new(zstd::Decoder::new(whole)?),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new(whole)),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(whole)),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(whole)),
        Compression::None => Box::new(whole),
    })
}

/// Reads the archive `reader` holds in one pass: detects the compression, then calls
/// `each` with every regular-file entry in archive order and a reader of its contents
/// (what `each` leaves unread is skipped). Directories are passed over; any other kind
/// of entry is refused. The decompressed stream is read to its end, so a damaged or
/// oversized archive is refused whatever entry it ends in. An error of `each` is
/// returned as it is, unless the decompressor failed under it (then that is the error).
pub fn read_entries<R: Read>(
    mut reader: R,
    mut each: impl FnMut(&EntryHeader, &mut dyn Read) -> Result<()>,
) -> Result<Compression> {
    let mut head = Vec::with_capacity(262);
    (&mut reader).take(262).read_to_end(&mut head)?;
    let Some(compression) = Compression::detect(&head) else {
        bail!("unknown format (not zstd, xz, gzip, bzip2 or tar)");
    };
    let whole = std::io::Cursor::new(head).chain(reader);
    let inner = decoder(compression, whole)?;
    let trouble = Rc::new(RefCell::new(Trouble::default()));
    let decoded = Decoded { inner, read: 0, trouble: Rc::clone(&trouble) };
    let explain = |e: Error| -> Error {
        let t = trouble.borrow();
        match (&t.decoder, t.too_big) {
            (_, true) => Error::msg(format!("it decompresses to more than {MAX_ARCHIVE} bytes")),
            (Some(cause), _) => Error::caused(format!("cannot decompress it ({compression:?})"), cause.clone()),
            (None, false) => e,
        }
    };
    let mut archive = tar::Archive::new(decoded);
    let walked = (|| -> Result<()> {
        for entry in archive.entries().context("cannot read the tar inside")? {
            let mut entry = entry.context("cannot read the tar inside")?;
            let kind = entry.header().entry_type();
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            if kind.is_dir() {
                continue;
            }
            if !kind.is_file() {
                bail!("entry `{name}` is not a regular file ({kind:?})");
            }
            let header = EntryHeader { name, size: entry.size(), mtime: entry.header().mtime().unwrap_or(0) };
            each(&header, &mut entry)?;
        }
        Ok(())
    })();
    walked.map_err(explain)?;
    // What follows the tar's end inside the compressed stream (padding) is read too.
    std::io::copy(&mut archive.into_inner(), &mut std::io::sink())
        .map_err(|e| explain(Error::caused("cannot read the end of the archive", e)))?;
    Ok(compression)
}

/// An archive file read by [`scan`]: its compression and the SHA-256 of the file as
/// stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scanned {
    /// How it is compressed.
    pub compression: Compression,
    /// SHA-256 hex of the file's bytes.
    pub sha256: String,
}

/// Reads the archive file at `path` in one pass, as [`read_entries`] does, hashing the
/// file's bytes on the way. Errors name the file.
pub fn scan(path: &Utf8Path, each: impl FnMut(&EntryHeader, &mut dyn Read) -> Result<()>) -> Result<Scanned> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {path}"))?;
    let mut hashing = HashingReader::new(file);
    let compression =
        read_entries(&mut hashing, each).with_context(|| format!("{path} is not a readable catalogue archive"))?;
    // Anything after the compressed stream counts in the file's digest.
    std::io::copy(&mut hashing, &mut std::io::sink()).with_context(|| format!("cannot read {path}"))?;
    Ok(Scanned { compression, sha256: hashing.finish() })
}

/// A reader that hashes (SHA-256) what passes through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: sha2::Sha256,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        use sha2::Digest;
        HashingReader { inner, hasher: sha2::Sha256::new() }
    }

    /// The hex SHA-256 of everything read.
    pub(crate) fn finish(self) -> String {
        use sha2::Digest;
        crate::hex(&self.hasher.finalize())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// One file in an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name exactly as stored.
    pub name: String,
    /// The contents.
    pub data: Vec<u8>,
    /// Modification time (kept when an archive is rewritten).
    pub mtime: u64,
}

/// A catalogue archive held whole.
#[derive(Debug, Clone)]
pub struct Archive {
    /// Kept when the archive is written again.
    pub compression: Compression,
    /// Regular-file entries, in archive order.
    pub entries: Vec<Entry>,
}

impl Archive {
    /// Reads an archive file.
    pub fn read(path: &Utf8Path) -> Result<Archive> {
        let file = std::fs::File::open(path).with_context(|| format!("cannot read {path}"))?;
        Archive::from_reader(std::io::BufReader::new(file))
            .with_context(|| format!("{path} is not a readable catalogue archive"))
    }

    /// Parses archive bytes.
    pub fn parse(bytes: &[u8]) -> Result<Archive> {
        Archive::from_reader(bytes)
    }

    fn from_reader(reader: impl Read) -> Result<Archive> {
        let mut entries = Vec::new();
        let compression = read_entries(reader, |header, data| {
            let mut bytes = Vec::new();
            data.read_to_end(&mut bytes).with_context(|| format!("cannot read entry `{}`", header.name))?;
            entries.push(Entry { name: header.name.clone(), data: bytes, mtime: header.mtime });
            Ok(())
        })?;
        Ok(Archive { compression, entries })
    }

    /// The entries named `name`.
    pub fn find(&self, name: &str) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(move |e| e.name == name)
    }

    /// The archive as bytes: a tar (entries mode 0644, root:wheel), compressed.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        for e in &self.entries {
            builder.append(&entry_header(&e.name, e.data.len() as u64, e.mtime)?, &e.data[..])?;
        }
        let tar = builder.into_inner()?;
        self.compression.compress(&tar)
    }

    /// Writes the archive to `path` atomically (a new file beside it, renamed over it).
    pub fn write(&self, path: &Utf8Path) -> Result<()> {
        let bytes = self.to_bytes().with_context(|| format!("cannot build {path}"))?;
        crate::fsx::write_atomic(path, &bytes)
    }
}

/// The tar header of an entry as this crate writes them: mode 0644, root:wheel.
pub(crate) fn entry_header(name: &str, size: u64, mtime: u64) -> Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(name).with_context(|| format!("cannot store entry `{name}`"))?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_username("root")?;
    h.set_groupname("wheel")?;
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

/// One member of a package (or any archive), as `tar -tv` would list it: what the
/// reproducibility check compares between two builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The name exactly as stored (`/usr/local/bin/colibri`, `+MANIFEST`).
    pub name: String,
    /// `file`, `dir`, `symlink`, `hardlink` or `other`.
    pub kind: &'static str,
    /// Size of the contents (files).
    pub size: u64,
    /// SHA-256 of the contents (files), hex; the link target for links.
    pub digest: String,
    /// Permission bits.
    pub mode: u32,
    /// Owner and group names.
    pub owner: String,
    /// Modification time.
    pub mtime: u64,
}

/// Lists every member of a package file's archive, contents hashed (bounded as
/// [`Archive::parse`] is).
pub fn list_members(bytes: &[u8]) -> Result<Vec<Member>> {
    use sha2::Digest;
    let Some(compression) = Compression::detect(bytes) else {
        bail!("unknown format (not zstd, xz, gzip, bzip2 or tar)");
    };
    let mut tar = Vec::new();
    decoder(compression, bytes)?
        .take(MAX_ARCHIVE + 1)
        .read_to_end(&mut tar)
        .with_context(|| format!("cannot decompress it ({compression:?})"))?;
    if tar.len() as u64 > MAX_ARCHIVE {
        bail!("it decompresses to more than {MAX_ARCHIVE} bytes");
    }
    let mut archive = tar::Archive::new(&tar[..]);
    let mut out = Vec::new();
    for entry in archive.entries().context("cannot read the tar inside")? {
        let mut entry = entry.context("cannot read the tar inside")?;
        let header = entry.header().clone();
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let t = header.entry_type();
        let kind = if t.is_file() {
            "file"
        } else if t.is_dir() {
            "dir"
        } else if t.is_symlink() {
            "symlink"
        } else if t.is_hard_link() {
            "hardlink"
        } else {
            "other"
        };
        let digest = if t.is_file() {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).with_context(|| format!("cannot read entry `{name}`"))?;
            sha2::Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect()
        } else {
            entry.link_name_bytes().map(|l| String::from_utf8_lossy(l.as_ref()).into_owned()).unwrap_or_default()
        };
        let owner = format!(
            "{}:{}",
            header.username().ok().flatten().unwrap_or(""),
            header.groupname().ok().flatten().unwrap_or("")
        );
        out.push(Member {
            name,
            kind,
            size: header.size().unwrap_or(0),
            digest,
            mode: header.mode().unwrap_or(0) & 0o7777,
            owner,
            mtime: header.mtime().unwrap_or(0),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_lists_every_member_with_its_digest() {
        let pkg = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../xtask/tests/data/pkg-repo/production-pubkey/All/colibri-0.9.0.pkg"
        ))
        .unwrap();
        let members = list_members(&pkg).unwrap();
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names[..2], ["+COMPACT_MANIFEST", "+MANIFEST"]);
        let daemon = members.iter().find(|m| m.name == "/usr/local/bin/colibri-daemon").unwrap();
        assert_eq!((daemon.kind, daemon.size, daemon.mode), ("file", 190, 0o555));
        assert_eq!(daemon.owner, "root:wheel");
        assert_eq!(daemon.digest.len(), 64);
        assert!(list_members(b"not an archive").is_err());
    }

    #[test]
    fn every_compression_round_trips() {
        for c in [Compression::Zstd, Compression::Xz, Compression::Gzip, Compression::Bzip2, Compression::None] {
            let a = Archive {
                compression: c,
                entries: vec![
                    Entry { name: "signature".into(), data: vec![1, 2, 0], mtime: 5 },
                    Entry { name: "data".into(), data: b"{}".to_vec(), mtime: 6 },
                ],
            };
            let back = Archive::parse(&a.to_bytes().unwrap()).unwrap();
            assert_eq!(back.compression, c);
            assert_eq!(back.entries, a.entries);
            assert_eq!(Compression::from_packing_format(c.packing_format()), Some(c));
        }
        assert!(Archive::parse(b"hello").is_err());
    }
}
