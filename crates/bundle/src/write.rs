//! Writing a bundle in one pass over its files (see the crate's documentation).

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};

use camino::{Utf8Path, Utf8PathBuf};

use crate::pipe::{CHUNK, HashPipe};
use crate::{Error, FORMAT, FileEntry, MANIFEST, Manifest, Result, VERSION, check_path};

const BLOCK: u64 = 512;

/// Writes the bundle `out` (through a temporary file beside it, renamed at the end):
/// `meta`, then each file, `(path in the bundle, file on disk)`. Returns the manifest
/// written. A file whose size changes while it is read is an error.
pub fn write(out: &Utf8Path, meta: &serde_json::Value, files: &[(String, Utf8PathBuf)]) -> Result<Manifest> {
    let mut manifest = Manifest {
        format: FORMAT.into(),
        version: VERSION,
        meta: meta.clone(),
        files: Vec::with_capacity(files.len()),
    };
    let mut seen = std::collections::BTreeSet::new();
    for (path, source) in files {
        check_path(path)?;
        if !seen.insert(path.as_str()) {
            return Err(Error::refused(format!("the path {path:?} is given twice")));
        }
        let size = fs::metadata(source).map_err(Error::io(format!("cannot stat {source}")))?.len();
        // A placeholder of the digest's length: the real manifest has the same length.
        manifest.files.push(FileEntry { path: path.clone(), size, sha256: "0".repeat(64) });
    }
    let placeholder =
        serde_json::to_vec(&manifest).map_err(|e| Error::refused(format!("cannot encode the manifest: {e}")))?;

    let temp = temp_beside(out);
    let result = write_to(&temp, &mut manifest, &placeholder, files);
    match result.and_then(|()| fs::rename(&temp, out).map_err(Error::io(format!("cannot rename {temp} to {out}")))) {
        Ok(()) => Ok(manifest),
        Err(e) => {
            let _ = fs::remove_file(&temp);
            Err(e)
        }
    }
}

fn write_to(
    temp: &Utf8Path,
    manifest: &mut Manifest,
    placeholder: &[u8],
    files: &[(String, Utf8PathBuf)],
) -> Result<()> {
    // Unbuffered: the chunks are large, and a buffer would only copy them once more.
    let mut out = File::create(temp).map_err(Error::io(format!("cannot create {temp}")))?;
    let io = || Error::io(format!("cannot write {temp}"));
    out.write_all(header(MANIFEST, placeholder.len() as u64)?.as_bytes()).map_err(io())?;
    out.write_all(placeholder).map_err(io())?;
    pad(&mut out, placeholder.len() as u64).map_err(io())?;
    crate::pipe::with_hasher(|pipe| write_files(&mut out, temp, &mut manifest.files, files, pipe))?;
    out.write_all(&[0u8; 2 * BLOCK as usize]).map_err(io())?;
    let mut file = out;
    let real =
        serde_json::to_vec(&*manifest).map_err(|e| Error::refused(format!("cannot encode the manifest: {e}")))?;
    assert_eq!(real.len(), placeholder.len(), "a digest changed the manifest's length");
    file.seek(SeekFrom::Start(BLOCK)).map_err(io())?;
    file.write_all(&real).map_err(io())?;
    Ok(())
}

/// Writes each file's header and bytes, filling in its digest.
fn write_files(
    out: &mut impl Write,
    temp: &Utf8Path,
    entries: &mut [FileEntry],
    files: &[(String, Utf8PathBuf)],
    pipe: &mut HashPipe,
) -> Result<()> {
    let io = || Error::io(format!("cannot write {temp}"));
    for (entry, (_, source)) in entries.iter_mut().zip(files) {
        out.write_all(header(&entry.path, entry.size)?.as_bytes()).map_err(io())?;
        let mut src = File::open(source).map_err(Error::io(format!("cannot open {source}")))?;
        let mut left = entry.size;
        while left > 0 {
            let mut buf = pipe.buffer();
            let want = CHUNK.min(usize::try_from(left).unwrap_or(usize::MAX));
            let n = src.read(&mut buf[..want]).map_err(Error::io(format!("cannot read {source}")))?;
            if n == 0 {
                return Err(Error::refused(format!("{source} became shorter while it was bundled")));
            }
            out.write_all(&buf[..n]).map_err(io())?;
            pipe.hash(buf, n);
            left -= n as u64;
        }
        if src.read(&mut [0u8; 1]).map_err(Error::io(format!("cannot read {source}")))? != 0 {
            return Err(Error::refused(format!("{source} grew while it was bundled")));
        }
        entry.sha256 = pipe.finish();
        pad(out, entry.size).map_err(io())?;
    }
    Ok(())
}

/// A ustar header for a regular file: mode 0644, owner 0, time 0.
fn header(path: &str, size: u64) -> Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path).map_err(|e| Error::refused(format!("the path {path:?} does not fit a tar header: {e}")))?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

fn pad(out: &mut impl Write, size: u64) -> std::io::Result<()> {
    let rem = size % BLOCK;
    if rem != 0 {
        out.write_all(&[0u8; BLOCK as usize][..(BLOCK - rem) as usize])?;
    }
    Ok(())
}

fn temp_beside(path: &Utf8Path) -> Utf8PathBuf {
    let name = path.file_name().unwrap_or("bundle");
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}
