//! Templates of the files publish writes for clients and the operator (the client repo
//! conf, the nginx server block): `{{NAME}}` placeholders filled from a fixed list of
//! values. Every placeholder of the template must have a value and every value its
//! placeholder, and a value that would break the syntax of the place it lands in is
//! refused, naming the setting it came from: a bad setting never yields a broken file.
//! The syntax facts: docs/reference/publish-tools.md.

use std::fmt;

/// The built-in client repo conf (pkg's UCL).
pub const REPO_CONF: &str = include_str!("templates/repo.conf.in");
/// The built-in nginx server block, plain HTTP.
pub const NGINX: &str = include_str!("templates/nginx.conf.in");
/// The built-in nginx server block with TLS (and a plain HTTP server that redirects).
pub const NGINX_TLS: &str = include_str!("templates/nginx-tls.conf.in");
/// The built-in nginx server block while the TLS certificate does not exist yet: only
/// the ACME challenge on port 80.
pub const NGINX_ACME: &str = include_str!("templates/nginx-acme.conf.in");

/// Where a value lands, which decides the characters it may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// One word of an nginx directive, unquoted. nginx's tokenizer
    /// (`ngx_conf_read_token`, src/core/ngx_conf_file.c) ends a word at whitespace, `;`
    /// and `{`; `}`, `#`, `"` and `'` start something else, `\` escapes, and `$` starts a
    /// variable in `root` and `ssl_certificate`.
    NginxWord,
    /// Inside a `"..."` string of pkg's UCL: libucl (`ucl_lex_json_string`,
    /// src/ucl_parser.c) ends it at `"`, escapes with `\` and refuses raw control
    /// characters. `$` stays: pkg expands `${ABI}` on purpose.
    UclString,
    /// A bare UCL key (libucl's `UCL_CHARACTER_KEY` table, src/ucl_chartable.h) that is
    /// also a file name: letters, digits, `_`, `-` and `.`, starting with a letter, a
    /// digit or `_`.
    UclKey,
    /// The rest of a `#` comment line: anything but a line break or a control character.
    Comment,
}

impl Syntax {
    /// Why `value` cannot go there, if it cannot.
    fn refuse(self, value: &str) -> Option<String> {
        if value.is_empty() {
            return Some("it is empty".into());
        }
        if self == Syntax::UclKey && !value.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            return Some(format!("it starts with {}", describe(value.chars().next().unwrap_or(' '))));
        }
        let bad = value.chars().find(|&c| match self {
            Syntax::NginxWord => {
                c.is_whitespace() || c.is_control() || matches!(c, ';' | '{' | '}' | '"' | '\'' | '\\' | '$' | '#')
            }
            Syntax::UclString => c.is_control() || matches!(c, '"' | '\\'),
            Syntax::UclKey => !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')),
            Syntax::Comment => c.is_control(),
        })?;
        Some(format!("it holds {}", describe(bad)))
    }

    /// The file a value of this syntax goes into, and what the operator may write.
    fn place_and_help(self) -> (&'static str, &'static str) {
        match self {
            Syntax::NginxWord => {
                ("the nginx server block", "use a value without whitespace, quotes, `;`, `{`, `}`, `#`, `$` or `\\`")
            }
            Syntax::UclString => {
                ("a quoted string of the client repo conf", "use a value without `\"`, `\\` or line breaks")
            }
            Syntax::UclKey => (
                "the client repo conf as the repository's name (and its file name)",
                "use letters, digits, `_`, `-` and `.`, starting with a letter, a digit or `_`",
            ),
            Syntax::Comment => ("a comment line", "use a value without line breaks or control characters"),
        }
    }
}

fn describe(c: char) -> String {
    match c {
        '\n' => "a line break".into(),
        '\r' => "a carriage return".into(),
        '\t' => "a tab".into(),
        ' ' => "a space".into(),
        c if c.is_control() || c.is_whitespace() => format!("the character U+{:04X}", c as u32),
        c => format!("`{c}`"),
    }
}

/// A placeholder's value and where it came from.
#[derive(Debug, Clone)]
pub struct Value {
    /// `NAME` of `{{NAME}}`.
    pub placeholder: &'static str,
    pub text: String,
    /// The setting the value comes from (`publish.tls_certificate`), named in errors.
    pub setting: &'static str,
    pub syntax: Syntax,
}

impl Value {
    pub fn new(placeholder: &'static str, text: impl Into<String>, setting: &'static str, syntax: Syntax) -> Value {
        Value { placeholder, text: text.into(), setting, syntax }
    }
}

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// A value would break the file's syntax: the setting must change.
    Unsafe { setting: &'static str, value: String, why: String, syntax: Syntax },
    /// The template names a placeholder that has no value.
    Unknown { source: String, line: usize, placeholder: String, known: Vec<&'static str> },
    /// `{{` without `}}` on the same line.
    Unclosed { source: String, line: usize },
    /// A value's placeholder does not appear in the template.
    Missing { source: String, placeholder: &'static str },
}

impl RenderError {
    /// The setting to point the error at, when a value is at fault.
    pub fn setting(&self) -> Option<&'static str> {
        match self {
            RenderError::Unsafe { setting, .. } => Some(setting),
            _ => None,
        }
    }
}

impl RenderError {
    /// What to do about it, when there is something to say.
    pub fn help(&self) -> Option<String> {
        match self {
            RenderError::Unsafe { syntax, .. } => Some(syntax.place_and_help().1.to_owned()),
            RenderError::Unknown { known, .. } => {
                let known: Vec<String> = known.iter().map(|k| format!("{{{{{k}}}}}")).collect();
                Some(format!("the placeholders are {}", known.join(", ")))
            }
            RenderError::Unclosed { .. } => None,
            RenderError::Missing { placeholder, .. } => {
                Some(format!("put {{{{{placeholder}}}}} where the value belongs"))
            }
        }
    }
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenderError::Unsafe { setting, value, why, syntax } => {
                let (place, _) = syntax.place_and_help();
                write!(f, "{setting} {value:?} cannot go into {place}: {why}; nothing was written")
            }
            RenderError::Unknown { source, line, placeholder, .. } => {
                write!(f, "{source}:{line}: {{{{{placeholder}}}}} is not a placeholder of this file")
            }
            RenderError::Unclosed { source, line } => {
                write!(f, "{source}:{line}: `{{{{` without its closing `}}}}` on the same line")
            }
            RenderError::Missing { source, placeholder } => {
                write!(f, "{source} has no {{{{{placeholder}}}}}: the file would lack that value")
            }
        }
    }
}

impl std::error::Error for RenderError {}

/// Fills every `{{NAME}}` of `template` (read from `source`, named in errors) with its
/// value. Fails when a value would break its syntax, when the template has a
/// placeholder without a value, or a value has no placeholder.
pub fn render(source: &str, template: &str, values: &[Value]) -> Result<String, RenderError> {
    for v in values {
        if let Some(why) = v.syntax.refuse(&v.text) {
            return Err(RenderError::Unsafe { setting: v.setting, value: v.text.clone(), why, syntax: v.syntax });
        }
    }
    let mut out = String::with_capacity(template.len());
    let mut used = vec![false; values.len()];
    let mut rest = template;
    while let Some(at) = rest.find("{{") {
        let line = template[..template.len() - rest.len() + at].matches('\n').count() + 1;
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(name) = after.find("}}").map(|end| &after[..end]).filter(|name| !name.contains('\n')) else {
            return Err(RenderError::Unclosed { source: source.to_owned(), line });
        };
        let Some(i) = values.iter().position(|v| v.placeholder == name) else {
            return Err(RenderError::Unknown {
                source: source.to_owned(),
                line,
                placeholder: name.to_owned(),
                known: values.iter().map(|v| v.placeholder).collect(),
            });
        };
        used[i] = true;
        out.push_str(&values[i].text);
        rest = &after[name.len() + 2..];
    }
    out.push_str(rest);
    if let Some(i) = used.iter().position(|u| !u) {
        return Err(RenderError::Missing { source: source.to_owned(), placeholder: values[i].placeholder });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(placeholder: &'static str, text: &str, syntax: Syntax) -> Value {
        Value::new(placeholder, text, "test.setting", syntax)
    }

    #[test]
    fn fills_every_placeholder_each_time_it_appears() {
        let out = render("t", "a {{X}} b {{Y}} {{X}}\n", &[v("X", "1", Syntax::Comment), v("Y", "2", Syntax::Comment)]);
        assert_eq!(out.unwrap(), "a 1 b 2 1\n");
        // Braces that are not a placeholder pass through.
        assert_eq!(render("t", "location / { }\n", &[]).unwrap(), "location / { }\n");
    }

    #[test]
    fn a_placeholder_without_a_value_or_a_value_without_a_placeholder_is_refused() {
        let err = render("repo.conf.in", "x\n{{NAME}}: {\n", &[v("URL", "u", Syntax::Comment)]).unwrap_err();
        assert_eq!(err.to_string(), "repo.conf.in:2: {{NAME}} is not a placeholder of this file");
        assert_eq!(err.help().as_deref(), Some("the placeholders are {{URL}}"));
        let err = render("repo.conf.in", "url\n", &[v("URL", "u", Syntax::Comment)]).unwrap_err();
        assert_eq!(err, RenderError::Missing { source: "repo.conf.in".into(), placeholder: "URL" });
        assert!(err.to_string().starts_with("repo.conf.in has no {{URL}}"), "{err}");
        let err = render("t", "a\nb {{URL\n}}", &[v("URL", "u", Syntax::Comment)]).unwrap_err();
        assert_eq!(err, RenderError::Unclosed { source: "t".into(), line: 2 });
    }

    #[test]
    fn values_that_would_break_the_syntax_are_refused_naming_the_setting() {
        let refused = |syntax: Syntax, text: &str| {
            let err = render("t", "{{X}}", &[Value::new("X", text, "publish.target", syntax)]).unwrap_err();
            assert_eq!(err.setting(), Some("publish.target"), "{err}");
            assert!(err.to_string().starts_with(&format!("publish.target {text:?} cannot go into ")), "{err}");
            err.to_string()
        };
        for bad in ["/a b", "/a;b", "/a{b", "/a}b", "/a\"b", "/a'b", "/a\\b", "/a$b", "/a#b", "/a\nb", "/a\tb", ""] {
            refused(Syntax::NginxWord, bad);
        }
        assert!(refused(Syntax::NginxWord, "/srv/my site").contains("it holds a space"));
        assert!(refused(Syntax::NginxWord, "/srv/x;").contains("nginx server block: it holds `;`"));
        for bad in ["https://a\"b", "https://a\\b", "https://a\nb", "x\u{7f}"] {
            refused(Syntax::UclString, bad);
        }
        assert!(refused(Syntax::UclString, "http://x/\"y").contains("it holds `\"`"));
        for bad in ["a/b", "a b", "-a", ".a", "a:b", "a\"", "a\n"] {
            refused(Syntax::UclKey, bad);
        }
        for bad in ["a\nb", "a\rb"] {
            refused(Syntax::Comment, bad);
        }
        // What each syntax takes.
        let ok = |syntax: Syntax, text: &str| render("t", "{{X}}", &[v("X", text, syntax)]).unwrap();
        assert_eq!(ok(Syntax::NginxWord, "/usr/local/www/pkg.clawdie.si"), "/usr/local/www/pkg.clawdie.si");
        assert_eq!(ok(Syntax::UclString, "https://pkg.example/${ABI}/latest"), "https://pkg.example/${ABI}/latest");
        assert_eq!(ok(Syntax::UclKey, "clawdie_2.test-x"), "clawdie_2.test-x");
        assert_eq!(ok(Syntax::Comment, "https://x/a;b{c} \"d\""), "https://x/a;b{c} \"d\"");
    }
}
