//! The release's SBOM: CycloneDX 1.6 JSON, written with serde (the `cyclonedx-bom` crate,
//! 0.8.1 at the time of writing, emits at most spec 1.5). The repository's packages are
//! the top-level components; inside each package built from the port sit the workspace
//! members it installs and every crate of colibri's Cargo.lock; the dependency graph is
//! Cargo.lock's, and each such package depends on its members. FreeBSD has no purl type:
//! packages carry `pkg:generic` purls and their identity as `mother-build:pkg:*`
//! properties (docs/supply-chain.md says why).

use std::collections::{BTreeMap, HashMap};

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

use super::percent_encode;
use crate::port::Member;
use crate::sign::PackageRecord;
use rustsec::cargo_lock::{Lockfile, Package};

pub const SPEC_VERSION: &str = "1.6";
const SCHEMA: &str = "http://cyclonedx.org/schema/bom-1.6.schema.json";

/// The most an SBOM may weigh when read.
pub const MAX_SBOM: u64 = 256 << 20;

/// Property names: mother-build's namespace.
pub const PKG_PATH: &str = "mother-build:pkg:path";
pub const PKG_ORIGIN: &str = "mother-build:pkg:origin";
pub const PKG_ABI: &str = "mother-build:pkg:abi";
pub const PKG_SUM: &str = "mother-build:pkg:sum";
pub const PKG_SIZE: &str = "mother-build:pkg:size";
pub const CARGO_SOURCE: &str = "mother-build:cargo:source";
pub const CARGO_MEMBER: &str = "mother-build:cargo:workspace-member";
pub const PORT_OPTION: &str = "mother-build:port:option";

/// A CycloneDX BOM: the part of the 1.6 model this SBOM uses. Reading is lenient about
/// fields it does not know (another tool may add them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bom {
    #[serde(rename = "$schema", default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    pub bom_format: String,
    pub spec_version: String,
    #[serde(default)]
    pub serial_number: Option<String>,
    #[serde(default = "one")]
    pub version: u32,
    #[serde(default)]
    pub metadata: Option<Metadata>,
    #[serde(default)]
    pub components: Vec<Component>,
    #[serde(default)]
    pub dependencies: Vec<Dependency>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Tools>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<Component>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tools {
    #[serde(default)]
    pub components: Vec<Component>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Component {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(rename = "bom-ref", default, skip_serializing_if = "Option::is_none")]
    pub bom_ref: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purl: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hashes: Vec<Hash>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_references: Vec<ExternalReference>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub properties: Vec<Property>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<Component>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hash {
    pub alg: String,
    pub content: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExternalReference {
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Property {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dependency {
    #[serde(rename = "ref")]
    pub reference: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
}

impl Component {
    /// A property's value.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.iter().find(|p| p.name == name).map(|p| p.value.as_str())
    }

    /// The SHA-256 among its hashes.
    pub fn sha256(&self) -> Option<&str> {
        self.hashes.iter().find(|h| h.alg == "SHA-256").map(|h| h.content.as_str())
    }
}

fn property(name: &str, value: impl Into<String>) -> Property {
    Property { name: name.to_owned(), value: value.into() }
}

/// What the port contributes: which packages hold Rust code and what that code is.
pub struct PortSide<'a> {
    /// The port's origin: packages of this origin (any flavor or subpackage) are built
    /// from the lock.
    pub origin: &'a str,
    pub lock: &'a Lockfile,
    pub members: &'a [Member],
}

/// Everything the SBOM is made from.
pub struct Input<'a> {
    /// The repository's name (the release's component).
    pub name: &'a str,
    /// The release's version: colibri's tag, when port ran.
    pub version: Option<&'a str>,
    /// When it was made (RFC 3339).
    pub timestamp: &'a str,
    pub abi: &'a str,
    pub packages: &'a [PackageRecord],
    pub port: Option<PortSide<'a>>,
}

/// Builds the SBOM.
pub fn build(input: &Input) -> Bom {
    let release_ref = format!("release:{}", input.name);
    let mut components = Vec::with_capacity(input.packages.len());
    let mut dependencies = Vec::new();
    let mut release_deps = Vec::with_capacity(input.packages.len());
    for p in input.packages {
        let pkg_ref = format!("package:{}", p.path);
        release_deps.push(pkg_ref.clone());
        let mut c = package_component(p, input.abi, &pkg_ref);
        if let Some(port) = &input.port
            && origin_of(&p.origin) == port.origin
        {
            let (inner, deps) = crates(&pkg_ref, port);
            c.components = inner;
            dependencies.extend(deps);
        }
        components.push(c);
    }
    dependencies.insert(0, Dependency { reference: release_ref.clone(), depends_on: release_deps });
    let tool = Component {
        kind: "application".into(),
        bom_ref: None,
        name: "mother-build".into(),
        version: Some(env!("CARGO_PKG_VERSION").into()),
        purl: None,
        hashes: Vec::new(),
        external_references: Vec::new(),
        properties: Vec::new(),
        components: Vec::new(),
    };
    let release = Component {
        kind: "application".into(),
        bom_ref: Some(release_ref),
        name: input.name.to_owned(),
        version: input.version.map(str::to_owned),
        purl: None,
        hashes: Vec::new(),
        external_references: Vec::new(),
        properties: vec![property(PKG_ABI, input.abi)],
        components: Vec::new(),
    };
    let mut bom = Bom {
        schema: Some(SCHEMA.into()),
        bom_format: "CycloneDX".into(),
        spec_version: SPEC_VERSION.into(),
        serial_number: None,
        version: 1,
        metadata: Some(Metadata {
            timestamp: Some(input.timestamp.to_owned()),
            tools: Some(Tools { components: vec![tool] }),
            component: Some(release),
        }),
        components,
        dependencies,
    };
    bom.serial_number = Some(serial_number(&bom));
    bom
}

/// `origin[@flavor][~subpackage]` -> `origin`.
fn origin_of(spec: &str) -> &str {
    spec.split(['@', '~']).next().unwrap_or(spec)
}

fn package_component(p: &PackageRecord, abi: &str, bom_ref: &str) -> Component {
    let mut hashes = Vec::new();
    if !p.sha256.is_empty() {
        hashes.push(Hash { alg: "SHA-256".into(), content: p.sha256.clone() });
    }
    Component {
        kind: "application".into(),
        bom_ref: Some(bom_ref.to_owned()),
        name: p.name.clone(),
        version: Some(p.version.clone()),
        purl: Some(format!("pkg:generic/{}@{}", percent_encode(&p.name), percent_encode(&p.version))),
        hashes,
        external_references: Vec::new(),
        properties: vec![
            property(PKG_PATH, p.path.as_str()),
            property(PKG_ORIGIN, p.origin.as_str()),
            property(PKG_ABI, abi),
            property(PKG_SUM, p.sum.as_str()),
            property(PKG_SIZE, p.size.to_string()),
        ],
        components: Vec::new(),
    }
}

/// The crates inside one package, and their dependency graph (refs made unique by the
/// package's ref).
fn crates(pkg_ref: &str, port: &PortSide) -> (Vec<Component>, Vec<Dependency>) {
    let packages = &port.lock.packages;
    // name -> indices, to resolve each dependency to its exact package.
    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::with_capacity(packages.len());
    for (i, p) in packages.iter().enumerate() {
        by_name.entry(p.name.as_str()).or_default().push(i);
    }
    let ambiguous = |p: &Package| {
        by_name
            .get(p.name.as_str())
            .is_some_and(|v| v.iter().filter(|i| packages[**i].version == p.version).count() > 1)
    };
    let refs: Vec<String> = packages
        .iter()
        .map(|p| {
            let mut r = format!("{pkg_ref}|pkg:cargo/{}@{}", p.name, p.version);
            if ambiguous(p)
                && let Some(s) = &p.source
            {
                r.push('|');
                r.push_str(&s.to_string());
            }
            r
        })
        .collect();
    let mut components = Vec::with_capacity(packages.len());
    let mut deps = Vec::with_capacity(packages.len() + 1);
    let member_names: BTreeMap<&str, &Member> = port.members.iter().map(|m| (m.name.as_str(), m)).collect();
    let mut member_refs = Vec::new();
    for (i, p) in packages.iter().enumerate() {
        let member = if p.source.is_none() { member_names.get(p.name.as_str()) } else { None };
        if member.is_some() {
            member_refs.push(refs[i].clone());
        }
        components.push(crate_component(p, &refs[i], member.copied()));
        let depends_on = p
            .dependencies
            .iter()
            .filter_map(|d| {
                by_name.get(d.name.as_str())?.iter().find(|j| d.matches(&packages[**j])).map(|j| refs[*j].clone())
            })
            .collect();
        deps.push(Dependency { reference: refs[i].clone(), depends_on });
    }
    deps.insert(0, Dependency { reference: pkg_ref.to_owned(), depends_on: member_refs });
    (components, deps)
}

fn crate_component(p: &Package, bom_ref: &str, member: Option<&Member>) -> Component {
    let mut hashes = Vec::new();
    if let Some(sha) = p.checksum.as_ref().and_then(|c| c.as_sha256()) {
        hashes.push(Hash { alg: "SHA-256".into(), content: crate::fingerprint::hex(&sha) });
    }
    let mut external_references = Vec::new();
    let source = match &p.source {
        None => "path".to_owned(),
        Some(s) if s.is_git() => {
            let url = match s.precise() {
                Some(commit) => format!("git+{}#{commit}", s.url()),
                None => format!("git+{}", s.url()),
            };
            external_references.push(ExternalReference { kind: "vcs".into(), url: url.clone() });
            url
        }
        Some(s) => s.to_string(),
    };
    let mut properties = vec![property(CARGO_SOURCE, source)];
    if let Some(m) = member {
        properties.push(property(CARGO_MEMBER, m.path.as_str()));
        if let Some(option) = &m.option {
            properties.push(property(PORT_OPTION, option.as_str()));
        }
    }
    Component {
        kind: if member.is_some() { "application" } else { "library" }.into(),
        bom_ref: Some(bom_ref.to_owned()),
        name: p.name.as_str().to_owned(),
        version: Some(p.version.to_string()),
        purl: Some(format!("pkg:cargo/{}@{}", percent_encode(p.name.as_str()), percent_encode(&p.version.to_string()))),
        hashes,
        external_references,
        properties,
        components: Vec::new(),
    }
}

/// A name-based serial number: the SHA-256 of the BOM's content (everything but the
/// timestamp), laid out as an RFC 9562 UUID with the version-5 and variant bits set.
fn serial_number(bom: &Bom) -> String {
    let mut copy = bom.clone();
    if let Some(m) = &mut copy.metadata {
        m.timestamp = None;
    }
    let digest = crate::fingerprint::sha256_bytes(&serde_json::to_vec(&copy).unwrap_or_default());
    let mut b: Vec<u8> = (0..16).map(|i| u8::from_str_radix(&digest[i * 2..i * 2 + 2], 16).unwrap_or(0)).collect();
    b[6] = (b[6] & 0x0f) | 0x50;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = crate::fingerprint::hex(&b);
    format!("urn:uuid:{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
}

impl Bom {
    /// The SBOM's file: pretty JSON and a newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out).expect("a BOM serializes into memory");
        out
    }

    /// Writes [`Bom::to_bytes`] to `w` as it is made.
    pub fn write_to(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        serde_json::to_writer_pretty(&mut *w, self)?;
        w.write_all(b"\n")
    }

    /// Reads an SBOM from untrusted bytes (size-limited; serde_json bounds nesting).
    pub fn parse(bytes: &[u8]) -> Result<Bom> {
        if bytes.len() as u64 > MAX_SBOM {
            bail!("the SBOM is {} bytes; at most {MAX_SBOM} are read", bytes.len());
        }
        let bom: Bom = serde_json::from_slice(bytes).map_err(|e| anyhow::anyhow!("not a CycloneDX JSON BOM: {e}"))?;
        if bom.bom_format != "CycloneDX" {
            bail!("bomFormat is `{}`, not CycloneDX", bom.bom_format);
        }
        Ok(bom)
    }

    /// The package components (those naming a repository path), by path.
    pub fn packages(&self) -> BTreeMap<&str, &Component> {
        self.components.iter().filter_map(|c| Some((c.property(PKG_PATH)?, c))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCK: &str = r#"version = 4

[[package]]
name = "app"
version = "0.1.0"
dependencies = ["serde", "gitdep"]

[[package]]
name = "serde"
version = "1.0.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "0000000000000000000000000000000000000000000000000000000000000001"

[[package]]
name = "gitdep"
version = "0.2.0"
source = "git+https://example.org/gitdep.git?rev=abc#0123456789abcdef0123456789abcdef01234567"
"#;

    fn pkg(name: &str, origin: &str) -> PackageRecord {
        PackageRecord {
            name: name.into(),
            version: "1.0".into(),
            origin: origin.into(),
            path: format!("All/{name}-1.0.pkg").into(),
            size: 10,
            sum: "2$abc".into(),
            sha256: "ab".repeat(32),
        }
    }

    #[test]
    fn packages_of_the_port_hold_the_lock() {
        let lock: Lockfile = LOCK.parse().unwrap();
        let members = [Member { path: "crates/app".into(), name: "app".into(), option: None }];
        let packages = [pkg("app", "sysutils/app"), pkg("rust", "lang/rust")];
        let bom = build(&Input {
            name: "repo",
            version: Some("v1"),
            timestamp: "2026-01-01T00:00:00Z",
            abi: "FreeBSD:15:amd64",
            packages: &packages,
            port: Some(PortSide { origin: "sysutils/app", lock: &lock, members: &members }),
        });
        let text = String::from_utf8(bom.to_bytes()).unwrap();
        let back = Bom::parse(text.as_bytes()).unwrap();
        assert_eq!(back, bom);
        let app = &bom.components[0];
        assert_eq!(app.components.len(), 3);
        assert!(bom.components[1].components.is_empty(), "lang/rust holds no crate of the lock");
        assert_eq!(app.components[0].property(CARGO_MEMBER), Some("crates/app"));
        assert_eq!(app.components[1].purl.as_deref(), Some("pkg:cargo/serde@1.0.0"));
        assert_eq!(app.components[1].sha256().unwrap(), format!("{}1", "0".repeat(63)));
        assert_eq!(
            app.components[2].external_references[0].url,
            "git+https://example.org/gitdep.git#0123456789abcdef0123456789abcdef01234567"
        );
        let app_deps = bom.dependencies.iter().find(|d| d.reference.ends_with("pkg:cargo/app@0.1.0")).unwrap();
        assert_eq!(app_deps.depends_on.len(), 2);
        let pkg_deps = bom.dependencies.iter().find(|d| d.reference == "package:All/app-1.0.pkg").unwrap();
        assert_eq!(pkg_deps.depends_on, ["package:All/app-1.0.pkg|pkg:cargo/app@0.1.0"]);
        assert!(bom.serial_number.as_deref().unwrap().starts_with("urn:uuid:"));
        assert_eq!(bom.packages().len(), 2);
    }
}
