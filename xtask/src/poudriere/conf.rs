//! poudriere's configuration as poudriere 3.4.8 reads it (docs/reference/poudriere.md
//! section 3): `ETC/poudriere.conf`, `ETC/poudriere.d/poudriere.conf`, then the per-set,
//! per-tree and per-jail `*-poudriere.conf` files, each an sh script sourced after the
//! one before. [`Conf`] evaluates their assignments in that order, with the parameter
//! expansions a configuration file uses (`${BASEFS}/data`, `${X:-default}`); whatever it
//! cannot evaluate (command substitution, a value set inside `if`, a sourced file) makes
//! the variables concerned unknown, never silently wrong. [`data_dir`] then finds
//! POUDRIERE_DATA as poudriere does (section 4).

use std::collections::BTreeMap;
use std::fmt;
use std::fs;

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};

use crate::config::{Tool, Tools};
use crate::failure;
use crate::proc::CmdLine;
use crate::run::Log;

/// The jail, tree and set a poudriere command names (`-j`, `-p`, `-z`): they choose the
/// per-name files.
#[derive(Debug, Clone, Copy, Default)]
pub struct Names<'a> {
    pub jail: Option<&'a str>,
    pub tree: Option<&'a str>,
    pub set: Option<&'a str>,
}

/// The files poudriere sources, in its order, whether or not they exist: common.sh
/// `include_poudriere_confs` (the two global files, then SET, TREE, JAIL, TREE-SET,
/// JAIL-TREE, JAIL-SET, JAIL-TREE-SET, each `-poudriere.conf` in poudriere.d).
pub fn files(etc: &Utf8Path, names: Names) -> Vec<Utf8PathBuf> {
    let d = etc.join("poudriere.d");
    let mut out = vec![etc.join("poudriere.conf"), d.join("poudriere.conf")];
    let Names { jail, tree, set } = names;
    let mut per: Vec<String> = [set, tree, jail].iter().flatten().map(|s| s.to_string()).collect();
    if let (Some(t), Some(s)) = (tree, set) {
        per.push(format!("{t}-{s}"));
    }
    if let (Some(j), Some(t)) = (jail, tree) {
        per.push(format!("{j}-{t}"));
    }
    if let (Some(j), Some(s)) = (jail, set) {
        per.push(format!("{j}-{s}"));
    }
    if let (Some(j), Some(t), Some(s)) = (jail, tree, set) {
        per.push(format!("{j}-{t}-{s}"));
    }
    out.extend(per.iter().filter(|n| !n.is_empty()).map(|n| d.join(format!("{n}-poudriere.conf"))));
    out
}

/// Where a value was set: `FILE:LINE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct At {
    pub file: Utf8PathBuf,
    pub line: usize,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// What a variable holds after the files were read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Never set (or unset).
    Unset,
    Known {
        value: String,
        at: At,
    },
    /// Set in a way this reader cannot evaluate; why, and where.
    Unknown {
        why: String,
        at: At,
    },
}

#[derive(Debug, Clone)]
enum Val {
    Known(String),
    Unknown(String),
}

#[derive(Debug, Clone)]
struct Var {
    val: Val,
    at: At,
    /// When it was set, to compare with a later opaque statement.
    seq: usize,
}

/// poudriere's settings after its configuration files were read in its order.
#[derive(Debug, Clone, Default)]
pub struct Conf {
    vars: BTreeMap<String, Var>,
    /// The files that were read, in order.
    read: Vec<Utf8PathBuf>,
    /// A statement after which any variable may have changed (`. FILE`, `eval`).
    opaque: Option<(At, String, usize)>,
    seq: usize,
}

impl Conf {
    /// Reads the files poudriere would read for a command naming `names`, with
    /// `POUDRIERE_ETC` and `POUDRIERED` set as poudriere sets them before.
    pub fn load(etc: &Utf8Path, names: Names) -> Result<Conf> {
        Conf::load_with(etc, names, None)
    }

    /// [`Conf::load`] as it will be once `ETC/poudriere.conf` holds `text` (what setup
    /// is about to write).
    pub fn load_with(etc: &Utf8Path, names: Names, poudriere_conf: Option<&str>) -> Result<Conf> {
        let mut conf = Conf::default();
        let start = At { file: etc.to_owned(), line: 0 };
        conf.set("POUDRIERE_ETC", Val::Known(etc.to_string()), start.clone());
        conf.set("POUDRIERED", Val::Known(etc.join("poudriere.d").to_string()), start);
        let all = files(etc, names);
        let (global, per) = all.split_at(2);
        match poudriere_conf {
            Some(text) => conf.source(&global[0], text),
            None => conf.source_if_readable(&global[0])?,
        }
        // The second global file is skipped when it is the first one (a link).
        if !same_file(&global[0], &global[1]) {
            conf.source_if_readable(&global[1])?;
        }
        if conf.read.is_empty() {
            bail!(
                failure!(
                    "poudriere has no configuration: neither {} nor {} is readable (poudriere itself stops with `Unable to find a readable poudriere.conf in {etc} or {}`)",
                    global[0],
                    global[1],
                    etc.join("poudriere.d")
                )
                .help("provision the host first: cargo xtask setup")
            );
        }
        for file in per {
            conf.source_if_readable(file)?;
        }
        Ok(conf)
    }

    /// Evaluates `text` as if sourced from `file` (for tests and [`Conf::load`]).
    pub fn source(&mut self, file: &Utf8Path, text: &str) {
        self.read.push(file.to_owned());
        let mut depth = 0usize;
        for cmd in parse(text) {
            let at = At { file: file.to_owned(), line: cmd.line };
            self.execute(&cmd, &at, &mut depth);
        }
    }

    /// The files that were read, in order.
    pub fn files_read(&self) -> &[Utf8PathBuf] {
        &self.read
    }

    pub fn lookup(&self, name: &str) -> Lookup {
        let var = self.vars.get(name);
        if let Some((at, what, seq)) = &self.opaque
            && var.is_none_or(|v| v.seq < *seq)
        {
            return Lookup::Unknown { why: format!("`{what}` may change it"), at: at.clone() };
        }
        match var {
            None => Lookup::Unset,
            Some(Var { val: Val::Known(value), at, .. }) => Lookup::Known { value: value.clone(), at: at.clone() },
            Some(Var { val: Val::Unknown(why), at, .. }) => Lookup::Unknown { why: why.clone(), at: at.clone() },
        }
    }

    /// A variable's value; empty when unset; an error naming the line when it cannot be
    /// known.
    pub fn value(&self, name: &str) -> Result<String> {
        match self.lookup(name) {
            Lookup::Unset => Ok(String::new()),
            Lookup::Known { value, .. } => Ok(value),
            Lookup::Unknown { why, at } => bail!(
                failure!(
                    "cannot tell poudriere's {name}: {at} may set it in a way mother-build does not evaluate ({why})"
                )
                .help(format!(
                    "set {name} with a plain assignment (`{name}=VALUE`) after that line, or in a later file"
                ))
            ),
        }
    }

    fn source_if_readable(&mut self, file: &Utf8Path) -> Result<()> {
        match fs::read(file) {
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                self.source(file, &text);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            // Unreadable here but perhaps not for poudriere (root): never guess.
            Err(e) => Err(e).with_context(|| format!("cannot read poudriere's configuration file {file}")),
        }
    }

    fn set(&mut self, name: &str, val: Val, at: At) {
        self.seq += 1;
        self.vars.insert(name.to_owned(), Var { val, at, seq: self.seq });
    }

    fn execute(&mut self, cmd: &Command, at: &At, depth: &mut usize) {
        let words: Vec<Option<String>> = cmd.words.iter().map(Word::literal).collect();
        let first = words.first().cloned().flatten();
        let opens = matches!(first.as_deref(), Some("if" | "case" | "for" | "while" | "until" | "{"));
        let closes = matches!(first.as_deref(), Some("fi" | "esac" | "done" | "}"));
        let keyword = matches!(first.as_deref(), Some("then" | "else" | "elif" | "do" | "!"));
        let conditional = *depth > 0 || cmd.complex || opens || keyword;
        let sources = |w: &Option<String>| matches!(w.as_deref(), Some("." | "source" | "eval"));
        if words.first().is_some_and(sources) || (conditional && words.iter().any(sources)) {
            self.seq += 1;
            self.opaque = Some((at.clone(), cmd.text.clone(), self.seq));
        }
        if opens {
            *depth += 1;
        }
        if closes {
            *depth = depth.saturating_sub(1);
        }
        if conditional {
            // Assignments that may or may not happen: their variables become unknown.
            for w in &cmd.words {
                if let Some(name) = w.assigned_name() {
                    self.set(&name, Val::Unknown(format!("set conditionally: `{}`", cmd.text)), at.clone());
                }
            }
            return;
        }
        match first.as_deref() {
            Some(":") => {
                for w in &cmd.words[1..] {
                    self.eval(w, at);
                }
            }
            Some("export" | "readonly") => {
                for w in &cmd.words[1..] {
                    self.assign(w, at);
                }
            }
            Some("unset") => {
                for w in cmd.words[1..].iter().filter_map(Word::literal) {
                    self.seq += 1;
                    self.vars.remove(&w);
                }
            }
            _ => {
                // Assignments alone persist; before a command they are its environment only.
                if cmd.words.iter().all(|w| w.assigned_name().is_some()) {
                    for w in &cmd.words {
                        self.assign(w, at);
                    }
                }
            }
        }
    }

    fn assign(&mut self, word: &Word, at: &At) {
        let Some(name) = word.assigned_name() else { return };
        let mut parts = word.0.clone();
        if let Some(Part::Lit(text, false)) = parts.first_mut() {
            *text = text[name.len() + 1..].to_owned();
            if text.starts_with('~') {
                self.set(&name, Val::Unknown("tilde expansion".into()), at.clone());
                return;
            }
        }
        let val = self.eval(&Word(parts), at);
        self.set(&name, val, at.clone());
    }

    fn eval(&mut self, word: &Word, at: &At) -> Val {
        let mut out = String::new();
        for part in &word.0 {
            match part {
                Part::Lit(text, _) => out.push_str(text),
                Part::Bad(what) => return Val::Unknown(what.clone()),
                Part::Param { name, op, word } => match self.param(name, op.as_deref(), word, at) {
                    Val::Known(v) => out.push_str(&v),
                    unknown => return unknown,
                },
            }
        }
        Val::Known(out)
    }

    fn param(&mut self, name: &str, op: Option<&str>, word: &Word, at: &At) -> Val {
        let current = match self.lookup(name) {
            Lookup::Unset => None,
            Lookup::Known { value, .. } => Some(value),
            Lookup::Unknown { why, .. } => return Val::Unknown(why),
        };
        let Some(op) = op else { return Val::Known(current.unwrap_or_default()) };
        let colon = op.starts_with(':');
        let missing = current.as_deref().is_none_or(|v| colon && v.is_empty());
        match op.trim_start_matches(':') {
            "-" if missing => self.eval(word, at),
            "=" if missing => {
                let val = self.eval(word, at);
                self.set(name, val.clone(), at.clone());
                val
            }
            "+" if missing => Val::Known(String::new()),
            "+" => self.eval(word, at),
            // `?`: poudriere would stop on a missing value; the value otherwise.
            _ => Val::Known(current.unwrap_or_default()),
        }
    }
}

fn same_file(a: &Utf8Path, b: &Utf8Path) -> bool {
    match (a.canonicalize_utf8(), b.canonicalize_utf8()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

// ---------------------------------------------------------------------------------
// The sh subset: commands made of words, words made of literal text and `$NAME`,
// `${NAME}`, `${NAME:-word}`-style expansions.

#[derive(Debug, Clone, PartialEq)]
enum Part {
    /// Text; `true` when it came from inside quotes.
    Lit(String, bool),
    Param {
        name: String,
        /// `-`, `:-`, `=`, `:=`, `+`, `:+`, `?`, `:?`.
        op: Option<String>,
        word: Word,
    },
    /// Something this reader does not evaluate (command substitution...).
    Bad(String),
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Word(Vec<Part>);

impl Word {
    /// The word as plain unquoted text, if it is only that.
    fn literal(&self) -> Option<String> {
        match self.0.as_slice() {
            [Part::Lit(text, false)] => Some(text.clone()),
            _ => None,
        }
    }

    /// `NAME` when the word is an assignment `NAME=...`.
    fn assigned_name(&self) -> Option<String> {
        let Some(Part::Lit(text, false)) = self.0.first() else { return None };
        let (name, _) = text.split_once('=')?;
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        valid.then(|| name.to_owned())
    }

    fn push_lit(&mut self, c: char, quoted: bool) {
        if let Some(Part::Lit(text, q)) = self.0.last_mut()
            && *q == quoted
        {
            text.push(c);
            return;
        }
        self.0.push(Part::Lit(c.to_string(), quoted));
    }
}

#[derive(Debug, Clone)]
struct Command {
    words: Vec<Word>,
    /// Its first line.
    line: usize,
    /// Its text, for messages.
    text: String,
    /// It uses `&&`, `||`, `|`, `&`, redirections or parentheses.
    complex: bool,
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
}

impl Lexer<'_> {
    fn next(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }
    fn peek(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }
}

fn parse(text: &str) -> Vec<Command> {
    let mut lx = Lexer { chars: text.chars().peekable(), line: 1 };
    let mut out = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut cmd = Command { words: Vec::new(), line: 1, text: String::new(), complex: false };
    // Between words.
    while let Some(c) = lx.peek() {
        match c {
            ' ' | '\t' => {
                lx.next();
            }
            '#' => {
                while lx.peek().is_some_and(|c| c != '\n') {
                    lx.next();
                }
            }
            '\n' | ';' => {
                lx.next();
                finish(&mut cmd, &mut out, &lines, lx.line);
            }
            '&' | '|' | '<' | '>' | '(' | ')' => {
                lx.next();
                cmd.complex = true;
            }
            _ => {
                if cmd.words.is_empty() {
                    cmd.line = lx.line;
                }
                let word = read_word(&mut lx, false);
                cmd.words.push(word);
            }
        }
    }
    finish(&mut cmd, &mut out, &lines, lx.line);
    out
}

fn finish(cmd: &mut Command, out: &mut Vec<Command>, lines: &[&str], next_line: usize) {
    if !cmd.words.is_empty() || cmd.complex {
        let text = lines.get(cmd.line.saturating_sub(1)).map(|l| l.trim().to_owned()).unwrap_or_default();
        let done = Command { words: std::mem::take(&mut cmd.words), line: cmd.line, text, complex: cmd.complex };
        out.push(done);
    }
    cmd.complex = false;
    cmd.line = next_line;
}

/// Reads one word; inside `${NAME:-word}` (`in_brace`) it stops at the closing `}`.
fn read_word(lx: &mut Lexer, in_brace: bool) -> Word {
    let mut w = Word::default();
    while let Some(c) = lx.peek() {
        match c {
            '}' if in_brace => break,
            ' ' | '\t' | '\n' | ';' | '&' | '|' | '<' | '>' | '(' | ')' if !in_brace => break,
            '\\' => {
                lx.next();
                match lx.next() {
                    Some('\n') | None => {}
                    Some(c) => w.push_lit(c, true),
                }
            }
            '\'' => {
                lx.next();
                let mut any = false;
                while let Some(c) = lx.next() {
                    if c == '\'' {
                        break;
                    }
                    w.push_lit(c, true);
                    any = true;
                }
                if !any {
                    w.0.push(Part::Lit(String::new(), true));
                }
            }
            '"' => {
                lx.next();
                w.0.push(Part::Lit(String::new(), true));
                while let Some(c) = lx.next() {
                    match c {
                        '"' => break,
                        '\\' => match lx.next() {
                            Some(c @ ('$' | '`' | '"' | '\\')) => w.push_lit(c, true),
                            Some('\n') => {}
                            Some(c) => {
                                w.push_lit('\\', true);
                                w.push_lit(c, true);
                            }
                            None => {}
                        },
                        '$' => dollar(lx, &mut w, true),
                        '`' => w.0.push(Part::Bad("command substitution".into())),
                        c => w.push_lit(c, true),
                    }
                }
            }
            '$' => {
                lx.next();
                dollar(lx, &mut w, false);
            }
            '`' => {
                lx.next();
                w.0.push(Part::Bad("command substitution".into()));
            }
            c => {
                lx.next();
                w.push_lit(c, false);
            }
        }
    }
    w
}

/// After a `$`: a parameter expansion, something unsupported, or a literal `$`.
fn dollar(lx: &mut Lexer, w: &mut Word, quoted: bool) {
    match lx.peek() {
        Some('{') => {
            lx.next();
            let mut name = String::new();
            while let Some(c) = lx.peek().filter(|c| c.is_ascii_alphanumeric() || *c == '_') {
                lx.next();
                name.push(c);
            }
            let mut op = String::new();
            if lx.peek() == Some(':') {
                lx.next();
                op.push(':');
            }
            match lx.peek() {
                Some(c @ ('-' | '=' | '+' | '?')) if !name.is_empty() => {
                    lx.next();
                    op.push(c);
                    let word = read_word(lx, true);
                    lx.next(); // the `}`
                    w.0.push(Part::Param { name, op: Some(op), word });
                }
                Some('}') if !name.is_empty() && op.is_empty() => {
                    lx.next();
                    w.0.push(Part::Param { name, op: None, word: Word::default() });
                }
                _ => {
                    // `${#X}`, `${X%...}` and the like: skip to the brace.
                    let mut depth = 1;
                    while let Some(c) = lx.next() {
                        match c {
                            '{' => depth += 1,
                            '}' => {
                                depth -= 1;
                                if depth == 0 {
                                    break;
                                }
                            }
                            _ => {}
                        }
                    }
                    w.0.push(Part::Bad(format!("the expansion ${{{name}{op}...}}")));
                }
            }
        }
        Some('(') => {
            w.0.push(Part::Bad("command substitution".into()));
            let mut depth = 0;
            while let Some(c) = lx.next() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
            }
        }
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {
            let mut name = String::new();
            while let Some(c) = lx.peek().filter(|c| c.is_ascii_alphanumeric() || *c == '_') {
                lx.next();
                name.push(c);
            }
            w.0.push(Part::Param { name, op: None, word: Word::default() });
        }
        Some(c) if c.is_ascii_digit() || "@*#?$!-".contains(c) => {
            lx.next();
            w.0.push(Part::Bad(format!("the special parameter ${c}")));
        }
        _ => w.push_lit('$', quoted),
    }
}

// ---------------------------------------------------------------------------------
// POUDRIERE_DATA

/// POUDRIERE_DATA as poudriere computes it, and where that came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    pub path: Utf8PathBuf,
    /// `FILE:LINE`, or the ZFS dataset, or `BASEFS/data`.
    pub from: String,
}

/// POUDRIERE_DATA as common.sh `get_data_dir` finds it: the configured value; else, with
/// ZFS (NO_ZFS empty), the mountpoint of the first dataset under ZPOOL+ZROOTFS whose
/// `poudriere:type` is `data` (`zfs list -rt filesystem -H -o poudriere:type,mountpoint`),
/// else the mountpoint of ZPOOL+ZROOTFS/data; else BASEFS/data. Resolved like poudriere
/// (`realpath`) when it exists. Only reads: where poudriere would create datasets or
/// directories, this says where they would be.
pub fn data_dir(conf: &Conf, tools: &Tools, log: &Log) -> Result<DataDir> {
    if let Lookup::Known { value, at } = conf.lookup("POUDRIERE_DATA")
        && !value.is_empty()
    {
        return Ok(DataDir { path: resolved(&value, "POUDRIERE_DATA", &at.to_string())?, from: at.to_string() });
    }
    conf.value("POUDRIERE_DATA")?; // unknown: say so
    let basefs = conf.value("BASEFS")?;
    if basefs.is_empty() {
        bail!(
            failure!("poudriere's configuration ({}) sets no BASEFS; poudriere refuses to run without it", list(conf))
                .help("write poudriere.conf with: cargo xtask setup --write")
        );
    }
    let basefs = resolved(&basefs, "BASEFS", "its configuration")?;
    if conf.value("NO_ZFS")?.is_empty() {
        let zpool = conf.value("ZPOOL")?;
        let zrootfs = match conf.lookup("ZROOTFS") {
            Lookup::Unset => "/poudriere".to_owned(),
            _ => conf.value("ZROOTFS")?,
        };
        if zpool.is_empty() {
            bail!(
                failure!(
                    "poudriere's configuration ({}) sets neither ZPOOL nor NO_ZFS; poudriere refuses to run so",
                    list(conf)
                )
                .help("write poudriere.conf with: cargo xtask setup --write")
            );
        }
        let root = format!("{zpool}{zrootfs}");
        let zfs = |args: &[&str]| -> Option<String> {
            let out = CmdLine::tool(tools, Tool::zfs).args(args.iter().copied()).output(log).ok()?;
            out.success().then(|| out.stdout_str())
        };
        if let Some(list) = zfs(&["list", "-rt", "filesystem", "-H", "-o", "poudriere:type,mountpoint", &root]) {
            let found = list.lines().find_map(|l| {
                let mut f = l.split('\t');
                (f.next() == Some("data")).then(|| f.next().unwrap_or_default().trim().to_owned())
            });
            if let Some(mountpoint) = found.filter(|m| m.starts_with('/')) {
                let from = format!("the ZFS dataset under {root} with poudriere:type=data");
                return Ok(DataDir { path: resolved(&mountpoint, "POUDRIERE_DATA", &from)?, from });
            }
        }
        let dataset = format!("{root}/data");
        if let Some(mountpoint) = zfs(&["get", "-H", "-o", "value", "mountpoint", &dataset]) {
            let mountpoint = mountpoint.trim();
            if mountpoint.starts_with('/') {
                let from = format!("the mountpoint of the ZFS dataset {dataset}");
                return Ok(DataDir { path: resolved(mountpoint, "POUDRIERE_DATA", &from)?, from });
            }
        }
    }
    let path = basefs.join("data");
    Ok(DataDir { path: realpath(path), from: format!("BASEFS ({basefs}) + /data") })
}

fn list(conf: &Conf) -> String {
    conf.files_read().iter().map(|f| f.as_str()).collect::<Vec<_>>().join(", ")
}

/// An absolute path, resolved as `realpath` does when it exists.
fn resolved(value: &str, name: &str, from: &str) -> Result<Utf8PathBuf> {
    let path = Utf8PathBuf::from(value);
    if !path.is_absolute() {
        bail!(
            failure!("poudriere's {name} `{value}` (from {from}) is not an absolute path; poudriere runs from /tmp")
                .help(format!("set {name} to an absolute path"))
        );
    }
    Ok(realpath(path))
}

fn realpath(path: Utf8PathBuf) -> Utf8PathBuf {
    path.canonicalize_utf8().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> Conf {
        let mut c = Conf::default();
        c.source(Utf8Path::new("/etc/p.conf"), text);
        c
    }

    fn known(c: &Conf, name: &str) -> String {
        match c.lookup(name) {
            Lookup::Known { value, .. } => value,
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn files_follow_include_poudriere_confs() {
        let names = |f: Vec<Utf8PathBuf>| -> Vec<String> {
            f.iter().map(|p| p.strip_prefix("/e").unwrap().to_string()).collect()
        };
        assert_eq!(
            names(files(Utf8Path::new("/e"), Names { jail: Some("j"), tree: Some("t"), set: Some("s") })),
            [
                "poudriere.conf",
                "poudriere.d/poudriere.conf",
                "poudriere.d/s-poudriere.conf",
                "poudriere.d/t-poudriere.conf",
                "poudriere.d/j-poudriere.conf",
                "poudriere.d/t-s-poudriere.conf",
                "poudriere.d/j-t-poudriere.conf",
                "poudriere.d/j-s-poudriere.conf",
                "poudriere.d/j-t-s-poudriere.conf",
            ]
        );
        assert_eq!(
            names(files(Utf8Path::new("/e"), Names { jail: Some("j"), tree: None, set: None })),
            ["poudriere.conf", "poudriere.d/poudriere.conf", "poudriere.d/j-poudriere.conf"]
        );
    }

    #[test]
    fn assignments_expand_as_sh_does() {
        let c = conf(
            "# comment\nBASEFS=/usr/local/poudriere\nPOUDRIERE_DATA=${BASEFS}/data # trailing\n\
             A='it''s' B=\"$BASEFS/x\"\\\n  C=c\nexport D=\"q\\\"uote\"\n: ${E:=/e} ${BASEFS:=/no}\n\
             F=${NOPE:-dflt} G=${BASEFS:+set} H=${NOPE-}\nI=$BASEFS.x\nJ='${BASEFS}'\nK=a\\ b\n",
        );
        assert_eq!(known(&c, "POUDRIERE_DATA"), "/usr/local/poudriere/data");
        assert_eq!(known(&c, "A"), "its");
        assert_eq!(known(&c, "B"), "/usr/local/poudriere/x");
        assert_eq!(known(&c, "C"), "c");
        assert_eq!(known(&c, "D"), "q\"uote");
        assert_eq!(known(&c, "E"), "/e");
        assert_eq!(known(&c, "BASEFS"), "/usr/local/poudriere");
        assert_eq!(known(&c, "F"), "dflt");
        assert_eq!(known(&c, "G"), "set");
        assert_eq!(known(&c, "H"), "");
        assert_eq!(known(&c, "I"), "/usr/local/poudriere.x");
        assert_eq!(known(&c, "J"), "${BASEFS}");
        assert_eq!(known(&c, "K"), "a b");
        match c.lookup("POUDRIERE_DATA") {
            Lookup::Known { at, .. } => assert_eq!(at.to_string(), "/etc/p.conf:3"),
            other => panic!("{other:?}"),
        }
        assert_eq!(c.lookup("NOPE"), Lookup::Unset);
    }

    #[test]
    fn later_files_override_and_commands_do_not_assign() {
        let mut c = conf("POUDRIERE_DATA=/a\nZPOOL=zroot\n");
        c.source(Utf8Path::new("/etc/j-poudriere.conf"), "POUDRIERE_DATA=/b\nX=1 some_command\nunset ZPOOL\n");
        assert_eq!(known(&c, "POUDRIERE_DATA"), "/b");
        assert_eq!(c.lookup("X"), Lookup::Unset, "an assignment before a command is its environment");
        assert_eq!(c.lookup("ZPOOL"), Lookup::Unset);
        assert_eq!(c.files_read().len(), 2);
    }

    #[test]
    fn what_cannot_be_evaluated_is_unknown_not_wrong() {
        let c = conf(
            "A=$(hostname)\nB=`x`\nif [ -d /x ]; then\n  C=/x\nfi\n[ -d /y ] && D=/y\nE=~/p\nF=${A}\nG=${X#y}\nH=ok\n",
        );
        for name in ["A", "B", "C", "D", "E", "F", "G"] {
            assert!(matches!(c.lookup(name), Lookup::Unknown { .. }), "{name}: {:?}", c.lookup(name));
        }
        assert_eq!(known(&c, "H"), "ok");
        let err = crate::ui::render_message(&c.value("C").unwrap_err());
        assert!(err.contains("/etc/p.conf:4"), "{err}");

        let c = conf("A=1\n. /etc/other.conf\nB=2\n");
        assert!(matches!(c.lookup("A"), Lookup::Unknown { .. }), "a sourced file may change anything");
        assert!(matches!(c.lookup("UNSET"), Lookup::Unknown { .. }));
        assert_eq!(known(&c, "B"), "2", "what is set after it is known again");
    }

    #[test]
    fn the_configuration_needs_a_global_file() {
        let d = tempfile::tempdir().unwrap();
        let etc = Utf8Path::from_path(d.path()).unwrap();
        let err = Conf::load(etc, Names::default()).unwrap_err();
        assert!(crate::ui::render_message(&err).contains("Unable to find a readable poudriere.conf"));
        fs::create_dir_all(etc.join("poudriere.d")).unwrap();
        fs::write(etc.join("poudriere.d/poudriere.conf"), "BASEFS=/b\n").unwrap();
        fs::write(etc.join("poudriere.d/j-poudriere.conf"), "BASEFS=/j\n").unwrap();
        let c = Conf::load(etc, Names { jail: Some("j"), ..Names::default() }).unwrap();
        assert_eq!(known(&c, "BASEFS"), "/j");
        assert_eq!(known(&c, "POUDRIERED"), etc.join("poudriere.d").as_str());
    }
}
