//! Checking package files against their catalogue entries, in parallel: the cheap
//! checks first (present, inside the repository, a regular file of the listed size),
//! then the hashing, largest files first, several BLAKE2b states per SIMD pass.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use camino::{Utf8Path, Utf8PathBuf};

use crate::base32;
use crate::error::{Error, Result};
use crate::sum::{Digests, Sum, Want, hash_file};
use crate::verify::Options;

/// One package file to check.
pub(crate) struct Job {
    /// Relative to the repository.
    pub(crate) path: String,
    pub(crate) size: u64,
    pub(crate) sum: Sum,
    /// The sum as the catalogue wrote it.
    pub(crate) sum_text: String,
}

/// Hashes the files in parallel. Each result is the digests, or what was wrong.
///
/// Threads take the files, largest first, a few at a time: files that need only
/// BLAKE2b are hashed together with `blake2b_simd::many` (4 states per SIMD pass with
/// AVX2), which is how one core outruns `b2sum`.
pub(crate) fn hash_jobs(dir: &Utf8Path, jobs: Vec<&Job>, opts: &Options) -> Result<Vec<Result<Digests, String>>> {
    let root = dir.canonicalize_utf8().unwrap_or_else(|_| dir.to_owned());
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
                        match precheck(&root, jobs[index], opts) {
                            Pre::Hash(path, Want { blake2b: true, sha256: false }) => {
                                together.push((index, path));
                            }
                            Pre::Hash(path, want) => {
                                let outcome = hash_file(&path, want, opts.progress)
                                    .map_err(|e| format!("{e:#}"))
                                    .and_then(|d| finish(jobs[index], d));
                                *results[index].lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
                            }
                            Pre::Done(outcome) => {
                                *results[index].lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
                            }
                        }
                    }
                    let paths: Vec<&Utf8Path> = together.iter().map(|(_, p)| p.as_path()).collect();
                    for ((index, _), outcome) in together.iter().zip(blake2b_many(&paths, &mut bufs, opts.progress)) {
                        let outcome = outcome.and_then(|d| finish(jobs[*index], d));
                        *results[*index].lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
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
    /// Hash this file for these digests.
    Hash(Utf8PathBuf, Want),
}

/// The checks that need no hashing: present, inside the repository, a regular file of
/// the catalogue's size.
fn precheck(root: &Utf8Path, job: &Job, opts: &Options) -> Pre {
    let path = root.join(&job.path);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Pre::Done(Err("is listed in the catalogue but missing".into()));
        }
        Err(e) => return Pre::Done(Err(format!("cannot be read: {e}"))),
    };
    let meta = if meta.file_type().is_symlink() {
        match path.canonicalize_utf8() {
            Ok(real) if real.starts_with(root) => {}
            Ok(real) => return Pre::Done(Err(format!("is a symlink to {real}, outside the repository"))),
            Err(_) => return Pre::Done(Err("is a dangling symlink".into())),
        }
        match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) => return Pre::Done(Err(format!("cannot be read: {e}"))),
        }
    } else {
        meta
    };
    if !meta.is_file() {
        return Pre::Done(Err("is not a regular file".into()));
    }
    if meta.len() != job.size {
        return Pre::Done(Err(format!("is {} bytes but the catalogue says {} (pkgsize)", meta.len(), job.size)));
    }
    let want = job.sum.needs().or(Want { blake2b: false, sha256: opts.sha256 });
    let known = opts.known.and_then(|k| k(&job.path, &meta)).filter(|d| {
        d.size == job.size && (!want.blake2b || d.blake2b.is_some()) && (!want.sha256 || d.sha256.is_some())
    });
    match known {
        Some(d) => {
            (opts.progress)(job.size);
            Pre::Done(finish(job, d))
        }
        None => Pre::Hash(path, want),
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

/// BLAKE2b-512 of several files at once, a chunk of each per SIMD pass, read into
/// `bufs` (grown to one chunk per file as needed).
fn blake2b_many(
    paths: &[&Utf8Path],
    bufs: &mut Vec<Vec<u8>>,
    progress: &(dyn Fn(u64) + Sync),
) -> Vec<Result<Digests, String>> {
    use std::io::Read;
    const CHUNK: usize = 1 << 18;
    let mut files: Vec<Option<std::fs::File>> = Vec::with_capacity(paths.len());
    let mut out: Vec<Option<Result<Digests, String>>> = Vec::with_capacity(paths.len());
    for p in paths {
        match std::fs::File::open(p) {
            Ok(f) => {
                files.push(Some(f));
                out.push(None);
            }
            Err(e) => {
                files.push(None);
                out.push(Some(Err(format!("cannot open it: {e}"))));
            }
        }
    }
    let mut states: Vec<blake2b_simd::State> =
        paths.iter().map(|_| blake2b_simd::Params::new().hash_length(64).to_state()).collect();
    let mut sizes = vec![0u64; paths.len()];
    while bufs.len() < paths.len() {
        bufs.push(vec![0u8; CHUNK]);
    }
    let mut lens = vec![0usize; paths.len()];
    loop {
        let mut any = false;
        for i in 0..paths.len() {
            lens[i] = 0;
            let Some(f) = files[i].as_mut() else { continue };
            // Fill the chunk (a short read is not the end of the file).
            while lens[i] < CHUNK {
                match f.read(&mut bufs[i][lens[i]..]) {
                    Ok(0) => break,
                    Ok(n) => lens[i] += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        out[i] = Some(Err(format!("cannot read it: {e}")));
                        files[i] = None;
                        lens[i] = 0;
                        break;
                    }
                }
            }
            if lens[i] == 0 {
                files[i] = None;
            } else {
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
        let refs: Vec<&Utf8Path> = paths.iter().map(|p| p.as_path()).collect();
        let together = blake2b_many(&refs, &mut Vec::new(), &|_| {});
        for (p, got) in paths.iter().zip(together) {
            let want = hash_file(p, Want { blake2b: true, sha256: false }, &|_| {}).unwrap();
            assert_eq!(got.unwrap(), want, "{p}");
        }
        let missing = blake2b_many(&[dir.join("absent").as_path()], &mut Vec::new(), &|_| {});
        assert!(missing[0].as_ref().unwrap_err().contains("cannot open"));
    }
}
