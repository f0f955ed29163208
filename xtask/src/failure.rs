//! Failures as data: what failed, what to do about it (help lines), and which kind of
//! failure it is, which alone decides the exit status (see [`Class`]).
//!
//! Errors travel as `anyhow::Error`. A [`Failure`] is one link of such an error: its own
//! message (or none, when it only annotates the error it wraps), its help lines, its
//! class and its cause. [`crate::ui`] renders an error once: the messages of the chain,
//! then every help line found in it. Nothing parses an error's text.
//!
//! ```text
//! bail!(failure!("no signing key at {path}").help("create it: cargo xtask setup").infrastructure());
//! let text = fs::read_to_string(&path).with_context(|| format!("cannot read {path}")).help("...")?;
//! ```

use std::error::Error as StdError;
use std::fmt;

use serde::Serialize;

/// The kind of a failure; it decides the exit status (docs/runbook.md, "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// The product failed: a port that does not build, a repository that does not
    /// verify, an image that does not boot. Exit 1; never retried.
    Product,
    /// The machinery failed: a tool missing, a host not provisioned, a VM that could not
    /// start, poudriere crashed. Exit 2; may be retried.
    Infrastructure,
    /// The command line or pipeline.toml asks for something that cannot be done. Exit 2.
    Usage,
    /// Ctrl-C, SIGTERM or SIGHUP stopped the work. Exit 130.
    Interrupted,
}

impl Class {
    /// The exit status this class ends the program with.
    pub fn exit_code(self) -> u8 {
        match self {
            Class::Product => 1,
            Class::Infrastructure | Class::Usage => 2,
            Class::Interrupted => 130,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Product => "product",
            Class::Infrastructure => "infrastructure",
            Class::Usage => "usage",
            Class::Interrupted => "interrupted",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// One link of an error: a message (absent when it only annotates its cause), help
/// lines, an optional class, an optional cause.
#[derive(Debug, Default)]
pub struct Failure {
    message: Option<String>,
    help: Vec<String>,
    class: Option<Class>,
    /// Shown already (the engine printed the stage's failure): `main` only exits.
    reported: bool,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
}

impl Failure {
    /// A failure with this message.
    pub fn new(message: impl Into<String>) -> Failure {
        Failure { message: Some(message.into()), ..Failure::default() }
    }

    /// A failure that has been shown to the user already; the program ends with `class`.
    pub fn reported(class: Class) -> Failure {
        Failure {
            message: Some(format!("{class} failure (reported)")),
            class: Some(class),
            reported: true,
            ..Default::default()
        }
    }

    /// Adds a line telling the user what to do.
    pub fn help(mut self, line: impl Into<String>) -> Failure {
        self.help.push(line.into());
        self
    }

    /// Sets the class (and so the exit status).
    pub fn class(mut self, class: Class) -> Failure {
        self.class = Some(class);
        self
    }

    pub fn product(self) -> Failure {
        self.class(Class::Product)
    }

    pub fn infrastructure(self) -> Failure {
        self.class(Class::Infrastructure)
    }

    pub fn usage(self) -> Failure {
        self.class(Class::Usage)
    }

    /// Sets the cause: shown as `caused by:` under the message.
    pub fn caused_by(mut self, cause: impl Into<anyhow::Error>) -> Failure {
        self.source = Some(cause.into().into());
        self
    }

    /// The message, when this link has one of its own.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }

    pub fn help_lines(&self) -> &[String] {
        &self.help
    }

    pub fn is_reported(&self) -> bool {
        self.reported
    }

    /// An annotation around an error that has no [`Failure`] of its own: displays as the
    /// error itself, so the chain reads the same.
    fn wrap(error: anyhow::Error) -> Failure {
        // The wrapped error's own link is skipped by the chain (its message is this
        // link's), so its help lines are carried here.
        let help = help_lines(&error);
        Failure { source: Some(error.into()), help, ..Failure::default() }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.message, &self.source) {
            (Some(m), _) => f.write_str(m),
            // An annotation shows its cause's own message (the chain skips the cause).
            (None, Some(source)) => write!(f, "{source}"),
            (None, None) => f.write_str("failed"),
        }
    }
}

impl StdError for Failure {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        let source = self.source.as_deref()?;
        if self.message.is_none() {
            // Transparent: the cause's message is this link's; continue below it.
            source.source()
        } else {
            Some(source)
        }
    }
}

/// `Result` helpers to attach help and a class to any error.
pub trait ResultExt<T> {
    /// Adds a help line (to the nearest [`Failure`] in the error, or a new annotation).
    fn help(self, line: impl Into<String>) -> anyhow::Result<T>;
    /// Like [`ResultExt::help`], computing the line only on error.
    fn with_help(self, line: impl FnOnce() -> String) -> anyhow::Result<T>;
    /// Sets the class unless the error has one already (the innermost decision wins:
    /// an interrupted command stays interrupted).
    fn class(self, class: Class) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> ResultExt<T> for Result<T, E> {
    fn help(self, line: impl Into<String>) -> anyhow::Result<T> {
        self.map_err(|e| annotate(e.into(), |f| f.help.push(line.into())))
    }

    fn with_help(self, line: impl FnOnce() -> String) -> anyhow::Result<T> {
        self.map_err(|e| annotate(e.into(), |f| f.help.push(line())))
    }

    fn class(self, class: Class) -> anyhow::Result<T> {
        self.map_err(|e| {
            let e = e.into();
            if class_of(&e).is_some() { e } else { annotate(e, |f| f.class = Some(class)) }
        })
    }
}

fn annotate(mut error: anyhow::Error, change: impl FnOnce(&mut Failure)) -> anyhow::Error {
    if let Some(f) = error.downcast_mut::<Failure>() {
        change(f);
        return error;
    }
    let mut f = Failure::wrap(error);
    change(&mut f);
    f.into()
}

/// Every [`Failure`] in an error, outermost first.
fn failures(err: &anyhow::Error) -> Vec<&Failure> {
    // `downcast_ref` also finds a Failure used as anyhow context; the chain finds the
    // ones below it.
    let candidates = err.downcast_ref::<Failure>().into_iter().chain(err.chain().filter_map(|e| e.downcast_ref()));
    let mut found: Vec<&Failure> = Vec::new();
    for f in candidates {
        if !found.iter().any(|g| std::ptr::eq(*g, f)) {
            found.push(f);
        }
    }
    found
}

/// The class an error carries: the outermost [`Failure`] with one, or interrupted when a
/// stop signal ended a command.
pub fn class_of(err: &anyhow::Error) -> Option<Class> {
    if let Some(class) = failures(err).iter().find_map(|f| f.class) {
        return Some(class);
    }
    if err.chain().any(|e| e.downcast_ref::<crate::proc::Interrupted>().is_some()) {
        return Some(Class::Interrupted);
    }
    None
}

/// Whether the error has been shown already (see [`Failure::reported`]).
pub fn is_reported(err: &anyhow::Error) -> bool {
    failures(err).iter().any(|f| f.reported)
}

/// Every help line in an error, outermost first, each once: those of its [`Failure`]s
/// and those of the [`pkgrepo::Error`]s it was caused by.
pub fn help_lines(err: &anyhow::Error) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    let mut add = |line: &str| {
        if !lines.iter().any(|l| l == line) {
            lines.push(line.to_owned());
        }
    };
    for f in failures(err) {
        f.help.iter().for_each(|line| add(line));
    }
    let repo = err.downcast_ref::<pkgrepo::Error>().into_iter().chain(err.chain().filter_map(|e| e.downcast_ref()));
    for e in repo {
        if let Some(line) = e.help() {
            add(line);
        }
    }
    lines
}

/// A [`Failure`] with a formatted message: `bail!(failure!("no key at {path}").help("..."))`.
#[macro_export]
macro_rules! failure {
    ($($arg:tt)*) => {
        $crate::failure::Failure::new(format!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn help_is_found_through_context_and_causes() {
        let inner: anyhow::Result<()> = Err(Failure::new("the key is readable by others").help("chmod 600 KEY").into());
        let err = inner.context("cannot sign").unwrap_err();
        assert_eq!(help_lines(&err), ["chmod 600 KEY"]);
        let messages: Vec<String> = err.chain().map(|e| e.to_string()).collect();
        assert_eq!(messages, ["cannot sign", "the key is readable by others"]);
    }

    #[test]
    fn an_annotation_keeps_the_chain_as_it_was() {
        let plain: anyhow::Result<()> = Err(anyhow::anyhow!("disk full")).context("cannot write state.json");
        let err = plain.help("free some space").class(Class::Infrastructure).unwrap_err();
        let messages: Vec<String> = err.chain().map(|e| e.to_string()).collect();
        assert_eq!(messages, ["cannot write state.json", "disk full"]);
        assert_eq!(help_lines(&err), ["free some space"]);
        assert_eq!(class_of(&err), Some(Class::Infrastructure));
    }

    #[test]
    fn the_innermost_class_is_kept() {
        let err: anyhow::Result<()> = Err(Failure::new("guest panicked").product().into());
        let err = err.class(Class::Infrastructure).unwrap_err();
        assert_eq!(class_of(&err), Some(Class::Product));
        assert_eq!(class_of(&anyhow::anyhow!("plain")), None);
    }

    #[test]
    fn a_class_keeps_the_help_of_a_pkgrepo_error() {
        let key = tempfile::tempdir().unwrap();
        let path = camino::Utf8PathBuf::from_path_buf(key.path().join("k")).unwrap();
        std::os::unix::fs::symlink("/nonexistent", &path).unwrap();
        let err = pkgrepo::key::check_private_key(&path).map_err(anyhow::Error::from);
        let help = help_lines(err.as_ref().unwrap_err());
        assert!(!help.is_empty(), "pkgrepo gives help for a symlinked key");
        let err = err.class(Class::Infrastructure).unwrap_err();
        assert_eq!(help_lines(&err), help);
        assert_eq!(class_of(&err), Some(Class::Infrastructure));
    }

    #[test]
    fn exit_codes_follow_the_runbook() {
        assert_eq!(Class::Product.exit_code(), 1);
        assert_eq!(Class::Infrastructure.exit_code(), 2);
        assert_eq!(Class::Usage.exit_code(), 2);
        assert_eq!(Class::Interrupted.exit_code(), 130);
    }
}
