//! The crate's error: a message naming the file or value and what is wrong with it, an
//! optional help line saying what to do, and the error that caused it.

use std::error::Error as StdError;
use std::fmt;

/// An error from the caller's code: a [`Signer`](crate::sign::Signer), or the
/// [`stop`](crate::verify::Options::stop) callback. It is kept whole, causes included.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Everything that can go wrong in this crate.
///
/// `Display` shows the message; the alternate form (`{:#}`) adds each cause after `: `,
/// as `anyhow` does. The help line is data ([`Error::help`]): a reporter shows it where
/// it shows help.
/// [`source`](StdError::source) walks the causes, so an error reporter prints the whole
/// chain. The message never quotes a private key.
pub struct Error {
    message: String,
    help: Option<String>,
    source: Option<BoxError>,
    kind: Kind,
}

/// How `source` relates to the error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `source` (if any) caused it.
    Caused,
    /// It is `source` itself, passed through (an I/O error met with `?`).
    Is,
    /// It is the error of the caller's stop callback, passed through.
    Stopped,
}

/// `Result<T, pkgrepo::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error with this message and no cause.
    pub(crate) fn msg(message: impl Into<String>) -> Error {
        Error { message: message.into(), help: None, source: None, kind: Kind::Caused }
    }

    /// An error with a help line.
    pub(crate) fn with_help(message: impl Into<String>, help: impl Into<String>) -> Error {
        Error { help: Some(help.into()), ..Error::msg(message) }
    }

    /// An error caused by `source`.
    pub(crate) fn caused(message: impl Into<String>, source: impl Into<BoxError>) -> Error {
        Error { source: Some(source.into()), ..Error::msg(message) }
    }

    /// `error` itself: shows as it, with its causes.
    fn is(error: BoxError, kind: Kind) -> Error {
        Error { message: error.to_string(), help: None, source: Some(error), kind }
    }

    /// Verification stopped because the caller's callback said so: shows as the
    /// callback's own error.
    pub(crate) fn stopped(by: BoxError) -> Error {
        Error::is(by, Kind::Stopped)
    }

    /// What went wrong, without the help line or the causes.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What to do about it, when this crate knows.
    pub fn help(&self) -> Option<&str> {
        self.help.as_deref()
    }

    /// Whether verification stopped because the caller's `stop` callback failed
    /// ([`Options::stop`](crate::verify::Options::stop)); the callback's error is then
    /// this error's message, and what it was caused by its source.
    pub fn is_stopped(&self) -> bool {
        self.kind == Kind::Stopped
    }
}

/// An I/O error shows as itself.
impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Error {
        Error::is(Box::new(error), Kind::Is)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if f.alternate() {
            let mut cause = self.source();
            while let Some(c) = cause {
                write!(f, ": {c}")?;
                cause = c.source();
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:#}")
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.source {
            // The error shows as its source already: skip it as a cause.
            Some(s) if self.kind != Kind::Caused => s.source(),
            Some(s) => Some(s.as_ref()),
            None => None,
        }
    }
}

/// Adds a message in front of an error, as `anyhow::Context` does: the original error
/// becomes the cause.
pub(crate) trait Context<T> {
    fn context(self, message: impl Into<String>) -> Result<T>;
    fn with_context<M: Into<String>>(self, message: impl FnOnce() -> M) -> Result<T>;
}

impl<T, E: Into<BoxError>> Context<T> for std::result::Result<T, E> {
    fn context(self, message: impl Into<String>) -> Result<T> {
        self.map_err(|e| Error::caused(message, e))
    }

    fn with_context<M: Into<String>>(self, message: impl FnOnce() -> M) -> Result<T> {
        self.map_err(|e| Error::caused(message(), e))
    }
}

/// Returns early with an [`Error`] made from a format string.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::Error::msg(format!($($arg)*)))
    };
}
pub(crate) use bail;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_show_in_the_alternate_form_and_as_sources() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let inner: Result<()> = Err(io).context("cannot read /r/data.pkg");
        let outer = inner.context("/r is not a repository").unwrap_err();
        assert_eq!(outer.to_string(), "/r is not a repository");
        assert_eq!(format!("{outer:#}"), "/r is not a repository: cannot read /r/data.pkg: No such file or directory");
        let mut chain = vec![];
        let mut cause = outer.source();
        while let Some(c) = cause {
            chain.push(c.to_string());
            cause = c.source();
        }
        assert_eq!(chain, ["cannot read /r/data.pkg", "No such file or directory"]);
    }

    #[test]
    fn help_is_data_apart_from_the_message() {
        let e = Error::with_help("the key is a symlink", "name the file itself");
        assert_eq!(e.to_string(), "the key is a symlink");
        assert_eq!((e.message(), e.help()), ("the key is a symlink", Some("name the file itself")));
    }

    #[test]
    fn a_stop_shows_as_the_callers_error() {
        let e = Error::stopped("interrupted by SIGINT".into());
        assert!(e.is_stopped());
        assert_eq!(format!("{e:#}"), "interrupted by SIGINT");
        assert!(e.source().is_none());
    }
}
