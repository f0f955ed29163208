//! Catalogue archives: a tar, compressed per meta.conf's `packing_format` (zstd by
//! default; also xz, gzip, bzip2, or none), always named `*.pkg`. Clients detect the
//! compression by magic, and so does this module. Archives are small (the catalogue
//! only), so they are read and written whole.

use std::io::{Read, Write};

use camino::Utf8Path;

use crate::error::{Context, Result, bail};

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

    fn decompress(self, bytes: &[u8]) -> Result<Vec<u8>> {
        let reader: Box<dyn Read + '_> = match self {
            Compression::Zstd => Box::new(zstd::Decoder::new(bytes)?),
            Compression::Xz => Box::new(liblzma::read::XzDecoder::new(bytes)),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(bytes)),
            Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(bytes)),
            Compression::None => return Ok(bytes.to_vec()),
        };
        let mut out = Vec::new();
        reader.take(MAX_ARCHIVE + 1).read_to_end(&mut out)?;
        if out.len() as u64 > MAX_ARCHIVE {
            bail!("it decompresses to more than {MAX_ARCHIVE} bytes");
        }
        Ok(out)
    }

    fn compress(self, tar: &[u8]) -> Result<Vec<u8>> {
        Ok(match self {
            Compression::Zstd => zstd::encode_all(tar, 10)?,
            Compression::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
                e.write_all(tar)?;
                e.finish()?
            }
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                e.write_all(tar)?;
                e.finish()?
            }
            Compression::Bzip2 => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
                e.write_all(tar)?;
                e.finish()?
            }
            Compression::None => tar.to_vec(),
        })
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

/// A catalogue archive read whole.
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
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {path}"))?;
        Archive::parse(&bytes).with_context(|| format!("{path} is not a readable catalogue archive"))
    }

    /// Parses archive bytes.
    pub fn parse(bytes: &[u8]) -> Result<Archive> {
        let Some(compression) = Compression::detect(bytes) else {
            bail!("unknown format (not zstd, xz, gzip, bzip2 or tar)");
        };
        let tar = compression.decompress(bytes).with_context(|| format!("cannot decompress it ({compression:?})"))?;
        let mut archive = tar::Archive::new(&tar[..]);
        let mut entries = Vec::new();
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
            let mtime = entry.header().mtime().unwrap_or(0);
            let mut data = Vec::new();
            entry.read_to_end(&mut data).with_context(|| format!("cannot read entry `{name}`"))?;
            entries.push(Entry { name, data, mtime });
        }
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
            let mut h = tar::Header::new_ustar();
            h.set_path(&e.name).with_context(|| format!("cannot store entry `{}`", e.name))?;
            h.set_size(e.data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_username("root")?;
            h.set_groupname("wheel")?;
            h.set_mtime(e.mtime);
            h.set_entry_type(tar::EntryType::Regular);
            h.set_cksum();
            builder.append(&h, &e.data[..])?;
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
    let tar = compression.decompress(bytes).with_context(|| format!("cannot decompress it ({compression:?})"))?;
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
            entry.link_name_bytes().map(|l| String::from_utf8_lossy(&l).into_owned()).unwrap_or_default()
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
