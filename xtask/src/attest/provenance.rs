//! The release's provenance: an in-toto v1 Statement whose subjects are every package
//! file and the SBOM (SHA-256), with a SLSA v1 provenance predicate naming what the
//! release was built from (colibri's repository, tag and commit; the SHA-256 of
//! Cargo.lock, distinfo and pipeline.toml; the poudriere jail and ports tree) and how
//! (the builder host, the run id, its times). Field meanings: docs/supply-chain.md.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// What this kind of build is (the SLSA `buildType`): documented in docs/supply-chain.md.
pub const BUILD_TYPE: &str = "https://forge.clawdie.si/clawdie/mother-build/docs/supply-chain.md#release-v1";
/// The builder: mother-build, on the host named after it.
pub const BUILDER: &str = "https://forge.clawdie.si/clawdie/mother-build";

/// The most subjects a statement read may have.
const MAX_SUBJECTS: usize = 1_000_000;

/// An in-toto v1 Statement (the predicate kept as JSON when read).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    #[serde(rename = "_type")]
    pub statement_type: String,
    pub subject: Vec<Subject>,
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    pub predicate: serde_json::Value,
}

/// What the statement is about: a file and its digests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    pub name: String,
    pub digest: SubjectDigest,
}

/// A subject's digest set. Ours is SHA-256 alone; reading, other algorithms a
/// statement may list beside it are passed over. (A struct, not a map: a release has a
/// subject per package.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectDigest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// A SLSA ResourceDescriptor: an input, named or located, with digests.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub digest: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// colibri as port staged it.
pub struct Colibri<'a> {
    pub repository: Option<&'a str>,
    pub tag: &'a str,
    pub commit: &'a str,
    pub dirty: bool,
}

/// A poudriere jail or ports tree: its name and what poudriere keeps about it.
pub struct Poudriere<'a> {
    pub name: &'a str,
    /// `version`, `arch`, `method`... as poudriere's metadata files say.
    pub metadata: BTreeMap<String, String>,
    /// The tree's git commit, when it is a git checkout.
    pub commit: Option<String>,
}

/// Everything the statement is made from.
pub struct Input<'a> {
    /// (name, SHA-256) of every subject: package paths relative to the repository, and
    /// the SBOM's file name.
    pub subjects: Vec<(String, String)>,
    pub colibri: Option<Colibri<'a>>,
    pub cargo_lock_sha256: Option<&'a str>,
    pub distinfo_sha256: Option<&'a str>,
    pub pipeline_sha256: &'a str,
    pub jail: Poudriere<'a>,
    pub ports_tree: Poudriere<'a>,
    pub set: Option<&'a str>,
    pub build_name: Option<&'a str>,
    pub host: &'a str,
    pub run_id: &'a str,
    pub started: &'a str,
    pub finished: &'a str,
}

fn sha256(hex: &str) -> BTreeMap<String, String> {
    BTreeMap::from([("sha256".to_owned(), hex.to_owned())])
}

fn named(name: &str, digest: BTreeMap<String, String>) -> Resource {
    Resource { name: Some(name.to_owned()), digest, ..Resource::default() }
}

fn poudriere_resource(kind: &str, p: &Poudriere) -> Resource {
    Resource {
        name: Some(format!("poudriere {kind} {}", p.name)),
        uri: None,
        digest: p.commit.iter().map(|c| ("gitCommit".to_owned(), c.clone())).collect(),
        annotations: p.metadata.clone(),
    }
}

/// Builds the statement.
pub fn build(input: &Input) -> Statement {
    let subject = input
        .subjects
        .iter()
        .map(|(name, sha)| Subject { name: name.clone(), digest: SubjectDigest { sha256: Some(sha.clone()) } })
        .collect();
    let mut resolved = Vec::new();
    if let Some(c) = &input.colibri {
        let uri = c.repository.map(|r| {
            let r = if r.starts_with("git+") { r.to_owned() } else { format!("git+{r}") };
            format!("{r}@refs/tags/{}", c.tag)
        });
        let mut annotations = BTreeMap::from([("tag".to_owned(), c.tag.to_owned())]);
        if c.dirty {
            annotations.insert("dirty".into(), "true".into());
        }
        resolved.push(Resource {
            name: Some("colibri".into()),
            uri,
            digest: BTreeMap::from([("gitCommit".to_owned(), c.commit.to_owned())]),
            annotations,
        });
    }
    if let Some(sha) = input.cargo_lock_sha256 {
        resolved.push(named("Cargo.lock", sha256(sha)));
    }
    if let Some(sha) = input.distinfo_sha256 {
        resolved.push(named("distinfo", sha256(sha)));
    }
    resolved.push(named("pipeline.toml", sha256(input.pipeline_sha256)));
    resolved.push(poudriere_resource("jail", &input.jail));
    resolved.push(poudriere_resource("ports tree", &input.ports_tree));
    let predicate = serde_json::json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "colibri": input.colibri.as_ref().map(|c| serde_json::json!({
                    "repository": c.repository,
                    "tag": c.tag,
                    "commit": c.commit,
                })),
                "jail": input.jail.name,
                "portsTree": input.ports_tree.name,
                "set": input.set,
            },
            "internalParameters": {
                "buildName": input.build_name,
            },
            "resolvedDependencies": resolved,
        },
        "runDetails": {
            "builder": {
                "id": format!("{BUILDER}/builder/{}", super::percent_encode(input.host)),
                "version": { "mother-build": env!("CARGO_PKG_VERSION") },
            },
            "metadata": {
                "invocationId": input.run_id,
                "startedOn": input.started,
                "finishedOn": input.finished,
            },
        },
    });
    Statement { statement_type: STATEMENT_TYPE.into(), subject, predicate_type: PREDICATE_TYPE.into(), predicate }
}

/// Counts the bytes written to it.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Statement {
    /// The statement as the envelope's payload (compact JSON).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Its size known first: one allocation of the right size for a large release.
        let mut counter = Counter(0);
        serde_json::to_writer(&mut counter, self).expect("a statement serializes");
        let mut out = Vec::with_capacity(counter.0);
        serde_json::to_writer(&mut out, self).expect("a statement serializes");
        out
    }

    /// Reads a statement from an envelope's (verified) payload: an in-toto v1 Statement
    /// with a SLSA v1 provenance predicate, each subject with a SHA-256.
    pub fn parse(bytes: &[u8]) -> Result<Statement> {
        let s: Statement = serde_json::from_slice(bytes)
            .map_err(|e| anyhow::anyhow!("the payload is not an in-toto statement: {e}"))?;
        if s.statement_type != STATEMENT_TYPE {
            bail!("the payload's _type is `{}`, not {STATEMENT_TYPE}", s.statement_type);
        }
        if s.predicate_type != PREDICATE_TYPE {
            bail!("the predicateType is `{}`, not {PREDICATE_TYPE}", s.predicate_type);
        }
        if s.subject.len() > MAX_SUBJECTS {
            bail!("the statement has {} subjects; at most {MAX_SUBJECTS} are read", s.subject.len());
        }
        for subject in &s.subject {
            let ok = subject
                .digest
                .sha256
                .as_ref()
                .is_some_and(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()));
            if !ok {
                bail!("the subject `{}` has no SHA-256 digest", subject.name);
            }
        }
        Ok(s)
    }

    /// Subject name -> SHA-256.
    pub fn digests(&self) -> BTreeMap<&str, &str> {
        self.subject.iter().filter_map(|s| Some((s.name.as_str(), s.digest.sha256.as_deref()?))).collect()
    }
}
