//! A process group an xtask started and may not have stopped: killed with SIGKILL
//! mid-gate, xtask cannot stop its console, which would run forever. Before the
//! console's program runs, its group is recorded ([`GroupRecord`], written into the
//! run's state.json by whoever started it); the next command on that state stops it
//! ([`GroupRecord::stop_if_left`]) once the xtask that started it is gone, and only if
//! the group is still the one recorded (its leader's start time, its session and the
//! boot all match): a process that merely got one of its pids is never signalled.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::group::{Sent, stop_with};
use super::table::{self, ProcInfo};

/// A process group as recorded before its program ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// The group (its leader's pid).
    pub pgid: i32,
    /// The leader's start: clock ticks since boot (Linux, `/proc/PID/stat` field 22) or
    /// microseconds since the epoch (FreeBSD, `kinfo_proc.ki_start`).
    pub start: u64,
    /// The leader's session.
    pub session: i32,
    /// The boot it ran in (Linux's boot_id, FreeBSD's kern.boottime).
    pub boot: String,
    /// The xtask that started it, and that xtask's start.
    pub owner: i32,
    pub owner_start: u64,
    /// Seconds between SIGTERM and SIGKILL when it is stopped.
    pub grace_secs: u64,
    /// The command, as the operator reads it.
    pub command: String,
}

/// What [`GroupRecord::stop_if_left`] stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftStopped {
    /// Processes of the group that were running.
    pub processes: usize,
    /// SIGTERM was not enough and SIGKILL followed.
    pub killed: bool,
}

impl GroupRecord {
    /// The record of the group `pid` leads, started by this process.
    pub(super) fn new(pid: u32, grace: Duration, command: String) -> std::io::Result<GroupRecord> {
        let leader = table::info(pid as i32)
            .ok_or_else(|| std::io::Error::other(format!("process {pid} is not in the process table")))?;
        let me = table::me()?;
        let boot = table::boot().ok_or_else(|| std::io::Error::other("cannot tell which boot this is"))?;
        Ok(GroupRecord {
            pgid: leader.pgid,
            start: leader.start,
            session: leader.sid,
            boot,
            owner: me.pid,
            owner_start: me.start,
            grace_secs: grace.as_secs(),
            command,
        })
    }

    /// The group's processes, if it was left running: its owner is gone, this is the
    /// same boot, its leader (if alive) is the one recorded, and each member is in the
    /// recorded session and started no earlier than the leader. Otherwise none.
    fn left_running(&self) -> Vec<ProcInfo> {
        if table::boot().as_deref() != Some(self.boot.as_str()) {
            return Vec::new();
        }
        let alive = |p: &ProcInfo| !p.zombie;
        if table::info(self.owner).filter(alive).is_some_and(|o| o.start == self.owner_start) {
            return Vec::new();
        }
        let all = table::all();
        let leader = all.iter().find(|p| p.pid == self.pgid);
        if leader.filter(|p| alive(p)).is_some_and(|l| l.start != self.start || l.pgid != self.pgid) {
            // The pid is someone else's now: the group the record names is gone.
            return Vec::new();
        }
        all.into_iter()
            .filter(|p| alive(p) && p.pgid == self.pgid && p.sid == self.session && p.start >= self.start)
            .collect()
    }

    /// Stops the group if it was left running (see [`GroupRecord::left_running`]):
    /// SIGTERM to each of its processes (each checked to still be the one found), its
    /// grace, SIGKILL, through the routine that stops groups. `None` when there was
    /// nothing to stop.
    pub fn stop_if_left(&self) -> Option<LeftStopped> {
        let processes = self.left_running().len();
        if processes == 0 {
            return None;
        }
        let signal = |sig| {
            let mut any = false;
            for p in self.left_running() {
                any |= table::signal(&p, sig);
            }
            any
        };
        let gone = |wait: Duration| {
            if self.left_running().is_empty() {
                return true;
            }
            std::thread::sleep(wait.max(Duration::from_millis(20)));
            false
        };
        let Sent { kill, .. } = stop_with(signal, Duration::from_secs(self.grace_secs), gone);
        Some(LeftStopped { processes, killed: kill })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;

    use super::*;
    use crate::proc::CmdLine;

    /// `sleep 30` in its own group (ours to reap), and a record of it whose owner is a
    /// process that has ended.
    fn left(grace: Duration) -> (std::process::Child, GroupRecord) {
        let mut child = CmdLine::new("sleep").arg("30").command().unwrap();
        let child = child.stdout(Stdio::null()).process_group(0).spawn().unwrap();
        let mut record = GroupRecord::new(child.id(), grace, "sleep 30".into()).unwrap();
        let mut gone = CmdLine::new("true").command().unwrap().spawn().unwrap();
        gone.wait().unwrap();
        record.owner = gone.id() as i32;
        (child, record)
    }

    #[test]
    fn a_group_left_running_is_stopped_once_and_said() {
        let (mut child, record) = left(Duration::from_secs(5));
        assert_eq!(record.pgid, child.id() as i32);
        let stopped = record.stop_if_left().expect("it was left running");
        assert_eq!(stopped, LeftStopped { processes: 1, killed: false });
        assert_eq!(child.wait().unwrap().code(), None, "it was stopped by a signal");
        assert_eq!(record.stop_if_left(), None, "nothing is left the second time");
    }

    #[test]
    fn a_group_whose_owner_runs_or_whose_identity_differs_is_not_touched() {
        let (mut child, record) = left(Duration::ZERO);
        // Its owner still runs (this process): it is the owner's to stop.
        let owned = GroupRecord { owner: std::process::id() as i32, ..record.clone() };
        let owned = GroupRecord { owner_start: table::me().unwrap().start, ..owned };
        assert_eq!(owned.stop_if_left(), None);
        // The pid is a process that started at another time: not the one recorded.
        assert_eq!(GroupRecord { start: record.start + 1, ..record.clone() }.stop_if_left(), None);
        // Another boot.
        assert_eq!(GroupRecord { boot: "another boot".into(), ..record.clone() }.stop_if_left(), None);
        // Another session.
        assert_eq!(GroupRecord { session: record.session + 1, ..record.clone() }.stop_if_left(), None);
        assert!(child.try_wait().unwrap().is_none(), "a process that does not match was signalled");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
