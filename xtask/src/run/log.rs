//! A stage's log file, and the last lines of one.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};

use anyhow::{Context, Result};
use camino::{Utf8Path, Utf8PathBuf};

/// A stage's log file. Every command's full output lands here. Shared by reference:
/// worker threads and read-only planning write to it too. A stage's log holds every
/// attempt, one after the other; a `Log` knows where its own attempt began.
pub struct Log {
    file: Option<std::sync::Mutex<File>>,
    path: Option<Utf8PathBuf>,
    /// Length of the file when opened: where what this `Log` writes begins.
    start: u64,
}

impl Log {
    /// Opens (appends to) a log file.
    pub fn open(path: &Utf8Path) -> Result<Log> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {dir}"))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open the log {path}"))?;
        let start = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(Log { file: Some(std::sync::Mutex::new(file)), path: Some(path.to_owned()), start })
    }

    /// A log that keeps nothing (dry runs, standalone checks).
    pub fn sink() -> Log {
        Log { file: None, path: None, start: 0 }
    }

    pub fn path(&self) -> Option<&Utf8Path> {
        self.path.as_deref()
    }

    pub fn line(&self, line: &str) {
        if let Some(f) = &self.file {
            let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(f, "{line}");
        }
    }

    pub fn bytes(&self, bytes: &[u8]) {
        if let Some(f) = &self.file {
            let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
            let _ = f.write_all(bytes);
            if !bytes.is_empty() && !bytes.ends_with(b"\n") {
                let _ = f.write_all(b"\n");
            }
        }
    }

    /// The last `n` lines written through this `Log` (this attempt's, never an earlier
    /// attempt's), indented for display.
    pub fn tail(&self, n: usize) -> String {
        match &self.path {
            Some(p) => tail_file_from(p, self.start, n),
            None => String::new(),
        }
    }
}

/// The last `n` lines of a file, indented for display.
pub fn tail_file(path: &Utf8Path, n: usize) -> String {
    tail_file_from(path, 0, n)
}

/// The last `n` lines of a file from byte `start` on (at most its last 64 KiB).
fn tail_file_from(path: &Utf8Path, start: u64, n: usize) -> String {
    let Ok(mut f) = File::open(path) else { return String::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(64 * 1024).max(start);
    let _ = f.seek(std::io::SeekFrom::Start(from));
    let mut buf = Vec::new();
    let _ = f.take(len - from.min(len)).read_to_end(&mut buf);
    // Cut into a line: it begins at the next one.
    let whole =
        if from > start { buf.iter().position(|b| *b == b'\n').map_or(&buf[..0], |i| &buf[i + 1..]) } else { &buf[..] };
    crate::proc::tail_lines(whole, n)
}
