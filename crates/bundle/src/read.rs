//! Reading a bundle: streamed, bounded, every entry checked (see the crate's
//! documentation).

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};

use camino::Utf8Path;

use crate::pipe::{self, CHUNK, HashPipe};
use crate::{Error, FORMAT, MANIFEST, Manifest, Result, VERSION, check_path};

const BLOCK: usize = 512;
/// The most zeros accepted after the end-of-archive blocks (tar pads to its record
/// size, 10 KiB for GNU tar; anything more is not ours).
const MAX_TRAILING_ZEROS: u64 = 1 << 20;

/// How much of a bundle [`read`] accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The largest manifest.
    pub manifest_bytes: u64,
    /// The most files.
    pub files: usize,
    /// The most bytes of files in all.
    pub total_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { manifest_bytes: 16 << 20, files: 100_000, total_bytes: 1 << 40 }
    }
}

/// Reads a bundle from `input` into `dest` (an existing, empty directory: each file
/// goes to `dest/PATH`), checking everything (see the crate's documentation). `accept`
/// sees the manifest before any file is written and may refuse it
/// ([`Error::Rejected`]). On an error, `dest` may hold some of the files: stage into a
/// directory that is discarded then.
pub fn read<R, F>(input: R, dest: &Utf8Path, limits: &Limits, accept: F) -> Result<Manifest>
where
    R: Read,
    F: FnOnce(&Manifest) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>,
{
    let mut input = input;
    let Some((name, size)) = next_header(&mut input)? else {
        return Err(Error::refused("the bundle is an empty archive: it has no manifest"));
    };
    if name != MANIFEST.as_bytes() {
        return Err(Error::refused(format!(
            "the bundle's first entry is {:?}, not its manifest {MANIFEST}",
            String::from_utf8_lossy(&name)
        )));
    }
    if size > limits.manifest_bytes {
        return Err(Error::refused(format!(
            "the bundle's manifest is {size} bytes, more than the {} a manifest may have",
            limits.manifest_bytes
        )));
    }
    let mut text = vec![0u8; size as usize];
    read_exact(&mut input, &mut text, MANIFEST)?;
    skip_padding(&mut input, size)?;
    let manifest: Manifest = serde_json::from_slice(&text)
        .map_err(|e| Error::refused(format!("the bundle's manifest {MANIFEST} is not a bundle manifest: {e}")))?;
    check_manifest(&manifest, limits)?;
    accept(&manifest).map_err(Error::Rejected)?;

    crate::pipe::with_hasher(|pipe| read_files(&mut input, dest, &manifest, pipe))?;
    if let Some((name, _)) = next_header(&mut input)? {
        return Err(Error::refused(format!(
            "the bundle holds {:?} after the last file its manifest lists",
            String::from_utf8_lossy(&name)
        )));
    }
    check_trailer(&mut input)?;
    Ok(manifest)
}

/// Reads each file of the manifest into `dest`, checking it.
fn read_files(input: &mut impl Read, dest: &Utf8Path, manifest: &Manifest, pipe: &mut HashPipe) -> Result<()> {
    for entry in &manifest.files {
        let Some((name, size)) = next_header(input)? else {
            return Err(Error::refused(format!("the bundle ends before {}, which its manifest lists", entry.path)));
        };
        if name != entry.path.as_bytes() {
            return Err(Error::refused(format!(
                "the bundle holds {:?} where its manifest lists {} next (an extra, duplicated or missing file)",
                String::from_utf8_lossy(&name),
                entry.path
            )));
        }
        if size != entry.size {
            return Err(Error::refused(format!(
                "{} is {size} bytes in the bundle, but its manifest says {}",
                entry.path, entry.size
            )));
        }
        let path = dest.join(&entry.path);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(Error::io(format!("cannot create {dir}")))?;
        }
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(Error::io(format!("cannot create {path}")))?;
        let mut left = size;
        while left > 0 {
            let mut buf = pipe.buffer();
            let want = CHUNK.min(usize::try_from(left).unwrap_or(usize::MAX));
            read_exact(input, &mut buf[..want], &entry.path)?;
            out.write_all(&buf[..want]).map_err(Error::io(format!("cannot write {path}")))?;
            pipe.hash(buf, want);
            left -= want as u64;
        }
        start_writeback(&out);
        drop(out);
        skip_padding(input, size)?;
        let sha256 = pipe.finish();
        if sha256 != entry.sha256 {
            return Err(Error::refused(format!(
                "{} does not match the bundle's manifest: its SHA-256 is {sha256}, the manifest says {}",
                entry.path, entry.sha256
            )));
        }
    }
    Ok(())
}

/// Starts writing a file's pages to disk without waiting (Linux), so the caller's
/// fsync before it relies on the files finds most of the work done.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid, open descriptor; the call only schedules writeback.
    unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File) {}

/// The manifest's own checks: format, version, counts, paths.
fn check_manifest(m: &Manifest, limits: &Limits) -> Result<()> {
    if m.format != FORMAT {
        return Err(Error::refused(format!("the manifest's format is {:?}, not {FORMAT:?}", m.format)));
    }
    if m.version != VERSION {
        return Err(Error::refused(format!(
            "the bundle has format version {}; this mother-build reads version {VERSION}",
            m.version
        )));
    }
    if m.files.len() > limits.files {
        return Err(Error::refused(format!(
            "the manifest lists {} files, more than the {} a bundle may hold",
            m.files.len(),
            limits.files
        )));
    }
    let mut total: u64 = 0;
    let mut paths = BTreeSet::new();
    for f in &m.files {
        check_path(&f.path)?;
        if !paths.insert(f.path.as_str()) {
            return Err(Error::refused(format!("the manifest lists {} twice", f.path)));
        }
        if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(Error::refused(format!("the manifest's SHA-256 of {} is not 64 lowercase hex digits", f.path)));
        }
        total = total.checked_add(f.size).filter(|t| *t <= limits.total_bytes).ok_or_else(|| {
            Error::refused(format!("the manifest's files add up to more than {} bytes", limits.total_bytes))
        })?;
    }
    // A path cannot be a file and, for another path, a directory.
    for f in &m.files {
        let mut at = f.path.as_str();
        while let Some((dir, _)) = at.rsplit_once('/') {
            if paths.contains(dir) {
                return Err(Error::refused(format!(
                    "the manifest lists {dir} as a file and as the directory of {}",
                    f.path
                )));
            }
            at = dir;
        }
    }
    Ok(())
}

/// The next entry's name and size; `None` at the end of the archive (a zero block).
/// Anything but a regular file in a ustar header with a correct checksum is refused.
fn next_header(input: &mut impl Read) -> Result<Option<(Vec<u8>, u64)>> {
    let mut block = [0u8; BLOCK];
    read_exact(input, &mut block, "the next entry's header")?;
    if block.iter().all(|b| *b == 0) {
        return Ok(None);
    }
    let header = tar::Header::from_byte_slice(&block);
    let stored = header.cksum().map_err(|_| Error::refused("an entry's header has no readable checksum"))?;
    let computed: u32 =
        block.iter().enumerate().map(|(i, b)| if (148..156).contains(&i) { 32 } else { u32::from(*b) }).sum();
    if stored != computed {
        return Err(Error::refused("an entry's header is damaged (its checksum does not match)"));
    }
    let name = header.path_bytes().into_owned();
    if header.as_ustar().is_none() {
        return Err(Error::refused(format!("the entry {:?} is not in ustar format", String::from_utf8_lossy(&name))));
    }
    let kind = header.entry_type();
    if kind != tar::EntryType::Regular {
        return Err(Error::refused(format!(
            "the entry {:?} is a {}, not a regular file: a bundle holds regular files only",
            String::from_utf8_lossy(&name),
            describe(kind)
        )));
    }
    let size = header.size().map_err(|_| Error::refused("an entry's header has no readable size"))?;
    Ok(Some((name, size)))
}

fn describe(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Symlink => "symbolic link",
        tar::EntryType::Link => "hard link",
        tar::EntryType::Directory => "directory",
        tar::EntryType::Char | tar::EntryType::Block => "device",
        tar::EntryType::Fifo => "FIFO",
        tar::EntryType::XHeader | tar::EntryType::XGlobalHeader => "pax extension header",
        tar::EntryType::GNULongName | tar::EntryType::GNULongLink => "GNU long name",
        _ => "special entry",
    }
}

fn read_exact(input: &mut impl Read, buf: &mut [u8], what: &str) -> Result<()> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            Error::refused(format!("the bundle ends in the middle of {what}: it is cut short"))
        }
        _ => Error::Io { what: format!("cannot read the bundle ({what})"), source: e },
    })
}

fn skip_padding(input: &mut impl Read, size: u64) -> Result<()> {
    let rem = (size % BLOCK as u64) as usize;
    if rem != 0 {
        let mut pad = [0u8; BLOCK];
        read_exact(input, &mut pad[..BLOCK - rem], "an entry's padding")?;
    }
    Ok(())
}

/// After the first zero block: zeros only, up to [`MAX_TRAILING_ZEROS`], then the end.
fn check_trailer(input: &mut impl Read) -> Result<()> {
    let mut rest = input.take(MAX_TRAILING_ZEROS + 1);
    let mut buf = [0u8; 8192];
    let mut seen: u64 = 0;
    loop {
        let n = rest.read(&mut buf).map_err(Error::io("cannot read the end of the bundle"))?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            return Err(Error::refused("the bundle has data after the end of its archive"));
        }
        seen += n as u64;
    }
    if seen > MAX_TRAILING_ZEROS {
        return Err(Error::refused("the bundle has more than 1 MiB of zeros after the end of its archive"));
    }
    Ok(())
}

/// Opens a bundle file for [`read`].
pub fn open(path: &Utf8Path) -> Result<std::io::BufReader<File>> {
    let file = File::open(path).map_err(Error::io(format!("cannot open the bundle {path}")))?;
    Ok(std::io::BufReader::with_capacity(pipe::CHUNK, file))
}
