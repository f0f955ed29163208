//! publish's package pool: a new version adds only the packages that changed to the
//! generation `latest` uses; a package rebuilt under the same name starts a new
//! generation and no kept version sees its bytes change; unused generations go;
//! versions published before the pool are rolled back to, linked from and pruned; and
//! SIGKILL at any point leaves `latest` serving a complete release.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::time::Instant;

use camino::{Utf8Path, Utf8PathBuf};

use crate::publish::{ABI, abi_dir, latest, project, published_output, sign_repo, signed_repo, site, versions};
use test_support::Project;
use test_support::nginx::get;
use test_support::repo::*;

/// The pool of the site's ABI directory.
fn pool(site: &Utf8Path) -> Utf8PathBuf {
    abi_dir(site).join(".pool")
}

/// The generations in the pool.
fn generations(site: &Utf8Path) -> Vec<String> {
    let mut g: Vec<String> = fs::read_dir(pool(site))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect();
    g.sort();
    g
}

/// The package files of a generation.
fn files_in(site: &Utf8Path, generation: &str) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(pool(site).join(generation).join("All"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn link(path: &Utf8Path) -> String {
    fs::read_link(path).unwrap().to_str().unwrap().to_owned()
}

fn ino(site: &Utf8Path, version: &str, rel: &str) -> u64 {
    fs::metadata(abi_dir(site).join(version).join(rel)).unwrap().ino()
}

/// `sign --verify-only` accepts the version, and each named package has the bytes of
/// the same file in `repo`.
fn verifies_as(p: &Project, site: &Utf8Path, version: &str, repo: &Utf8Path, packages: &[&str]) {
    let vdir = abi_dir(site).join(version);
    p.run(&["sign", "--verify-only", "--repo", vdir.as_str(), "--pubkey", pubkey().as_str()]).success();
    for rel in packages {
        assert_eq!(fs::read(vdir.join(rel)).unwrap(), fs::read(repo.join(rel)).unwrap(), "{version}/{rel}");
    }
}

/// The same packages under the same names, `which` of them rebuilt: other bytes.
fn rebuilt(pkgs: &[Pkg], which: impl Fn(usize) -> bool) -> Vec<Pkg> {
    pkgs.iter()
        .enumerate()
        .map(|(i, p)| {
            let bytes = if which(i) { filler(i as u64 + 7_000_000, p.bytes.len()) } else { p.bytes.clone() };
            Pkg::new(&p.name, &p.version, bytes)
        })
        .collect()
}

#[test]
fn an_incremental_publish_adds_only_the_changed_packages_to_the_pool() {
    let site = site("");
    let p = project(&site.dir, &site.nginx.url(), "keep = 2\n");
    let a = signed_repo(&p, "a", &synthetic(12, 4096, 1, |_| false));
    p.run(&["publish"]).success().stderr_has("into the new pool generation").stderr_has("(nothing is published yet)");
    let v1 = latest(&site.dir);
    // The version's package tree is its generation's, named after it.
    assert_eq!(link(&abi_dir(&site.dir).join(&v1).join("All")), format!("../.pool/{v1}/All"));
    assert_eq!(link(&abi_dir(&site.dir).join(&v1).join(".generation")), format!("../.pool/{v1}"));
    assert_eq!(published_output(&p)["generation"], v1.as_str());
    assert_eq!(generations(&site.dir), [v1.as_str()]);
    assert_eq!(files_in(&site.dir, &v1).len(), 12);

    // One package changed (a new name): the generation gains that one file, and no
    // other file gains a link: the versions reach them through their symlink.
    let b = signed_repo(&p, "b", &synthetic(12, 4096, 2, |i| i == 5));
    p.run(&["publish", "--dry-run"])
        .success()
        .stdout_has(&format!("11 packages shared with it in the pool generation {v1}"))
        .stdout_has(&format!("copy    {b}/All/pkg005-1.2.pkg -> {}/{v1}/All/pkg005-1.2.pkg", pool(&site.dir)));
    p.run(&["publish"])
        .success()
        .stderr_has("copied 1 package and 6 repository files")
        .stderr_has(&format!("11 packages shared with {v1} in the pool generation {v1}"));
    let v2 = latest(&site.dir);
    assert_eq!(link(&abi_dir(&site.dir).join(&v2).join("All")), format!("../.pool/{v1}/All"));
    let out = published_output(&p);
    assert_eq!((out["copied"].as_u64(), out["linked"].as_u64()), (Some(1), Some(11)));
    assert_eq!(out["generation"], v1.as_str());
    assert_eq!(files_in(&site.dir, &v1).len(), 13);
    let g = pool(&site.dir).join(&v1).join("All");
    for name in ["pkg000-1.0.pkg", "pkg005-1.0.pkg", "pkg005-1.2.pkg"] {
        assert_eq!(fs::metadata(g.join(name)).unwrap().nlink(), 1, "{name}");
    }
    assert_eq!(ino(&site.dir, &v1, "All/pkg000-1.0.pkg"), ino(&site.dir, &v2, "All/pkg000-1.0.pkg"));
    verifies_as(&p, &site.dir, &v1, &a, &["All/pkg005-1.0.pkg"]);
    verifies_as(&p, &site.dir, &v2, &b, &["All/pkg005-1.2.pkg"]);
    let served = get(&format!("{}{ABI}/latest/All/pkg005-1.2.pkg", site.nginx.url())).unwrap();
    assert_eq!(served, fs::read(b.join("All/pkg005-1.2.pkg")).unwrap());
    let latest_dir = abi_dir(&site.dir).join("latest");
    p.run(&["verify-release", latest_dir.as_str(), "--pubkey", pubkey().as_str()]).success().stdout_has("ok: ");

    // A file an interrupted publish left in the generation (no version names it, its
    // index does not vouch for it) is read, and shared when it has the bytes wanted.
    let c = p.scratch.path.join("c");
    let c_pkgs = synthetic(12, 4096, 3, |i| i == 5 || i == 7);
    make_repo(&c, &c_pkgs);
    sign_repo(&p, &c);
    fs::copy(c.join("All/pkg007-1.3.pkg"), g.join("pkg007-1.3.pkg")).unwrap();
    p.run(&["publish"])
        .success()
        .stderr_has("copied 1 package and")
        .stderr_has(&format!("11 packages shared with {v2} in the pool generation {v1}"))
        // keep = 2: the first version goes; its generation stays, the others use it.
        .stderr_has(&format!("removed the old version {v1}"));
    let v3 = latest(&site.dir);
    assert_eq!(versions(&site.dir), [v2.clone(), v3.clone()]);
    assert_eq!(generations(&site.dir), [v1.as_str()]);
    assert_eq!(files_in(&site.dir, &v1).len(), 15);
    verifies_as(&p, &site.dir, &v3, &c, &["All/pkg005-1.3.pkg", "All/pkg007-1.3.pkg"]);

    // A release whose packages are all in the generation adds nothing to it, and its
    // index, which vouches for them already, is not written again.
    let index = pool(&site.dir).join(&v1).join(".verified.json");
    let before = fs::metadata(&index).unwrap().ino();
    sign_repo(&p, &b);
    p.run(&["publish"]).success().stderr_has("copied 0 packages and").stderr_has("12 packages shared with");
    assert_eq!(fs::metadata(&index).unwrap().ino(), before);
    assert_eq!(files_in(&site.dir, &v1).len(), 15);
    verifies_as(&p, &site.dir, &latest(&site.dir), &b, &["All/pkg005-1.2.pkg"]);
}

#[test]
fn a_package_rebuilt_under_its_name_starts_a_new_generation_and_old_versions_keep_their_bytes() {
    let site = site("");
    let p = project(&site.dir, &site.nginx.url(), "keep = 2\n");
    let a = p.scratch.path.join("a");
    let a_pkgs = synthetic(12, 4096, 1, |_| false);
    make_repo(&a, &a_pkgs);
    sign_repo(&p, &a);
    p.run(&["publish"]).success();
    let v1 = latest(&site.dir);

    // poudriere rebuilds pkg005 when a dependency changed: same name, other bytes.
    let b = signed_repo(&p, "b", &rebuilt(&a_pkgs, |i| i == 5));
    p.run(&["publish", "--dry-run"]).success().stdout_has(&format!(
        "a new pool generation, as All/pkg005-1.0.pkg is in {v1} with other bytes (rebuilt under the same name); 11 packages hard-linked from {v1}"
    ));
    p.run(&["publish"]).success().stderr_has("copied 1 package and").stderr_has("11 packages hard-linked from");
    let v2 = latest(&site.dir);
    assert_eq!(link(&abi_dir(&site.dir).join(&v2).join("All")), format!("../.pool/{v2}/All"));
    assert_eq!(generations(&site.dir), [v1.clone(), v2.clone()]);
    // The unchanged packages are the same files in both generations; the rebuilt one
    // is not, and each version serves its own bytes.
    assert_eq!(ino(&site.dir, &v1, "All/pkg000-1.0.pkg"), ino(&site.dir, &v2, "All/pkg000-1.0.pkg"));
    assert_ne!(ino(&site.dir, &v1, "All/pkg005-1.0.pkg"), ino(&site.dir, &v2, "All/pkg005-1.0.pkg"));
    verifies_as(&p, &site.dir, &v1, &a, &["All/pkg005-1.0.pkg"]);
    verifies_as(&p, &site.dir, &v2, &b, &["All/pkg005-1.0.pkg"]);

    // Back to the first version: its generation serves its bytes.
    p.run(&["publish", "--rollback"]).success().stderr_has(&format!("rolled back: latest -> {v1}"));
    let served = get(&format!("{}{ABI}/latest/All/pkg005-1.0.pkg", site.nginx.url())).unwrap();
    assert_eq!(served, fs::read(a.join("All/pkg005-1.0.pkg")).unwrap());
    assert_eq!(published_output(&p)["generation"], v1.as_str());

    // The rebuilt release again, over the first version: another new generation. keep =
    // 2 removes the first version, and with it the first generation, which nothing uses.
    let c = signed_repo(&p, "c", &rebuilt(&a_pkgs, |i| i == 5 || i == 6));
    p.run(&["publish"])
        .success()
        .stderr_has(&format!("removed the old version {v1}"))
        .stderr_has(&format!("removed the pool generation {v1}: no version uses it"));
    let v3 = latest(&site.dir);
    assert_eq!(versions(&site.dir), [v2.clone(), v3.clone()]);
    assert_eq!(generations(&site.dir), [v2.clone(), v3.clone()]);
    verifies_as(&p, &site.dir, &v2, &b, &["All/pkg005-1.0.pkg"]);
    verifies_as(&p, &site.dir, &v3, &c, &["All/pkg005-1.0.pkg", "All/pkg006-1.0.pkg"]);
}

#[test]
fn a_generation_whose_files_are_mostly_old_gives_way_to_a_new_one() {
    let site = site("");
    let p = project(&site.dir, &site.nginx.url(), "keep = 2\n");
    signed_repo(&p, "a", &synthetic(20, 2048, 1, |_| false));
    p.run(&["publish"]).success();
    let v1 = latest(&site.dir);

    // Every package under a new name: the first generation would hold 20 files this
    // release does not name, more than a quarter of it.
    signed_repo(&p, "b", &synthetic(20, 2048, 2, |_| true));
    p.run(&["publish"])
        .success()
        .stderr_has(&format!("(20 files of {v1} are not in this release (more than a quarter))"));
    let v2 = latest(&site.dir);
    assert_eq!(generations(&site.dir), [v1.clone(), v2.clone()]);
    assert_eq!(files_in(&site.dir, &v2).len(), 20);

    // A few new names: the release joins the new generation.
    let c = p.scratch.path.join("c");
    let mut c_pkgs = synthetic(20, 2048, 2, |_| true);
    for (i, pkg) in c_pkgs.iter_mut().enumerate().take(3) {
        *pkg = Pkg::new(&pkg.name, "3.0", filler(i as u64 + 5_000_000, 2048));
    }
    make_repo(&c, &c_pkgs);
    sign_repo(&p, &c);
    p.run(&["publish"]).success().stderr_has(&format!("17 packages shared with {v2} in the pool generation {v2}"));
    // keep = 2: the first version goes, and the first generation with it.
    assert_eq!(generations(&site.dir), [v2.as_str()]);
    assert_eq!(files_in(&site.dir, &v2).len(), 23);
    // The run's report says where the files came from.
    let id = p.state()["id"].as_str().unwrap().to_owned();
    let report = fs::read_to_string(p.state_dir().join("runs").join(id).join("report.html")).unwrap();
    assert!(report.contains(&format!("3 copied, 17 kept from the previous version (package pool generation {v2})")));
}

/// Turns a published version into what publish made before the pool: its own `All`, the
/// generation's files hard-linked (as the previous version's were), its own index; the
/// pool removed.
fn without_pool(site: &Utf8Path, version: &str) {
    let vdir = abi_dir(site).join(version);
    fs::remove_file(vdir.join("All")).unwrap();
    fs::remove_file(vdir.join(".generation")).unwrap();
    let g = pool(site).join(version);
    let ok = std::process::Command::new("cp").args(["-al", g.join("All").as_str(), vdir.as_str()]).status().unwrap();
    assert!(ok.success());
    fs::copy(g.join(".verified.json"), vdir.join(".verified.json")).unwrap();
    fs::remove_dir_all(pool(site)).unwrap();
}

#[test]
fn versions_from_before_the_pool_are_linked_from_rolled_back_to_and_pruned() {
    let site = site("");
    let p = project(&site.dir, &site.nginx.url(), "keep = 2\n");
    let a = signed_repo(&p, "a", &synthetic(12, 4096, 1, |_| false));
    p.run(&["publish"]).success();
    let v1 = latest(&site.dir);
    without_pool(&site.dir, &v1);
    assert!(abi_dir(&site.dir).join(&v1).join("All").symlink_metadata().unwrap().is_dir());
    verifies_as(&p, &site.dir, &v1, &a, &["All/pkg005-1.0.pkg"]);

    // The next version moves to the pool, linking the old version's files.
    let b = signed_repo(&p, "b", &synthetic(12, 4096, 2, |i| i == 5));
    p.run(&["publish"])
        .success()
        .stderr_has(&format!("11 packages hard-linked from {v1} into the new pool generation"))
        .stderr_has(&format!("({v1} has a package tree of its own (published before the pool))"));
    let v2 = latest(&site.dir);
    assert_eq!(generations(&site.dir), [v2.as_str()]);
    assert_eq!(ino(&site.dir, &v1, "All/pkg000-1.0.pkg"), ino(&site.dir, &v2, "All/pkg000-1.0.pkg"));

    // Rolling back to it, and publishing from it again.
    p.run(&["publish", "--rollback"]).success().stderr_has(&format!("rolled back: latest -> {v1}"));
    assert_eq!(published_output(&p)["generation"], serde_json::Value::Null);
    assert_eq!(
        get(&format!("{}{ABI}/latest/data.pkg", site.nginx.url())).unwrap(),
        fs::read(a.join("data.pkg")).unwrap()
    );
    let c = signed_repo(&p, "c", &synthetic(12, 4096, 3, |i| i == 7));
    p.run(&["publish"]).success().stderr_has(&format!("11 packages hard-linked from {v1}"));
    let v3 = latest(&site.dir);
    // keep = 2: the old version is removed, its own tree with it; both generations stay.
    assert_eq!(versions(&site.dir), [v2.clone(), v3.clone()]);
    assert_eq!(generations(&site.dir), [v2.clone(), v3.clone()]);
    verifies_as(&p, &site.dir, &v2, &b, &["All/pkg005-1.2.pkg"]);
    verifies_as(&p, &site.dir, &v3, &c, &["All/pkg007-1.3.pkg"]);
}

/// Publishes `repo` again and again, killed after ever longer delays, until a publish
/// finishes: after each kill `latest` serves `old` or the new release, whole, and each
/// version in `kept` still verifies with the bytes of its repository. Returns the kills
/// before and after the switch.
fn kill_at_every_point(
    p: &Project,
    site: &crate::publish::Site,
    repo: &Utf8Path,
    old: &Utf8Path,
    kept: &[(&str, &Utf8Path)],
) -> (usize, usize) {
    // A publish of the same kind, timed: the kills spread over it. (Signing writes the
    // SBOM and the provenance into the repository: `p` signs last, so that they are
    // the ones it recorded.)
    let full = {
        let scratch = test_support::scratch();
        let q = project(&scratch.path.join("site"), "http://127.0.0.1:9/", "check = false\n");
        sign_repo(&q, old);
        q.run(&["publish"]).success();
        sign_repo(&q, repo);
        let started = Instant::now();
        q.run(&["publish"]).success();
        started.elapsed()
    };
    sign_repo(p, repo);
    let old_data = fs::read(old.join("data.pkg")).unwrap();
    let new_data = fs::read(repo.join("data.pkg")).unwrap();
    let (mut killed_old, mut killed_new) = (0, 0);
    for step in 0..60u32 {
        let delay = full * step / 20;
        let mut child = p
            .command(&["publish"])
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let done = matches!(child.try_wait(), Ok(Some(_)));
        if !done {
            // SAFETY: kill(2) of our own child's process group.
            unsafe { libc::killpg(child.id() as i32, libc::SIGKILL) };
        }
        let status = child.wait().unwrap();

        // Whatever happened, latest is a complete release: the old or the new one.
        let served = get(&format!("{}{ABI}/latest/data.pkg", site.nginx.url())).expect("latest serves data.pkg");
        let now = latest(&site.dir);
        p.run(&[
            "sign",
            "--verify-only",
            "--repo",
            abi_dir(&site.dir).join(&now).as_str(),
            "--pubkey",
            pubkey().as_str(),
        ])
        .success();
        for (version, from) in kept {
            let vdir = abi_dir(&site.dir).join(version);
            p.run(&["sign", "--verify-only", "--repo", vdir.as_str(), "--pubkey", pubkey().as_str()]).success();
            for f in fs::read_dir(from.join("All")).unwrap() {
                let name = f.unwrap().file_name().into_string().unwrap();
                assert_eq!(
                    fs::read(vdir.join("All").join(&name)).unwrap(),
                    fs::read(from.join("All").join(&name)).unwrap()
                );
            }
        }
        if served == old_data {
            killed_old += 1;
        } else {
            assert_eq!(served, new_data, "latest serves neither release (step {step}, {delay:?})");
            if done && status.success() {
                return (killed_old, killed_new);
            }
            killed_new += 1;
        }
    }
    let last = p.run(&["publish"]);
    panic!(
        "publish never finished ({killed_old} kills before the switch, {killed_new} after); once more:\n{}",
        last.stderr()
    );
}

#[test]
fn sigkill_at_any_point_leaves_latest_serving_a_whole_release() {
    let site = site("");
    let p = project(&site.dir, &site.nginx.url(), "keep = 50\n");
    let a = p.scratch.path.join("a");
    let a_pkgs = synthetic(40, 160 * 1024, 1, |_| false);
    make_repo(&a, &a_pkgs);
    sign_repo(&p, &a);
    p.run(&["publish"]).success();
    let v1 = latest(&site.dir);

    // Every package rebuilt under its name: a new generation, made while killed.
    let b = p.scratch.path.join("b");
    make_repo(&b, &rebuilt(&a_pkgs, |_| true));
    let (old, new) = kill_at_every_point(&p, &site, &b, &a, &[(&v1, &a)]);
    eprintln!("SIGKILL, new generation: {old} kills before the switch, {new} after it");
    assert!(old > 0, "no kill landed before the switch");
    let v2 = latest(&site.dir);
    assert_ne!(link(&abi_dir(&site.dir).join(&v2).join(".generation")), format!("../.pool/{v1}"));

    // Two packages changed under new names: they join the generation `latest` uses.
    let c = p.scratch.path.join("c");
    let mut c_pkgs = rebuilt(&a_pkgs, |_| true);
    for i in [3, 30] {
        c_pkgs[i] = Pkg::new(&c_pkgs[i].name, "2.0", filler(i as u64 + 9_000_000, 160 * 1024));
    }
    make_repo(&c, &c_pkgs);
    let (old, new) = kill_at_every_point(&p, &site, &c, &b, &[(&v1, &a), (&v2, &b)]);
    eprintln!("SIGKILL, joining a generation: {old} kills before the switch, {new} after it");
    assert!(old > 0, "no kill landed before the switch");
    let v3 = latest(&site.dir);
    assert_eq!(
        link(&abi_dir(&site.dir).join(&v3).join(".generation")),
        link(&abi_dir(&site.dir).join(&v2).join(".generation"))
    );

    // The finished runs cleaned up what the killed ones left, and every generation left
    // is one a version uses.
    let generation_dirs = generations(&site.dir).into_iter().map(|g| pool(&site.dir).join(g));
    for dir in [abi_dir(&site.dir), pool(&site.dir)].into_iter().chain(generation_dirs) {
        let leftovers: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains(".tmp."))
            .collect();
        assert!(leftovers.is_empty(), "{dir}: {leftovers:?}");
    }
    let used: std::collections::BTreeSet<String> = versions(&site.dir)
        .iter()
        .map(|v| link(&abi_dir(&site.dir).join(v).join(".generation")).trim_start_matches("../.pool/").to_owned())
        .collect();
    assert_eq!(generations(&site.dir), used.into_iter().collect::<Vec<_>>());
    p.run(&["sign", "--verify-only", "--repo", abi_dir(&site.dir).join("latest").as_str()]).success();
}
