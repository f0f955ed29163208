//! bundle and unbundle: bulk's work carried from one state directory (the builder) to
//! another (the signing host), signed there; and every bundle that must be refused:
//! a changed package byte, an edited manifest, another release's.

use std::fs;

use camino::{Utf8Path, Utf8PathBuf};
use test_support::Run;
use test_support::host::Host;

/// A provisioned host whose current run has port and bulk done.
fn built() -> Host {
    let h = Host::with_colibri("");
    h.provision();
    h.run(&["port"]).success();
    let mut cmd = h.p.command(&["bulk"]);
    cmd.env("STANDIN_BULK", "built");
    let run = Run { desc: "xtask bulk".into(), dir: h.p.root.clone(), output: cmd.output().unwrap() };
    run.success();
    h
}

/// `xtask --state-dir DIR ARGS...` on the host.
fn at(h: &Host, dir: &Utf8Path, args: &[&str]) -> Run {
    let mut all = vec!["--state-dir", dir.as_str()];
    all.extend_from_slice(args);
    h.run(&all)
}

fn bundle(h: &Host) -> Utf8PathBuf {
    let out = h.p.scratch.path.join("bulk.bundle");
    h.run(&["bundle", "--stage", "bulk", "--target", "amd64", "--output", out.as_str()])
        .success()
        .stderr_has("bundled `bulk` (amd64) of run ");
    out
}

fn state(dir: &Utf8Path) -> serde_json::Value {
    let id = fs::read_to_string(dir.join("current")).unwrap();
    serde_json::from_str(&fs::read_to_string(dir.join("runs").join(id.trim()).join("state.json")).unwrap()).unwrap()
}

/// Nothing was received: no run, no staging directory left.
fn untouched(dir: &Utf8Path) {
    assert!(!dir.join("current").exists(), "a refused bundle started a run in {dir}");
    let left: Vec<_> = fs::read_dir(dir).map(|d| d.map(|e| e.unwrap().file_name()).collect()).unwrap_or_default();
    assert!(left.iter().all(|n| !n.to_string_lossy().starts_with(".unbundle")), "left behind: {left:?}");
}

/// The byte offset of `name`'s data in the bundle.
fn data_offset(bundle: &[u8], name: &str) -> u64 {
    let mut archive = tar::Archive::new(bundle);
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some(name) {
            return entry.raw_file_position();
        }
    }
    panic!("{name} is not in the bundle");
}

#[test]
fn bulk_moves_to_another_state_directory_and_is_signed_there() {
    let h = built();
    let a = state(&h.p.state_dir());
    let out = bundle(&h);

    let b = h.p.scratch.path.join("signing-host");
    // What an unbundle killed mid-way left is cleared.
    fs::create_dir_all(b.join(".unbundle-999999/files")).unwrap();
    at(&h, &b, &["unbundle", out.as_str()])
        .success()
        .stderr_has("files verified against the bundle's manifest")
        .stderr_has(&format!("next: cargo xtask --config pipeline.toml --state-dir {b} sign"));
    assert!(!b.join(".unbundle-999999").exists());
    let received = state(&b);
    assert_eq!(received["command"], "unbundle");
    // No path of the builder's is kept where this machine would read it.
    let bulk = &received["records"]["bulk"]["last_success"]["outputs"];
    for key in ["repo", "real", "log_dir"] {
        assert!(bulk[key].as_str().unwrap().starts_with(b.as_str()), "{key}: {bulk}");
    }
    let port_dir = received["records"]["port"]["last_success"]["outputs"]["port_dir"].as_str().unwrap();
    assert!(port_dir.starts_with(b.as_str()), "{port_dir}");
    assert_eq!(received["records"]["bulk"]["status"], "succeeded");
    assert_eq!(received["records"]["bulk"]["last_success"]["run"], a["id"]);
    assert_eq!(
        received["records"]["port"]["last_success"]["outputs"]["commit"],
        a["records"]["port"]["last_success"]["outputs"]["commit"]
    );
    let repo = received["records"]["bulk"]["last_success"]["outputs"]["repo"].as_str().unwrap().to_owned();
    assert!(repo.starts_with(b.as_str()), "{repo}");

    let run = at(&h, &b, &["sign"]);
    run.success().stderr_has("wrote the release manifest");
    assert!(!run.stderr().contains("cannot write the report"), "{}", run.stderr());
    let signed = state(&b);
    let dir = b.join("runs").join(signed["id"].as_str().unwrap());
    assert!(dir.join("report.html").is_file() && !dir.join("logs/report.log").exists());
    let manifest = signed["records"]["sign"]["last_success"]["outputs"]["manifest"].as_str().unwrap();
    let manifest: serde_json::Value = serde_json::from_str(&fs::read_to_string(b.join(manifest)).unwrap()).unwrap();
    assert_eq!(manifest["colibri"]["commit"], a["records"]["port"]["last_success"]["outputs"]["commit"]);
    assert_eq!(manifest["build_name"], a["records"]["bulk"]["last_success"]["outputs"]["build_name"]);
    at(&h, &b, &["sign", "--verify-only", "--pubkey", h.pubkey().as_str()]).success().stdout_has("ok: ");
    // The SBOM signed there lists the crates of the Cargo.lock the bundle carried.
    let sbom: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.join("sign/sbom.cdx.json")).unwrap()).unwrap();
    assert_eq!(sbom["components"][0]["components"].as_array().map_or(0, Vec::len), 12, "{sbom}");

    // The same bundle again replaces what was received, in the same run.
    at(&h, &b, &["unbundle", out.as_str()]).success();
    assert_eq!(state(&b)["id"], signed["id"]);
}

#[test]
fn a_changed_package_byte_or_an_edited_manifest_is_refused_and_nothing_is_kept() {
    let h = built();
    let out = bundle(&h);
    let bytes = fs::read(&out).unwrap();

    let mut flipped = bytes.clone();
    let at_byte = data_offset(&bytes, "repo/All/colibri-0.9.0.pkg") as usize + 100;
    flipped[at_byte] ^= 0x20;
    let file = h.p.scratch.path.join("flipped.bundle");
    fs::write(&file, &flipped).unwrap();
    let c = h.p.scratch.path.join("c");
    at(&h, &c, &["unbundle", file.as_str()])
        .code_is(1)
        .stderr_has("repo/All/colibri-0.9.0.pkg does not match the bundle's manifest")
        .stderr_has("nothing of it was kept");
    untouched(&c);

    // The manifest says another digest for meta.conf (same length, so the archive holds).
    let mut edited = bytes.clone();
    let text = String::from_utf8_lossy(&bytes[512..4096]).into_owned();
    let entry = text.find("\"path\":\"repo/meta.conf\"").unwrap();
    let digit = 512 + entry + text[entry..].find("\"sha256\":\"").unwrap() + 10;
    edited[digit] = if edited[digit] == b'a' { b'b' } else { b'a' };
    let file = h.p.scratch.path.join("edited.bundle");
    fs::write(&file, &edited).unwrap();
    at(&h, &c, &["unbundle", file.as_str()])
        .code_is(1)
        .stderr_has("repo/meta.conf does not match the bundle's manifest");
    untouched(&c);

    // Cut short.
    fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    at(&h, &c, &["unbundle", file.as_str()]).code_is(1).stderr_has("cut short");
    untouched(&c);
}

#[test]
fn a_bundle_of_another_release_is_refused() {
    let h = built();
    let out = bundle(&h);

    // Another pipeline.toml (one setting differs): another release.
    let text = fs::read_to_string(h.p.config_path()).unwrap();
    assert!(text.contains("grace_secs = 10"), "{text}");
    fs::write(h.p.config_path(), text.replacen("grace_secs = 10", "grace_secs = 11", 1)).unwrap();
    let d = h.p.scratch.path.join("d");
    at(&h, &d, &["unbundle", out.as_str()])
        .code_is(2)
        .stderr_has("the bundle belongs to another release: its pipeline digest")
        .stderr_has("same pipeline.toml");
    fs::write(h.p.config_path(), text).unwrap();
    untouched(&d);

    // A receiving run of another colibri commit.
    let e = h.p.scratch.path.join("e");
    at(&h, &e, &["unbundle", out.as_str()]).success();
    let id = fs::read_to_string(e.join("current")).unwrap();
    let path = e.join("runs").join(id.trim()).join("state.json");
    let mut st: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    st["records"]["port"]["last_success"]["outputs"]["commit"] = "0123456789abcdef0123456789abcdef01234567".into();
    fs::write(&path, serde_json::to_vec(&st).unwrap()).unwrap();
    let run = at(&h, &e, &["unbundle", out.as_str()]);
    run.code_is(2).stderr_has("but run ").stderr_has("here is of colibri 0123456789abcdef");
    // Its hint works as printed (through sh, `cargo xtask` being the built binary).
    let hint = run.stderr().lines().find_map(|l| l.split("receive it in a new run: ").nth(1)).unwrap().to_owned();
    assert!(hint.starts_with("cargo xtask "), "{hint}");
    let script = hint.replacen("cargo xtask", test_support::xtask_bin().as_str(), 1);
    let output = std::process::Command::new("sh")
        .args(["-c", &script])
        .current_dir(&h.p.root)
        .env("CI", "1")
        .env_remove("MOTHER_BUILD_CONFIG")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    Run { desc: hint, dir: h.p.root.clone(), output }.success();
    assert_ne!(state(&e)["id"].as_str().unwrap(), id.trim());
}

#[test]
fn bundle_refuses_what_it_cannot_pack() {
    let h = Host::with_colibri("");
    let out = h.p.scratch.path.join("x.bundle");
    h.run(&["bundle", "--stage", "bulk", "--output", out.as_str()])
        .code_is(2)
        .stderr_has("there is no run in")
        .stderr_has("run it first: cargo xtask --config pipeline.toml bulk");
    h.run(&["bundle", "--stage", "sign", "--output", out.as_str()]).code_is(2).stderr_has("bundle one of: bulk");
    h.run(&["bundle", "--stage", "bulk", "--target", "riscv64", "--output", out.as_str()])
        .code_is(2)
        .stderr_has("its targets are: amd64");
    assert!(!out.exists());
}
