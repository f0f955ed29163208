//! sign: the real pkg 2.8.4 samples verify in the trust mode their README names and in
//! no other; every kind of tampering is refused with a line saying what failed; native
//! signing matches pkg byte for byte and openssl agrees; the key is guarded.

use std::fs;

use camino::Utf8Path;

use test_support::repo::*;
use test_support::{Project, Run, scratch, write_script};

fn verify(p: &Project, repo: &Utf8Path, trust: &[&str]) -> Run {
    let mut args = vec!["sign", "--verify-only", "--repo", repo.as_str()];
    args.extend_from_slice(trust);
    p.run(&args)
}

fn with_pubkey() -> [&'static str; 2] {
    ["--pubkey", "PUBKEY"]
}

fn pk(p: &Project, repo: &Utf8Path) -> Run {
    let key = pubkey();
    verify(p, repo, &[with_pubkey()[0], key.as_str()])
}

fn fp(p: &Project, repo: &Utf8Path, dir: &Utf8Path) -> Run {
    verify(p, repo, &["--fingerprints", dir.as_str()])
}

#[test]
fn the_samples_verify_only_in_the_mode_their_readme_names() {
    let p = Project::new("");
    for repo in ["production-pubkey", "validation-pubkey"] {
        pk(&p, &sample(repo)).success().stdout_has("ok: ").stdout_has("1 package (");
    }
    fp(&p, &sample("production-fingerprints"), &fingerprints()).success().stdout_has("ok: ");

    pk(&p, &sample("unsigned")).code_is(1).stdout_has("data.pkg: is not signed (no `signature` entry)");
    fp(&p, &sample("unsigned"), &fingerprints()).code_is(1).stdout_has("packagesite.pkg: is not signed (no .sig/.pub");
    fp(&p, &sample("production-pubkey"), &fingerprints())
        .code_is(1)
        .stdout_has("data.pkg: is not signed for fingerprints clients");
    pk(&p, &sample("production-fingerprints")).code_is(1).stdout_has("data.pkg: is not signed for pubkey clients");
    // One line per problem: both catalogues, nothing else.
    let run = pk(&p, &sample("unsigned"));
    assert_eq!(run.stdout().lines().count(), 2, "{}", run.stdout());
    run.stderr_has("failed verification: 2 problems");
    // The ABI is checked.
    verify(&p, &sample("production-pubkey"), &["--pubkey", pubkey().as_str(), "--abi", "FreeBSD:14:amd64"])
        .code_is(1)
        .stdout_has("has ABI FreeBSD:15:amd64 but the repository is for FreeBSD:14:amd64");
}

/// A copy of production-pubkey to tamper with.
fn tamper(name: &str) -> (test_support::Scratch, camino::Utf8PathBuf) {
    let s = scratch();
    let repo = copy_sample("production-pubkey", &s.path.join(name));
    (s, repo)
}

#[test]
fn an_edited_catalogue_with_the_old_signature_is_refused() {
    let p = Project::new("");
    let (_s, repo) = tamper("edited");
    edit_archive(&repo.join("data.pkg"), |entries| {
        let data = &mut entries.iter_mut().find(|(n, _)| n == "data").unwrap().1;
        let text = String::from_utf8(data.clone()).unwrap().replace("Agent runtime", "Agent runtimE");
        *data = text.into_bytes();
    });
    pk(&p, &repo).code_is(1).stdout_has("data.pkg: signature checked with").stdout_has("does not verify");
    // packagesite.pkg is checked on its own: tampering with it alone is caught too.
    let (_s2, repo2) = tamper("edited-site");
    edit_archive(&repo2.join("packagesite.pkg"), |entries| {
        let site = &mut entries.iter_mut().find(|(n, _)| n == "packagesite.yaml").unwrap().1;
        site.push(b'\n');
    });
    let run = pk(&p, &repo2);
    run.code_is(1).stdout_has("packagesite.pkg: signature checked with");
    assert!(!run.stdout().contains("data.pkg:"), "{}", run.stdout());
}

#[test]
fn flipped_package_bytes_of_the_same_size_are_refused() {
    let p = Project::new("");
    let (_s, repo) = tamper("flipped");
    let pkg = repo.join("All/colibri-0.9.0.pkg");
    let mut bytes = fs::read(&pkg).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&pkg, bytes).unwrap();
    pk(&p, &repo)
        .code_is(1)
        .stdout_has("All/colibri-0.9.0.pkg: does not match the catalogue's sum 2$f56x1t1goeouogr1qr4ke1fh6z3yhtnzz6gzqxediqrbmejq5g5z563q91r5byt55jc89jfx5xa4krhbotsiedko53ccdbpmdcxidhy");
}

#[test]
fn a_package_swapped_for_another_is_refused() {
    let p = Project::new("");
    let (_s, repo) = tamper("swapped");
    fs::copy(sample("validation-pubkey/All/colibri-0.9.0.pkg"), repo.join("All/colibri-0.9.0.pkg")).unwrap();
    pk(&p, &repo).code_is(1).stdout_has("All/colibri-0.9.0.pkg: is 1935 bytes but the catalogue says 1769 (pkgsize)");
}

#[test]
fn a_listed_package_that_is_missing_is_refused() {
    let p = Project::new("");
    let (_s, repo) = tamper("missing");
    fs::remove_file(repo.join("All/colibri-0.9.0.pkg")).unwrap();
    pk(&p, &repo).code_is(1).stdout_has("All/colibri-0.9.0.pkg: is listed in the catalogue but missing");
}

#[test]
fn a_signature_by_another_key_is_refused() {
    let p = Project::new("");
    let (s, repo) = tamper("other-key");
    let (other, _) = other_key(&s.path.join("keys"));
    for (archive, inner) in [("data.pkg", "data"), ("packagesite.pkg", "packagesite.yaml")] {
        edit_archive(&repo.join(archive), |entries| {
            let digest = sha256_hex(&entries.iter().find(|(n, _)| n == inner).unwrap().1);
            let mut sig = openssl_sign(&other, &digest);
            sig.push(0);
            entries.iter_mut().find(|(n, _)| n == "signature").unwrap().1 = sig;
        });
    }
    // A 2048-bit key: the length alone gives it away.
    pk(&p, &repo).code_is(1).stdout_has("data.pkg: signature checked with").stdout_has("the signature is 256 bytes");

    // Same length, another 4096-bit key's signature: the value does not verify.
    let (_s2, repo2) = tamper("other-value");
    let validation = entry(&sample("validation-pubkey/data.pkg"), "signature");
    edit_archive(&repo2.join("data.pkg"), |entries| {
        entries.iter_mut().find(|(n, _)| n == "signature").unwrap().1 = validation;
    });
    pk(&p, &repo2).code_is(1).stdout_has("data.pkg: signature checked with").stdout_has("does not verify");
}

#[test]
fn a_truncated_or_removed_signature_is_refused() {
    let p = Project::new("");
    let (_s, repo) = tamper("truncated");
    edit_archive(&repo.join("data.pkg"), |entries| {
        entries.iter_mut().find(|(n, _)| n == "signature").unwrap().1.truncate(300);
    });
    pk(&p, &repo)
        .code_is(1)
        .stdout_has("data.pkg: signature checked with")
        .stdout_has("the signature is 300 bytes but the key makes 512-byte signatures");

    let (_s2, repo2) = tamper("removed");
    edit_archive(&repo2.join("packagesite.pkg"), |entries| entries.retain(|(n, _)| n != "signature"));
    pk(&p, &repo2).code_is(1).stdout_has("packagesite.pkg: is not signed (no `signature` entry)");
}

#[test]
fn revoked_and_untrusted_fingerprints_are_refused() {
    let p = Project::new("");
    let s = scratch();
    let repo = sample("production-fingerprints");

    let revoked = s.path.join("revoked-fps");
    test_support::copy_tree(&fingerprints(), &revoked);
    fs::create_dir_all(revoked.join("revoked")).unwrap();
    fs::copy(fingerprints().join("trusted/test-repo"), revoked.join("revoked/test-repo")).unwrap();
    fp(&p, &repo, &revoked)
        .code_is(1)
        .stdout_has(&format!("data.pkg: `data.pub` has fingerprint {TEST_FP}, which is revoked"));

    let untrusted = s.path.join("untrusted-fps");
    fs::create_dir_all(untrusted.join("trusted")).unwrap();
    fs::write(
        untrusted.join("trusted/someone-else"),
        format!("function: \"sha256\"\nfingerprint: \"{}\"\n", "ab".repeat(32)),
    )
    .unwrap();
    fp(&p, &repo, &untrusted)
        .code_is(1)
        .stdout_has(&format!("data.pkg: no trusted certificate: fingerprint {TEST_FP} is not in {untrusted}/trusted"));
}

#[test]
fn paths_escaping_the_repository_and_a_bad_meta_conf_are_refused() {
    let p = Project::new("");
    let (s, repo) = tamper("escape");
    let key = private_key(&s.path.join("keys"));
    // A catalogue that is correctly signed but lists a package outside the repository.
    for (archive, inner) in [("data.pkg", "data"), ("packagesite.pkg", "packagesite.yaml")] {
        edit_archive(&repo.join(archive), |entries| {
            let body = &mut entries.iter_mut().find(|(n, _)| n == inner).unwrap().1;
            *body = String::from_utf8(body.clone())
                .unwrap()
                .replace("\"All/colibri-0.9.0.pkg\"", "\"../All/colibri-0.9.0.pkg\"")
                .into_bytes();
            let digest = sha256_hex(body);
            let mut sig = openssl_sign(&key, &digest);
            sig.push(0);
            entries.iter_mut().find(|(n, _)| n == "signature").unwrap().1 = sig;
        });
    }
    fs::write(repo.join("meta.conf"), "version = 7;\n").unwrap();
    let run = pk(&p, &repo);
    run.code_is(1)
        .stdout_has("data.pkg: colibri-0.9.0: path `../All/colibri-0.9.0.pkg` escapes the repository")
        .stdout_has("meta.conf: is not usable: version 7")
        .stdout_has("meta: differs from meta.conf");
    assert!(!run.stdout().contains("signature"), "the signatures are good:\n{}", run.stdout());
}

#[test]
fn native_signing_matches_pkg_and_openssl_agrees() {
    let p = signing_project("pubkey", "");
    let repo = copy_sample("unsigned", &p.scratch.path.join("repo"));
    p.run(&["sign", "--repo", repo.as_str()])
        .success()
        .stderr_has("signed data.pkg")
        .stderr_has("signed packagesite.pkg");
    pk(&p, &repo).success();
    for (archive, inner) in [("data.pkg", "data"), ("packagesite.pkg", "packagesite.yaml")] {
        let entries = read_archive(&repo.join(archive));
        let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["signature", inner], "signature entry first");
        let sig = &entries[0].1;
        assert_eq!(sig.len(), 513);
        assert_eq!(sig[512], 0, "one trailing NUL");
        let digest = sha256_hex(&entries[1].1);
        assert!(openssl_verify(&pubkey(), &digest, &sig[..512], &p.scratch.path), "openssl rejects {archive}");
        // Deterministic, and exactly what pkg wrote for the same catalogue.
        assert_eq!(sig, &entry(&sample("production-pubkey").join(archive), "signature"));
    }
    // Signed already: a second run keeps the archives as they are.
    let before = fs::read(repo.join("data.pkg")).unwrap();
    p.run(&["sign", "--repo", repo.as_str()]).success().stderr_has("already signed by the release key");
    assert_eq!(fs::read(repo.join("data.pkg")).unwrap(), before);
}

#[test]
fn fingerprints_mode_signs_with_the_key_or_a_signing_command() {
    let p = signing_project("fingerprints", "");
    let repo = copy_sample("unsigned", &p.scratch.path.join("repo"));
    p.run(&["sign", "--repo", repo.as_str()]).success().stderr_has("fingerprints layout");
    fp(&p, &repo, &fingerprints()).success();
    let names: Vec<String> = read_archive(&repo.join("data.pkg")).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["data.sig", "data.pub", "data"]);
    assert_eq!(
        entry(&repo.join("data.pkg"), "data.sig"),
        entry(&sample("production-fingerprints/data.pkg"), "data.sig")
    );

    // A signing command (pkg's protocol), run as an argument vector; the key file is not needed.
    let key = private_key(&p.scratch.path.join("cmd-keys"));
    let script = p.scratch.path.join("bin/sign.sh");
    write_script(
        &script,
        &format!(
            "#!/bin/sh\n# Answers pkg's signing_command protocol with openssl.\nread -r digest\nprintf 'SIGNATURE\\n'\nprintf %s \"$digest\" | openssl dgst -sha256 -sign '{key}'\nprintf '\\nCERT\\n'\ncat '{}'\nprintf 'END\\n'\n",
            pubkey()
        ),
    );
    p.write_config(&format!(
        "{}\ncommand = [\"{script}\"]\n\n[sign]\nprovenance = false\n",
        signing_config(&p.scratch.path.join("absent.key"), "fingerprints")
    ));
    let repo2 = copy_sample("unsigned", &p.scratch.path.join("repo2"));
    p.run(&["sign", "--repo", repo2.as_str()]).success();
    fp(&p, &repo2, &fingerprints()).success();
    assert_eq!(fs::read(repo2.join("packagesite.pkg")).unwrap(), fs::read(repo.join("packagesite.pkg")).unwrap());
}

#[test]
fn a_key_rotation_re_signs() {
    // Signed by another key that clients still trust: signed again by the release key.
    let p = signing_project("pubkey", "");
    let repo = copy_sample("production-pubkey", &p.scratch.path.join("repo"));
    let (other, other_pub) = other_key(&p.scratch.path.join("old"));
    for (archive, inner) in [("data.pkg", "data"), ("packagesite.pkg", "packagesite.yaml")] {
        edit_archive(&repo.join(archive), |entries| {
            let digest = sha256_hex(&entries.iter().find(|(n, _)| n == inner).unwrap().1);
            let mut sig = openssl_sign(&other, &digest);
            sig.push(0);
            entries.iter_mut().find(|(n, _)| n == "signature").unwrap().1 = sig;
        });
    }
    verify(&p, &repo, &["--pubkey", other_pub.as_str()]).success();
    p.run(&["sign", "--repo", repo.as_str()]).success().stderr_has("signed data.pkg");
    pk(&p, &repo).success();
    verify(&p, &repo, &["--pubkey", other_pub.as_str()]).code_is(1);
}

#[test]
fn a_repository_whose_packages_do_not_match_is_never_signed() {
    let p = signing_project("pubkey", "");
    let repo = copy_sample("unsigned", &p.scratch.path.join("repo"));
    fs::copy(sample("validation-pubkey/All/colibri-0.9.0.pkg"), repo.join("All/colibri-0.9.0.pkg")).unwrap();
    let before = fs::read(repo.join("data.pkg")).unwrap();
    p.run(&["sign", "--repo", repo.as_str()])
        .code_is(1)
        .stderr_has("failed verification (3 problems)")
        .stderr_has("All/colibri-0.9.0.pkg: is 1935 bytes")
        .stderr_has("rather than signing this");
    assert_eq!(fs::read(repo.join("data.pkg")).unwrap(), before, "nothing was signed");
}

#[test]
fn a_key_readable_by_others_is_refused_and_never_shown() {
    let p = signing_project("pubkey", "");
    let key = p.scratch.path.join("keys/test-repo.key");
    fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let repo = copy_sample("unsigned", &p.scratch.path.join("repo"));
    let run = p.run(&["sign", "--repo", repo.as_str()]);
    run.code_is(2).stderr_has("mode 0644").stderr_has("refusing to use it").stderr_has("pipeline.toml:");
    let key_text = fs::read_to_string(&key).unwrap();
    let secret_line = key_text.lines().nth(5).unwrap();
    let log =
        fs::read_to_string(p.state_dir().join("runs").join(p.state()["id"].as_str().unwrap()).join("logs/sign.log"))
            .unwrap();
    for text in [run.stdout(), run.stderr(), log] {
        assert!(!text.contains(secret_line) && !text.contains("PRIVATE KEY-----\n"), "the key leaked:\n{text}");
    }
    // Nothing in the state directory holds the key.
    for entry in walk(&p.state_dir()) {
        let bytes = fs::read(&entry).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&bytes).contains(secret_line), "{entry} holds the key");
    }
}

fn walk(dir: &Utf8Path) -> Vec<camino::Utf8PathBuf> {
    let mut out = Vec::new();
    for e in dir.read_dir_utf8().unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            out.extend(walk(e.path()));
        } else {
            out.push(e.path().to_owned());
        }
    }
    out
}

#[test]
fn the_release_manifest_lists_every_package_and_the_key() {
    let p = signing_project("pubkey", "");
    let repo = copy_sample("production-pubkey", &p.scratch.path.join("repo"));
    p.run(&["sign", "--repo", repo.as_str()]).success().stderr_has("wrote the release manifest");
    let out = &p.state()["records"]["sign"]["last_success"]["outputs"];
    assert_eq!(out["trust"], "pubkey");
    assert_eq!(out["key_fingerprint"], TEST_FP);
    assert_eq!(out["signed"], false);
    let manifest_path = p.state_dir().join(out["manifest"].as_str().unwrap());
    let m: serde_json::Value = serde_json::from_slice(&fs::read(&manifest_path).unwrap()).unwrap();
    assert_eq!(m["key"]["fingerprint"], TEST_FP);
    assert_eq!(m["repository"]["abi"], "FreeBSD:15:amd64");
    assert!(m["created"].as_str().unwrap().ends_with('Z'));
    let pkg = &m["packages"][0];
    assert_eq!(pkg["name"], "colibri");
    assert_eq!(pkg["version"], "0.9.0");
    assert_eq!(pkg["origin"], "sysutils/colibri");
    assert_eq!(pkg["path"], "All/colibri-0.9.0.pkg");
    assert_eq!(pkg["size"], 1769);
    assert_eq!(pkg["sha256"], "3f0080a2f497472d8974f5647b3f154d76834cc4636949bcbd3f64b3278bff32");
    assert!(pkg["sum"].as_str().unwrap().starts_with("2$f56x1t1g"));
    assert_eq!(m["catalogues"][0]["inner_sha256"], "3e37873f895788288a5c4977c7fb0564db8fa36ad6ef5ada362f28d03eee6d48");
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let p = signing_project("pubkey", "[sign]\nmethod = \"pkg\"\n");
    let repo = copy_sample("unsigned", &p.scratch.path.join("repo"));
    let before = fs::read(repo.join("data.pkg")).unwrap();
    let key = p.scratch.path.join("keys/test-repo.key");
    p.run(&["sign", "--dry-run", "--repo", repo.as_str()])
        .success()
        .stdout_has(&format!("run     pkg repo {repo} {key}"))
        .stdout_has("manifest.json (release manifest)");
    assert_eq!(fs::read(repo.join("data.pkg")).unwrap(), before);
    // Without a bulk record the plan names poudriere's repository.
    p.run(&["sign", "--dry-run"])
        .success()
        .stdout_has("bulk has not run in this run")
        .stdout_has("/usr/local/poudriere/data/packages/clawdie-amd64-clawdie/.latest");
    // Outside a dry run, the missing bulk record is an error saying what to do.
    p.run(&["sign"]).code_is(2).stderr_has("cargo xtask --config pipeline.toml bulk").stderr_has("--repo DIR");
}

#[test]
fn dry_run_checks_the_key_as_sign_would_without_showing_it() {
    let p = signing_project("pubkey", "");
    let repo = copy_sample("unsigned", &p.scratch.path.join("repo"));
    let key = p.scratch.path.join("keys/test-repo.key");
    let key_line = fs::read_to_string(&key).unwrap().lines().nth(5).unwrap().to_owned();
    let dry = |extra: &[&str]| {
        let mut args = extra.to_vec();
        args.extend(["sign", "--dry-run", "--repo", repo.as_str()]);
        let run = p.run(&args);
        for text in [run.stdout(), run.stderr()] {
            assert!(!text.contains(&key_line) && !text.contains("PRIVATE KEY-----\n"), "the key leaked:\n{text}");
        }
        run
    };
    dry(&[]).success().stdout_has(&format!(
        "check   the signing key {key}: mode 0600 or stricter, a rsa key, the private half of {}",
        pubkey()
    ));

    // Readable by others: refused, as sign refuses it.
    fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    dry(&[]).code_is(2).stderr_has("mode 0644").stderr_has("refusing to use it").stderr_has("pipeline.toml:");
    fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    // Not the private half of signing.pubkey.
    let (other, _) = other_key(&p.scratch.path.join("other"));
    let arg = format!("signing.key={other}");
    dry(&["-o", &arg])
        .code_is(2)
        .stderr_has(&format!("the signing key {other} (rsa) does not belong to the public key"));

    // Not a key at all.
    let garbage = p.scratch.path.join("keys/garbage.key");
    fs::write(&garbage, "not a key\n").unwrap();
    fs::set_permissions(&garbage, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let arg = format!("signing.key={garbage}");
    dry(&["-o", &arg]).code_is(2).stderr_has(&format!("the signing key {garbage} cannot be used"));

    // Missing.
    let arg = format!("signing.key={}", p.scratch.path.join("keys/missing.key"));
    dry(&["-o", &arg]).code_is(2).stderr_has("missing.key");
}

#[test]
fn without_bulk_the_repository_is_under_poudriere_data() {
    let p = signing_project("pubkey", "[poudriere]\ndata = \"/srv/poudriere-data\"\n");
    let run = p.run(&["sign", "--dry-run"]);
    run.success().stdout_has("/srv/poudriere-data/packages/clawdie-amd64-clawdie/.latest");
    assert!(!run.stdout().contains("/usr/local/poudriere/data"), "{}", run.stdout());
}

#[test]
fn every_compression_is_read_and_kept_when_signing() {
    use std::io::Write;
    let xz = |tar: &[u8]| {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
        e.write_all(tar).unwrap();
        e.finish().unwrap()
    };
    let gzip = |tar: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(tar).unwrap();
        e.finish().unwrap()
    };
    let bzip2 = |tar: &[u8]| {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        e.write_all(tar).unwrap();
        e.finish().unwrap()
    };
    let none = |tar: &[u8]| tar.to_vec();
    let p = signing_project("pubkey", "");
    type Compress<'a> = &'a dyn Fn(&[u8]) -> Vec<u8>;
    let formats: [(&str, Compress, &[u8], usize); 4] = [
        ("xz", &xz, &[0xfd, b'7', b'z', b'X', b'Z', 0], 0),
        ("gzip", &gzip, &[0x1f, 0x8b], 0),
        ("bzip2", &bzip2, b"BZh", 0),
        ("tar", &none, b"ustar", 257),
    ];
    for (name, compress, magic, at) in formats {
        let repo = copy_sample("unsigned", &p.scratch.path.join(name));
        for archive in ["data.pkg", "packagesite.pkg"] {
            let path = repo.join(archive);
            let tar = zstd::decode_all(&fs::read(&path).unwrap()[..]).unwrap();
            fs::write(&path, compress(&tar)).unwrap();
        }
        pk(&p, &repo).code_is(1).stdout_has("data.pkg: is not signed");
        p.run(&["sign", "--repo", repo.as_str()]).success();
        pk(&p, &repo).success();
        let bytes = fs::read(repo.join("packagesite.pkg")).unwrap();
        assert_eq!(&bytes[at..at + magic.len()], magic, "{name}: the compression is kept");
    }
}

#[test]
fn without_repo_sign_reads_the_repository_bulk_recorded() {
    let p = signing_project("pubkey", "");
    let repo = copy_sample("unsigned", &p.scratch.path.join("poudriere/data/packages/clawdie-amd64-clawdie/.real_1"));
    // A run whose bulk succeeded, as the engine records it (state.json, current).
    let id = "20260620T000000Z-0001";
    let dir = p.state_dir().join("runs").join(id);
    fs::create_dir_all(dir.join("logs")).unwrap();
    let outputs = serde_json::json!({
        "build_name": "2026-06-20_00h00m00s", "mastername": "clawdie-amd64-clawdie", "set": null,
        "log_dir": "/usr/local/poudriere/data/logs/bulk/clawdie-amd64-clawdie/2026-06-20_00h00m00s",
        "repo": repo, "packages": []
    });
    let record = |status: &str, last: Option<serde_json::Value>| {
        let mut r = serde_json::json!({"status": status, "attempts": 1});
        if let Some(o) = last {
            r["last_success"] =
                serde_json::json!({"run": id, "ended": "2026-06-20T00:00:00.000Z", "fingerprint": "x", "outputs": o});
        }
        r
    };
    let state = serde_json::json!({
        "version": 1, "id": id, "created": "2026-06-20T00:00:00.000Z", "command": "release",
        "stages": ["port", "makesum", "bulk", "sign", "publish", "iso", "gate"],
        "records": {"bulk": record("succeeded", Some(outputs)), "sign": record("pending", None)}
    });
    fs::write(dir.join("state.json"), serde_json::to_vec_pretty(&state).unwrap()).unwrap();
    fs::write(p.state_dir().join("current"), format!("{id}\n")).unwrap();

    p.run(&["sign", "--dry-run"]).success().stdout_has(&format!("check   {repo}: meta.conf"));
    p.run(&["sign"]).success().stderr_has("signed data.pkg");
    pk(&p, &repo).success();
    let out = &p.state()["records"]["sign"]["last_success"]["outputs"];
    assert_eq!(out["repo"], repo.as_str());
    assert_eq!(out["build_name"], "2026-06-20_00h00m00s");
    p.run(&["sign", "--verify-only"]).success().stdout_has(&format!("ok: {repo}"));
}

/// Every repository of pkg-repo-2 gets the real client's verdict (its README): accepted
/// in the trust mode it was made for, refused in the other.
#[test]
fn every_pkg_repo_2_sample_gets_the_real_clients_verdict() {
    let p = Project::new("");
    let ecc = sample2("keys/ecc-repo.pub");
    let ecdsa = sample2("keys/ecdsa-repo.pub");
    let ecc_fps = sample2("fingerprints-ecc");
    let rsa = pubkey();
    for (repo, trust) in [
        ("ecc-pubkey", ["--pubkey", ecc.as_str()]),
        ("ecdsa-pubkey", ["--pubkey", ecdsa.as_str()]),
        ("ecc-fingerprints", ["--fingerprints", ecc_fps.as_str()]),
        ("hashed", ["--pubkey", rsa.as_str()]),
        ("hashed-symlink", ["--pubkey", rsa.as_str()]),
        ("files", ["--pubkey", rsa.as_str()]),
    ] {
        verify(&p, &sample2(repo), &trust).success().stdout_has("ok: ").stdout_has("1 package (");
    }
    // The refusals the README records: ecc-fingerprints in pubkey mode, ecc-pubkey in
    // fingerprints mode; and each signer against another type's key.
    fp(&p, &sample2("ecc-pubkey"), &ecc_fps).code_is(1).stdout_has("data.pkg: is not signed for fingerprints clients");
    verify(&p, &sample2("ecc-fingerprints"), &["--pubkey", ecc.as_str()])
        .code_is(1)
        .stdout_has("data.pkg: is not signed for pubkey clients");
    verify(&p, &sample2("ecdsa-pubkey"), &["--pubkey", ecc.as_str()])
        .code_is(1)
        .stdout_has("data.pkg: is signed as ecdsa, but the public key");
    verify(&p, &sample2("hashed"), &["--pubkey", ecdsa.as_str()]).code_is(1).stdout_has("is signed as rsa");
    // files.pkg is checked like the catalogues.
    let s = scratch();
    let files = copy_tree_to(&sample2("files"), &s.path.join("files"));
    edit_archive(&files.join("files.pkg"), |entries| entries.last_mut().unwrap().1.push(b'\n'));
    let run = verify(&p, &files, &["--pubkey", rsa.as_str()]);
    run.code_is(1).stdout_has("files.pkg: signature checked with");
    assert_eq!(run.stdout().lines().count(), 1, "{}", run.stdout());
}

fn copy_tree_to(from: &Utf8Path, to: &Utf8Path) -> camino::Utf8PathBuf {
    test_support::copy_tree(from, to);
    to.to_owned()
}

/// A project signing with one of pkg-repo-2's keys.
fn ecc_project(key: &str, public: &str, mode: &str, extra: &str) -> Project {
    let p = Project::new("");
    let key = private_key2(&p.scratch.path.join("keys"), key);
    p.write_config(&format!(
        "{}\n{extra}",
        signing_config_for(&key, &sample2("keys").join(public), mode, &sample2("fingerprints-ecc"))
    ));
    p
}

#[test]
fn sign_signs_with_an_ecc_key_in_both_modes_as_pkg_does() {
    // pubkey mode: the `signature` entries are pkg's own bytes (Ed25519 is deterministic).
    let p = ecc_project("ecc-repo.key", "ecc-repo.pub", "pubkey", "");
    let repo = copy_sample("unsigned", &p.scratch.path.join("repo"));
    p.run(&["sign", "--repo", repo.as_str()]).success().stderr_has("signed data.pkg").stderr_has("pubkey layout");
    for archive in ["data.pkg", "packagesite.pkg"] {
        assert_eq!(entry(&repo.join(archive), "signature"), entry(&sample2("ecc-pubkey").join(archive), "signature"));
    }
    let ecc = sample2("keys/ecc-repo.pub");
    verify(&p, &repo, &["--pubkey", ecc.as_str()]).success();
    let out = &p.state()["records"]["sign"]["last_success"]["outputs"];
    assert_eq!(out["key_fingerprint"], ECC_FP);

    // fingerprints mode from the key file: what pkg's ecc signing command made.
    let p = ecc_project("ecc-repo.key", "ecc-repo.pub", "fingerprints", "");
    let repo = copy_sample("unsigned", &p.scratch.path.join("repo"));
    p.run(&["sign", "--repo", repo.as_str()]).success().stderr_has("fingerprints layout");
    for name in ["data.sig", "data.pub"] {
        assert_eq!(entry(&repo.join("data.pkg"), name), entry(&sample2("ecc-fingerprints/data.pkg"), name));
    }
    fp(&p, &repo, &sample2("fingerprints-ecc")).success();
}

#[test]
fn sign_signs_with_an_ecdsa_key_natively_and_through_a_command() {
    let p = ecc_project("ecdsa-repo.key", "ecdsa-repo.pub", "pubkey", "");
    let ecdsa = sample2("keys/ecdsa-repo.pub");
    let repo = copy_sample("unsigned", &p.scratch.path.join("repo"));
    p.run(&["sign", "--repo", repo.as_str()]).success();
    verify(&p, &repo, &["--pubkey", ecdsa.as_str()]).success();
    assert!(entry(&repo.join("data.pkg"), "signature").starts_with(b"$PKGSIGN:ecdsa$"));

    // Through a signing command (openssl signs the hex, as pkg's protocol hands it),
    // in fingerprints mode, and checked by openssl as well.
    let s = scratch();
    let fps = s.path.join("fps");
    fs::create_dir_all(fps.join("trusted")).unwrap();
    fs::write(
        fps.join("trusted/ecdsa"),
        format!("function: \"sha256\"\nfingerprint: \"{}\"\n", sha256_hex(&fs::read(&ecdsa).unwrap())),
    )
    .unwrap();
    let key = private_key2(&s.path.join("keys"), "ecdsa-repo.key");
    let script = s.path.join("bin/sign-ecdsa.sh");
    write_script(
        &script,
        &format!(
            "#!/bin/sh\n# pkg's signing_command protocol, answered with openssl.\nread -r digest\nprintf 'TYPE\\necdsa\\nSIGNATURE\\n'\nprintf %s \"$digest\" | openssl dgst -sha256 -keyform DER -sign '{key}'\nprintf '\\nCERT\\n'\ncat '{ecdsa}'\nprintf 'END\\n'\n"
        ),
    );
    p.write_config(&format!(
        "{}\ncommand = [\"{script}\"]\n\n[sign]\nprovenance = false\n",
        signing_config_for(&s.path.join("absent.key"), &ecdsa, "fingerprints", &fps)
    ));
    let repo2 = copy_sample("unsigned", &p.scratch.path.join("repo2"));
    p.run(&["sign", "--repo", repo2.as_str()]).success().stderr_has("fingerprints layout");
    fp(&p, &repo2, &fps).success();
    let entries = read_archive(&repo2.join("data.pkg"));
    let names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["data.sig", "data.pub", "data"]);
    assert!(entries[0].1.starts_with(b"$PKGSIGN:ecdsa$") && entries[1].1.starts_with(b"$PKGSIGN:ecdsa$"));

    // The same command cannot sign for pubkey clients (they check the BLAKE2b): refused,
    // nothing written.
    p.write_config(&format!(
        "{}\ncommand = [\"{script}\"]\n\n[sign]\nprovenance = false\n",
        signing_config_for(&s.path.join("absent.key"), &ecdsa, "pubkey", &fps)
    ));
    let repo3 = copy_sample("unsigned", &p.scratch.path.join("repo3"));
    let before = fs::read(repo3.join("data.pkg")).unwrap();
    p.run(&["sign", "--repo", repo3.as_str()])
        .code_is(2)
        .stderr_has("does not verify for pubkey clients")
        .stderr_has("use fingerprints mode with the command");
    assert_eq!(fs::read(repo3.join("data.pkg")).unwrap(), before);
}

#[test]
fn an_ecc_signing_command_signs_as_pkgs_did() {
    // A command answering as the sample's bin/sign-ecc.sh did, with the signatures that
    // `pkg key --sign -t ecc` made for these catalogues (Ed25519 is deterministic).
    let s = scratch();
    let answers = s.path.join("answers");
    fs::create_dir_all(&answers).unwrap();
    for (archive, inner) in [("data.pkg", "data"), ("packagesite.pkg", "packagesite.yaml")] {
        let entries = read_archive(&sample2("ecc-fingerprints").join(archive));
        let inner_bytes = &entries.iter().find(|(n, _)| n == inner).unwrap().1;
        let sig = &entries.iter().find(|(n, _)| n == &format!("{inner}.sig")).unwrap().1;
        fs::write(answers.join(sha256_hex(inner_bytes)), &sig[13..]).unwrap();
    }
    let script = s.path.join("bin/sign-ecc.sh");
    write_script(
        &script,
        &format!(
            "#!/bin/sh\n# Replays pkg key --sign -t ecc's signatures, in pkg's protocol.\nread -r sum\nprintf 'TYPE\\necc\\nSIGNATURE\\n'\ncat '{answers}'/\"$sum\"\nprintf '\\nCERT\\n'\ncat '{}'\nprintf 'END\\n'\n",
            sample2("keys/ecc-repo.pub")
        ),
    );
    let p = Project::new("");
    p.write_config(&format!(
        "{}\ncommand = [\"{script}\"]\n\n[sign]\nprovenance = false\n",
        signing_config_for(
            &s.path.join("absent.key"),
            &sample2("keys/ecc-repo.pub"),
            "fingerprints",
            &sample2("fingerprints-ecc")
        )
    ));
    let repo = copy_sample("unsigned", &p.scratch.path.join("repo"));
    p.run(&["sign", "--repo", repo.as_str()]).success();
    fp(&p, &repo, &sample2("fingerprints-ecc")).success();
    for (archive, name) in [("data.pkg", "data.pub"), ("packagesite.pkg", "packagesite.yaml.sig")] {
        assert_eq!(entry(&repo.join(archive), name), entry(&sample2("ecc-fingerprints").join(archive), name));
    }
}

#[test]
fn hashed_and_files_layouts_are_signed_whole() {
    let p = ecc_project("ecc-repo.key", "ecc-repo.pub", "pubkey", "");
    let ecc = sample2("keys/ecc-repo.pub");
    for sample in ["hashed", "hashed-symlink", "files"] {
        let repo = copy_tree_to(&sample2(sample), &p.scratch.path.join(sample));
        verify(&p, &repo, &["--pubkey", ecc.as_str()]).code_is(1).stdout_has("is signed as rsa");
        p.run(&["sign", "--repo", repo.as_str()]).success();
        let run = verify(&p, &repo, &["--pubkey", ecc.as_str()]);
        run.success();
        if sample == "files" {
            assert!(entry(&repo.join("files.pkg"), "signature").starts_with(b"$PKGSIGN:ecc$"));
        }
        if sample == "hashed-symlink" {
            assert!(fs::symlink_metadata(repo.join("All/colibri-0.9.0.pkg")).unwrap().file_type().is_symlink());
        }
    }
}

/// Outputs of sign that cannot be read (here a field gone, as a record from another
/// version might be) are reported by the stage that needs them, with the command that
/// records them again: sign on the repository the record names, which works as printed.
/// A package's entry is read by publish only once it stages (beside the copies of the
/// repository files): what it left is gone, and nothing is published.
#[test]
fn an_unreadable_record_of_sign_says_how_to_sign_its_repository_again() {
    for (damage, missing) in
        [("the manifest", "manifest"), ("the packages", "packages"), ("a package's sha256", "sha256")]
    {
        let site = scratch();
        let p = signing_project("pubkey", &format!("[publish]\ncheck = false\ntarget = \"{}\"\n", site.path));
        let repo = copy_sample("unsigned", &p.scratch.path.join("elsewhere/repo"));
        p.run(&["sign", "--repo", repo.as_str()]).success();
        let id = fs::read_to_string(p.state_dir().join("current")).unwrap();
        let path = p.state_dir().join("runs").join(id.trim()).join("state.json");
        let mut state: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        let outputs = &mut state["records"]["sign"]["last_success"]["outputs"];
        assert_eq!(outputs["repo"], repo.as_str(), "a record this small stays in state.json");
        match missing {
            "sha256" => outputs["packages"][0].as_object_mut().unwrap().remove("sha256"),
            field => outputs.as_object_mut().unwrap().remove(field),
        };
        fs::write(&path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();

        let run = p.run(&["publish"]);
        run.code_is(2).stderr_has("the outputs `sign` recorded in ").stderr_has(&format!("missing field `{missing}`"));
        let hint = run.stderr().lines().find_map(|l| l.split_once("help: rerun it: ")).unwrap().1.to_owned();
        let args = hint.split_once(" sign ").map(|(_, rest)| rest).unwrap();
        assert_eq!(args, format!("--repo {repo}"), "{damage}: {hint}");
        let abi = site.path.join("FreeBSD:15:amd64");
        let left: Vec<String> = fs::read_dir(&abi)
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        assert!(left.iter().all(|n| n == ".publish.lock"), "{damage}: publish left {left:?}");
        p.run(&["sign", "--repo", repo.as_str()]).success();
        p.run(&["publish"]).success();
    }
}
