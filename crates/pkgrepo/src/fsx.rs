//! The two file-system helpers the crate needs: an atomic write (a temporary file beside
//! the target, synced, renamed over it, the directory synced) and a containment check.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use camino::{Utf8Component, Utf8Path};

use crate::error::{Context, Result};

/// Writes `bytes` to `path` (mode 0644) atomically: readers see the old file or the new
/// one, never a mix, even across a crash.
pub(crate) fn write_atomic(path: &Utf8Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |f| Ok(f.write_all(bytes)?))
}

/// Writes `path` (mode 0644) atomically with what `fill` writes into the new file: a
/// temporary file beside it, synced, renamed over it, the directory synced. When `fill`
/// fails, nothing changes.
pub(crate) fn write_atomic_with(path: &Utf8Path, fill: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(p) if !p.as_str().is_empty() => p,
        _ => Utf8Path::new("."),
    };
    let name = path.file_name().unwrap_or("file");
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp.{}.{n}", std::process::id()));
    let result = (|| -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .with_context(|| format!("cannot create {tmp}"))?;
        fill(&mut f).with_context(|| format!("cannot write {tmp}"))?;
        f.sync_all().with_context(|| format!("cannot sync {tmp}"))?;
        fs::rename(&tmp, path).with_context(|| format!("cannot rename {tmp} to {path}"))?;
        let d = File::open(dir).with_context(|| format!("cannot open directory {dir}"))?;
        d.sync_all().with_context(|| format!("cannot sync directory {dir}"))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Whether a relative path stays inside its root: no `..`, no absolute part.
pub(crate) fn is_contained(rel: &Utf8Path) -> bool {
    rel.components().all(|c| matches!(c, Utf8Component::Normal(_) | Utf8Component::CurDir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contained_paths() {
        assert!(is_contained(Utf8Path::new("All/a.pkg")));
        assert!(is_contained(Utf8Path::new("./All/a.pkg")));
        assert!(!is_contained(Utf8Path::new("../a")));
        assert!(!is_contained(Utf8Path::new("All/../../a")));
        assert!(!is_contained(Utf8Path::new("/etc")));
    }

    #[test]
    fn writes_replace_whole_files_and_leave_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(dir.path()).unwrap();
        let path = dir.join("data.pkg");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir).unwrap().count(), 1);
        assert!(write_atomic(&dir.join("absent/x"), b"").is_err());
        assert_eq!(fs::read_dir(dir).unwrap().count(), 1);
    }
}
