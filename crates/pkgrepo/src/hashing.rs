//! Checking package files against their catalogue entries, in parallel: the cheap
//! checks first (present, inside the repository, a regular file of the listed size),
//! then the hashing, largest files first, several BLAKE2b states per SIMD pass.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use camino::Utf8Path;

use crate::base32;
use crate::error::{Error, Result};
#[cfg(test)]
use crate::sum::hash_file;
use crate::sum::{Digests, Sum, Want, hash_open};
use crate::verify::Options;

/// One package file to check.
pub(crate) struct Job<'a> {
    /// Relative to the repository.
    pub(crate) path: &'a str,
    pub(crate) size: u64,
    pub(crate) sum: Sum,
}

/// Hashes the files in parallel. Each result is the digests, or what was wrong.
///
/// Threads take the files, largest first, a few at a time: files that need only
/// BLAKE2b are hashed together with `blake2b_simd::many` (4 states per SIMD pass with
/// AVX2), which is how one core outruns `b2sum`.
pub(crate) fn hash_jobs(dir: &Utf8Path, jobs: &[Job], opts: &Options) -> Result<Vec<Result<Digests, String>>> {
    let root = dir.canonicalize_utf8().unwrap_or_else(|_| dir.to_owned());
    // Files are opened relative to the repository: one path walk of a few names each.
    let root_dir = std::fs::File::open(&root).ok();
    let root = Root { path: &root, dir: root_dir.as_ref() };
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(jobs[i].size));
    let results: Vec<Mutex<Option<Result<Digests, String>>>> = jobs.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let threads = opts.threads.clamp(1, jobs.len().max(1));
    // Small batches keep the threads evenly loaded to the end.
    let batch = blake2b_simd::many::degree().clamp(1, (jobs.len() / threads).max(1));
    let stop: Mutex<Option<Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                // Each thread reads into its own buffers, allocated once.
                let mut bufs: Vec<Vec<u8>> = Vec::new();
                let mut buf: Vec<u8> = Vec::new();
                loop {
                    let first = next.fetch_add(batch, Ordering::Relaxed);
                    if first >= order.len() {
                        break;
                    }
                    if let Err(e) = (opts.stop)() {
                        *stop.lock().unwrap_or_else(|p| p.into_inner()) = Some(Error::stopped(e));
                        break;
                    }
                    let indexes = &order[first..(first + batch).min(order.len())];
                    let mut together = Vec::new();
                    for &index in indexes {
                        match precheck(root, &jobs[index], opts) {
                            Pre::Hash(file, Want { blake2b: true, sha256: false }) => {
                                together.push((index, (file, jobs[index].size)));
                            }
                            Pre::Hash(file, want) => {
                                if buf.is_empty() {
                                    buf = vec![0u8; CHUNK];
                                }
                                let outcome = hash_open(file, want, &mut buf, opts.progress)
                                    .map_err(|e| format!("cannot read it: {e}"))
                                    .and_then(|d| finish(&jobs[index], d));
                                *results[index].lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
                            }
                            Pre::Done(outcome) => {
                                *results[index].lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
                            }
                        }
                    }
                    let (indexes, files): (Vec<usize>, Vec<(std::fs::File, u64)>) = together.into_iter().unzip();
                    for (index, outcome) in indexes.into_iter().zip(blake2b_many(files, &mut bufs, opts.progress)) {
                        let outcome = outcome.and_then(|d| finish(&jobs[index], d));
                        *results[index].lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
                    }
                }
            });
        }
    });
    if let Some(e) = stop.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(results
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()).unwrap_or_else(|| Err("was not checked".into())))
        .collect())
}

/// What is left to do for a file after the cheap checks.
enum Pre {
    /// Decided without hashing (a problem, or digests known from an earlier check).
    Done(Result<Digests, String>),
    /// Hash this file, open, for these digests.
    Hash(std::fs::File, Want),
}

/// The repository the files are in: its canonical path, and the directory open.
#[derive(Clone, Copy)]
struct Root<'a> {
    path: &'a Utf8Path,
    dir: Option<&'a std::fs::File>,
}

impl Root<'_> {
    /// Opens `rel` for reading with `flags` (and close-on-exec), relative to the open
    /// directory when there is one.
    fn open(&self, rel: &str, flags: i32) -> std::io::Result<std::fs::File> {
        use std::os::fd::{AsRawFd, FromRawFd};
        use std::os::unix::fs::OpenOptionsExt;
        let Some(dir) = self.dir else {
            return std::fs::OpenOptions::new().read(true).custom_flags(flags).open(self.path.join(rel));
        };
        let name = std::ffi::CString::new(rel).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        // SAFETY: openat with an open directory descriptor and a NUL-terminated name;
        // the descriptor it returns is owned by the File made from it, and by nothing else.
        let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC | flags) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a new descriptor this call owns.
        Ok(unsafe { std::fs::File::from_raw_fd(fd) })
    }
}

/// The checks that need no hashing: present, inside the repository, a regular file of
/// the catalogue's size. A regular file whose digests the caller knows from its
/// identity ([`Options::known`]) is only looked at (one `lstat`): publishing a release
/// in which one package of a ports tree changed checks tens of thousands of those. Any
/// other file is opened once, here: without following a symlink (one the repository
/// holds is checked, then opened through its target) and without blocking (a FIFO in a
/// package's place is refused, not waited on).
fn precheck(root: Root, job: &Job, opts: &Options) -> Pre {
    let want = job.sum.needs().or(Want { blake2b: false, sha256: opts.sha256 });
    if let Some(k) = opts.known
        && let Ok(meta) = std::fs::symlink_metadata(root.path.join(job.path))
        && meta.is_file()
        && meta.len() == job.size
        && let Some(d) = k(job.path, &meta).filter(|d| {
            d.size == job.size && (!want.blake2b || d.blake2b.is_some()) && (!want.sha256 || d.sha256.is_some())
        })
    {
        (opts.progress)(job.size);
        return Pre::Done(finish(job, d));
    }
    let open = |flags: i32| root.open(job.path, flags);
    let file = match open(libc::O_NOFOLLOW | libc::O_NONBLOCK) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Pre::Done(Err("is listed in the catalogue but missing".into()));
        }
        // O_NOFOLLOW on a symlink: ELOOP.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            match root.path.join(job.path).canonicalize_utf8() {
                Ok(real) if real.starts_with(root.path) => {}
                Ok(real) => return Pre::Done(Err(format!("is a symlink to {real}, outside the repository"))),
                Err(_) => return Pre::Done(Err("is a dangling symlink".into())),
            }
            match open(libc::O_NONBLOCK) {
                Ok(f) => f,
                Err(e) => return Pre::Done(Err(format!("cannot be read: {e}"))),
            }
        }
        Err(e) => return Pre::Done(Err(format!("cannot be read: {e}"))),
    };
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => return Pre::Done(Err(format!("cannot be read: {e}"))),
    };
    if !meta.is_file() {
        return Pre::Done(Err("is not a regular file".into()));
    }
    if meta.len() != job.size {
        return Pre::Done(Err(format!("is {} bytes but the catalogue says {} (pkgsize)", meta.len(), job.size)));
    }
    let known = opts.known.and_then(|k| k(job.path, &meta)).filter(|d| {
        d.size == job.size && (!want.blake2b || d.blake2b.is_some()) && (!want.sha256 || d.sha256.is_some())
    });
    match known {
        Some(d) => {
            (opts.progress)(job.size);
            Pre::Done(finish(job, d))
        }
        None => Pre::Hash(file, want),
    }
}

/// The verdict once the digests are known.
fn finish(job: &Job, digests: Digests) -> Result<Digests, String> {
    if digests.size != job.size {
        return Err(format!("changed while it was read ({} bytes, the catalogue says {})", digests.size, job.size));
    }
    if !job.sum.matches(&digests) {
        return Err(format!(
            "does not match the catalogue's sum {} (same size, different bytes: the file was changed or swapped)",
            job.sum
        ));
    }
    Ok(digests)
}

/// How much of each file one read takes.
const CHUNK: usize = 1 << 18;

/// BLAKE2b-512 of several open files at once, a chunk of each per SIMD pass, read into
/// `bufs` (grown to one chunk per file as needed). Each file comes with the size it
/// should have: asked for one byte more than that and given exactly that, a regular
/// file has ended (it reads short only at its end), so a small file takes one read,
/// not two; a file that holds more is read to its end and its digests say its size.
fn blake2b_many(
    files: Vec<(std::fs::File, u64)>,
    bufs: &mut Vec<Vec<u8>>,
    progress: &(dyn Fn(u64) + Sync),
) -> Vec<Result<Digests, String>> {
    use std::io::Read;
    let count = files.len();
    let expected: Vec<u64> = files.iter().map(|(_, size)| *size).collect();
    let mut files: Vec<Option<std::fs::File>> = files.into_iter().map(|(f, _)| Some(f)).collect();
    let mut out: Vec<Option<Result<Digests, String>>> = (0..count).map(|_| None).collect();
    let mut states: Vec<blake2b_simd::State> =
        (0..count).map(|_| blake2b_simd::Params::new().hash_length(64).to_state()).collect();
    let mut sizes = vec![0u64; count];
    while bufs.len() < count {
        bufs.push(vec![0u8; CHUNK]);
    }
    let mut lens = vec![0usize; count];
    loop {
        let mut any = false;
        for i in 0..count {
            lens[i] = 0;
            let Some(f) = files[i].as_mut() else { continue };
            // Fill the chunk (a short read is not the end of the file; a read of
            // nothing is, and the file is not read again).
            let mut end = false;
            // Up to one byte past the expected end; past it (a file that grew), whole chunks.
            let want = match expected[i].checked_sub(sizes[i]) {
                Some(left) => usize::try_from(left.saturating_add(1)).map_or(CHUNK, |l| l.min(CHUNK)),
                None => CHUNK,
            };
            while lens[i] < want {
                match f.read(&mut bufs[i][lens[i]..want]) {
                    Ok(0) => {
                        end = true;
                        break;
                    }
                    Ok(n) => {
                        lens[i] += n;
                        if lens[i] < want && sizes[i] + lens[i] as u64 == expected[i] {
                            end = true;
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        out[i] = Some(Err(format!("cannot read it: {e}")));
                        end = true;
                        lens[i] = 0;
                        break;
                    }
                }
            }
            if end {
                files[i] = None;
            }
            if lens[i] > 0 {
                any = true;
                sizes[i] += lens[i] as u64;
            }
        }
        if !any {
            break;
        }
        blake2b_simd::many::update_many(
            states
                .iter_mut()
                .zip(bufs.iter().zip(&lens))
                .filter(|(_, (_, n))| **n > 0)
                .map(|(s, (b, n))| (s, &b[..*n])),
        );
        progress(lens.iter().sum::<usize>() as u64);
    }
    states
        .iter()
        .zip(out)
        .zip(sizes)
        .map(|((state, outcome), size)| {
            outcome.unwrap_or_else(|| {
                Ok(Digests { size, blake2b: Some(base32::encode(state.finalize().as_bytes())), sha256: None })
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use camino::Utf8PathBuf;

    #[test]
    fn hashing_many_files_at_once_equals_hashing_each() {
        let dir = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(dir.path()).unwrap();
        let sizes = [0usize, 1, 127, 128, 129, 300_000, 1 << 18, (1 << 18) + 5, 700_001];
        let paths: Vec<Utf8PathBuf> = sizes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let p = dir.join(format!("f{i}"));
                std::fs::write(&p, (0..*n).map(|b| (b * 7 + i) as u8).collect::<Vec<u8>>()).unwrap();
                p
            })
            .collect();
        let open = |p: &Utf8PathBuf| std::fs::File::open(p).unwrap();
        let files = paths.iter().zip(sizes).map(|(p, n)| (open(p), n as u64)).collect();
        let together = blake2b_many(files, &mut Vec::new(), &|_| {});
        for (p, got) in paths.iter().zip(together) {
            let want = hash_file(p, Want { blake2b: true, sha256: false }, &|_| {}).unwrap();
            assert_eq!(got.unwrap(), want, "{p}");
        }
        // Files longer or shorter than they should be are read whole all the same.
        let files = paths.iter().zip(sizes).map(|(p, n)| (open(p), (n as u64).abs_diff(3))).collect();
        for (p, got) in paths.iter().zip(blake2b_many(files, &mut Vec::new(), &|_| {})) {
            let want = hash_file(p, Want { blake2b: true, sha256: false }, &|_| {}).unwrap();
            assert_eq!(got.unwrap(), want, "{p}");
        }
        // A directory opens but cannot be read.
        let unreadable = blake2b_many(vec![(std::fs::File::open(dir).unwrap(), 0)], &mut Vec::new(), &|_| {});
        assert!(unreadable[0].as_ref().unwrap_err().contains("cannot read it"));
    }

    #[test]
    fn a_fifo_or_a_directory_in_a_packages_place_is_refused_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(dir.path()).unwrap();
        let fifo = std::ffi::CString::new(dir.join("fifo.pkg").as_str()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        std::fs::create_dir(dir.join("dir.pkg")).unwrap();
        let sum = Sum::parse(&format!("2${}", "y".repeat(103))).unwrap();
        let jobs: Vec<Job> =
            ["fifo.pkg", "dir.pkg"].into_iter().map(|path| Job { path, size: 0, sum: sum.clone() }).collect();
        let key = Utf8Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pkg-repo/keys/test-repo.pub");
        let trust = crate::trust::Trust::pubkey(&key).unwrap();
        let opts = Options::new(&trust, "FreeBSD:15:amd64");
        for outcome in hash_jobs(dir, &jobs, &opts).unwrap() {
            assert_eq!(outcome.unwrap_err(), "is not a regular file");
        }
    }
}
