//! What the operator sees: no escape sequence at all in CI or off a terminal, the
//! pipeline's clock ticking while a stage runs, bars taken away on Ctrl-C, and a
//! teardown that says what it waits for and how a second Ctrl-C abandons it.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use camino::Utf8PathBuf;

use test_support::{Project, terminal, wait_for, write_script};

const ESC: u8 = 0x1b;

/// xtask in `p` on a terminal (TERM set, colour allowed), in its own process group;
/// `ci` sets CI=true.
fn on_terminal(p: &Project, args: &[&str], ci: bool) -> terminal::OnTerminal {
    let mut cmd = p.command(args);
    cmd.env_remove("CI").env_remove("NO_COLOR").env("TERM", "xterm-256color").process_group(0);
    if ci {
        cmd.env("CI", "true");
    }
    terminal::spawn(&mut cmd)
}

/// A project whose git prints in colour and fails: port fails, quoting it.
fn colourful_failure() -> Project {
    let p = Project::with_colibri("");
    let git = p.scratch.path.join("bin/git");
    write_script(
        &git,
        "#!/bin/sh\n# A git that answers in colour, then fails.\nprintf '\\033[1;31mfatal:\\033[0m \\033]0;title\\007not a repository\\n' >&2\nexit 128\n",
    );
    p.write_config(&format!("[tools]\ngit = \"{git}\"\n"));
    p
}

#[test]
fn with_ci_set_or_no_terminal_the_output_has_no_escape_sequence() {
    let p = colourful_failure();
    // CI on a terminal: plain lines, no colour, and the command's own escapes left out.
    for args in [&["-v", "release", "--to", "iso"][..], &["port"], &["status"]] {
        let (status, out) = on_terminal(&p, args, true).wait();
        let text = String::from_utf8_lossy(&out);
        assert!(!out.contains(&ESC), "`xtask {}` with CI=true wrote an escape sequence:\n{text:?}", args.join(" "));
        if args != ["status"] {
            assert_eq!(status.code(), Some(2), "{text}");
            assert!(text.contains("fatal: not a repository"), "{text}");
        }
    }
    // No terminal, CI unset: the same.
    let mut cmd = p.command(&["-v", "port"]);
    cmd.env_remove("CI").env_remove("NO_COLOR").env("TERM", "xterm-256color");
    let out = cmd.output().unwrap();
    assert!(!out.stderr.contains(&ESC), "{:?}", String::from_utf8_lossy(&out.stderr));
    // A terminal without CI does get colours (so the checks above can fail).
    let (_, out) = on_terminal(&p, &["port"], false).wait();
    assert!(out.contains(&ESC), "{}", String::from_utf8_lossy(&out));
}

/// A project whose `git status` sleeps (port runs that long), its pids recorded.
fn slow_port(secs: &str) -> (Project, Utf8PathBuf) {
    let mut p = Project::with_colibri("");
    let pids = p.scratch.path.join("slow-git.pids");
    let script = p.scratch.path.join("bin/slow-git");
    write_script(
        &script,
        &format!(
            "#!/bin/sh\n# Wraps git; `status` first waits.\ncase \"$*\" in\n  *status*) echo $$ >> \"$SLOW_GIT_PIDS\"; sleep {secs} ;;\nesac\nexec git \"$@\"\n"
        ),
    );
    p.write_config(&format!("[tools]\ngit = \"{script}\"\n"));
    p.env.push(("SLOW_GIT_PIDS".into(), pids.to_string()));
    (p, pids)
}

#[test]
fn the_pipeline_clock_ticks_while_a_stage_runs_and_ctrl_c_clears_the_bars() {
    let (p, pids) = slow_port("30");
    let run = on_terminal(&p, &["release", "--to", "iso"], false);
    // The bar's elapsed time moves on while port is still running.
    run.wait_for_output("0/7 stages  2s", Duration::from_secs(20));
    assert!(!test_support::pids(&pids).is_empty(), "port is still running");
    // SAFETY: a terminal's Ctrl-C: SIGINT to the command's process group.
    unsafe { libc::killpg(run.child.id() as i32, libc::SIGINT) };
    let (status, out) = run.wait();
    assert_eq!(status.code(), Some(130));
    let screen = terminal::screen(&out);
    assert!(!screen.contains("stages"), "the pipeline bar is left on the screen:\n{screen}");
    assert!(
        !screen.chars().any(|c| ('\u{2800}'..='\u{28ff}').contains(&c)),
        "a spinner is left on the screen:\n{screen}"
    );
    assert!(screen.contains("interrupted"), "{screen}");
}

/// A project with the command backend whose console stops `term_secs` after SIGTERM (or
/// never, with `None`); the gate gives it `grace` seconds.
fn stubborn_console(grace: u32, term_secs: Option<u32>) -> (Project, Utf8PathBuf, Utf8PathBuf) {
    let p =
        Project::new(&format!("[gate]\nbackend = \"command\"\nsettle_secs = 0\nretries = 0\ngrace_secs = {grace}\n"));
    let pidfile = p.scratch.path.join("console.pid");
    let on_term = match term_secs {
        Some(s) => format!("trap 'sleep {s}; exit 0' TERM"),
        None => "trap '' TERM".to_owned(),
    };
    let script = p.scratch.path.join("console");
    write_script(
        &script,
        &format!(
            "#!/bin/sh\n# A console slow to stop.\n{on_term}\necho $$ > '{pidfile}'\nprintf 'Trying to mount root from x\\r\\n'\nwhile :; do sleep 0.1; done\n"
        ),
    );
    (p, script, pidfile)
}

/// Starts the gate on `console` with plain output, in its own process group, and waits
/// for the console to run.
fn start_gate(p: &Project, console: &Utf8PathBuf, pidfile: &Utf8PathBuf) -> std::process::Child {
    let mut cmd: Command = p.command(&["gate", "--", console.as_str()]);
    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).process_group(0);
    let child = cmd.spawn().unwrap();
    wait_for("the console to start", Duration::from_secs(20), || pidfile.exists());
    std::thread::sleep(Duration::from_millis(300));
    child
}

#[test]
fn ctrl_c_during_a_teardown_says_what_it_waits_for_and_for_how_long() {
    let (p, console, pidfile) = stubborn_console(5, Some(1));
    let child = start_gate(&p, &console, &pidfile);
    // SAFETY: Ctrl-C to the process group we started.
    unsafe { libc::killpg(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains(&format!("[gate] waiting up to 5.0s for `{console}` (process group "))
            && stderr.contains("to exit after SIGTERM, then SIGKILL; interrupt again (Ctrl-C) to stop waiting"),
        "{stderr}"
    );

    // On a terminal the bars go first: while it waits, the screen shows the wait, not a spinner.
    std::fs::remove_file(&pidfile).unwrap();
    let (p, console, pidfile) = stubborn_console(5, Some(3));
    let run = on_terminal(&p, &["gate", "--", console.as_str()], false);
    wait_for("the console to start", Duration::from_secs(20), || pidfile.exists());
    run.wait_for_output("marker 1/4", Duration::from_secs(20));
    // SAFETY: Ctrl-C to the process group we started.
    unsafe { libc::killpg(run.child.id() as i32, libc::SIGINT) };
    run.wait_for_output("interrupt again (Ctrl-C)", Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));
    let screen = terminal::screen(&run.output());
    assert!(screen.contains("waiting up to 5.0s for"), "{screen}");
    assert!(!screen.chars().any(|c| ('\u{2800}'..='\u{28ff}').contains(&c)), "a spinner still spins:\n{screen}");
    let (status, _) = run.wait();
    assert_eq!(status.code(), Some(130));
}

#[test]
fn a_second_ctrl_c_abandons_the_teardown() {
    let (p, console, pidfile) = stubborn_console(60, None);
    let child = start_gate(&p, &console, &pidfile);
    let console_pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    // SAFETY: Ctrl-C to the process group we started, twice.
    unsafe { libc::killpg(child.id() as i32, libc::SIGINT) };
    std::thread::sleep(Duration::from_millis(500));
    let second = Instant::now();
    // SAFETY: as above.
    unsafe { libc::killpg(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(second.elapsed() < Duration::from_secs(10), "the second Ctrl-C did not end the wait:\n{stderr}");
    assert!(stderr.contains("waiting up to 1m 00s for"), "{stderr}");
    assert!(stderr.contains("interrupted again: killing what is left, without waiting"), "{stderr}");
    wait_for("the console to be killed", Duration::from_secs(5), || !test_support::alive(console_pid));
}
