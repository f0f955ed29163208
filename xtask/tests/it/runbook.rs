//! The runbook's and the README's commands are real: every `cargo xtask` command line in
//! them (code blocks and code spans), split into words as sh would, parses with the real
//! command-line definitions; the runbook's table of old scripts says what each shim runs.

use std::fs;

use clap::Parser;

use crate::compat::{Recorder, SHIMS, describe, shims_dir};
use test_support::repo_root;

/// A command line found in a document, and where.
#[derive(Debug)]
struct Found {
    file: &'static str,
    line: usize,
    text: String,
}

/// Every `cargo xtask ...` command line in a Markdown file: lines of fenced code blocks
/// (a trailing `\` joins the next line), and code spans (which may cross lines). A span
/// that is only `cargo xtask` names the program; it is not a command line.
fn commands(file: &'static str) -> Vec<Found> {
    let text = fs::read_to_string(repo_root().join(file)).unwrap();
    let mut found = Vec::new();
    let mut prose = String::new();
    let mut prose_lines = Vec::new(); // the file line of each prose line
    let mut fence: Option<String> = None;
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let trimmed = line.trim_start();
        if let Some(f) = &fence {
            if trimmed.starts_with(f.as_str())
                && trimmed.trim_start_matches(f.chars().next().unwrap()).trim().is_empty()
            {
                fence = None;
                continue;
            }
            let (start, mut joined) = pending.take().unwrap_or((n, String::new()));
            joined.push_str(trimmed);
            if let Some(head) = joined.strip_suffix('\\') {
                pending = Some((start, head.to_owned()));
                continue;
            }
            let cmd = joined.trim().trim_start_matches("$ ");
            if is_command(cmd) {
                found.push(Found { file, line: start, text: cmd.to_owned() });
            }
        } else if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            let ch = trimmed.chars().next().unwrap();
            fence = Some(trimmed.chars().take_while(|&c| c == ch).collect());
        } else {
            prose.push_str(line);
            prose.push('\n');
            prose_lines.push(n);
        }
    }
    for (offset, span) in code_spans(&prose) {
        let span = span.trim();
        if is_command(span) && span != "cargo xtask" {
            let line = prose_lines[prose[..offset].matches('\n').count()];
            found.push(Found { file, line, text: span.to_owned() });
        }
    }
    found
}

fn is_command(text: &str) -> bool {
    text == "cargo xtask" || text.starts_with("cargo xtask ")
}

/// The code spans of Markdown text, with their byte offsets: a run of N backticks up
/// to the next run of exactly N; line breaks inside are spaces (CommonMark).
fn code_spans(text: &str) -> Vec<(usize, String)> {
    let bytes = text.as_bytes();
    let run_at = |i: usize| bytes[i..].iter().take_while(|&&b| b == b'`').count();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let n = run_at(i);
        let start = i + n;
        let mut j = start;
        let mut close = None;
        while j < bytes.len() {
            if bytes[j] == b'`' {
                let m = run_at(j);
                if m == n {
                    close = Some(j);
                    break;
                }
                j += m;
            } else {
                j += 1;
            }
        }
        match close {
            Some(end) => {
                spans.push((i, text[start..end].replace('\n', " ")));
                i = end + n;
            }
            None => i = start,
        }
    }
    spans
}

/// Splits a command line into words as sh does: blanks separate words; '...' and "..."
/// quote (in "...", `\` escapes `$`, `` ` ``, `"`, `\`); `\` outside quotes escapes the
/// next character; a word starting with `#` starts a comment. A redirection (`<`, `>`,
/// with an fd number before it and its target after it) is not a word; `;`, `&` and `|`
/// end the command. Expansions (`$`, `` ` ``) and subshells are refused: what sh would
/// make of them depends on more than the text.
fn sh_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut redirect_target = false;
    let mut chars = line.chars().peekable();
    let mut finish = |word: &mut Option<String>, redirect_target: &mut bool| {
        if let Some(w) = word.take() {
            if *redirect_target {
                *redirect_target = false;
            } else {
                words.push(w);
            }
        }
    };
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => finish(&mut word, &mut redirect_target),
            '#' if word.is_none() => break,
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("unterminated '".into()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('$' | '`' | '"' | '\\')) => w.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err("unterminated \"".into()),
                        },
                        Some('$' | '`') => return Err("an expansion inside \"...\"".into()),
                        Some(c) => w.push(c),
                        None => return Err("unterminated \"".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err("a trailing \\".into()),
            },
            ';' | '&' | '|' => break,
            '<' | '>' => {
                if word.as_deref().is_some_and(|w| w.chars().all(|c| c.is_ascii_digit())) {
                    word = None; // the fd number of `2>`
                } else {
                    finish(&mut word, &mut redirect_target);
                }
                while chars.next_if(|&c| matches!(c, '<' | '>' | '&' | '|' | '-')).is_some() {}
                redirect_target = true;
            }
            '$' | '`' => return Err(format!("an expansion (`{c}`)")),
            '(' | ')' => return Err("a subshell".into()),
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    finish(&mut word, &mut redirect_target);
    if redirect_target {
        return Err("a redirection without a target".into());
    }
    Ok(words)
}

/// Parses a `cargo xtask ...` line with the real command-line definitions.
fn parse(text: &str) -> Result<(), String> {
    let words = sh_words(text)?;
    if words.len() < 2 || words[0] != "cargo" || words[1] != "xtask" {
        return Err(format!("sh reads it as {words:?}, not `cargo xtask ...`"));
    }
    let argv = std::iter::once("cargo xtask".to_owned()).chain(words.into_iter().skip(2));
    xtask::cli::Cli::try_parse_from(argv).map(|_| ()).map_err(|e| match e.kind() {
        // clap answers a missing subcommand with the whole help text.
        clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => "error: no subcommand".to_owned(),
        _ => e.to_string(),
    })
}

#[test]
fn sh_words_splits_as_sh_does() {
    let ok = |line: &str| sh_words(line).unwrap();
    assert_eq!(ok("cargo xtask release   # all of it"), ["cargo", "xtask", "release"]);
    assert_eq!(ok("a 'b c' \"d \\\"e\\\" \\x\" f\\ g h#i"), ["a", "b c", "d \"e\" \\x", "f g", "h#i"]);
    assert_eq!(ok("a'b'\"c\" ''"), ["abc", ""]);
    assert_eq!(ok("a <stage> --dry-run"), ["a"]);
    assert_eq!(ok("a b 2>&1 c >> log d"), ["a", "b", "c", "d"]);
    assert_eq!(ok("a b && c; d | e"), ["a", "b"]);
    assert_eq!(ok("a \\\nb"), ["a", "b"]);
    for bad in ["a 'b", "a \"b", "a $HOME", "a \"$(b)\"", "a `b`", "a >", "(a)"] {
        assert!(sh_words(bad).is_err(), "{bad:?} should be refused");
    }
}

#[test]
fn code_spans_follow_commonmark() {
    let spans: Vec<String> = code_spans("a `b` c ``d ` e`` `f\ng` `h").into_iter().map(|(_, s)| s).collect();
    assert_eq!(spans, ["b", "d ` e", "f g"]);
}

#[test]
fn every_cargo_xtask_line_in_the_runbook_and_readme_parses() {
    let runbook = commands("docs/runbook.md");
    let readme = commands("README.md");
    // Enough found that the extraction cannot silently find nothing.
    assert!(runbook.len() >= 30, "only {} commands found in docs/runbook.md: {runbook:#?}", runbook.len());
    assert!(readme.len() >= 5, "only {} commands found in README.md: {readme:#?}", readme.len());
    for want in ["cargo xtask setup --check", "cargo xtask publish --rollback", "cargo xtask gate --pf-allow"] {
        assert!(runbook.iter().any(|f| f.text == want), "the runbook's `{want}` was not found");
    }
    let mut failures = Vec::new();
    for f in runbook.iter().chain(&readme) {
        if let Err(e) = parse(&f.text) {
            failures.push(format!("{}:{}: {}\n{}", f.file, f.line, f.text, e.trim_end()));
        }
    }
    assert!(failures.is_empty(), "commands that do not parse:\n\n{}", failures.join("\n\n"));
}

#[test]
fn a_command_that_does_not_parse_is_caught() {
    assert!(parse("cargo xtask bulk --no-such-flag").unwrap_err().contains("--no-such-flag"));
    assert!(parse("cargo xtask <stage> --dry-run").is_err());
    assert!(parse("cargo xtask release --from nowhere").is_err());
    assert!(parse("cargo xtask -o gate.cpus=4 gate --backend bhyve --image '/a b.iso'").is_ok());
}

/// Section 7's table: (old script, its `now` command), one row per table line.
fn shim_table() -> Vec<(String, String)> {
    let text = fs::read_to_string(repo_root().join("docs/runbook.md")).unwrap();
    let start = text.find("\n## 7. The old scripts").expect("the runbook has section 7, The old scripts");
    let end = text[start + 1..].find("\n## ").map_or(text.len(), |e| start + 1 + e);
    text[start..end]
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split(" | ").collect();
            let cell = |i: usize| cells.get(i).map_or("", |c| c.trim().trim_matches('|').trim().trim_matches('`'));
            (cell(0).to_owned(), cell(1).to_owned())
        })
        .collect()
}

#[test]
fn the_runbook_table_names_every_shim_and_what_it_runs() {
    let table = shim_table();
    for entry in shims_dir().read_dir_utf8().unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() && !entry.file_name().starts_with('.') {
            let name = entry.file_name();
            assert!(
                table.iter().any(|(old, _)| old == name),
                "the runbook's section 7 table lacks scripts-compat/{name}"
            );
        }
    }
    // Each shim's `now` is what it runs with no flags.
    let r = Recorder::new();
    for (shim, _) in SHIMS {
        let (_, now) = table.iter().find(|(old, _)| old == shim).unwrap();
        let out = r.run(shim, &[]);
        assert!(out.status.success(), "{}", describe(shim, &[], &out));
        let argv = r.recorded().unwrap().argv;
        assert_eq!(format!("cargo xtask {}", argv.join(" ")), *now, "the runbook's table row for {shim}");
    }
}

#[test]
fn the_runbooks_shim_examples_are_what_the_shims_run() {
    // In section 7's code blocks, a `scripts-compat/SHIM ARGS` line is followed by the
    // `cargo xtask ...` line it runs.
    let text = fs::read_to_string(repo_root().join("docs/runbook.md")).unwrap();
    let start = text.find("\n## 7. The old scripts").unwrap();
    let end = text[start + 1..].find("\n## ").map_or(text.len(), |e| start + 1 + e);
    let lines: Vec<&str> = text[start..end].lines().map(str::trim).collect();
    let r = Recorder::new();
    let mut checked = 0;
    for (i, line) in lines.iter().enumerate() {
        let Some(call) = line.strip_prefix("scripts-compat/") else { continue };
        let words = sh_words(call).unwrap();
        let args: Vec<&str> = words[1..].iter().map(String::as_str).collect();
        let want = lines[i + 1..].iter().find(|l| l.starts_with("cargo xtask ")).expect("the command it runs follows");
        let out = r.run(&words[0], &args);
        assert!(out.status.success(), "{}", describe(&words[0], &args, &out));
        let mut got = vec!["cargo".to_owned(), "xtask".to_owned()];
        got.extend(r.recorded().unwrap().argv);
        assert_eq!(got, sh_words(want).unwrap(), "the runbook says `{line}` runs `{want}`");
        checked += 1;
    }
    assert!(checked >= 1, "section 7 shows no shim example");
}
