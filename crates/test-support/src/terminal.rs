//! Commands run on a pseudo-terminal, as an operator runs them: what they draw there
//! (bars, spinners, colours) is captured byte for byte.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A command started with a new pseudo-terminal as its stdin, stdout and stderr.
pub struct OnTerminal {
    pub child: Child,
    screen: Arc<Mutex<Vec<u8>>>,
    reader: std::thread::JoinHandle<()>,
}

/// The terminal's size.
pub const ROWS: u16 = 40;
pub const COLS: u16 = 120;

/// Starts `cmd` on a new pseudo-terminal of [`ROWS`] x [`COLS`].
pub fn spawn(cmd: &mut Command) -> OnTerminal {
    let (mut master, mut slave) = (0, 0);
    let size = libc::winsize { ws_row: ROWS, ws_col: COLS, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: openpty fills two descriptors; the name buffer and termios may be null.
    let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    for fd in [master, slave] {
        // SAFETY: fcntl on descriptors we own; no child but this one gets them.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    // SAFETY: both descriptors were just opened and are owned here alone.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let io = || Stdio::from(slave.try_clone().unwrap());
    let child = cmd.stdin(io()).stdout(io()).stderr(io()).spawn().unwrap();
    drop(slave);
    let screen = Arc::new(Mutex::new(Vec::new()));
    let sink = screen.clone();
    let reader = std::thread::spawn(move || {
        let mut master = std::fs::File::from(master);
        let mut buf = [0u8; 4096];
        // Linux says EIO once the last descriptor of the terminal's other side is closed.
        while let Ok(n @ 1..) = master.read(&mut buf) {
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    OnTerminal { child, screen, reader }
}

impl OnTerminal {
    /// What the command has written to the terminal so far.
    pub fn output(&self) -> Vec<u8> {
        self.screen.lock().unwrap().clone()
    }

    /// Waits (at most `limit`) until what was written holds `needle`.
    #[track_caller]
    pub fn wait_for_output(&self, needle: &str, limit: Duration) {
        let start = Instant::now();
        while !String::from_utf8_lossy(&self.output()).contains(needle) {
            assert!(
                start.elapsed() < limit,
                "the terminal never showed {needle:?}:\n{}",
                String::from_utf8_lossy(&self.output())
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the command to exit and for everything it wrote.
    pub fn wait(mut self) -> (ExitStatus, Vec<u8>) {
        let status = self.child.wait().unwrap();
        let out = self.screen.clone();
        self.reader.join().unwrap();
        let out = out.lock().unwrap().clone();
        (status, out)
    }
}

/// The screen a terminal of [`ROWS`] x [`COLS`] shows after `bytes`, line by line.
pub fn screen(bytes: &[u8]) -> String {
    let size = |n: u16| std::num::NonZeroU16::new(n).unwrap();
    let mut parser = vt100::Parser::new(size(ROWS), size(COLS), 0);
    parser.process(bytes);
    parser.screen().contents()
}
