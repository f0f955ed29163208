//! The whole release in one test: `cargo xtask release` through all seven stages on
//! Linux. port and makesum run for real on the example colibri; bulk through the
//! poudriere stand-in (its repository made of the real sample packages); sign and
//! publish for real, served by a real nginx on 127.0.0.1; iso through the pkg stand-in
//! with a real image build; the gate boots that image in QEMU. Then the image is broken,
//! the gate fails, the image is fixed and `release --resume` reruns only the gate;
//! `cargo xtask gate` alone works; a release reruns iso, whose image was rebuilt by hand
//! since, and the gate; a second `release` skips every unchanged stage.

use std::fs;

use camino::Utf8Path;

use test_support::dsse;
use test_support::pipeline::{Release, STAGES};

fn published_data(site: &Utf8Path) -> bool {
    site.join("FreeBSD:15:amd64/latest/data.pkg").is_file()
}

#[test]
fn the_whole_release_then_a_broken_image_then_resume() {
    let r = Release::start();

    // 1. Every stage, for real where Linux can.
    let run = r.run(&["release"]);
    run.success();
    for stage in STAGES {
        assert_eq!(r.status(stage), "succeeded", "{stage}\n{}", run.stderr());
        run.stderr_has(&format!("[{stage}] ok"));
    }
    let state = r.h.p.state();
    let out = |stage: &str| state["records"][stage]["last_success"]["outputs"].clone();
    // port staged the tag; makesum wrote distinfo with the checkout's archive first.
    assert_eq!(out("port")["tag"], "v0.9.0");
    let distinfo = fs::read_to_string(r.h.p.root.join("ports/sysutils/colibri/distinfo")).unwrap();
    assert!(distinfo.lines().nth(1).unwrap().starts_with("SHA256 (colibri-v0.9.0.tar.gz) = "), "{distinfo}");
    // bulk built colibri-0.9.0; sign verified it and wrote the manifest; publish switched
    // latest and nginx serves it; iso installed it and built the image the gate booted.
    assert_eq!(out("bulk")["packages"][0]["pkgname"], "colibri-0.9.0");
    let manifest = r.h.p.state_dir().join(out("sign")["manifest"].as_str().unwrap());
    assert!(fs::read_to_string(&manifest).unwrap().contains("\"colibri\""));
    assert!(published_data(&r.h.p.scratch.path.join("site")));
    // poudriere links the build's logs into the repository it commits; publish leaves
    // that link behind.
    let repo = Utf8Path::new(out("bulk")["repo"].as_str().unwrap()).to_owned();
    assert!(fs::symlink_metadata(repo.join("logs")).unwrap().file_type().is_symlink());
    assert!(fs::symlink_metadata(r.h.p.scratch.path.join("site/FreeBSD:15:amd64/latest/logs")).is_err());
    assert!(out("publish")["url"].as_str().unwrap().starts_with("http://127.0.0.1:"));
    let root = r.h.p.scratch.path.join("iso/root");
    assert!(root.join("usr/local/bin/colibri-daemon").is_file());
    assert!(!root.join("usr/local/bin/colibri-test-agent").exists(), "production profile");
    assert!(fs::read_to_string(root.join("etc/rc.conf")).unwrap().contains("colibri_daemon_enable=\"YES\""));
    assert_eq!(out("gate")["verdict"], "pass");
    let console = fs::read_to_string(r.h.p.state_dir().join(out("gate")["console"].as_str().unwrap())).unwrap();
    assert!(console.contains("colibri-daemon"), "the image ran the installed colibri-daemon:\n{console}");
    let run_id = state["id"].as_str().unwrap().to_owned();

    // 2. Break the image: the gate fails (exit 1), the run records it.
    r.build_image(true);
    let gate = r.run(&["gate"]);
    gate.code_is(1).stderr_has("the image failed the boot gate");
    assert_eq!(r.status("gate"), "failed");
    let before = r.attempts();

    // 3. Fix it; --resume reruns only the gate, in the same run.
    r.build_image(false);
    let resume = r.run(&["release", "--resume"]);
    resume.success().stderr_has(&format!("resuming run {run_id} at `gate`")).stderr_has("[gate] ok");
    let gate_at = STAGES.len() - 1;
    for stage in &STAGES[..gate_at] {
        assert!(!resume.stderr().contains(&format!("[{stage}] started")), "{stage} reran:\n{}", resume.stderr());
    }
    let after = r.attempts();
    assert_eq!(&after[..gate_at], &before[..gate_at], "only the gate ran again");
    assert_eq!(after[gate_at], before[gate_at] + 1);
    assert_eq!(r.h.p.state()["id"].as_str().unwrap(), run_id);

    // 4. The gate alone works too.
    r.run(&["gate"]).success().stderr_has("[gate] ok");

    // 5. The image was rebuilt by hand after iso made it: a release notices that what
    // iso produced changed, and runs iso (and so the gate) again, in a new run.
    let rebuilt = r.run(&["release"]);
    rebuilt.success().stderr_has("[iso] ok").stderr_has("[gate] ok");
    for stage in &STAGES[..5] {
        rebuilt.stderr_has(&format!("[{stage}] up to date"));
    }
    let run_id = r.h.p.state()["id"].as_str().unwrap().to_owned();

    // 6. A second release skips every unchanged stage and starts no run.
    let again = r.run(&["release"]);
    again.success().stderr_has("every stage is up to date");
    for stage in STAGES {
        again.stderr_has(&format!("[{stage}] up to date"));
        assert!(!again.stderr().contains(&format!("[{stage}] started")), "{stage} reran");
    }
    assert_eq!(r.h.p.state()["id"].as_str().unwrap(), run_id);

    // 6. The release's SBOM and signed provenance, checked as a user would.
    verify_the_published_release(&r, out("publish")["url"].as_str().unwrap());
}

/// verify-release accepts what was published, over HTTP, and refuses it after each of:
/// a package swapped, the SBOM edited, the envelope re-signed with another key, a subject
/// removed (re-signed with the release key). The envelope verifies with standard DSSE
/// tooling, the SBOM against the CycloneDX 1.6 schema.
fn verify_the_published_release(r: &Release, url: &str) {
    let site = r.h.p.scratch.path.join("site/FreeBSD:15:amd64/latest");
    let repo_url = url.to_owned();
    let (sbom, envelope) = (site.join("sbom.cdx.json"), site.join("provenance.intoto.jsonl"));
    let pubkey = r.h.pubkey();
    let check = || r.h.run(&["verify-release", &repo_url, "--pubkey", pubkey.as_str()]);
    check().success().stdout_has("ok: ").stdout_has("1 package");

    // Standard tooling agrees: the envelope (PAE signed) and the SBOM (the official schema).
    let (ok, said) = dsse::securesystemslib_verifies(&envelope, &pubkey, "rsa-pkcs1v15-sha256");
    assert!(ok, "securesystemslib refuses the envelope:\n{said}");
    let scratch = r.h.p.scratch.path.join("dsse");
    assert!(dsse::openssl_verifies_envelope(&dsse::read(&envelope), &pubkey, "sha256", &scratch));
    let errors = dsse::cyclonedx_errors(&sbom);
    assert!(errors.is_empty(), "the SBOM is not valid CycloneDX 1.6:\n{errors}");
    let bom: serde_json::Value = serde_json::from_str(&fs::read_to_string(&sbom).unwrap()).unwrap();
    let colibri = &bom["components"][0];
    assert_eq!(colibri["name"], "colibri");
    let crates: Vec<&str> =
        colibri["components"].as_array().unwrap().iter().map(|c| c["purl"].as_str().unwrap()).collect();
    assert_eq!(crates.len(), 12, "every crate of the example colibri's Cargo.lock: {crates:?}");
    assert!(crates.contains(&"pkg:cargo/colibri-daemon@0.9.0"), "{crates:?}");
    let statement: serde_json::Value = serde_json::from_slice(&dsse::payload(&dsse::read(&envelope))).unwrap();
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    let deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"].as_array().unwrap();
    assert_eq!(deps[0]["annotations"]["tag"], "v0.9.0");

    // Each tampering is refused, and restored.
    let tamper = |file: &camino::Utf8Path, bytes: &[u8], says: &str| {
        let before = fs::read(file).unwrap();
        fs::remove_file(file).unwrap();
        fs::write(file, bytes).unwrap();
        check().code_is(1).stdout_has(says);
        fs::remove_file(file).unwrap();
        fs::write(file, before).unwrap();
    };
    let package = site.join("All/colibri-0.9.0.pkg");
    let other = fs::read(test_support::repo::sample("validation-pubkey/All/colibri-0.9.0.pkg")).unwrap();
    tamper(&package, &other, "All/colibri-0.9.0.pkg: served larger than the ");
    let mut same_size = fs::read(&package).unwrap();
    let middle = same_size.len() / 2;
    same_size[middle] ^= 0xff;
    tamper(&package, &same_size, "All/colibri-0.9.0.pkg: SHA-256 ");
    let mut edited = fs::read(&sbom).unwrap();
    edited.extend_from_slice(b" ");
    tamper(&sbom, &edited, "sbom.cdx.json: SHA-256 ");
    let (other_key, _) = test_support::repo::other_key(&scratch.join("other"));
    let e = dsse::read(&envelope);
    tamper(
        &envelope,
        dsse::resign(&e, &dsse::payload(&e), &other_key, &scratch).as_bytes(),
        "the DSSE signature does not verify",
    );
    let mut fewer = statement.clone();
    fewer["subject"].as_array_mut().unwrap().retain(|s| s["name"] != "All/colibri-0.9.0.pkg");
    let key = r.h.key();
    let resigned = dsse::resign(&e, &serde_json::to_vec(&fewer).unwrap(), &key, &scratch);
    tamper(
        &envelope,
        resigned.as_bytes(),
        "All/colibri-0.9.0.pkg: in the catalogue, but not a subject of the provenance",
    );
    check().success();
}
