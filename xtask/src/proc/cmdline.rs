//! Command lines: [`CmdLine`], the one way it becomes a `std::process::Command`, why a
//! program could not start, short commands run to completion, and what a command did
//! ([`Output`]).

use crate::failure::Failure;
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, anyhow};
use camino::{Utf8Path, Utf8PathBuf};
use serde::{Deserialize, Serialize};

use crate::config::{Tool, Tools};
use crate::run::Log;

/// A command: program, arguments, working directory and extra environment. Never a
/// shell string: it is executed as this exact argument vector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmdLine {
    pub program: String,
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<Utf8PathBuf>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

impl CmdLine {
    pub fn new(program: impl Into<String>) -> CmdLine {
        CmdLine { program: program.into(), args: Vec::new(), cwd: None, env: BTreeMap::new() }
    }

    /// The configured path of `tool`.
    pub fn tool(tools: &Tools, tool: Tool) -> CmdLine {
        CmdLine::new(tools.get(tool))
    }

    pub fn arg(mut self, arg: impl Into<String>) -> CmdLine {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> CmdLine
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn cwd(mut self, dir: impl Into<Utf8PathBuf>) -> CmdLine {
        self.cwd = Some(dir.into());
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> CmdLine {
        self.env.insert(key.into(), value.into());
        self
    }

    /// The one way a `CmdLine` becomes a `std::process::Command`: program, arguments,
    /// working directory (this process's when none is set), extra environment, a null
    /// stdin. Every process this module starts is made here, whatever starts it next.
    ///
    /// xshell's `cmd!` makes it, splicing the arguments in as a vector (never through a
    /// shell); std or duct start it, because xshell's own runner keeps the `io::Error` of
    /// a failed spawn to itself, and its kind is what tells a missing program from a
    /// broken one ([`CmdLine::spawn_error`]).
    pub(super) fn command(&self) -> Result<Command> {
        let sh = xshell::Shell::new().context("cannot set up the command runner")?;
        if let Some(dir) = &self.cwd {
            sh.change_dir(dir);
        }
        let (program, args) = (&self.program, &self.args);
        // The one use of `cmd!` (and of the `Shell::cmd` it expands to): every command
        // is made here (see above).
        #[allow(clippy::disallowed_macros, clippy::disallowed_methods)]
        let cmd = xshell::cmd!(sh, "{program} {args...}").envs(&self.env);
        let mut cmd = Command::from(cmd);
        cmd.stdin(Stdio::null());
        Ok(cmd)
    }

    /// Why this command could not start, told by the kind of the spawn's error.
    pub(super) fn spawn_error(&self, e: io::Error) -> anyhow::Error {
        let program = &self.program;
        // The kernel says ENOENT for a missing working directory too.
        let missing_dir = self.cwd.as_ref().filter(|dir| !dir.is_dir());
        match (e.kind(), missing_dir) {
            (io::ErrorKind::NotFound, Some(dir)) => {
                anyhow!("cannot run `{self}`: its working directory {dir} does not exist")
            }
            (io::ErrorKind::NotFound, None) => Failure::new(format!("cannot run `{program}`: program not found"))
                .help("install it, or set its path in [tools] of pipeline.toml")
                .infrastructure()
                .into(),
            (io::ErrorKind::PermissionDenied, _) => {
                Failure::new(format!("cannot run `{program}`: permission denied (not an executable file?)"))
                    .help("make it executable, or set its path in [tools] of pipeline.toml")
                    .infrastructure()
                    .into()
            }
            _ => anyhow!("cannot run `{self}`: {e}"),
        }
    }

    /// Runs a short command to completion and returns its output, whatever its exit
    /// status. Both streams go to the log.
    pub fn output(&self, log: &Log) -> Result<Output> {
        log.line(&format!("$ {self}"));
        let output = self.captured(None)?;
        output.log_to(log);
        Ok(output)
    }

    /// Runs a short command with `input` on its stdin. Stderr goes to the log; stdout
    /// is returned but not logged (it may be binary, such as a signature).
    pub fn output_with_input(&self, log: &Log, input: &[u8]) -> Result<Output> {
        log.line(&format!("$ {self}   (stdin: {} bytes; stdout not logged)", input.len()));
        let output = self.captured(Some(input))?;
        log.bytes(&output.stderr);
        log.line(&format!("[{}]", output.describe_status()));
        Ok(output)
    }

    /// Runs to completion with both streams captured and `input`, if any, on stdin.
    fn captured(&self, input: Option<&[u8]>) -> Result<Output> {
        let mut cmd = self.command()?;
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        if input.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let mut child =
            super::strays::spawn_owned(|| cmd.spawn(), |c| vec![c.id()]).map_err(|e| self.spawn_error(e))?;
        let pid = child.id();
        let stdin = child.stdin.take();
        let (out, written) = std::thread::scope(|s| {
            // Written from a thread: a command that prints much before it has read all its
            // input would wait for us while we wait for it.
            let writer = input.zip(stdin).map(|(input, mut stdin)| s.spawn(move || stdin.write_all(input)));
            let out = child.wait_with_output();
            (out, writer.map(|w| w.join()))
        });
        super::strays::disown(pid);
        let out = out.map_err(|e| anyhow!("cannot wait for `{self}`: {e}"))?;
        match written {
            Some(Ok(Err(e))) => return Err(anyhow!("cannot write to the stdin of `{self}`: {e}")),
            Some(Err(_)) => return Err(anyhow!("cannot write to the stdin of `{self}`: the writer panicked")),
            Some(Ok(Ok(()))) | None => {}
        }
        Ok(Output::from(out))
    }

    /// Runs a short command and fails unless it exits 0. The error names the command,
    /// its status and the last lines it printed.
    pub fn run(&self, log: &Log) -> Result<Output> {
        let out = self.output(log)?;
        if out.success() { Ok(out) } else { Err(anyhow!("{}", self.failure(&out))) }
    }

    /// Runs a short command and returns its stdout (trimmed of the final newline).
    pub fn read(&self, log: &Log) -> Result<String> {
        let out = self.run(log)?;
        let mut s = String::from_utf8(out.stdout).map_err(|_| anyhow!("`{self}` printed output that is not UTF-8"))?;
        while s.ends_with('\n') {
            s.pop();
        }
        Ok(s)
    }

    /// The message for a command that exited unsuccessfully.
    pub fn failure(&self, out: &Output) -> String {
        let mut msg = format!("`{self}` {}", out.describe_status());
        if let Some(dir) = &self.cwd {
            msg.push_str(&format!(" (in {dir})"));
        }
        let tail = tail_lines(&[&out.stderr[..], &out.stdout[..]].concat(), 10);
        if !tail.is_empty() {
            msg.push_str(":\n");
            msg.push_str(&tail);
        }
        msg
    }
}

/// Shows the command as a shell would read it (for display only; never executed).
impl fmt::Display for CmdLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (k, v) in &self.env {
            write!(f, "{}={} ", k, quote(v))?;
        }
        f.write_str(&quote(&self.program))?;
        for a in &self.args {
            write!(f, " {}", quote(a))?;
        }
        Ok(())
    }
}

/// Quotes a word for display in the style of sh.
pub fn quote(word: &str) -> String {
    let plain = !word.is_empty() && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%^".contains(&b));
    if plain { word.to_owned() } else { format!("'{}'", word.replace('\'', r"'\''")) }
}

/// What a command did.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code, if it exited.
    pub status: Option<i32>,
    /// Signal, if one killed it.
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl From<std::process::Output> for Output {
    fn from(out: std::process::Output) -> Output {
        Output {
            status: out.status.code(),
            signal: std::os::unix::process::ExitStatusExt::signal(&out.status),
            stdout: out.stdout,
            stderr: out.stderr,
        }
    }
}

impl Output {
    /// Both streams and the status, into the log.
    pub(super) fn log_to(&self, log: &Log) {
        log.bytes(&self.stdout);
        log.bytes(&self.stderr);
        log.line(&format!("[{}]", self.describe_status()));
    }

    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    pub fn describe_status(&self) -> String {
        match (self.status, self.signal) {
            (Some(c), _) => format!("exited with status {c}"),
            (None, Some(s)) => format!("was killed by signal {s}"),
            (None, None) => "ended with an unknown status".into(),
        }
    }

    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// The last `n` non-empty lines of some output, indented for an error message.
pub fn tail_lines(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].iter().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n")
}

/// Finds a program on PATH (or checks an explicit path) without running it.
pub fn find_program(program: &str) -> Option<Utf8PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable =
        |p: &Utf8Path| p.metadata().map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false);
    if program.contains('/') {
        let p = Utf8PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':').filter(|d| !d.is_empty()).map(|d| Utf8Path::new(d).join(program)).find(|p| executable(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_only_what_needs_it() {
        let c = CmdLine::new("poudriere").args(["bulk", "-j", "clawdie-amd64", "it's here", ""]);
        assert_eq!(c.to_string(), r"poudriere bulk -j clawdie-amd64 'it'\''s here' ''");
    }

    fn spawn_failure(cmd: &CmdLine) -> String {
        crate::ui::render_error(&cmd.captured(None).expect_err("the command cannot start"))
    }

    #[test]
    fn a_missing_program_is_named_with_where_to_set_its_path() {
        let err = CmdLine::new("/nonexistent/poudriere").arg("bulk").captured(None).unwrap_err();
        assert_eq!(err.to_string(), "cannot run `/nonexistent/poudriere`: program not found");
        assert_eq!(crate::failure::help_lines(&err), ["install it, or set its path in [tools] of pipeline.toml"]);
        assert_eq!(crate::failure::class_of(&err), Some(crate::failure::Class::Infrastructure));
        let msg = spawn_failure(&CmdLine::new("mother-build-no-such-program"));
        assert!(msg.starts_with("cannot run `mother-build-no-such-program`: program not found\n"), "{msg}");
    }

    #[test]
    fn a_program_that_is_not_executable_is_told_from_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("poudriere");
        std::fs::write(&file, "#!/bin/sh\n").unwrap();
        let file = file.to_str().unwrap();
        let msg = spawn_failure(&CmdLine::new(file));
        assert!(msg.starts_with(&format!("cannot run `{file}`: permission denied")), "{msg}");
    }

    #[test]
    fn a_missing_working_directory_is_not_a_missing_program() {
        let msg = spawn_failure(&CmdLine::new("true").cwd("/nonexistent/dir"));
        assert_eq!(msg, "cannot run `true`: its working directory /nonexistent/dir does not exist");
    }

    #[test]
    fn input_and_output_flow_together_without_a_deadlock() {
        // More than a pipe holds, both ways: `cat` writes while we are still writing.
        let input: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
        let out = CmdLine::new("cat").captured(Some(&input)).unwrap();
        assert!(out.success());
        assert!(out.stdout == input, "cat gave back {} bytes of {}", out.stdout.len(), input.len());
    }

    #[test]
    fn the_working_directory_and_environment_reach_the_program() {
        let dir = tempfile::tempdir().unwrap();
        let dir = Utf8Path::from_path(dir.path()).unwrap().canonicalize_utf8().unwrap();
        let out =
            CmdLine::new("sh").args(["-c", "pwd; echo \"$MB_TEST\""]).cwd(&dir).env("MB_TEST", "a b").captured(None);
        assert_eq!(out.unwrap().stdout_str(), format!("{dir}\na b\n"));
    }
}
