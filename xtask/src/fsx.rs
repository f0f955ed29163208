//! File operations that never leave a half-written result: write to a temporary name
//! beside the target, fsync, rename over it, fsync the directory.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};

/// A name beside `path` that no other process uses: `.NAME.tmp.PID.N`.
pub fn temp_beside(path: &Utf8Path) -> Utf8PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().unwrap_or("file");
    path.with_file_name(format!(".{name}.tmp.{}.{n}", std::process::id()))
}

/// Writes `bytes` to `path` atomically with the given mode: readers see the old file or
/// the new one, never a mix, even across a crash.
pub fn write_atomic_mode(path: &Utf8Path, bytes: &[u8], mode: u32) -> Result<()> {
    write_atomic_with(path, mode, |f, tmp| f.write_all(bytes).with_context(|| format!("cannot write {tmp}")))
}

/// [`write_atomic_mode`] of what `write` writes to the file (buffered, so that a large
/// document goes to disk as it is made rather than into memory first); `write` gets
/// the temporary file's name for its messages.
pub fn write_atomic_with(
    path: &Utf8Path,
    mode: u32,
    write: impl FnOnce(&mut dyn Write, &Utf8Path) -> Result<()>,
) -> Result<()> {
    let dir = parent(path);
    fs::create_dir_all(dir).with_context(|| format!("cannot create directory {dir}"))?;
    let tmp = temp_beside(path);
    let result = (|| -> Result<()> {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("cannot create {tmp}"))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 16, f);
        write(&mut w, &tmp)?;
        let f = w.into_inner().map_err(|e| e.into_error()).with_context(|| format!("cannot write {tmp}"))?;
        f.sync_all().with_context(|| format!("cannot sync {tmp}"))?;
        fs::rename(&tmp, path).with_context(|| format!("cannot rename {tmp} to {path}"))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// [`write_atomic_mode`] with mode 0644.
pub fn write_atomic(path: &Utf8Path, bytes: &[u8]) -> Result<()> {
    write_atomic_mode(path, bytes, 0o644)
}

/// The whole of the file at `path`, refused when it is larger than `limit` bytes (the
/// error says which file, and how large it is).
pub fn read_bounded(path: &Utf8Path, limit: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = File::open(path).with_context(|| format!("cannot open {path}"))?;
    let mut bytes = Vec::new();
    f.take(limit + 1).read_to_end(&mut bytes).with_context(|| format!("cannot read {path}"))?;
    if bytes.len() as u64 > limit {
        anyhow::bail!("{path} is larger than {limit} bytes");
    }
    Ok(bytes)
}

/// Flushes a directory's entries (a rename is durable only after this).
pub fn sync_dir(dir: &Utf8Path) -> Result<()> {
    let d = File::open(dir).with_context(|| format!("cannot open directory {dir}"))?;
    d.sync_all().with_context(|| format!("cannot sync directory {dir}"))?;
    Ok(())
}

fn parent(path: &Utf8Path) -> &Utf8Path {
    match path.parent() {
        Some(p) if !p.as_str().is_empty() => p,
        _ => Utf8Path::new("."),
    }
}

/// Replaces directory `target` with the complete directory `staged` (a sibling).
///
/// On Linux the two are exchanged with one `renameat2(RENAME_EXCHANGE)`: `target` is
/// never absent nor partial. Elsewhere `target` is first renamed aside, then `staged`
/// renamed into place: `target` may be briefly absent, never partial. The old tree is
/// removed afterwards.
pub fn replace_dir(staged: &Utf8Path, target: &Utf8Path) -> Result<()> {
    if !target.exists() {
        fs::rename(staged, target).with_context(|| format!("cannot rename {staged} to {target}"))?;
        return sync_dir(parent(target));
    }
    let old = temp_beside(target);
    if exchange(staged, target)? {
        // `staged` now holds the old tree.
        fs::rename(staged, &old).with_context(|| format!("cannot rename {staged} to {old}"))?;
    } else {
        fs::rename(target, &old).with_context(|| format!("cannot rename {target} to {old}"))?;
        fs::rename(staged, target).with_context(|| format!("cannot rename {staged} to {target}"))?;
    }
    sync_dir(parent(target))?;
    fs::remove_dir_all(&old).with_context(|| format!("cannot remove the old copy {old}"))?;
    Ok(())
}

#[cfg(target_os = "linux")]
fn exchange(a: &Utf8Path, b: &Utf8Path) -> Result<bool> {
    use std::ffi::CString;
    let ca = CString::new(a.as_str())?;
    let cb = CString::new(b.as_str())?;
    // SAFETY: both are valid NUL-terminated paths; AT_FDCWD resolves them relative to
    // the working directory like rename(2).
    let rc =
        unsafe { libc::renameat2(libc::AT_FDCWD, ca.as_ptr(), libc::AT_FDCWD, cb.as_ptr(), libc::RENAME_EXCHANGE) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) => Ok(false),
        _ => Err(err).with_context(|| format!("cannot exchange {a} and {b}")),
    }
}

#[cfg(not(target_os = "linux"))]
fn exchange(_a: &Utf8Path, _b: &Utf8Path) -> Result<bool> {
    Ok(false)
}

/// Points symlink `link` at `target` atomically (a new link renamed over the old one).
pub fn symlink_atomic(target: &Utf8Path, link: &Utf8Path) -> Result<()> {
    let tmp = temp_beside(link);
    std::os::unix::fs::symlink(target, &tmp).with_context(|| format!("cannot create symlink {tmp}"))?;
    if let Err(e) = fs::rename(&tmp, link) {
        let _ = fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot rename {tmp} to {link}"));
    }
    sync_dir(parent(link))
}

/// `path` relative to `base` when it lies under it; otherwise `path` unchanged.
pub fn relative_to(path: &Utf8Path, base: &Utf8Path) -> Utf8PathBuf {
    path.strip_prefix(base).map(Utf8Path::to_owned).unwrap_or_else(|_| path.to_owned())
}

/// `path` expressed relative to `base` (both absolute), with `..` where needed:
/// `/a/colibri` from `/a/mother-build` is `../colibri`. Lexical: symlinks are not resolved.
pub fn relative_path(path: &Utf8Path, base: &Utf8Path) -> Utf8PathBuf {
    if !path.is_absolute() || !base.is_absolute() {
        return path.to_owned();
    }
    let p: Vec<_> = path.components().collect();
    let b: Vec<_> = base.components().collect();
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = Utf8PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &p[common..] {
        out.push(c.as_str());
    }
    if out.as_str().is_empty() { Utf8PathBuf::from(".") } else { out }
}

/// Checks that a relative path stays inside its root: no `..`, no absolute part.
pub fn check_contained(rel: &Utf8Path) -> Result<()> {
    use camino::Utf8Component;
    for c in rel.components() {
        match c {
            Utf8Component::Normal(_) | Utf8Component::CurDir => {}
            _ => bail!("path `{rel}` escapes its directory"),
        }
    }
    Ok(())
}

/// Removes leftovers of interrupted atomic writes (`.NAME.tmp.*`) in a directory.
pub fn remove_stale_temps(dir: &Utf8Path) {
    let Ok(entries) = dir.read_dir_utf8() else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.starts_with('.') && name.contains(".tmp.") {
            let path = entry.path();
            if path.is_dir() {
                let _ = fs::remove_dir_all(path);
            } else {
                let _ = fs::remove_file(path);
            }
        }
    }
}

/// A removal [`remove_dir_all_later`] started: in its thread, or done where no thread
/// could be had.
enum Removal {
    Thread(std::thread::JoinHandle<std::io::Result<()>>),
    Done(std::io::Result<()>),
}

/// Directories being removed by [`remove_dir_all_later`], not yet waited for.
static REMOVALS: std::sync::Mutex<Vec<(Utf8PathBuf, Removal)>> = std::sync::Mutex::new(Vec::new());

/// Removes `path`, a directory already renamed out of sight (a `.NAME.tmp.*` name, which
/// [`remove_stale_temps`] removes when a run ends before it is gone), in a thread of its
/// own: the work after it goes on meanwhile. [`wait_removals`] waits for it. (Freeing
/// the pages of a version's files, tens of megabytes at tens of thousands of packages,
/// took as long as writing the run's report, which can run beside it.)
pub fn remove_dir_all_later(path: Utf8PathBuf) {
    fn remove(path: &Utf8Path) -> std::io::Result<()> {
        match fs::remove_dir_all(path) {
            // Another run's `remove_stale_temps` may have taken it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
    let removing = path.clone();
    let removal = match std::thread::Builder::new().name("remove".into()).spawn(move || remove(&removing)) {
        Ok(h) => Removal::Thread(h),
        Err(_) => Removal::Done(remove(&path)),
    };
    REMOVALS.lock().unwrap_or_else(|p| p.into_inner()).push((path, removal));
}

/// Waits for every removal [`remove_dir_all_later`] started; what could not be removed,
/// one message each.
pub fn wait_removals() -> Vec<String> {
    let removals = std::mem::take(&mut *REMOVALS.lock().unwrap_or_else(|p| p.into_inner()));
    removals
        .into_iter()
        .filter_map(|(path, removal)| {
            let result = match removal {
                Removal::Thread(h) => h.join().unwrap_or_else(|_| Err(std::io::Error::other("its thread panicked"))),
                Removal::Done(r) => r,
            };
            result.err().map(|e| format!("cannot remove {path}: {e} (the next publish to its directory removes it)"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp() -> (tempfile::TempDir, Utf8PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = Utf8PathBuf::from_path_buf(d.path().to_owned()).unwrap();
        (d, p)
    }

    #[test]
    fn a_removal_started_is_done_when_waited_for() {
        let (_d, root) = tmp();
        let aside = root.join(".old.tmp.1.0");
        fs::create_dir_all(aside.join("All")).unwrap();
        fs::write(aside.join("All/a.pkg"), "a").unwrap();
        remove_dir_all_later(aside.clone());
        // One already gone (another run removed it) is no problem either.
        remove_dir_all_later(root.join(".gone.tmp.1.1"));
        assert_eq!(wait_removals(), Vec::<String>::new());
        assert!(!aside.exists());
        assert!(wait_removals().is_empty(), "each removal is waited for once");
    }

    #[test]
    fn replace_dir_swaps_whole_trees() {
        let (_d, root) = tmp();
        let target = root.join("colibri");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("old"), "1").unwrap();
        let staged = root.join(".colibri.new");
        fs::create_dir(&staged).unwrap();
        fs::write(staged.join("new"), "2").unwrap();
        replace_dir(&staged, &target).unwrap();
        assert!(target.join("new").exists());
        assert!(!target.join("old").exists());
        assert!(!staged.exists());
        assert_eq!(fs::read_dir(&root).unwrap().count(), 1);
    }

    #[test]
    fn relative_paths() {
        assert_eq!(relative_path(Utf8Path::new("/a/colibri"), Utf8Path::new("/a/mb")), "../colibri");
        assert_eq!(relative_path(Utf8Path::new("/a/mb/ports/x"), Utf8Path::new("/a/mb")), "ports/x");
        assert_eq!(relative_path(Utf8Path::new("/a/mb"), Utf8Path::new("/a/mb")), ".");
    }

    #[test]
    fn contained_paths() {
        assert!(check_contained(Utf8Path::new("a/b")).is_ok());
        assert!(check_contained(Utf8Path::new("../a")).is_err());
        assert!(check_contained(Utf8Path::new("/etc")).is_err());
    }
}
