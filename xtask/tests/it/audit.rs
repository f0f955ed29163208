//! audit: the example colibri's Cargo.lock against small RustSec advisory databases and
//! VuXML files written here; the policy (threshold, reasoned and dated ignores, expiry);
//! the database's age; --json; an unconfigured pipeline.

use std::fs;
use std::time::{Duration, SystemTime};

use camino::{Utf8Path, Utf8PathBuf};

use test_support::Project;

/// A RustSec advisory file (the advisory-db's format: TOML front matter in Markdown).
fn advisory(id: &str, krate: &str, extra: &str, patched: &str, title: &str) -> String {
    format!(
        "```toml\nid = \"{id}\"\npackage = \"{krate}\"\ndate = \"2026-01-02\"\nurl = \"https://example.org/{id}\"\n{extra}\n[versions]\npatched = [{patched}]\n```\n\n# {title}\n\nWhat goes wrong.\n"
    )
}

/// Writes an advisory database with `files` (crate, file name, text) under `dir`.
fn database(dir: &Utf8Path, files: &[(&str, &str, String)]) -> Utf8PathBuf {
    for (krate, name, text) in files {
        let d = dir.join("crates").join(krate);
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join(name), text).unwrap();
    }
    dir.to_owned()
}

/// The example colibri's memchr 2.8.3 is affected (patched in 2.9.0, high severity);
/// libc has an informational advisory; anyhow a low one; itoa's does not apply.
fn standard_db(p: &Project) -> Utf8PathBuf {
    database(
        &p.scratch.path.join("advisory-db"),
        &[
            (
                "memchr",
                "RUSTSEC-2026-0101.md",
                advisory(
                    "RUSTSEC-2026-0101",
                    "memchr",
                    "cvss = \"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N\"\naliases = [\"CVE-2026-1111\"]",
                    "\">= 2.9.0\"",
                    "memchr reads out of bounds",
                ),
            ),
            (
                "libc",
                "RUSTSEC-2026-0102.md",
                advisory("RUSTSEC-2026-0102", "libc", "informational = \"unmaintained\"", "", "libc is unmaintained"),
            ),
            (
                "anyhow",
                "RUSTSEC-2026-0103.md",
                advisory(
                    "RUSTSEC-2026-0103",
                    "anyhow",
                    "cvss = \"CVSS:3.1/AV:L/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N\"",
                    "\">= 1.0.200\"",
                    "anyhow leaks a little",
                ),
            ),
            ("itoa", "RUSTSEC-2026-0104.md", advisory("RUSTSEC-2026-0104", "itoa", "", "\">= 1.0.0\"", "old itoa")),
        ],
    )
}

fn project(db: &str, extra: &str) -> Project {
    let p = Project::with_colibri("");
    let db = if db == "standard" { standard_db(&p).to_string() } else { db.to_owned() };
    p.write_config(&format!("[audit]\nadvisory_db = \"{db}\"\n{extra}"));
    p.run(&["port"]).success();
    p
}

#[test]
fn a_known_advisory_fails_a_reasoned_ignore_passes_and_fails_again_once_expired() {
    let p = project("standard", "");
    let run = p.run(&["audit"]);
    run.code_is(1);
    run.stderr_has(
        "RUSTSEC-2026-0101 high memchr 2.8.3 (crate): memchr reads out of bounds; fixed: >=2.9.0, in colibri-0.9.0 (",
    )
    .stderr_has("2 advisories apply against the policy (audit.fail_on = low): RUSTSEC-2026-0101, RUSTSEC-2026-0103")
    .stderr_has("help: update the crates named")
    .stderr_has("RUSTSEC-2026-0102 unknown (unmaintained) libc")
    .stderr_has("advisories, last updated 0 hours ago");
    assert!(!run.stderr().contains("RUSTSEC-2026-0104"), "itoa 1.0.19 is patched");
    // Ignored with a reason until a day to come; the low one is below a medium threshold.
    let ignore = "[[audit.ignore]]\nid = \"CVE-2026-1111\"\nreason = \"colibri never passes untrusted input to memchr\"\nuntil = \"2999-12-31\"\n";
    let base = format!("[audit]\nadvisory_db = \"{}\"\nfail_on = \"medium\"\n", p.scratch.path.join("advisory-db"));
    p.write_config(&format!("{base}{ignore}"));
    p.run(&["audit"])
        .success()
        .stderr_has("ignored until 2999-12-31: colibri never passes untrusted input to memchr")
        .stderr_has("RUSTSEC-2026-0103 low anyhow 1.0.105 (crate): anyhow leaks a little; fixed: >=1.0.200");
    let expired = ignore.replace("2999-12-31", "2001-01-01");
    p.write_config(&format!("{base}{expired}"));
    p.run(&["audit"])
        .code_is(1)
        .stderr_has("FAILS: its ignore entry expired on 2001-01-01 (colibri never passes untrusted input to memchr)")
        .stderr_has("1 whose ignore entry expired");
    // Above a critical threshold nothing fails.
    p.write_config(&base.replace("medium", "critical"));
    p.run(&["audit"]).success();
}

#[test]
fn json_lists_every_advisory_with_crate_version_fixed_versions_and_package() {
    let p = project("standard", "fail_on = \"critical\"\n");
    let run = p.run(&["audit", "--json"]);
    run.success();
    let report: serde_json::Value = serde_json::from_str(&run.stdout()).unwrap();
    let findings = report["findings"].as_array().unwrap();
    let ids: Vec<&str> = findings.iter().map(|f| f["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    let memchr = findings.iter().find(|f| f["name"] == "memchr").unwrap();
    assert_eq!(memchr["version"], "2.8.3");
    assert_eq!(memchr["fixed"][0], ">=2.9.0");
    assert_eq!(memchr["severity"], "high");
    assert_eq!(memchr["verdict"]["is"], "reported");
    let packages = memchr["packages"].as_array().unwrap();
    assert!(packages.iter().any(|p| p.as_str().unwrap().starts_with("colibri-0.9.0 (")), "{packages:?}");
    assert_eq!(report["crates"], 12);
    assert_eq!(report["audited"], true);
}

#[test]
fn an_old_database_fails_and_says_how_to_update_it() {
    let p = project("standard", "");
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(978_307_200); // 2001-01-01
    for krate in fs::read_dir(p.scratch.path.join("advisory-db/crates")).unwrap() {
        for f in fs::read_dir(krate.unwrap().path()).unwrap() {
            fs::File::options().write(true).open(f.unwrap().path()).unwrap().set_modified(old).unwrap();
        }
    }
    let db = p.scratch.path.join("advisory-db");
    p.run(&["audit"])
        .code_is(2)
        .stderr_has("days ago, more than audit.max_age_days = 7")
        .stderr_has(&format!("git -C {db} pull && "));
}

#[test]
fn vuxml_matches_the_package_as_pkg_audit_does() {
    let p = Project::with_colibri("");
    let vuxml = p.scratch.path.join("vuln.xml");
    fs::write(
        &vuxml,
        r#"<?xml version="1.0" encoding="utf-8"?>
<vuxml xmlns="http://www.vuxml.org/apps/vuxml-1">
  <vuln vid="c0ffee00-0000-11f0-8000-000000000001">
    <topic>colibri -- daemon crashes on a long line</topic>
    <affects><package><name>colibr?</name><range><ge>0.9</ge><lt>0.9.1</lt></range></package></affects>
    <references><cvename>CVE-2026-2222</cvename></references>
  </vuln>
  <vuln vid="c0ffee00-0000-11f0-8000-000000000002">
    <topic>colibri -- fixed long ago</topic>
    <affects><package><name>colibri</name><range><lt>0.8</lt></range></package></affects>
  </vuln>
</vuxml>
"#,
    )
    .unwrap();
    p.write_config(&format!("[audit]\nvuxml = \"{vuxml}\"\n"));
    p.run(&["port"]).success();
    let run = p.run(&["audit"]);
    run.code_is(1);
    run.stderr_has("not audited: audit.advisory_db is not set")
        .stderr_has("c0ffee00-0000-11f0-8000-000000000001 unknown colibri 0.9.0 (package): colibri -- daemon crashes on a long line; fixed: 0.9.1");
    assert!(!run.stderr().contains("000000000002"), "{}", run.stderr());
    p.write_config(&format!(
        "[audit]\nvuxml = \"{vuxml}\"\n[[audit.ignore]]\nid = \"c0ffee00-0000-11f0-8000-000000000001\"\nreason = \"fixed by a patch in the port\"\nuntil = \"2999-01-01\"\n"
    ));
    p.run(&["audit"]).success();
}

#[test]
fn without_a_database_the_crates_are_not_audited_and_it_says_so() {
    let p = Project::with_colibri("");
    p.run(&["port"]).success();
    p.run(&["audit"]).success().stderr_has("not audited: audit.advisory_db is not set");
    let run = p.run(&["audit", "--json"]);
    run.success();
    let report: serde_json::Value = serde_json::from_str(&run.stdout()).unwrap();
    assert_eq!(report["audited"], false);
}

#[test]
fn an_ignore_without_a_reason_or_a_date_is_refused_at_load() {
    let p =
        Project::with_colibri("[[audit.ignore]]\nid = \"RUSTSEC-2026-0101\"\nreason = \"\"\nuntil = \"2999-01-01\"\n");
    p.run(&["audit"]).code_is(2).stderr_has("pipeline.toml:").stderr_has("ignoring RUSTSEC-2026-0101 needs a reason");
    p.write_config("[[audit.ignore]]\nid = \"RUSTSEC-2026-0101\"\nreason = \"r\"\nuntil = \"soon\"\n");
    p.run(&["audit"]).code_is(2).stderr_has("pipeline.toml:").stderr_has("`soon` is not a date YYYY-MM-DD");
    p.write_config("[audit]\nadvisory_db = \"nowhere\"\n");
    p.run(&["port"]).success();
    p.run(&["audit"])
        .code_is(2)
        .stderr_has("is not a RustSec advisory database")
        .stderr_has("git clone https://github.com/rustsec/advisory-db");
}
