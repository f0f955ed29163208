//! poudriere: the settings setup and bulk share (jail, ports tree, overlay, poudriere.conf),
//! the command line both build on (`poudriere [-e ETCDIR] ...`), and the poudriere.conf
//! that setup writes from them. `conf` reads poudriere's configuration files the way
//! poudriere does (docs/reference/poudriere.md sections 3 and 4).

pub mod conf;

use std::collections::BTreeMap;

use anyhow::Result;
use camino::{Utf8Path, Utf8PathBuf};

use crate::config::{Loaded, Tool, TrustMode};
use crate::proc::CmdLine;
use crate::settings;

/// poudriere's own configuration root; any other needs `poudriere -e`.
pub const DEFAULT_ETC: &str = "/usr/local/etc";

settings! {
    /// poudriere: the build jail, ports tree and overlay, and the poudriere.conf values,
    /// shared by setup (which creates them) and bulk (which builds with them).
    pub struct PoudriereConfig {
        /// Build jail name (may not contain `.`).
        pub jail: String = "clawdie-amd64".into(),
        /// FreeBSD release the jail runs. The host must run this release or a later one.
        pub version: String = "15.0-RELEASE".into(),
        /// Jail architecture.
        pub arch: String = "amd64".into(),
        /// How setup creates the jail (`jail -c -m METHOD`); empty: poudriere's default
        /// (the release's sets from FREEBSD_HOST).
        pub jail_method: String = String::new(),
        /// Ports tree name (may not contain `-`, `:` or `.`).
        pub tree: String = "clawdie".into(),
        /// How setup creates the ports tree (`ports -c -m METHOD`).
        pub tree_method: String = "git+https".into(),
        /// Where the ports tree comes from (`ports -c -U URL`; git and svn methods only,
        /// and with git the URL's scheme decides the transport).
        pub tree_url: String = "https://git.FreeBSD.org/ports.git".into(),
        /// Branch of the ports tree (`ports -c -B BRANCH`; git and svn methods only;
        /// empty: the repository's default branch).
        pub tree_branch: String = "main".into(),
        /// Name under which setup registers this repository's overlay (port.overlay) as a
        /// null ports tree, and bulk passes with `-O` (may not contain `-` or `:`).
        pub overlay: String = "clawdie_overlay".into(),
        /// poudriere's configuration root: ETC/poudriere.conf and ETC/poudriere.d/. Any
        /// other than /usr/local/etc is passed to every poudriere command as `-e ETC`.
        pub etc: Utf8PathBuf = DEFAULT_ETC.into(),
        /// ZPOOL: the ZFS pool poudriere uses (ignored with no_zfs).
        pub zpool: String = "zroot".into(),
        /// ZROOTFS: poudriere's dataset inside the pool.
        pub zrootfs: String = "/poudriere".into(),
        /// NO_ZFS=yes: build without ZFS (slower; for hosts without a pool).
        pub no_zfs: bool = false,
        /// FREEBSD_HOST: where jails download the release from.
        pub freebsd_host: String = "https://download.FreeBSD.org".into(),
        /// RESOLV_CONF: the resolver configuration copied into the jails.
        pub resolv_conf: Utf8PathBuf = "/etc/resolv.conf".into(),
        /// BASEFS: poudriere's base directory.
        pub basefs: Utf8PathBuf = "/usr/local/poudriere".into(),
        /// POUDRIERE_DATA: where packages (`packages/MASTERNAME/`) and logs
        /// (`logs/bulk/MASTERNAME/BUILDNAME/`) land; bulk reads its results here.
        pub data: Utf8PathBuf = "/usr/local/poudriere/data".into(),
        /// USE_TMPFS: `yes` builds in RAM; `no` on a host short of memory; or a list
        /// such as `wrkdir data`.
        pub use_tmpfs: String = "yes".into(),
        /// MAX_MEMORY: GiB of memory per build jail (0: no limit).
        pub max_memory: u32 = 4,
        /// MAX_FILES: open files per build jail.
        pub max_files: u32 = 2048,
        /// PARALLEL_JOBS: builders running at once (0: poudriere's default, the CPU count).
        pub parallel_jobs: u32 = 8,
        /// Ask poudriere for reproducible packages: setup writes PKG_REPRODUCIBLE=yes (no
        /// `build_timestamp` or `built_by` annotation in each package), BUILDER_HOSTNAME (the
        /// build jails' hostname, which some ports record) and PRESERVE_TIMESTAMP=yes (the
        /// ports tree keeps its commit times). docs/reference/poudriere.md section 14;
        /// `bulk.reproduce` checks the result.
        pub reproducible: bool = false,
        /// BUILDER_HOSTNAME written when `reproducible` is true.
        pub builder_hostname: String = "pkg.clawdie.si".into(),
        /// poudriere's DISTFILES_CACHE: where makesum puts distfiles and bulk finds them.
        pub distfiles: Utf8PathBuf = "/usr/local/poudriere/distfiles".into(),
        /// The set (`bulk --set NAME`, poudriere's `-z`) that builds the validation flavour
        /// into its own repository (`packages/JAIL-TREE-SET`).
        pub validation_set: String = "validation".into(),
        /// Port options the validation set turns on: setup writes
        /// `poudriere.d/SET-make.conf` with `CATEGORY_NAME_SET+=OPTIONS` for port.origin.
        pub validation_options: Vec<String> = vec!["TESTAGENT".into()],
    }
}

/// Checks the names poudriere would refuse.
pub fn validate(loaded: &Loaded) -> Result<()> {
    let p = &loaded.config.poudriere;
    if p.jail.is_empty() || p.jail.contains('.') {
        return Err(loaded.error_at(
            "poudriere.jail",
            format!("jail name `{}` is empty or contains `.`, which poudriere refuses", p.jail),
        ));
    }
    // ports.sh `create` refuses `:` and `-` in any tree name; common.sh `jail_start`
    // refuses `.` in the tree a bulk builds from (not in an overlay).
    for (key, name, refused) in [("poudriere.tree", &p.tree, "-:."), ("poudriere.overlay", &p.overlay, "-:")] {
        if name.is_empty() {
            return Err(loaded.error_at(key, "the ports tree name is empty"));
        }
        if let Some(c) = name.chars().find(|c| refused.contains(*c)) {
            let why = match c {
                '-' => "poudriere would read what follows it as a set name (-z)",
                '.' => "`poudriere bulk` refuses it when it starts the build jail",
                _ => "`poudriere ports -c` refuses it",
            };
            return Err(loaded.error_at(key, format!("ports tree name `{name}` contains `{c}`: {why}")));
        }
    }
    if p.tree == p.overlay {
        return Err(loaded.error_at(
            "poudriere.overlay",
            format!("the overlay must be a tree of its own, not the ports tree `{}`", p.tree),
        ));
    }
    if let Err(msg) = check_set_name(&p.validation_set) {
        return Err(loaded.error_at("poudriere.validation_set", msg));
    }
    if loaded.config.signing.trust == TrustMode::Fingerprints {
        for (i, word) in loaded.config.signing.command.iter().enumerate() {
            if let Err(why) = signing_command_word(i, word) {
                return Err(loaded
                    .failure_at("signing.command", format!("signing.command's word `{word}` {why}"))
                    .help(
                        "poudriere puts SIGNING_COMMAND into its command lines unquoted and pkg runs it again with `sh -c`: \
                         put the command and its arguments into a script whose path and arguments are plain words",
                    )
                    .into());
            }
        }
    }
    for option in &p.validation_options {
        if option.is_empty() || !option.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') {
            return Err(loaded.error_at(
                "poudriere.validation_options",
                format!("`{option}` is not a port option name (upper case letters, digits and `_`)"),
            ));
        }
    }
    Ok(())
}

/// Whether a word of SIGNING_COMMAND means the same after poudriere's unquoted expansion
/// (field splitting and file name globbing) and after pkg's `sh -c` (docs/reference/
/// poudriere.md section 11): only letters, digits and `_@%+=:,./-`, no `=` in the first
/// word, and never empty.
fn signing_command_word(index: usize, word: &str) -> std::result::Result<(), String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    let Some(bad) = word.chars().find(|c| !plain(*c)) else {
        if word.is_empty() {
            return Err("is empty: it disappears when poudriere splits SIGNING_COMMAND into words".into());
        }
        if index == 0 && word.contains('=') {
            return Err("contains `=`: as the first word, pkg's `sh -c` would take it for a variable assignment".into());
        }
        return Ok(());
    };
    let why = match bad {
        c if c.is_whitespace() => {
            "contains a blank: poudriere splits SIGNING_COMMAND at blanks, making it several words"
        }
        '\'' | '"' | '\\' => {
            "contains a quote or backslash: poudriere passes it on literally but pkg's `sh -c` reads it as quoting"
        }
        '$' | '`' => "contains `$` or a backquote: pkg's `sh -c` would expand it, poudriere's own use would not",
        '*' | '?' | '[' => "contains a file name pattern character: poudriere would expand it to matching file names",
        ';' | '&' | '|' | '<' | '>' | '(' | ')' => "contains shell syntax: pkg's `sh -c` would run it as such",
        _ => {
            "contains a character other than letters, digits and `_@%+=:,./-`, the only ones both poudriere and pkg's `sh -c` pass on unchanged"
        }
    };
    Err(why.to_owned())
}

/// A set name poudriere can put into `JAIL-TREE-SET` unambiguously.
pub fn check_set_name(set: &str) -> std::result::Result<(), String> {
    if set.is_empty() || !set.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!("set name `{set}` must be letters, digits and `_` (it becomes part of JAIL-TREE-SET)"));
    }
    Ok(())
}

/// Where poudriere's files live for this configuration, resolved.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The configuration root (`-e`).
    pub etc: Utf8PathBuf,
    /// POUDRIERE_DATA.
    pub data: Utf8PathBuf,
    pub basefs: Utf8PathBuf,
    pub distfiles: Utf8PathBuf,
}

impl Paths {
    pub fn new(loaded: &Loaded) -> Paths {
        let p = &loaded.config.poudriere;
        Paths {
            etc: loaded.resolve(&p.etc),
            data: loaded.resolve(&p.data),
            basefs: loaded.resolve(&p.basefs),
            distfiles: loaded.resolve(&p.distfiles),
        }
    }

    /// ETC/poudriere.conf.
    pub fn conf(&self) -> Utf8PathBuf {
        self.etc.join("poudriere.conf")
    }

    /// ETC/poudriere.d/SET-make.conf.
    pub fn set_make_conf(&self, set: &str) -> Utf8PathBuf {
        self.etc.join("poudriere.d").join(format!("{set}-make.conf"))
    }

    /// `POUDRIERE_DATA/logs/bulk/MASTERNAME/BUILDNAME`.
    pub fn log_dir(&self, mastername: &str, build: &str) -> Utf8PathBuf {
        self.data.join("logs/bulk").join(mastername).join(build)
    }

    /// `POUDRIERE_DATA/packages/MASTERNAME`.
    pub fn packages(&self, mastername: &str) -> Utf8PathBuf {
        self.data.join("packages").join(mastername)
    }
}

/// `ports -c -p TREE -m METHOD [-U URL] [-B BRANCH]`: ports.sh takes `-U` only with git
/// and svn methods (a usage error otherwise) and `-B` likewise (`Branch (-B) only
/// supported for SVN and git.`).
pub fn tree_create_args(p: &PoudriereConfig) -> Vec<String> {
    let mut args: Vec<String> = ["ports", "-c", "-p", &p.tree, "-m", &p.tree_method].map(String::from).into();
    let method = p.tree_method.as_str();
    let checkout = ["git", "svn"].iter().any(|m| method == *m || method.starts_with(&format!("{m}+")));
    if checkout {
        if !p.tree_url.is_empty() {
            args.extend(["-U".to_owned(), p.tree_url.clone()]);
        }
        if !p.tree_branch.is_empty() {
            args.extend(["-B".to_owned(), p.tree_branch.clone()]);
        }
    }
    args
}

/// `poudriere [-e ETC]`: every poudriere command starts so, so poudriere reads the same
/// files setup writes.
pub fn command(loaded: &Loaded) -> CmdLine {
    let cmd = CmdLine::tool(&loaded.config.tools, Tool::poudriere);
    let etc = loaded.resolve(&loaded.config.poudriere.etc);
    if etc == Utf8Path::new(DEFAULT_ETC) { cmd } else { cmd.args(["-e", etc.as_str()]) }
}

/// `JAIL-TREE[-SET]`: the name of a build's package and log directories.
pub fn mastername(jail: &str, tree: &str, set: Option<&str>) -> String {
    match set {
        Some(set) => format!("{jail}-{tree}-{set}"),
        None => format!("{jail}-{tree}"),
    }
}

/// The make variable that sets options of one port: `sysutils/colibri` gives
/// `sysutils_colibri_SET` (the ports framework's OPTIONS_NAME, the origin with `_`).
pub fn options_set_var(origin: &str) -> String {
    format!("{}_SET", origin.replace('/', "_"))
}

/// Quotes a value for an sh assignment (poudriere.conf is sourced by sh).
pub fn sh_quote(value: &str) -> String {
    let plain = !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:,+@%=".contains(&b));
    if plain { value.to_owned() } else { format!("'{}'", value.replace('\'', r"'\''")) }
}

/// The poudriere.conf this configuration asks for, as `(KEY, value)` pairs in file order.
/// Where the machine `signs` (it holds the key or runs the signing command), poudriere
/// signs what it builds: PKG_REPO_SIGNING_KEY, or SIGNING_COMMAND from the host. A
/// builder's names neither, and poudriere's `pkg repo` then writes unsigned catalogues
/// (docs/reference/poudriere.md section 11), which sign verifies and signs.
pub fn conf_values(loaded: &Loaded, signs: bool) -> Vec<(&'static str, String)> {
    let p = &loaded.config.poudriere;
    let s = &loaded.config.signing;
    let paths = Paths::new(loaded);
    let mut v: Vec<(&'static str, String)> = Vec::new();
    if p.no_zfs {
        v.push(("NO_ZFS", "yes".into()));
    } else {
        v.push(("ZPOOL", p.zpool.clone()));
        v.push(("ZROOTFS", p.zrootfs.clone()));
    }
    v.push(("FREEBSD_HOST", p.freebsd_host.clone()));
    v.push(("RESOLV_CONF", loaded.resolve(&p.resolv_conf).into_string()));
    v.push(("BASEFS", paths.basefs.into_string()));
    v.push(("POUDRIERE_DATA", paths.data.into_string()));
    v.push(("USE_TMPFS", p.use_tmpfs.clone()));
    if p.max_memory > 0 {
        v.push(("MAX_MEMORY", p.max_memory.to_string()));
    }
    v.push(("MAX_FILES", p.max_files.to_string()));
    v.push(("DISTFILES_CACHE", paths.distfiles.into_string()));
    if p.parallel_jobs > 0 {
        v.push(("PARALLEL_JOBS", p.parallel_jobs.to_string()));
    }
    if p.reproducible {
        v.push(("PKG_REPRODUCIBLE", "yes".into()));
        v.push(("BUILDER_HOSTNAME", p.builder_hostname.clone()));
        v.push(("PRESERVE_TIMESTAMP", "yes".into()));
    }
    if !signs {
        return v;
    }
    match s.trust {
        TrustMode::Pubkey => v.push(("PKG_REPO_SIGNING_KEY", signing_key_argument(loaded))),
        TrustMode::Fingerprints => {
            // poudriere expands it unquoted (split at blanks) and pkg joins the words for
            // `sh -c`: plain words joined by spaces, which `validate` made sure of.
            v.push(("SIGNING_COMMAND", s.command.join(" ")));
            v.push(("PKG_REPO_FROM_HOST", "yes".into()));
        }
    }
    v
}

/// The text of poudriere.conf (`signs`: as [`conf_values`]).
pub fn render_conf(loaded: &Loaded, signs: bool) -> String {
    let mut out = String::from(if signs {
        "# poudriere.conf for mother-build, written by `cargo xtask setup` from pipeline.toml\n\
         # ([poudriere] and [signing]). Change pipeline.toml and rerun setup: a hand edit here\n\
         # is reported by `cargo xtask setup --check` and replaced only by `setup --write`.\n"
    } else {
        "# poudriere.conf for mother-build, written by `cargo xtask setup --role builder` from\n\
         # pipeline.toml ([poudriere]). A builder holds no key: poudriere commits unsigned\n\
         # repositories, which the signing host verifies and signs. Change pipeline.toml and\n\
         # rerun setup: a hand edit here is reported by `cargo xtask setup --check --role\n\
         # builder` and replaced only by `setup --write --role builder`.\n"
    });
    for (key, value) in conf_values(loaded, signs) {
        out.push_str(&format!("{key}={}\n", sh_quote(&value)));
    }
    out
}

/// The text of a set's make.conf: `CATEGORY_NAME_SET+=OPTION ...`.
pub fn render_set_make_conf(set: &str, origin: &str, options: &[String]) -> String {
    format!(
        "# Written by `cargo xtask setup`: `poudriere bulk -z {set}` builds {origin} with these\n\
         # options, into a repository of its own (packages/JAIL-TREE-{set}).\n{}+={}\n",
        options_set_var(origin),
        options.join(" ")
    )
}

/// The simple `KEY=value` assignments of an sh configuration file (single or double
/// quotes, `#` comments). Enough to compare a poudriere.conf with what setup writes and
/// to find a key's value; anything cleverer is left as it is.
pub fn parse_assignments(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, rest)) = line.split_once('=') else { continue };
        let key = key.trim().strip_prefix("export ").unwrap_or(key.trim()).trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        out.insert(key.to_owned(), sh_value(rest));
    }
    out
}

/// The value of the right-hand side of an sh assignment, unquoted.
fn sh_value(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                    out.push(c);
                }
            }
            '"' => {
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => {
                            if let Some(n) = chars.next() {
                                out.push(n);
                            }
                        }
                        _ => out.push(c),
                    }
                }
            }
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            c if c.is_whitespace() => {
                // An unquoted blank ends the word (what follows is a comment or a command).
                break;
            }
            c => out.push(c),
        }
    }
    out
}

/// What differs between an existing file's assignments and the wanted ones, as
/// `KEY is X, pipeline.toml says Y` phrases.
pub fn assignment_differences(have: &str, want: &str) -> Vec<String> {
    let have = parse_assignments(have);
    let want = parse_assignments(want);
    let mut out = Vec::new();
    for (key, value) in &want {
        match have.get(key) {
            None => out.push(format!("{key} is missing")),
            Some(v) if v != value => out.push(format!("{key} is {}, not {}", sh_quote(v), sh_quote(value))),
            Some(_) => {}
        }
    }
    for key in have.keys().filter(|k| !want.contains_key(*k)) {
        out.push(format!("{key} is set but pipeline.toml does not set it"));
    }
    out
}

/// The key argument of `pkg repo DIR [TYPE:]KEY` for signing.key: pkg takes a key
/// without a type for rsa and needs `ecc:` or `ecdsa:` in front of the others
/// (docs/reference/pkg-signers.md §4). The type is read from the public half
/// (signing.pubkey), so the private key is not opened here; when the public key cannot
/// be read, the key is named as rsa.
pub fn signing_key_argument(loaded: &Loaded) -> String {
    let s = &loaded.config.signing;
    let key = loaded.resolve(&s.key).into_string();
    let algorithm = std::fs::read(loaded.resolve(&s.pubkey))
        .ok()
        .and_then(|b| pkgrepo::keys::PublicKey::parse(&b).ok())
        .map(|k| k.algorithm());
    match algorithm.map(|a| a.signer()) {
        Some(signer) if signer != pkgrepo::signature::SignerType::Rsa => format!("{signer}:{key}"),
        _ => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn loaded(config: Config) -> Loaded {
        Loaded::from_parts(config, "/p/pipeline.toml".into(), "/p".into())
    }

    #[test]
    fn conf_round_trips_through_the_parser() {
        let mut config = Config::default();
        config.signing.trust = TrustMode::Fingerprints;
        config.signing.command = vec!["/usr/local/bin/sign".into(), "--key".into(), "/etc/ssl/it.key".into()];
        let l = loaded(config);
        let text = render_conf(&l, true);
        let parsed = parse_assignments(&text);
        for (k, v) in conf_values(&l, true) {
            assert_eq!(parsed.get(k), Some(&v), "{k} in\n{text}");
        }
        assert!(text.contains("PKG_REPO_FROM_HOST=yes\n"), "{text}");
        assert!(!text.contains("PKG_REPO_SIGNING_KEY"), "{text}");
        assert_eq!(parsed["SIGNING_COMMAND"], "/usr/local/bin/sign --key /etc/ssl/it.key");
        assert!(text.contains("SIGNING_COMMAND='/usr/local/bin/sign --key /etc/ssl/it.key'\n"), "{text}");
    }

    #[test]
    fn a_builders_conf_names_no_key_and_no_signing_command() {
        for trust in [TrustMode::Pubkey, TrustMode::Fingerprints] {
            let mut config = Config::default();
            config.signing.trust = trust;
            config.signing.command = vec!["/usr/local/bin/sign".into()];
            let l = loaded(config);
            let text = render_conf(&l, false);
            for key in ["PKG_REPO_SIGNING_KEY", "SIGNING_COMMAND", "PKG_REPO_FROM_HOST"] {
                assert!(!text.contains(key), "{trust}: {key} in\n{text}");
            }
            let parsed = parse_assignments(&text);
            for (k, v) in conf_values(&l, false) {
                assert_eq!(parsed.get(k), Some(&v), "{k} in\n{text}");
            }
            assert!(text.contains("DISTFILES_CACHE=/usr/local/poudriere/distfiles\n"), "{text}");
            assert!(text.contains("--role builder"), "{text}");
        }
    }

    #[test]
    fn signing_command_words_poudriere_cannot_carry_are_refused() {
        for good in ["/usr/local/bin/sign", "--key=/etc/ssl/a.key", "user@host:port", "50%"] {
            assert_eq!(signing_command_word(1, good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("sign it", "blank"),
            ("it's", "quote"),
            ("a\\b", "backslash"),
            ("$HOME", "`$`"),
            ("*.key", "pattern"),
            ("a;b", "shell syntax"),
            ("~/k", "other than"),
            ("", "empty"),
        ] {
            let err = signing_command_word(1, bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        assert!(signing_command_word(0, "A=b").unwrap_err().contains("assignment"));
        assert_eq!(signing_command_word(1, "A=b"), Ok(()));
    }

    #[test]
    fn ports_c_passes_url_and_branch_only_for_git_and_svn() {
        let mut p = PoudriereConfig::default();
        assert_eq!(
            tree_create_args(&p).join(" "),
            "ports -c -p clawdie -m git+https -U https://git.FreeBSD.org/ports.git -B main"
        );
        p.tree_method = "svn+https".into();
        assert!(tree_create_args(&p).join(" ").ends_with("-U https://git.FreeBSD.org/ports.git -B main"));
        p.tree_method = "portsnap".into();
        assert_eq!(tree_create_args(&p).join(" "), "ports -c -p clawdie -m portsnap");
        p.tree_method = "git".into();
        p.tree_branch = String::new();
        assert_eq!(tree_create_args(&p).join(" "), "ports -c -p clawdie -m git -U https://git.FreeBSD.org/ports.git");
    }

    #[test]
    fn an_ecc_or_ecdsa_key_is_named_with_its_type_as_pkg_repo_needs() {
        let data =
            camino::Utf8Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/pkgrepo/tests/data/pkg-repo-2/keys");
        for (public, prefix) in [("ecc-repo.pub", "ecc:"), ("ecdsa-repo.pub", "ecdsa:")] {
            let mut config = Config::default();
            config.signing.key = data.join("x.key");
            config.signing.pubkey = data.join(public);
            let text = render_conf(&loaded(config), true);
            assert!(text.contains(&format!("PKG_REPO_SIGNING_KEY={prefix}{}\n", data.join("x.key"))), "{text}");
        }
    }

    #[test]
    fn pubkey_mode_names_the_key_and_zfs() {
        let text = render_conf(&loaded(Config::default()), true);
        for line in [
            "ZPOOL=zroot\n",
            "ZROOTFS=/poudriere\n",
            "BASEFS=/usr/local/poudriere\n",
            "DISTFILES_CACHE=/usr/local/poudriere/distfiles\n",
            "PKG_REPO_SIGNING_KEY=/usr/local/etc/ssl/clawdie-pkg.key\n",
            "FREEBSD_HOST=https://download.FreeBSD.org\n",
            "USE_TMPFS=yes\n",
            "MAX_MEMORY=4\n",
            "MAX_FILES=2048\n",
            "PARALLEL_JOBS=8\n",
        ] {
            assert!(text.contains(line), "lacks {line:?}:\n{text}");
        }
    }

    #[test]
    fn reproducible_writes_what_poudriere_conf_sample_asks_for() {
        let mut config = Config::default();
        assert!(!render_conf(&loaded(config.clone()), true).contains("BUILDER_HOSTNAME"));
        config.poudriere.reproducible = true;
        let text = render_conf(&loaded(config), true);
        assert!(
            text.contains("PKG_REPRODUCIBLE=yes\nBUILDER_HOSTNAME=pkg.clawdie.si\nPRESERVE_TIMESTAMP=yes\n"),
            "{text}"
        );
    }

    #[test]
    fn differences_name_the_keys() {
        let want = "ZPOOL=zroot\nUSE_TMPFS=yes\n";
        let have = "# mine\nZPOOL=\"tank\"\nEXTRA=1 # comment\n";
        assert_eq!(
            assignment_differences(have, want),
            vec![
                "USE_TMPFS is missing".to_owned(),
                "ZPOOL is tank, not zroot".into(),
                "EXTRA is set but pipeline.toml does not set it".into()
            ]
        );
        assert!(assignment_differences(want, want).is_empty());
    }

    #[test]
    fn names() {
        assert_eq!(mastername("clawdie-amd64", "clawdie", Some("validation")), "clawdie-amd64-clawdie-validation");
        assert_eq!(options_set_var("sysutils/colibri"), "sysutils_colibri_SET");
        assert_eq!(
            render_set_make_conf("validation", "sysutils/colibri", &["TESTAGENT".into()]).lines().last(),
            Some("sysutils_colibri_SET+=TESTAGENT")
        );
    }

    #[test]
    fn etc_other_than_the_default_is_passed() {
        let l = loaded(Config::default());
        assert_eq!(command(&l).to_string(), "poudriere");
        let mut config = Config::default();
        config.poudriere.etc = "etc".into();
        assert_eq!(command(&loaded(config)).to_string(), "poudriere -e /p/etc");
    }
}
