//! The probes' tests: settings refused at load, the login with and without a password,
//! prompts split and hidden, refusals, and each probe's status, output and deadline.

use std::time::Instant;

use super::exchange::{PASSWORD_QUIET, SHELL_QUIET};
use super::*;
use crate::config::Config;

fn probes(extra: &str) -> Probes {
    let config: Config = toml::from_str(&format!("[gate]\n{extra}\n")).unwrap();
    let loaded = Loaded::from_parts(config, "pipeline.toml".into(), ".".into());
    Probes::validate(&loaded).unwrap();
    Probes::compile(&loaded).unwrap().unwrap()
}

/// A guest for the exchange: what it was sent, and the clock.
struct Guest<'p> {
    x: Exchange<'p>,
    now: Instant,
    sent: Vec<String>,
}

impl<'p> Guest<'p> {
    fn new(p: &'p Probes, password: bool, line: &[u8], at_prompt: bool) -> Guest<'p> {
        let now = Instant::now();
        Guest { x: Exchange::new(p, password, "0123456789abcdef", line, at_prompt, now), now, sent: Vec::new() }
    }

    /// The console prints `bytes`; returns what the exchange then sends.
    fn print(&mut self, bytes: &[u8]) -> Vec<String> {
        self.now += Duration::from_millis(10);
        self.x.feed(bytes, self.now);
        self.x.check();
        self.drain()
    }

    fn drain(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Action::Send { payload, .. } = self.x.next(self.now) {
            out.push(match payload {
                Payload::Text(t) => String::from_utf8(t).unwrap(),
                Payload::Password => "<password>".into(),
            });
        }
        self.sent.extend(out.clone());
        out
    }

    fn later(&mut self, d: Duration) -> Action {
        self.now += d;
        self.x.next(self.now)
    }

    /// Logs in without a password and answers the ping.
    fn log_in(&mut self) {
        assert_eq!(self.drain(), ["root\r"]);
        let sent = self.print(b"root\r\nLast login: Thu Jan  1 00:00:00 on ttyu0\r\nroot@clawdie:~ # ");
        assert_eq!(sent, ["printf '__mb_%s_ready\\n' 0123456789abcdef\r"]);
        let sent = self.print(b"printf '__mb_%s_ready\\n' 0123456789abcdef\r\n__mb_0123456789abcdef_ready\r\n");
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert!(sent[0].starts_with("printf '__mb_%s_begin\\n' 0123456789abcdef; ("), "{sent:?}");
    }

    /// The shell runs the command: the echo, the framing, `output`, its status.
    fn answer(&mut self, output: &str, status: i32) -> Vec<String> {
        let echo = self.sent.last().unwrap().trim_end_matches('\r').to_owned();
        let text = format!(
            "{echo}\r\n__mb_0123456789abcdef_begin\r\n{output}\r\n__mb_0123456789abcdef_end_{status}\r\nroot@clawdie:~ # "
        );
        self.print(text.as_bytes())
    }
}

const ONE: &str = "probes = [{ name = 'daemon', run = 'service colibri_daemon status', status = 0, output = '^colibri_daemon is running as pid \\d+\\.', within_secs = 5 }]";

#[test]
fn a_login_without_password_then_a_passing_probe() {
    let p = probes(ONE);
    let mut g = Guest::new(&p, false, b"clawdie login: ", true);
    g.log_in();
    assert_eq!(
        g.sent[2],
        "printf '__mb_%s_begin\\n' 0123456789abcdef; (service colibri_daemon status) </dev/null 2>&1; printf '\\n__mb_%s_end_%s\\n' 0123456789abcdef $?\r"
    );
    let sent = g.answer("colibri_daemon is running as pid 812.\r\n", 0);
    assert_eq!(sent, ["exit\r"]);
    assert_eq!(g.x.next(g.now), Action::Done);
    assert!(g.x.failure().is_none());
    let (login, records) = g.x.records();
    assert_eq!(login.verdict, "pass");
    assert!(!login.password_sent);
    assert_eq!(records[0].verdict, "pass");
    assert_eq!(records[0].status, Some(0));
    assert_eq!(records[0].output, "colibri_daemon is running as pid 812.");
}

#[test]
fn the_login_prompt_may_come_later() {
    let p = probes(ONE);
    let mut g = Guest::new(&p, false, b"", false);
    assert!(g.drain().is_empty());
    // getty's banner, then its prompt split across reads.
    assert!(g.print(b"\r\nFreeBSD/amd64 (clawdie) (ttyu0)\r\n\r\nlog").is_empty());
    assert_eq!(g.print(b"in: "), ["root\r"]);
    g.sent.clear();
}

#[test]
fn a_password_is_sent_once_and_a_refusal_fails() {
    let p = probes(ONE);
    let mut g = Guest::new(&p, true, b"login: ", true);
    assert_eq!(g.drain(), ["root\r"]);
    // The prompt still on the line is not the guest asking again.
    assert!(g.drain().is_empty());
    // The password waits until the console has been quiet for a moment.
    assert!(g.print(b"root\r\nPassword:").is_empty());
    // The rest of the same prompt, in another read, is not a second prompt.
    assert!(g.print(b" ").is_empty());
    assert!(matches!(g.later(Duration::from_millis(100)), Action::Wait(_)));
    assert!(matches!(g.later(Duration::from_millis(250)), Action::Send { payload: Payload::Password, .. }));
    assert!(g.x.failure().is_none());
    assert!(g.print(b"\r\nLogin incorrect\r\n").is_empty());
    let f = g.x.failure().unwrap();
    assert_eq!(f.reason, "the guest refused the login as `root`: Login incorrect");
    assert!(f.probe.is_none() && f.help.contains("gate.login.password_file"));
    assert_eq!(g.x.records().0.verdict, "fail");
    assert_eq!(g.x.records().1[0].verdict, "not-run");

    // A second `Password:` is a refusal too, and so is getty's prompt again.
    let mut g = Guest::new(&p, true, b"login: ", true);
    g.drain();
    g.print(b"root\r\nPassword:");
    g.later(PASSWORD_QUIET);
    g.print(b"\r\nPassword:");
    assert!(g.x.failure().unwrap().reason.contains("the password was asked for again"));
    let mut g = Guest::new(&p, false, b"login: ", true);
    g.drain();
    g.print(b"root\r\n\r\nclawdie login: ");
    assert!(g.x.failure().unwrap().reason.contains("the login prompt came back"));
}

#[test]
fn a_password_prompt_without_a_password_file_fails() {
    let p = probes(ONE);
    let mut g = Guest::new(&p, false, b"login: ", true);
    g.drain();
    g.print(b"root\r\nPassword:");
    let f = g.x.failure().unwrap();
    assert!(f.reason.contains("asks `root` for a password, and gate.login.password_file is unset"), "{f:?}");
}

#[test]
fn a_wrong_status_or_missing_output_fails_with_the_output() {
    let p = probes(ONE);
    let mut g = Guest::new(&p, false, b"login: ", true);
    g.log_in();
    g.answer("colibri_daemon is not running.", 1);
    let f = g.x.failure().unwrap();
    assert_eq!(f.probe, Some(0));
    assert_eq!(
        f.reason,
        "probe `daemon` (`service colibri_daemon status`) exited with status 1, not 0, and no line of its output matched /^colibri_daemon is running as pid \\d+\\./"
    );
    let r = &g.x.records().1[0];
    assert_eq!((r.verdict, r.status, r.output.as_str()), ("fail", Some(1), "colibri_daemon is not running."));

    // The right status, the wrong words.
    let mut g = Guest::new(&p, false, b"login: ", true);
    g.log_in();
    g.answer("colibri_daemon is running as pid soon", 0);
    assert!(
        g.x.failure()
            .unwrap()
            .reason
            .ends_with("no line of its output matched /^colibri_daemon is running as pid \\d+\\./")
    );
}

#[test]
fn the_echo_and_other_nonces_cannot_answer() {
    let p = probes(ONE);
    let mut g = Guest::new(&p, false, b"login: ", true);
    g.log_in();
    let echo = g.sent.last().unwrap().clone();
    // The echoed command, a forged marker and one with another nonce: no answer.
    let forged = format!("{echo}\n__mb_0123456789abcdef_end_0 (before the begin)\n__mb_ffffffffffffffff_begin\n");
    assert!(g.print(forged.as_bytes()).is_empty());
    assert!(!g.x.is_done());
    assert!(g.print(b"__mb_0123456789abcdef_begin\nx\n__mb_ffffffffffffffff_end_0\n").is_empty());
    assert!(!g.x.is_done());
    assert_eq!(g.print(b"colibri_daemon is running as pid 9.\n__mb_0123456789abcdef_end_0\n"), ["exit\r"]);
    assert!(g.x.failure().is_none());
    // Only what came between the markers is its output.
    assert_eq!(g.x.records().1[0].output, "x\n__mb_ffffffffffffffff_end_0\ncolibri_daemon is running as pid 9.");
}

#[test]
fn probes_and_the_login_time_out() {
    let p = probes(ONE);
    let mut g = Guest::new(&p, false, b"login: ", true);
    g.log_in();
    let sent = g.now;
    g.print(b"__mb_0123456789abcdef_begin\r\nworking...\r\n");
    assert_eq!(g.later(Duration::from_secs(4)), Action::Wait(sent + Duration::from_secs(5)));
    assert_eq!(g.later(Duration::from_secs(2)), Action::Done);
    let f = g.x.failure().unwrap();
    assert_eq!(f.reason, "probe `daemon` (`service colibri_daemon status`) did not finish within 5s");
    assert_eq!(g.x.records().1[0].output, "working...");

    let p = probes(&format!("{ONE}\nlogin = {{ within_secs = 3 }}"));
    let mut g = Guest::new(&p, false, b"", false);
    assert!(matches!(g.later(Duration::from_secs(2)), Action::Wait(_)));
    assert_eq!(g.later(Duration::from_secs(2)), Action::Done);
    assert_eq!(
        g.x.failure().unwrap().reason,
        "the login prompt did not appear within 3s after the last marker (gate.login.within_secs)"
    );
}

#[test]
fn a_prompt_hidden_by_a_syslog_line_is_found_by_a_ping() {
    let p = probes(ONE);
    let mut g = Guest::new(&p, false, b"login: ", true);
    g.drain();
    // syslogd writes root's login onto the prompt's line, in the same read.
    let hidden = b"root\r\nroot@clawdie:~ # Jan  1 00:00:09 clawdie login[901]: ROOT LOGIN (root) ON ttyu0\r\n";
    assert!(g.print(hidden).is_empty());
    assert!(matches!(g.later(Duration::from_secs(4)), Action::Wait(_)));
    let Action::Send { payload: Payload::Text(ping), .. } = g.later(Duration::from_secs(1)) else { panic!() };
    assert!(String::from_utf8(ping).unwrap().contains("__mb_%s_ready"));

    // A login that only paused (busybox waits 3 s before `Login incorrect`) is
    // still refused when it speaks.
    let mut g = Guest::new(&p, true, b"login: ", true);
    g.drain();
    g.print(b"root\r\nPassword:");
    g.later(PASSWORD_QUIET);
    g.print(b"\r\n");
    g.later(SHELL_QUIET);
    g.print(b"Login incorrect\r\n");
    assert!(g.x.failure().unwrap().reason.ends_with("Login incorrect"));
}

#[test]
fn the_shell_is_pinged_until_it_answers() {
    let p = probes(ONE);
    let mut g = Guest::new(&p, false, b"login: ", true);
    g.drain();
    // resizewin asks for the cursor position and is answered; then the prompt.
    assert_eq!(g.print(b"root\r\n\x1b7\x1b[r\x1b[999;999H\x1b[6n\x1b8"), ["\x1b[24;80R"]);
    assert_eq!(g.print(b"root@clawdie:~ # ").len(), 1);
    // The ping was thrown away: another one after a while, not before.
    assert!(matches!(g.later(Duration::from_secs(1)), Action::Wait(_)));
    let Action::Send { payload: Payload::Text(ping), .. } = g.later(Duration::from_secs(2)) else { panic!() };
    assert!(String::from_utf8(ping).unwrap().contains("__mb_%s_ready"));
}

#[test]
fn output_is_kept_up_to_its_limit_and_said_to_be_cut() {
    let p = probes("probes = [{ run = 'yes', output = 'never', within_secs = 5 }]");
    let mut g = Guest::new(&p, false, b"login: ", true);
    g.log_in();
    g.print(b"__mb_0123456789abcdef_begin\n");
    let line = vec![b'y'; 1000];
    for _ in 0..100 {
        g.print(&line);
        g.print(b"\n");
    }
    // An endless line is taken in pieces too.
    g.print(&vec![b'z'; 3 * MAX_LINE]);
    g.print(b"\n__mb_0123456789abcdef_end_0\n");
    let r = &g.x.records().1[0];
    assert!(r.output_cut && r.output.len() <= OUTPUT_LIMIT, "{}", r.output.len());
    assert_eq!(r.output_bytes, 100 * 1001 + 3 * MAX_LINE as u64 + 1);
    assert_eq!(g.x.failure().unwrap().reason, "probe `yes` (`yes`) no line of its output matched /never/");
}

#[test]
fn bad_probe_settings_are_refused() {
    let refused = |extra: &str| {
        let config: Config = toml::from_str(&format!("[gate]\n{extra}\n")).unwrap();
        Probes::validate(&Loaded::from_parts(config, "pipeline.toml".into(), ".".into())).is_err()
    };
    assert!(refused("probes = [{ run = 'true', within_secs = 5 }]"));
    assert!(refused("probes = [{ run = '', status = 0, within_secs = 5 }]"));
    assert!(refused("probes = [{ run = \"a\\nb\", status = 0, within_secs = 5 }]"));
    assert!(refused("probes = [{ run = 'true', status = 0, within_secs = 0 }]"));
    assert!(refused("probes = [{ run = 'true', status = 256, within_secs = 5 }]"));
    assert!(refused("probes = [{ run = 'true', output = '(', within_secs = 5 }]"));
    assert!(refused(
        "probes = [{ run = 'true', status = 0, within_secs = 5 }, { run = 'true', status = 1, within_secs = 5 }]"
    ));
    assert!(refused("login = { user = 'root; reboot' }"));
    assert!(refused("login = { prompt = '' }"));
    // No probes: no login either.
    let config: Config = toml::from_str("[gate]\nprobes = []\n").unwrap();
    assert!(Probes::compile(&Loaded::from_parts(config, "p".into(), ".".into())).unwrap().is_none());
}
