//! Probes: after the last marker the gate logs in on the serial console and runs
//! commands on the guest, each with the exit status or output it must give and a time
//! limit. A quiet console proves nothing (a daemon that crashed after syslogd started
//! leaves no line on a stock console: docs/reference/boot-gate.md, "What a console can
//! and cannot show"); asking the guest does.
//!
//! The exchange is our own, on top of the console stream the backends give (a pipe in,
//! a pipe out), not a crate such as expectrl: those spawn and own the process, with a
//! pty, which would bypass `proc` and the scanner that must keep reading the same bytes.
//! [`Exchange`] is a state machine without processes or clocks of its own: the session
//! feeds it console bytes and the time, and sends what it asks for.
//!
//! The exchange (docs/reference/boot-gate.md, "Probes"):
//! 1. wait for getty's `login: ` at the end of the console's unfinished line; send the
//!    account name;
//! 2. `Password:` gets the password from its file (once: a second prompt, `Login
//!    incorrect` or `login: ` again is a refusal); a cursor position request (root's
//!    .profile runs `resizewin`) is answered;
//! 3. once the shell prompt ends the unfinished line, ping the shell until it answers
//!    (`resizewin` throws away whatever was typed before it ran);
//! 4. run each command as
//!    `printf '__mb_%s_begin\n' NONCE; (CMD) </dev/null 2>&1; printf '\n__mb_%s_end_%s\n' NONCE $?`:
//!    its output is what comes between the two marker lines, its status the number in
//!    the second. The echoed command holds `%s` where the output holds the nonce, a
//!    random number per run, so neither the echo nor the guest can forge an answer.
//!
//! Everything is bounded: one line at a time (cut at [`MAX_LINE`]), at most
//! [`OUTPUT_LIMIT`] bytes of each probe's output kept (the rest counted and said to be
//! cut), and every wait has a deadline.

use std::time::Duration;

use anyhow::{Context, Result};
use camino::Utf8PathBuf;
use regex::bytes::Regex;
use serde::{Deserialize, Serialize};

use super::checks::{bad_regex, compile};
use crate::config::Loaded;
use crate::stage::Plan;

mod exchange;
#[cfg(test)]
mod tests;

pub use exchange::{Action, Exchange, Failure, LoginRecord, Payload, ProbeRecord, not_run};

/// The longest line kept whole; longer ones are taken in pieces.
pub const MAX_LINE: usize = 4096;
/// Bytes of a probe's output kept for the reports.
pub const OUTPUT_LIMIT: usize = 16 * 1024;
/// The longest command line a probe may type (the guest's terminal takes lines of a
/// few hundred bytes at least; the framing adds about 100).
pub const MAX_COMMAND: usize = 400;
/// A probe, as pipeline.toml gives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    /// How reports name it; by default the command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The command line, typed into the guest's shell (one line).
    pub run: String,
    /// The exit status it must end with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i32>,
    /// A regular expression some line of its output must match (`^` is a line's start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// How long it may take, in seconds, from typing it to its exit status.
    pub within_secs: u64,
}

/// The probe every image of ours answers: colibri-daemon runs (rc.subr
/// `run_rc_command` status: `NAME is running as pid N.`, exit 0).
pub fn default_probes() -> Vec<Probe> {
    vec![Probe {
        name: Some("colibri_daemon is running".into()),
        run: "service colibri_daemon status".into(),
        status: Some(0),
        output: Some(r"^colibri_daemon is running as pid \d+\.".into()),
        within_secs: 30,
    }]
}

/// A compiled probe.
#[derive(Debug, Clone)]
pub struct ProbeCheck {
    pub name: String,
    pub run: String,
    pub status: Option<i32>,
    pub output: Option<(String, Regex)>,
    pub within: Duration,
}

/// How the probes log in, compiled.
#[derive(Debug, Clone)]
pub struct LoginCheck {
    pub user: String,
    pub password_file: Option<Utf8PathBuf>,
    pub login_prompt: Regex,
    pub prompt_pattern: String,
    pub prompt: Regex,
    pub within: Duration,
}

/// Everything the probes need: the login and the commands.
#[derive(Debug, Clone)]
pub struct Probes {
    pub login: LoginCheck,
    pub probes: Vec<ProbeCheck>,
}

impl Probes {
    /// Compiles `gate.probes` and `gate.login`; `None` when there are no probes.
    pub fn compile(loaded: &Loaded) -> Result<Option<Probes>> {
        Self::build(loaded, true)
    }

    /// Checks the settings without building the matchers (at load time).
    pub fn validate(loaded: &Loaded) -> Result<()> {
        Self::build(loaded, false).map(|_| ())
    }

    fn build(loaded: &Loaded, build: bool) -> Result<Option<Probes>> {
        let cfg = &loaded.config.gate;
        let login = &cfg.login;
        if login.user.is_empty() || !login.user.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
            return Err(loaded.error_at(
                "gate.login.user",
                format!("`{}` is not an account name (letters, digits, `.`, `_`, `-`)", login.user),
            ));
        }
        if login.within_secs == 0 {
            return Err(loaded.error_at("gate.login.within_secs", "the login has 0 seconds"));
        }
        let regex = |key: &str, what: &str, pattern: &str| -> Result<Option<Regex>> {
            if pattern.is_empty() {
                return Err(loaded.error_at(key, format!("{what} is empty (it would match everything)")));
            }
            compile(pattern, build).map(|(regex, _)| regex).map_err(|e| bad_regex(loaded, key, what, pattern, &e))
        };
        let login_prompt = regex("gate.login.login_prompt", "the login prompt", &login.login_prompt)?;
        let prompt = regex("gate.login.prompt", "the shell prompt", &login.prompt)?;
        let mut probes = Vec::new();
        for (i, p) in cfg.probes.iter().enumerate() {
            let key = format!("gate.probes.{i}");
            let name = p.name.clone().unwrap_or_else(|| p.run.clone());
            if p.run.trim().is_empty() {
                return Err(loaded.error_at(&format!("{key}.run"), format!("probe {} has no command", i + 1)));
            }
            if p.run.chars().any(char::is_control) || p.run.len() > MAX_COMMAND {
                return Err(loaded
                    .failure_at(
                        &format!("{key}.run"),
                        format!("probe `{name}` is not one line of at most {MAX_COMMAND} printable characters"),
                    )
                    .help("put a longer script into the image and run that")
                    .into());
            }
            if p.status.is_none() && p.output.is_none() {
                return Err(loaded
                    .failure_at(&key, format!("probe `{name}` expects nothing, so it would prove nothing"))
                    .help("give it the exit status (`status = 0`) or a line of output (`output = \"regex\"`) it must give")
                    .into());
            }
            if p.status.is_some_and(|s| !(0..=255).contains(&s)) {
                return Err(
                    loaded.error_at(&format!("{key}.status"), format!("probe `{name}`: an exit status is 0 to 255"))
                );
            }
            if p.within_secs == 0 {
                return Err(loaded.error_at(&format!("{key}.within_secs"), format!("probe `{name}` has 0 seconds")));
            }
            if cfg.probes[..i].iter().any(|q| q.name.clone().unwrap_or_else(|| q.run.clone()) == name) {
                return Err(loaded.error_at(&format!("{key}.name"), format!("two probes are called `{name}`")));
            }
            let output = match &p.output {
                None => None,
                Some(o) => {
                    regex(&format!("{key}.output"), &format!("probe `{name}`'s output"), o)?.map(|re| (o.clone(), re))
                }
            };
            probes.push(ProbeCheck {
                name,
                run: p.run.clone(),
                status: p.status,
                output,
                within: Duration::from_secs(p.within_secs),
            });
        }
        let (Some(login_prompt), Some(prompt)) = (login_prompt, prompt) else { return Ok(None) };
        if cfg.probes.is_empty() {
            return Ok(None);
        }
        Ok(Some(Probes {
            login: LoginCheck {
                user: login.user.clone(),
                password_file: login.password_file.as_ref().map(|p| loaded.resolve(p)),
                login_prompt,
                prompt_pattern: login.prompt.clone(),
                prompt,
                within: Duration::from_secs(login.within_secs),
            },
            probes,
        }))
    }

    /// The probes, as `--dry-run` shows them. The password file is checked (never read).
    pub fn plan(&self, steps: &mut Plan) -> Result<()> {
        let l = &self.login;
        let password = match &l.password_file {
            Some(file) => {
                check_password_file(file)?;
                format!(", with the password in {file} (mode checked; never printed, logged or copied)")
            }
            None => ", without a password".into(),
        };
        steps.check(format!(
            "after the last marker, log in on the serial console as `{}`{password}, to a shell prompt /{}/, within {}s",
            l.user,
            l.prompt_pattern,
            l.within.as_secs()
        ));
        for p in &self.probes {
            let mut wants = Vec::new();
            if let Some(s) = p.status {
                wants.push(format!("exit status {s}"));
            }
            if let Some((o, _)) = &p.output {
                wants.push(format!("a line matching /{o}/"));
            }
            steps.check(format!(
                "probe `{}`: `{}` gives {} within {}s",
                p.name,
                p.run,
                wants.join(" and "),
                p.within.as_secs()
            ));
        }
        Ok(())
    }
}

/// Checks the password file as the signing key is checked: a regular file, ours or
/// root's, mode 0600 or stricter.
pub fn check_password_file(path: &Utf8PathBuf) -> Result<()> {
    pkgrepo::key::check_secret(path, "the login password file", "the password").map_err(secret_failure)
}

/// pkgrepo's error as a failure of ours, its help line kept.
fn secret_failure(e: pkgrepo::Error) -> anyhow::Error {
    let help = e.help().unwrap_or(
        "write the password alone on the first line of a file of mode 0600, and name it in gate.login.password_file",
    );
    crate::failure::Failure::new(format!("{e:#}")).help(help).into()
}

/// Reads the password: the file's first line, without its line end.
pub fn read_password(path: &Utf8PathBuf) -> Result<pkgrepo::key::SecretBytes> {
    let secret = pkgrepo::key::read_secret(path, "the login password file", "the password").map_err(secret_failure)?;
    let bytes = secret.expose();
    let end = bytes.iter().position(|b| *b == b'\n').unwrap_or(bytes.len());
    let line = &bytes[..end];
    let len = line.strip_suffix(b"\r").unwrap_or(line).len();
    if bytes[..len].iter().any(|b| b.is_ascii_control()) || end + 1 < bytes.len() {
        anyhow::bail!(
            crate::failure!("the login password file {path} holds more than one line, or control characters")
                .help("write the password alone on its first line")
        );
    }
    Ok(secret.prefix(len))
}

/// A nonce for one run's markers: 16 hex digits from the system's random source.
pub fn nonce() -> Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom for the probes' nonce")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
