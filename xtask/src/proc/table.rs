//! The process table as the system gives it: each process's parent, group, session and
//! start time (Linux: `/proc/PID/stat`; FreeBSD: `sysctl kern.proc`), which boot this
//! is, and a signal sent only to the process that was meant (the pid and its start time
//! must still match: a pid the system has given to someone else is never signalled).

use std::io;

/// One process, as the table shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProcInfo {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// When it started: clock ticks since boot on Linux (`/proc/PID/stat` field 22),
    /// microseconds since the epoch on FreeBSD (`kinfo_proc.ki_start`). With the pid and
    /// the boot, it tells a process from a later one that got the same pid.
    pub start: u64,
    /// It has exited and waits for its parent to reap it.
    pub zombie: bool,
}

#[cfg(target_os = "linux")]
mod os {
    use super::ProcInfo;

    /// `/proc/PID/stat`: `pid (comm) state ppid pgrp session ... starttime ...`; comm
    /// may hold spaces and parentheses, so the fields are counted from the last `)`.
    fn parse(stat: &str) -> Option<ProcInfo> {
        let (head, rest) = stat.rsplit_once(')')?;
        let pid = head.split_once(' ')?.0.trim().parse().ok()?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // Field 3 (state) is fields[0]; field 22 (starttime) is fields[19].
        Some(ProcInfo {
            pid,
            ppid: fields.get(1)?.parse().ok()?,
            pgid: fields.get(2)?.parse().ok()?,
            sid: fields.get(3)?.parse().ok()?,
            start: fields.get(19)?.parse().ok()?,
            zombie: *fields.first()? == "Z",
        })
    }

    pub fn info(pid: i32) -> Option<ProcInfo> {
        parse(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    pub fn all() -> Vec<ProcInfo> {
        let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
            .filter_map(info)
            .collect()
    }

    /// The kernel's random id of this boot.
    pub fn boot() -> Option<String> {
        Some(std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?.trim().to_owned())
    }

    /// Signals `p` if it is still the process it was: through a pidfd, opened and then
    /// checked against the start time, so the signal cannot reach a process that took
    /// its pid meanwhile. Kernels without pidfds (before 5.3) get a plain kill after
    /// the same check.
    pub fn signal(p: &ProcInfo, sig: i32) -> bool {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, p.pid, 0) };
        let same = || info(p.pid).is_some_and(|now| now.start == p.start && !now.zombie);
        if fd < 0 {
            // SAFETY: kill has no memory-safety preconditions.
            return same() && unsafe { libc::kill(p.pid, sig) } == 0;
        }
        let fd = fd as libc::c_int;
        // SAFETY: pidfd_send_signal on the descriptor just opened, without siginfo.
        let sent =
            same() && unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd, sig, std::ptr::null::<u8>(), 0) } == 0;
        // SAFETY: closing the descriptor we opened.
        unsafe { libc::close(fd) };
        sent
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn stat_fields_are_counted_from_the_last_parenthesis() {
            let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 98765 0 0";
            let p = super::parse(stat).unwrap();
            assert_eq!((p.pid, p.ppid, p.pgid, p.sid, p.start, p.zombie), (4242, 1, 4242, 4242, 98765, false));
            assert!(super::parse("12 (zombie) Z 1 12 12 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 5 0").unwrap().zombie);
        }

        #[test]
        fn this_process_is_in_the_table_with_its_start() {
            let me = super::info(std::process::id() as i32).unwrap();
            assert!(me.start > 0 && !me.zombie);
            assert!(super::all().contains(&me));
        }
    }
}

#[cfg(target_os = "freebsd")]
mod os {
    use super::ProcInfo;

    /// `sysctl kern.proc.*`: an array of `kinfo_proc`, one per process (sysctl(3),
    /// KERN_PROC). Asked twice: its size, then (with room for processes started in
    /// between) the entries; ENOMEM means the table grew faster, so it is asked again.
    fn kinfo(mib: &[libc::c_int]) -> Vec<ProcInfo> {
        let entry = std::mem::size_of::<libc::kinfo_proc>();
        for _ in 0..4 {
            let mut len: libc::size_t = 0;
            // SAFETY: a size query: no buffer, `len` receives the size.
            let rc = unsafe {
                libc::sysctl(
                    mib.as_ptr(),
                    mib.len() as libc::c_uint,
                    std::ptr::null_mut(),
                    &mut len,
                    std::ptr::null(),
                    0,
                )
            };
            if rc != 0 {
                return Vec::new();
            }
            let mut buf: Vec<libc::kinfo_proc> = Vec::with_capacity(len / entry + 16);
            let mut bytes = buf.capacity() * entry;
            // SAFETY: the buffer holds `bytes` bytes; sysctl writes at most that and
            // says how much it wrote.
            let rc = unsafe {
                libc::sysctl(
                    mib.as_ptr(),
                    mib.len() as libc::c_uint,
                    buf.as_mut_ptr().cast(),
                    &mut bytes,
                    std::ptr::null(),
                    0,
                )
            };
            if rc != 0 {
                if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOMEM) {
                    continue;
                }
                return Vec::new();
            }
            // SAFETY: sysctl filled `bytes` bytes with whole kinfo_proc entries.
            unsafe { buf.set_len(bytes / entry) };
            return buf
                .iter()
                .filter(|k| k.ki_structsize as usize == entry)
                .map(|k| ProcInfo {
                    pid: k.ki_pid,
                    ppid: k.ki_ppid,
                    pgid: k.ki_pgid,
                    sid: k.ki_sid,
                    start: (k.ki_start.tv_sec as u64) * 1_000_000 + k.ki_start.tv_usec as u64,
                    zombie: k.ki_stat == libc::SZOMB,
                })
                .collect();
        }
        Vec::new()
    }

    pub fn info(pid: i32) -> Option<ProcInfo> {
        kinfo(&[libc::CTL_KERN, libc::KERN_PROC, libc::KERN_PROC_PID, pid]).into_iter().next()
    }

    pub fn all() -> Vec<ProcInfo> {
        // KERN_PROC_PROC: every process once (not once per thread); it takes no argument.
        kinfo(&[libc::CTL_KERN, libc::KERN_PROC, libc::KERN_PROC_PROC])
    }

    /// When this boot began (`kern.boottime`), which names the boot.
    pub fn boot() -> Option<String> {
        let mib = [libc::CTL_KERN, libc::KERN_BOOTTIME];
        // SAFETY: an all-zero timeval is valid for sysctl to fill in.
        let mut tv: libc::timeval = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::timeval>();
        // SAFETY: the buffer is one timeval, its size in `len`.
        let rc = unsafe {
            libc::sysctl(mib.as_ptr(), 2, (&mut tv as *mut libc::timeval).cast(), &mut len, std::ptr::null(), 0)
        };
        (rc == 0).then(|| format!("{}.{:06}", tv.tv_sec, tv.tv_usec))
    }

    /// Signals `p` if it is still the process it was (its start time checked first;
    /// FreeBSD has no pidfd for another's process, and the window is that of one kill).
    pub fn signal(p: &ProcInfo, sig: i32) -> bool {
        let same = info(p.pid).is_some_and(|now| now.start == p.start && !now.zombie);
        // SAFETY: kill has no memory-safety preconditions.
        same && unsafe { libc::kill(p.pid, sig) } == 0
    }
}

#[cfg(not(any(target_os = "linux", target_os = "freebsd")))]
mod os {
    use super::ProcInfo;

    pub fn info(_pid: i32) -> Option<ProcInfo> {
        None
    }

    pub fn all() -> Vec<ProcInfo> {
        Vec::new()
    }

    pub fn boot() -> Option<String> {
        None
    }

    pub fn signal(_p: &ProcInfo, _sig: i32) -> bool {
        false
    }
}

pub(super) use os::{all, boot, info, signal};

/// This process, as the table shows it.
pub(super) fn me() -> io::Result<ProcInfo> {
    info(std::process::id() as i32).ok_or_else(|| io::Error::other("this process is not in the process table"))
}
