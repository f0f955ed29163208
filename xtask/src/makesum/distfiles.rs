//! The distfiles a USES=cargo port needs, in the order `make makesum` lists them, from
//! the port's Makefile and Makefile.crates (docs/reference/ports-cargo.md, Mk/Uses/cargo.mk).
//!
//! Two shapes of the port's own source are modelled: plain MASTER_SITES with the port
//! setting `DISTFILES= ${DISTNAME}${EXTRACT_SUFX}` itself (listed FIRST, before the
//! crates cargo.mk appends), and USE_GITHUB (`ACCT-PROJ-TAG_GH0.tar.gz`, listed LAST, after
//! the crates and git sources). Anything else the framework would add to the list
//! (PATCHFILES, DIST_SUBDIR, GH_TUPLE, site groups, MASTER_SITES macros) is refused with
//! an error naming the variable, never guessed.

use anyhow::{Context, Result, anyhow, bail};
use camino::Utf8Path;

use crate::cargo_crates;
use crate::failure;
use crate::failure::ResultExt;
use crate::makevars::MakeVars;

/// The help line every "cannot evaluate" error carries.
pub const PORTS_HELP: &str =
    "set makesum.method = \"ports\" in pipeline.toml to run the framework's own `make makesum` on a FreeBSD host";

/// Variables that change the distfile list in ways this module does not model.
const NOT_MODELLED: [&str; 7] =
    ["DIST_SUBDIR", "PATCHFILES", "PATCH_SITES", "GH_TUPLE", "USE_GITLAB", "GL_TUPLE", "MASTER_SITE_SUBDIR"];

/// What a distfile is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A crates.io crate from CARGO_CRATES.
    Crate { name: String, version: String },
    /// A git dependency from CARGO_CRATES, as its GitHub commit tarball.
    Git { account: String, project: String, commit: String, crates: Vec<String> },
    /// The port's own source.
    Source(Site),
}

/// Where the port's own source comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Site {
    /// USE_GITHUB: the tag tarball from GitHub.
    GitHub { account: String, project: String, tag: String },
    /// Plain MASTER_SITES: each site followed by the file name is a URL.
    Sites(Vec<String>),
}

/// One distfile: its path relative to the distfiles directory, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub name: String,
    pub kind: Kind,
}

impl Wanted {
    /// How messages name it: `crate aho-corasick 1.1.3`, `the port's source`, ...
    pub fn describe(&self) -> String {
        match &self.kind {
            Kind::Crate { name, version } => format!("crate {name} {version}"),
            Kind::Git { account, project, commit, crates } => {
                format!("git source github.com/{account}/{project} at {} ({})", short(commit), crates.join(", "))
            }
            Kind::Source(Site::GitHub { tag, .. }) => format!("the port's source, GitHub tag {tag}"),
            Kind::Source(Site::Sites(_)) => "the port's source".into(),
        }
    }
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// What the port's Makefiles say about its distfiles.
#[derive(Debug, Clone)]
pub struct PortDistfiles {
    /// Every distfile, in distinfo order.
    pub files: Vec<Wanted>,
    /// The git tag the port's source is cut from (`${DISTVERSIONFULL}`, or GH_TAGNAME).
    pub tag: String,
    /// The top-level directory of the port's source archive: where WRKSRC points below
    /// WRKDIR (`PROJ-VERSION` for GitHub, `${DISTNAME}` by default, the port's WRKSRC when
    /// it sets one, e.g. `colibri` for a Forgejo archive).
    pub prefix: String,
}

impl PortDistfiles {
    /// Reads `DIR/Makefile` and `DIR/Makefile.crates` (when present).
    pub fn read(dir: &Utf8Path) -> Result<PortDistfiles> {
        let makefile = dir.join("Makefile");
        let text = std::fs::read_to_string(&makefile)
            .with_context(|| format!("cannot read the port Makefile {makefile}"))
            .help("--port names a port directory (Makefile, Makefile.crates)")?;
        let crates_file = dir.join("Makefile.crates");
        let crates = match std::fs::read_to_string(&crates_file) {
            Ok(t) => Some(MakeVars::parse(&t, crates_file.as_str())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("cannot read {crates_file}")),
        };
        evaluate(MakeVars::parse(&text, makefile.as_str()), crates.as_ref(), &makefile)
    }
}

fn evaluate(mut vars: MakeVars, crates: Option<&MakeVars>, makefile: &Utf8Path) -> Result<PortDistfiles> {
    let get = |vars: &MakeVars, name: &str| vars.get(name).help(PORTS_HELP);
    let at = |vars: &MakeVars, name: &str| match vars.line(name) {
        Some(line) if line > 0 => format!("{makefile}:{line}"),
        _ => makefile.to_string(),
    };

    let uses = vars.get_or("USES", "").help(PORTS_HELP)?;
    let uses: Vec<&str> = uses.split_whitespace().collect();
    if !uses.iter().any(|u| *u == "cargo" || u.starts_with("cargo:")) {
        bail!(
            failure!("{makefile}: the port does not have USES=cargo; native makesum handles USES=cargo ports")
                .help(PORTS_HELP)
        );
    }
    for name in NOT_MODELLED {
        if vars.is_set(name) {
            bail!(
                failure!(
                    "{}: cannot evaluate the distfile list: {name} is set, which native makesum does not model",
                    at(&vars, name)
                )
                .help(PORTS_HELP)
            );
        }
    }
    if !vars.is_set("EXTRACT_SUFX") {
        if let Some(u) = uses.iter().find(|u| u.starts_with("tar") || ["zip", "7z", "lha"].contains(u)) {
            bail!(
                failure!(
                    "{makefile}: cannot evaluate EXTRACT_SUFX: USES={u} changes it, which native makesum does not model"
                )
                .help("set EXTRACT_SUFX in the Makefile, or set makesum.method = \"ports\" in pipeline.toml")
            );
        }
        vars.default("EXTRACT_SUFX", ".tar.gz");
    }

    let portname = get(&vars, "PORTNAME")?;
    if !vars.is_set("DISTVERSION") {
        if !vars.is_set("PORTVERSION") {
            bail!("{makefile}: cannot evaluate DISTVERSION: neither DISTVERSION nor PORTVERSION is set");
        }
        vars.default("DISTVERSION", "${PORTVERSION}");
    }
    vars.default("DISTVERSIONPREFIX", "");
    vars.default("DISTVERSIONSUFFIX", "");
    vars.default("DISTVERSIONFULL", "${DISTVERSIONPREFIX}${DISTVERSION}${DISTVERSIONSUFFIX}");
    vars.default("WRKDIR", "");
    vars.default("CARGO_DIST_SUBDIR", "rust/crates");

    let (registry, git) = crate_distfiles(&vars, crates)?;

    let (files, tag, prefix) = if vars.is_set("USE_GITHUB") {
        let mode = get(&vars, "USE_GITHUB")?;
        if mode.eq_ignore_ascii_case("nodefault") {
            bail!(
                failure!(
                    "{}: cannot evaluate the distfile list: USE_GITHUB=nodefault takes the source from elsewhere",
                    at(&vars, "USE_GITHUB")
                )
                .help(PORTS_HELP)
            );
        }
        for name in ["DISTFILES", "DISTNAME"] {
            if vars.is_set(name) {
                bail!(
                    failure!(
                        "{}: cannot evaluate the distfile list: {name} is set together with USE_GITHUB",
                        at(&vars, name)
                    )
                    .help(PORTS_HELP)
                );
            }
        }
        let account = if vars.is_set("GH_ACCOUNT") { get(&vars, "GH_ACCOUNT")? } else { portname.clone() };
        let project = if vars.is_set("GH_PROJECT") { get(&vars, "GH_PROJECT")? } else { portname.clone() };
        let tag = if vars.is_set("GH_TAGNAME") { get(&vars, "GH_TAGNAME")? } else { get(&vars, "DISTVERSIONFULL")? };
        let sanitized = tag.replace('/', "-");
        let name = format!("{account}-{project}-{sanitized}_GH0.tar.gz");
        // The framework's WRKSRC for GitHub: `${GH_PROJECT}-${GH_TAGNAME_EXTRACT}`, the
        // tag without a `v` before a digit; GitHub's tarball has the same top directory.
        let prefix = if vars.is_set("WRKSRC") {
            top_dir(&get(&vars, "WRKSRC")?, &at(&vars, "WRKSRC"))?
        } else {
            format!("{project}-{}", strip_v(&sanitized))
        };
        let source = Wanted { name, kind: Kind::Source(Site::GitHub { account, project, tag: tag.clone() }) };
        (registry.into_iter().chain(git).chain([source]).collect::<Vec<_>>(), tag, prefix)
    } else {
        if !vars.is_set("DISTFILES") {
            bail!(failure!("{makefile}: cannot evaluate DISTFILES: it is not set; a USES=cargo port with plain MASTER_SITES sets `DISTFILES= ${{DISTNAME}}${{EXTRACT_SUFX}}` itself (or uses USE_GITHUB)").help(PORTS_HELP));
        }
        vars.default("DISTNAME", "${PORTNAME}-${DISTVERSIONFULL}");
        let names: Vec<String> = get(&vars, "DISTFILES")?.split_whitespace().map(str::to_owned).collect();
        if let Some(grouped) = names.iter().find(|n| n.contains(':')) {
            bail!(failure!("{}: cannot evaluate DISTFILES: `{grouped}` names a site group, which native makesum does not model",
                at(&vars, "DISTFILES")).help(PORTS_HELP));
        }
        let sites = if names.is_empty() { Vec::new() } else { master_sites(&vars, &at(&vars, "MASTER_SITES"))? };
        let wrksrc = if vars.is_set("WRKSRC") { get(&vars, "WRKSRC")? } else { get(&vars, "DISTNAME")? };
        let prefix = top_dir(&wrksrc, &at(&vars, "WRKSRC"))?;
        let sources = names.into_iter().map(|name| Wanted { name, kind: Kind::Source(Site::Sites(sites.clone())) });
        let tag = get(&vars, "DISTVERSIONFULL")?;
        (sources.chain(registry).chain(git).collect(), tag, prefix)
    };
    for w in &files {
        crate::fsx::check_contained(Utf8Path::new(&w.name))
            .with_context(|| format!("{makefile}: distfile `{}` would lie outside the distfiles directory", w.name))?;
    }
    Ok(PortDistfiles { files, tag, prefix })
}

/// The crates of CARGO_CRATES (Makefile.crates first, as cargo.mk includes it) as
/// registry distfiles and GitHub git-source tarballs.
fn crate_distfiles(vars: &MakeVars, crates: Option<&MakeVars>) -> Result<(Vec<Wanted>, Vec<Wanted>)> {
    let from = crates.filter(|c| c.is_set("CARGO_CRATES")).unwrap_or(vars);
    let list = from.get_or("CARGO_CRATES", "").help(PORTS_HELP)?;
    let subdir = vars.get("CARGO_DIST_SUBDIR").help(PORTS_HELP)?;
    let mut registry = Vec::new();
    let mut git = Vec::new();
    for entry in list.split_whitespace() {
        if let Some((names, source)) = entry.split_once("@git+") {
            git.push(git_distfile(names, &source.replace("\\#", "#"))?);
            continue;
        }
        let (name, version) = cargo_crates::split_entry(entry)
            .ok_or_else(|| anyhow!("CARGO_CRATES entry `{entry}` is not NAME-VERSION"))?;
        registry.push(Wanted {
            name: format!("{subdir}/{entry}.crate"),
            kind: Kind::Crate { name: name.to_owned(), version: version.to_owned() },
        });
    }
    Ok((registry, git))
}

/// `name1,name2@git+https://github.com/ACCT/PROJ?rev=x#COMMIT` as the tarball the
/// framework fetches: `ACCT-PROJ-COMMIT_GH0.tar.gz`.
fn git_distfile(names: &str, source: &str) -> Result<Wanted> {
    let (url, commit) = source
        .rsplit_once('#')
        .ok_or_else(|| anyhow!("git source `{source}` in CARGO_CRATES is not pinned to a commit (`#COMMIT`)"))?;
    let url = url.split('?').next().unwrap_or(url);
    let path = url.strip_prefix("https://github.com/").or_else(|| url.strip_prefix("http://github.com/"));
    let Some((account, project)) = path.and_then(|p| p.trim_end_matches('/').split_once('/')) else {
        bail!(failure!("cannot evaluate the distfile of git source `{source}` in CARGO_CRATES: only github.com sources are modelled").help(PORTS_HELP));
    };
    let project = project.strip_suffix(".git").unwrap_or(project);
    if project.contains('/') || commit.is_empty() || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("git source `{source}` in CARGO_CRATES is not github.com/ACCOUNT/PROJECT at a commit id");
    }
    Ok(Wanted {
        name: format!("{account}-{project}-{commit}_GH0.tar.gz"),
        kind: Kind::Git {
            account: account.to_owned(),
            project: project.to_owned(),
            commit: commit.to_owned(),
            crates: names.split(',').map(str::to_owned).collect(),
        },
    })
}

/// MASTER_SITES as plain URLs ending in `/`.
fn master_sites(vars: &MakeVars, at: &str) -> Result<Vec<String>> {
    if !vars.is_set("MASTER_SITES") {
        bail!(
            failure!("{at}: cannot evaluate MASTER_SITES: it is not set, and DISTFILES lists the port's source")
                .help(PORTS_HELP)
        );
    }
    let sites: Vec<String> = vars.get("MASTER_SITES").help(PORTS_HELP)?.split_whitespace().map(str::to_owned).collect();
    for site in &sites {
        if !site.contains("://") {
            bail!(failure!("{at}: cannot evaluate MASTER_SITES: `{site}` is a framework site macro, which native makesum does not model").help(PORTS_HELP));
        }
        if !site.ends_with('/') {
            bail!(failure!("{at}: cannot evaluate MASTER_SITES: `{site}` does not end in `/` (site groups and query-style sites are not modelled)").help(PORTS_HELP));
        }
    }
    if sites.is_empty() {
        bail!(
            failure!("{at}: cannot evaluate MASTER_SITES: it is empty, and DISTFILES lists the port's source")
                .help(PORTS_HELP)
        );
    }
    Ok(sites)
}

/// The first directory of WRKSRC below WRKDIR (WRKDIR evaluates to nothing here).
fn top_dir(wrksrc: &str, at: &str) -> Result<String> {
    let first = wrksrc.trim_start_matches('/').split('/').next().unwrap_or("");
    if first.is_empty() || first == "." || first == ".." {
        bail!("{at}: cannot tell the source archive's top directory from WRKSRC `{wrksrc}`");
    }
    Ok(first.to_owned())
}

/// `v1.2.3` -> `1.2.3` (GH_TAGNAME_EXTRACT); other tags unchanged.
fn strip_v(tag: &str) -> &str {
    match tag.as_bytes() {
        [b'v' | b'V', d, ..] if d.is_ascii_digit() => &tag[1..],
        _ => tag,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(makefile: &str, crates: &str) -> Result<PortDistfiles> {
        let crates = MakeVars::parse(crates, "Makefile.crates");
        evaluate(MakeVars::parse(makefile, "Makefile"), Some(&crates), Utf8Path::new("Makefile"))
    }

    const CRATES: &str = "CARGO_CRATES=\taho-corasick-1.1.3 \\\n\t\tr-efi-5.3.0 \\\n\t\tgitdep,gitdep-macros@git+https://github.com/acct/proj?rev=abc\\#0123456789abcdef0123456789abcdef01234567\n";

    #[test]
    fn plain_master_sites_put_the_source_first() {
        let mk = "PORTNAME=\tcolibri\nDISTVERSIONPREFIX=\tv\nDISTVERSION=\t0.9.0\nMASTER_SITES=\thttps://forge.example/clawdie/colibri/archive/\nDISTFILES=\t${DISTNAME}${EXTRACT_SUFX}\nUSES=\t\tcargo\nWRKSRC=\t\t${WRKDIR}/${PORTNAME}\n";
        let p = eval(mk, CRATES).unwrap();
        let names: Vec<_> = p.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "colibri-v0.9.0.tar.gz",
                "rust/crates/aho-corasick-1.1.3.crate",
                "rust/crates/r-efi-5.3.0.crate",
                "acct-proj-0123456789abcdef0123456789abcdef01234567_GH0.tar.gz"
            ]
        );
        assert_eq!(p.tag, "v0.9.0");
        assert_eq!(p.prefix, "colibri");
        assert_eq!(p.files[1].kind, Kind::Crate { name: "aho-corasick".into(), version: "1.1.3".into() });
    }

    #[test]
    fn use_github_puts_the_tag_tarball_last() {
        let mk =
            "PORTNAME=\tripgrep\nDISTVERSION=\t15.1.0\nUSES=\t\tcargo\nUSE_GITHUB=\tyes\nGH_ACCOUNT=\tBurntSushi\n";
        let p = eval(mk, CRATES).unwrap();
        assert_eq!(p.files.last().unwrap().name, "BurntSushi-ripgrep-15.1.0_GH0.tar.gz");
        assert_eq!(p.prefix, "ripgrep-15.1.0");
        let v = eval("PORTNAME=\tx\nDISTVERSIONPREFIX=\tv\nPORTVERSION=\t2.0\nUSES=\tcargo\nUSE_GITHUB=\tyes\n", "")
            .unwrap();
        assert_eq!(v.files[0].name, "x-x-v2.0_GH0.tar.gz");
        assert_eq!(v.prefix, "x-2.0");
    }

    #[test]
    fn what_is_not_modelled_is_refused_by_name() {
        let base = "PORTNAME=\tx\nDISTVERSION=\t1\nUSES=\tcargo\nMASTER_SITES=\thttps://a/\n";
        let err = |extra: &str| crate::ui::render_error(&eval(&format!("{base}{extra}"), "").unwrap_err());
        assert!(err("DISTFILES=\t${DISTNAME:S/a/b/}.tgz\n").contains("DISTFILES"));
        assert!(err("DISTFILES=\ta.tgz\nPATCHFILES=\tp.diff\n").contains("PATCHFILES is set"));
        assert!(err("").contains("cannot evaluate DISTFILES"));
        let e = err("DISTFILES=\ta.tgz\nMASTER_SITES=\tGH\n");
        assert!(e.contains("MASTER_SITES") && e.contains("makesum.method = \"ports\""), "{e}");
        assert!(
            eval("PORTNAME=\tx\nDISTVERSION=\t1\nUSES=\tgmake\n", "").unwrap_err().to_string().contains("USES=cargo")
        );
    }

    #[test]
    fn strips_a_leading_v_only_before_a_digit() {
        assert_eq!(strip_v("v1.0"), "1.0");
        assert_eq!(strip_v("version"), "version");
        assert_eq!(strip_v("1.0"), "1.0");
    }
}
