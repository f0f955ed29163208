//! The state directory's lock: one run at a time, and who holds it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use super::StateDir;
use super::time::{hostname, now_rfc3339};
use crate::failure;

/// Length the lock's holder note is padded to.
const LOCK_NOTE_LEN: usize = 256;

/// Holds the state directory for this process until dropped (or the process dies:
/// flock locks vanish with their holder, so a SIGKILL leaves no stale lock).
pub struct Lock {
    _file: File,
}

/// Who holds the state directory: the note in `STATE_DIR/lock`, as `status --json`
/// shows it. A note that cannot be read leaves every field empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    /// The command it runs (`cargo xtask release`).
    pub command: String,
    /// When it took the lock (RFC 3339).
    pub since: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.pid == 0 {
            return f.write_str("another process (its note cannot be read)");
        }
        write!(f, "pid {} on {}, `{}`, since {}", self.pid, self.host, self.command, self.since)
    }
}

/// How long a run waits for the lock of a holder that has ended (see [`StateDir::lock`]).
const DYING_HOLDER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Holder {
    /// The holder's process has ended (known only for a holder on this host).
    fn is_gone(&self) -> bool {
        if self.pid == 0 || self.host != hostname() {
            return false;
        }
        let Ok(pid) = libc::pid_t::try_from(self.pid) else { return false };
        // SAFETY: kill with signal 0 only asks whether the process exists.
        let rc = unsafe { libc::kill(pid, 0) };
        rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
    }
}

/// Writes this process's note into the lock file (held). Advisory text for whoever finds
/// the lock taken; not worth an fsync. Padded to a fixed length and written in place, so
/// no truncation (a slow journal write) is needed; readers trim it.
fn write_note(file: &mut File, command: &str) -> Result<()> {
    let holder =
        Holder { pid: std::process::id(), host: hostname(), command: command.to_owned(), since: now_rfc3339() };
    let mut note = serde_json::to_string(&holder)?;
    let len = note.len().max(LOCK_NOTE_LEN);
    note.extend(std::iter::repeat_n(' ', len - note.len()));
    file.rewind()?;
    file.write_all(note.as_bytes())?;
    if file.metadata()?.len() > len as u64 {
        file.set_len(len as u64)?;
    }
    Ok(())
}

/// The note of the lock's holder, if it can be read.
fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(64 * 1024).read_to_string(&mut text).ok()?;
    serde_json::from_str(text.trim()).ok()
}

/// `STATE_DIR/lock.guard`, held for the moment it takes to try the lock and write or
/// read its note. Waiting for it is bounded: a process stopped while holding it (a
/// SIGSTOP) delays others by [`GUARD_WAIT`] at most, and then they go on without it.
struct Guard {
    _file: Option<File>,
}

/// The longest anyone waits for [`Guard`].
const GUARD_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Guard {
    /// Takes the guard; `create` makes its file when missing (else a missing file is
    /// no guard: nobody has ever locked this state directory).
    fn take(path: &Utf8Path, create: bool) -> Result<Guard> {
        let file = match OpenOptions::new().read(true).write(true).create(create).truncate(false).open(path) {
            Ok(f) => f,
            Err(e) if !create && e.kind() == std::io::ErrorKind::NotFound => return Ok(Guard { _file: None }),
            Err(e) => return Err(e).with_context(|| format!("cannot open {path}")),
        };
        let until = std::time::Instant::now() + GUARD_WAIT;
        while !try_flock(&file)? {
            if std::time::Instant::now() >= until {
                return Ok(Guard { _file: None });
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Ok(Guard { _file: Some(file) })
    }
}

fn try_flock(file: &File) -> Result<bool> {
    // SAFETY: flock on a valid, open descriptor.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err).context("cannot lock the state directory")
    }
}

impl StateDir {
    fn lock_path(&self) -> Utf8PathBuf {
        self.root.join("lock")
    }

    fn guard_path(&self) -> Utf8PathBuf {
        self.root.join("lock.guard")
    }

    /// Takes the state directory for this process. A second run is refused with a
    /// message naming the holder.
    ///
    /// The holder's note must never be stale: the lock is only ever tried, and the note
    /// only ever written or read, while holding `lock.guard` (see [`Guard`]). So whoever
    /// finds the lock taken reads the note of the process that holds it now, never the
    /// note of the one before. A holder that has just died (killed, its lock not yet
    /// released by the last of its forked children) is waited for, briefly, rather than
    /// named.
    ///
    /// `resume` is the command that continues a killed run, for the message.
    pub fn lock(&self, command: &str, resume: &str) -> Result<Lock> {
        std::fs::create_dir_all(&self.root)
            .with_context(|| format!("cannot create the state directory {}", self.root))?;
        let path = self.lock_path();
        let until = std::time::Instant::now() + DYING_HOLDER_WAIT;
        loop {
            let guard = Guard::take(&self.guard_path(), true)?;
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .with_context(|| format!("cannot open {path}"))?;
            if try_flock(&file)? {
                write_note(&mut file, command).with_context(|| format!("cannot write {path}"))?;
                drop(guard);
                return Ok(Lock { _file: file });
            }
            let holder = read_holder(&mut file);
            drop(guard);
            if holder.as_ref().is_some_and(Holder::is_gone) && std::time::Instant::now() < until {
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
            let holder = holder.map_or_else(|| "another process".to_owned(), |h| h.to_string());
            bail!(
                failure!("another mother-build run holds {path}: {holder}")
                    .help(format!("wait for it to finish, or stop it (a killed run can be continued with `{resume}`)"))
            );
        }
    }

    /// Who holds the lock right now, if anyone (for `status`). Creates nothing.
    pub fn lock_holder(&self) -> Option<Holder> {
        let path = self.lock_path();
        let mut file = OpenOptions::new().read(true).write(true).open(&path).ok()?;
        // Trying the lock takes it for a moment when it is free: under the guard, so a
        // run starting meanwhile is not refused in its name.
        let _guard = Guard::take(&self.guard_path(), false).ok();
        match try_flock(&file) {
            Ok(true) => None, // free; dropping the file releases it
            _ => Some(read_holder(&mut file).unwrap_or_default()),
        }
    }
}
