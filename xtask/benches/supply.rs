//! Benchmark: the supply-chain work, timed on the library functions the stages call.
//!
//! - SBOM and provenance for a 2,000-crate Cargo.lock and 200 packages: the CycloneDX
//!   document built and serialized, the in-toto statement built, serialized and signed
//!   into a DSSE envelope with a 2048-bit RSA release key. Goal: under 0.2 s. Baseline:
//!   parsing the Cargo.lock.
//! - Audit of the 2,000-crate lock against a 5,000-advisory RustSec database: the
//!   database read from its files, the lock matched, the policy applied. Goal: under 1 s.
//!   Baseline: reading the 5,000 advisory files' bytes.
//!
//! One line per figure: the time, the goal, met or MISSED, and the ratio to the baseline
//! measured in the same run.

// A benchmark may start processes and print: the product's boundaries (clippy.toml) are
// not theirs.
#![allow(clippy::disallowed_methods, clippy::disallowed_macros, clippy::print_stdout, clippy::print_stderr)]

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use rustsec::cargo_lock::Lockfile;
use xtask::attest::{dsse, provenance, sbom};
use xtask::audit::check;
use xtask::port::Member;
use xtask::sign::PackageRecord;

const CRATES: usize = 2_000;
const PACKAGES: usize = 200;
const ADVISORIES: usize = 5_000;

fn main() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = Utf8Path::from_path(scratch.path()).unwrap().to_owned();
    let lock_text = lock();
    let lock: Lockfile = lock_text.parse().unwrap();
    assert_eq!(lock.packages.len(), CRATES + 1);
    let packages = packages();
    let members = [Member { path: "crates/app".into(), name: "app".into(), option: None }];
    let (key, public) = test_support::repo::other_key(&dir.join("key"));
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let secret = pkgrepo::key::read_private_key(&key).unwrap();
    let signer = pkgrepo::sign::KeySigner::new(&secret, &key, fs::read(&public).unwrap(), &public).unwrap();
    let db_dir = database(&dir.join("advisory-db"));

    // SBOM and provenance.
    let parse = median(7, || {
        let start = Instant::now();
        let parsed: Lockfile = lock_text.parse().unwrap();
        std::hint::black_box(parsed);
        start.elapsed()
    });
    let mut envelope_bytes = 0;
    let attest = median(7, || {
        let start = Instant::now();
        let bom = sbom::build(&sbom::Input {
            name: "clawdie",
            version: Some("v1.0.0"),
            timestamp: "2026-06-20T00:00:00.000Z",
            abi: "FreeBSD:15:amd64",
            packages: &packages,
            port: Some(sbom::PortSide { origin: "sysutils/app", lock: &lock, members: &members }),
        });
        let sbom_bytes = bom.to_bytes();
        let mut subjects: Vec<(String, String)> =
            packages.iter().map(|p| (p.path.to_string(), p.sha256.clone())).collect();
        subjects.push(("sbom.cdx.json".into(), xtask::fingerprint::sha256_bytes(&sbom_bytes)));
        let statement = provenance::build(&provenance::Input {
            subjects,
            colibri: Some(provenance::Colibri {
                repository: Some("https://forge.example/app.git"),
                tag: "v1.0.0",
                commit: "0123456789abcdef0123456789abcdef01234567",
                dirty: false,
            }),
            cargo_lock_sha256: Some("00"),
            distinfo_sha256: Some("11"),
            pipeline_sha256: "22",
            jail: provenance::Poudriere { name: "jail", metadata: Default::default(), commit: None },
            ports_tree: provenance::Poudriere { name: "tree", metadata: Default::default(), commit: None },
            set: None,
            build_name: Some("b"),
            host: "builder",
            run_id: "run",
            started: "2026-06-20T00:00:00.000Z",
            finished: "2026-06-20T01:00:00.000Z",
        });
        let envelope = dsse::Envelope::sign(dsse::IN_TOTO, &statement.to_bytes(), &signer).unwrap();
        envelope_bytes = envelope.to_line().len() + sbom_bytes.len();
        start.elapsed()
    });

    // Audit.
    let files: Vec<Utf8PathBuf> = advisory_files(&db_dir);
    assert_eq!(files.len(), ADVISORIES);
    let read = median(5, || {
        let start = Instant::now();
        let total: usize = files.iter().map(|f| fs::read(f).unwrap().len()).sum();
        std::hint::black_box(total);
        start.elapsed()
    });
    let mut found = 0;
    let audit = median(5, || {
        let start = Instant::now();
        let db = xtask::audit::open_db(&db_dir).unwrap();
        let names = ["app".to_owned()];
        let mut findings = check::rustsec(&db, &lock, &check::Packaging { package: "app-1.0.0", members: &names });
        check::judge(&mut findings, check::Severity::Low, &[], "2026-06-20");
        found = findings.len();
        start.elapsed()
    });
    assert_eq!(found, CRATES / 20, "every twentieth crate has an advisory that applies");

    let met = |took: Duration, goal: f64| if took.as_secs_f64() < goal { "met" } else { "MISSED" };
    println!("baseline: parsing the {CRATES}-crate Cargo.lock                    {:>8.4} s", parse.as_secs_f64());
    println!(
        "SBOM + signed provenance, {CRATES} crates, {PACKAGES} packages ({} KiB)  {:>8.4} s  (goal: under 0.2 s) {}  {:.1}x baseline",
        envelope_bytes / 1024,
        attest.as_secs_f64(),
        met(attest, 0.2),
        attest.as_secs_f64() / parse.as_secs_f64()
    );
    println!("baseline: reading the {ADVISORIES} advisory files                     {:>8.4} s", read.as_secs_f64());
    println!(
        "audit: {CRATES} crates against {ADVISORIES} advisories ({found} apply)       {:>8.4} s  (goal: under 1 s) {}  {:.1}x baseline",
        audit.as_secs_f64(),
        met(audit, 1.0),
        audit.as_secs_f64() / read.as_secs_f64()
    );
}

fn median(n: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut times: Vec<Duration> = (0..n).map(|_| f()).collect();
    times.sort();
    times[n / 2]
}

/// A Cargo.lock of the member `app` and 2,000 registry crates, each depending on the
/// next two.
fn lock() -> String {
    let mut s = String::from("version = 3\n\n[[package]]\nname = \"app\"\nversion = \"1.0.0\"\ndependencies = [\n");
    for i in 0..10 {
        writeln!(s, " \"crate{i}\",").unwrap();
    }
    s.push_str("]\n");
    for i in 0..CRATES {
        write!(
            s,
            "\n[[package]]\nname = \"crate{i}\"\nversion = \"1.{}.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\nchecksum = \"{:064x}\"\n",
            i % 7,
            i
        )
        .unwrap();
        let deps: Vec<String> = (i + 1..(i + 3).min(CRATES)).map(|d| format!(" \"crate{d}\",")).collect();
        if !deps.is_empty() {
            write!(s, "dependencies = [\n{}\n]\n", deps.join("\n")).unwrap();
        }
    }
    s
}

fn packages() -> Vec<PackageRecord> {
    (0..PACKAGES)
        .map(|i| PackageRecord {
            name: if i == 0 { "app".into() } else { format!("dep{i}") },
            version: "1.0.0".into(),
            origin: if i == 0 { "sysutils/app".into() } else { format!("misc/dep{i}") },
            path: format!("All/pkg{i}-1.0.0.pkg").into(),
            size: 1_000_000 + i as u64,
            sum: format!("{:064x}", i),
            sha256: format!("{:064x}", i + 1),
        })
        .collect()
}

/// 5,000 advisories over 1,000 crates (5 each): crates of the lock and others; for every
/// twentieth lock crate one applies (patched in 9.0.0), the others are patched before 1.0.
fn database(dir: &Utf8Path) -> Utf8PathBuf {
    for n in 0..ADVISORIES {
        let krate = if n % 5 == 0 { format!("crate{}", (n / 5) * 2) } else { format!("other{}", n / 5) };
        let applies = n % 5 == 0 && ((n / 5) * 2) % 20 == 0;
        let patched = if applies { ">= 9.0.0" } else { ">= 0.1.0" };
        let id = format!("RUSTSEC-2020-{:04}", n + 1);
        let d = dir.join("crates").join(&krate);
        fs::create_dir_all(&d).unwrap();
        fs::write(
            d.join(format!("{id}.md")),
            format!(
                "```toml\nid = \"{id}\"\npackage = \"{krate}\"\ndate = \"2020-01-01\"\nurl = \"https://example.org/{id}\"\ncvss = \"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N\"\n\n[versions]\npatched = [\"{patched}\"]\n```\n\n# Advisory {n}\n\nSomething goes wrong in {krate}.\n"
            ),
        )
        .unwrap();
    }
    dir.to_owned()
}

fn advisory_files(dir: &Utf8Path) -> Vec<Utf8PathBuf> {
    let mut out = Vec::new();
    for krate in dir.join("crates").read_dir_utf8().unwrap() {
        for f in krate.unwrap().path().read_dir_utf8().unwrap() {
            out.push(f.unwrap().path().to_owned());
        }
    }
    out
}
