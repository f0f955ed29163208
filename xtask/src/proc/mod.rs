//! The one place that runs external programs.
//!
//! - `cmdline`: [`CmdLine`], an argument vector (never a shell string), and the one way
//!   it becomes a `std::process::Command`; short commands run to completion with their
//!   output captured and logged ([`Output`]); a program that cannot start is told by the
//!   `io::ErrorKind` of the spawn.
//! - `group`: long commands (poudriere, bhyve, qemu) run through duct in their own
//!   process group, their output streamed line by line to the stage log and the progress
//!   display, with an optional timeout ([`StreamOpts`], [`TimedOut`]); teardown commands
//!   that outlive a Ctrl-C ([`CmdLine::cleanup`]); and the one routine that stops a
//!   process group: SIGTERM, a grace period, SIGKILL.
//! - `console`: programs whose stdout is a raw byte stream, a serial console
//!   ([`Console`], [`ConsoleEvent`]); their orphans are reaped (xtask is their subreaper),
//!   their group recorded before they run ([`GroupRecord`]).
//! - `strays`: the children proc owns, and what a console left behind outside its group
//!   (a `setsid` daemon), found by walking the process table down from us and stopped.
//! - `leftover`: a console group an xtask killed with SIGKILL left running, stopped by
//!   the next command once its owner is gone and its identity still matches.
//! - `table`: the process table (Linux `/proc`, FreeBSD `kern.proc`), start times, the
//!   boot, and signals sent only to the process that was meant.
//! - `signals`: Ctrl-C, SIGTERM and SIGHUP are caught once for the whole program: every
//!   running process group is stopped, and the engine records the stage as interrupted
//!   (exit 130).
//!
//! Clippy holds the boundary (`clippy.toml`): creating a process anywhere else, or by
//! another way here, fails the lint.

mod cmdline;
mod console;
mod group;
mod leftover;
mod signals;
mod strays;
mod table;

pub use cmdline::{CmdLine, Output, find_program, quote, tail_lines};
pub use console::{Console, ConsoleEvent, Stopped};
pub use group::{StreamOpts, TimedOut};
pub use leftover::{GroupRecord, LeftStopped};
pub use signals::{
    Interrupted, Teardown, check_interrupted, install_signal_handlers, interrupted, on_teardown, signal_name,
    start_signal_thread,
};
