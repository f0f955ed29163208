//! Two targets (amd64, aarch64) through the whole release with the stand-ins: each
//! bulk builds for its jail's arch (the aarch64 jail's package is the sample colibri
//! rebuilt with its ABI), each ABI is signed and published with its own `latest`, and
//! each gets its own ISO root (pkg installing with the target's ABI), image (an amd64 and
//! an arm64 initramfs) and QEMU gate (qemu-system-x86_64 and qemu-system-aarch64 under
//! TCG); a failure injected into one target's bulk leaves the other released and gated
//! and the release failed naming the target; `release --resume` finishes it; a publish
//! whose second switch fails takes the first back. Also the configuration's refusals,
//! the generated workflow, and that workflow run job by job with builders that hold no
//! key.

use std::fs;

use camino::Utf8Path;
use test_support::pipeline::Release;
use test_support::repo::{META_CONF, catalogue_object, colibri_for, read_archive, write_catalogues};
use test_support::{Project, initramfs, simhost};

/// The two targets; `aarch64` is the aarch64 table's further lines.
fn targets(aarch64: &str) -> String {
    format!(
        "[[targets]]\n\
         name = \"amd64\"\n\
         jail = \"clawdie-amd64\"\n\
         arch = \"amd64\"\n\
         abi = \"FreeBSD:15:amd64\"\n\
         runner = \"freebsd-amd64\"\n\
         \n\
         [[targets]]\n\
         name = \"aarch64\"\n\
         jail = \"clawdie-aarch64\"\n\
         arch = \"arm64.aarch64\"\n\
         abi = \"FreeBSD:15:aarch64\"\n\
         runner = \"freebsd-aarch64\"\n\
         {aarch64}"
    )
}

/// aarch64 as an image target of `r`'s host: its own ISO root and image, built by the
/// image builder for arm64 (its static busybox, its console banner), booted by the
/// gate's QEMU for aarch64 with the arm64 kernel; `[iso]` and `[gate]` as the amd64
/// target has them otherwise (Release::start).
fn aarch64_image(r: &Release) -> String {
    let s = &r.h.p.scratch.path;
    let image = s.join("iso/aarch64/clawdie.img");
    format!(
        "iso = {{ root = \"{root}\", image = \"{image}\", build_command = [\"{builder}\", \"--arch\", \"arm64\", \"{{root}}\", \"{{image}}\"] }}\n\
         gate = {{ memory = \"256M\", qemu = {{ arch = \"aarch64\", kernel = \"{kernel}\", initrd = \"{image}\" }} }}\n",
        root = s.join("iso/aarch64/root"),
        builder = simhost().join("gate/build-image"),
        kernel = initramfs::kernel_for(initramfs::Arch::Aarch64),
    )
}

/// What a jail of `arch` builds: colibri-0.9.0 for `abi`, unsigned (`build` makes
/// another build of it).
fn samples(dir: &Utf8Path, arch: &str, abi: &str, build: u64) {
    let set = dir.join(arch).join("production-pubkey");
    fs::create_dir_all(set.join("All")).unwrap();
    let pkg = colibri_for(abi, build);
    fs::write(set.join(pkg.path()), &pkg.bytes).unwrap();
    fs::write(set.join("meta.conf"), META_CONF).unwrap();
    fs::write(set.join("meta"), META_CONF).unwrap();
    write_catalogues(&set, &[catalogue_object(&pkg, abi)]);
}

/// The end-to-end host with both targets building images: the aarch64 jail's builds
/// come from a sample set of its own, and its jail exists (`setup --target aarch64`
/// makes it on that builder).
fn two_targets() -> Release {
    let mut r = Release::start();
    r.configure(&targets(&aarch64_image(&r)));
    let samples_dir = r.h.p.scratch.path.join("samples");
    samples(&samples_dir, "arm64.aarch64", "FreeBSD:15:aarch64", 64);
    r.h.p.env.push(("STANDIN_SAMPLES".into(), samples_dir.to_string()));
    let jail = r.h.poudriere(&["jail", "-c", "-j", "clawdie-aarch64", "-v", "15.0-RELEASE", "-a", "arm64.aarch64"]);
    assert!(jail.status.success(), "{}", String::from_utf8_lossy(&jail.stderr));
    r
}

fn latest(site: &Utf8Path, abi: &str) -> Option<String> {
    fs::read_link(site.join(abi).join("latest")).ok().map(|p| p.to_string_lossy().into_owned())
}

#[test]
fn two_targets_released_one_failed_then_resumed_and_a_failed_switch_taken_back() {
    let mut r = two_targets();
    r.run(&["setup", "--target", "aarch64", "--dry-run"]).success().stdout_has("clawdie-aarch64");
    let site = r.h.site();

    // 1. aarch64's bulk fails: amd64 goes on to publish, iso and gate; the release fails
    //    naming aarch64, with the command that reruns its bulk.
    r.h.p.env.push(("STANDIN_BULK".into(), "failed:build".into()));
    r.h.p.env.push(("STANDIN_BULK_JAIL".into(), "clawdie-aarch64".into()));
    let run = r.run(&["release"]);
    run.code_is(1).stderr_has("1 of 2 targets failed: aarch64 (at `bulk`)").stderr_has("--target aarch64");
    for slot in ["bulk@amd64", "sign@amd64", "publish@amd64", "iso@amd64", "gate@amd64"] {
        assert_eq!(r.status(slot), "succeeded", "{slot}\n{}", run.stderr());
    }
    assert_eq!(r.status("bulk@aarch64"), "failed");
    for slot in ["sign@aarch64", "publish@aarch64", "iso@aarch64", "gate@aarch64"] {
        assert_eq!(r.status(slot), "pending", "{slot}: a failed target takes no further stage");
    }
    assert!(latest(&site, "FreeBSD:15:amd64").is_some());
    assert!(latest(&site, "FreeBSD:15:aarch64").is_none());
    // Per-target files live in the target's directory of the run.
    let state = r.h.p.state();
    let run_dir = r.h.p.state_dir().join("runs").join(state["id"].as_str().unwrap());
    assert!(run_dir.join("targets/aarch64/logs/bulk.log").is_file());
    assert!(run_dir.join("targets/amd64/gate").is_dir());
    let status = r.run(&["status"]);
    status.success().stdout_has("aarch64").stdout_has("failed");
    let json: serde_json::Value = serde_json::from_str(&r.run(&["status", "--json"]).success().stdout()).unwrap();
    let failed: Vec<_> = json["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "failed")
        .map(|s| (s["stage"].as_str().unwrap().to_owned(), s["target"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(failed, [("bulk".to_owned(), "aarch64".to_owned())]);

    // 2. Fixed: --resume finishes aarch64 only.
    r.h.p.env.retain(|(k, _)| k != "STANDIN_BULK");
    let before = r.h.p.state()["records"]["gate@amd64"]["attempts"].clone();
    let resume = r.run(&["release", "--resume"]);
    resume.success().stderr_has("resuming run").stderr_has("bulk@aarch64");
    for slot in ["bulk@aarch64", "sign@aarch64", "publish@aarch64", "iso@aarch64", "gate@aarch64"] {
        assert_eq!(r.status(slot), "succeeded", "{slot}\n{}", resume.stderr());
    }
    assert_eq!(r.h.p.state()["records"]["gate@amd64"]["attempts"], before, "amd64 did not run again");
    // Each target's image: its ISO root installed by pkg with its ABI, its image booted
    // by its QEMU, the gate's results in its directory.
    let aarch64_root = r.h.p.scratch.path.join("iso/aarch64/root");
    assert!(aarch64_root.join("usr/local/bin/colibri-daemon").is_file());
    let iso_log = fs::read_to_string(run_dir.join("targets/aarch64/logs/iso.log")).unwrap();
    assert!(iso_log.contains(&format!("-r {aarch64_root} -o ABI=FreeBSD:15:aarch64")), "{iso_log}");
    for (target, qemu, banner) in [
        ("amd64", "qemu-system-x86_64", "FreeBSD/amd64 (clawdie)"),
        ("aarch64", "qemu-system-aarch64", "FreeBSD/arm64 (clawdie)"),
    ] {
        let gate = run_dir.join("targets").join(target).join("gate");
        let result: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(gate.join("result.json")).unwrap()).unwrap();
        assert_eq!(result["verdict"], "pass", "{target}: {result:#}");
        assert_eq!(result["decided_by"]["name"], "login: ", "{target}: {result:#}");
        assert_eq!(result["final_attempt"]["commands"][0]["program"], qemu, "{target}: {result:#}");
        let console = fs::read_to_string(gate.join("console.log")).unwrap();
        assert!(console.contains(banner), "{target}: {console}");
        assert!(console.contains("colibri_daemon: started"), "{target}: {console}");
    }
    let amd64 = latest(&site, "FreeBSD:15:amd64").unwrap();
    let aarch64 = latest(&site, "FreeBSD:15:aarch64").unwrap();
    assert!(site.join("FreeBSD:15:aarch64/latest/data.pkg").is_file());

    // 3. A new build for both; aarch64's switch fails (its served history cannot be
    //    written): amd64, switched first, goes back, and both records say so.
    let samples_dir = r.h.p.scratch.path.join("samples");
    samples(&samples_dir, "amd64", "FreeBSD:15:amd64", 65);
    samples(&samples_dir, "arm64.aarch64", "FreeBSD:15:aarch64", 66);
    // A build from scratch (poudriere keeps an unchanged package otherwise).
    for jail in ["clawdie-amd64", "clawdie-aarch64"] {
        fs::remove_dir_all(r.h.p.scratch.path.join(format!("poudriere/data/packages/{jail}-clawdie"))).unwrap();
    }
    r.run(&["bulk"]).success();
    r.run(&["sign"]).success();
    let served = site.join("FreeBSD:15:aarch64/.served");
    fs::rename(&served, site.join("kept-served")).unwrap();
    fs::create_dir(&served).unwrap();
    let publish = r.run(&["publish"]);
    publish.code_is(2).stderr_has("switched back").stderr_has("because target aarch64's switch failed");
    assert_eq!(latest(&site, "FreeBSD:15:amd64").unwrap(), amd64, "amd64 went back");
    assert_eq!(latest(&site, "FreeBSD:15:aarch64").unwrap(), aarch64, "aarch64 went back");
    assert_eq!(r.status("publish@amd64"), "failed");
    assert_eq!(r.status("publish@aarch64"), "failed");
    let error = r.h.p.state()["records"]["publish@amd64"]["error"].as_str().unwrap().to_owned();
    assert!(error.contains("switched back"), "{error}");

    // 4. Fixed: publish switches both.
    fs::remove_dir(&served).unwrap();
    fs::rename(site.join("kept-served"), &served).unwrap();
    r.run(&["publish"]).success();
    assert_ne!(latest(&site, "FreeBSD:15:amd64").unwrap(), amd64);
    assert_ne!(latest(&site, "FreeBSD:15:aarch64").unwrap(), aarch64);
    // Each ABI rolls back on its own.
    r.run(&["publish", "--rollback", "--target", "aarch64"]).success();
    assert_eq!(latest(&site, "FreeBSD:15:aarch64").unwrap(), aarch64);
    assert_ne!(latest(&site, "FreeBSD:15:amd64").unwrap(), amd64);
}

#[test]
fn targets_are_refused_with_their_line() {
    let p = Project::new("");
    let two = |a: &str, b: &str| {
        format!(
            "[[targets]]\nname = \"{a}\"\njail = \"j1\"\narch = \"amd64\"\nabi = \"FreeBSD:15:amd64\"\n\n\
             [[targets]]\nname = \"{b}\"\njail = \"j2\"\narch = \"arm64.aarch64\"\nabi = \"FreeBSD:15:aarch64\"\n"
        )
    };
    p.write_config(&two("amd64", "amd64"));
    p.run(&["status"]).code_is(2).stderr_has("pipeline.toml:").stderr_has("target `amd64` is declared twice");
    p.write_config(&two("amd64", "../x"));
    p.run(&["status"]).code_is(2).stderr_has("target name `../x` cannot name a directory");
    p.write_config(&two("amd64", "arm").replace("FreeBSD:15:aarch64", "FreeBSD:15:amd64"));
    p.run(&["status"]).code_is(2).stderr_has("both build ABI `FreeBSD:15:amd64`");
    p.write_config(&two("amd64", "arm").replace("jail = \"j2\"\n", ""));
    p.run(&["status"]).code_is(2).stderr_has("target 2 has no `jail`");
    p.write_config(&format!("{}gate = {{ backend = \"qemu\", nosuchkey = 1 }}\n", two("amd64", "arm")));
    p.run(&["status"]).code_is(2).stderr_has("pipeline.toml:18:8:").stderr_has("nosuchkey");
    // Two image targets building into one ISO root and image would overwrite each
    // other's (and a gate would boot the other target's image).
    p.write_config(&two("amd64", "arm"));
    p.run(&["status"])
        .code_is(2)
        .stderr_has("targets `amd64` and `arm` would both build their ISO in")
        .stderr_has("iso = { root = \"target/iso/arm/...\" }");
    p.write_config(&format!(
        "{}iso = {{ root = \"target/iso/arm/root\", image = \"target/iso/arm/clawdie.iso\" }}\n",
        two("amd64", "arm")
    ));
    p.run(&["status"]).success();
    p.write_config(&format!("{}image = false\n", two("amd64", "arm")));
    p.run(&["status"]).success();
    p.run(&["bulk", "--target", "riscv", "--dry-run"]).code_is(2).stderr_has("its targets are: amd64, arm");
    // A runner label goes into the workflow: nothing that could carry YAML or an
    // expression, and never the signing host's.
    for bad in ["freebsd ${{ secrets.KEY }}", "a\\\"b", "-x", ""] {
        p.write_config(&format!("{}image = false\nrunner = \"{bad}\"\n", two("amd64", "arm")));
        p.run(&["status"]).code_is(2).stderr_has("pipeline.toml:19:10:").stderr_has("is not a label");
    }
    // Names that differ only in `.` and `-` would make one job id of two.
    p.write_config(&format!("{}image = false\n", two("arm.1", "arm-1")));
    p.run(&["ci-workflow", "--check"])
        .code_is(2)
        .stderr_has("targets give two build jobs the id build-arm-1")
        .stderr_has("rename one of them in [[targets]]");
    p.write_config(&format!("{}image = false\nrunner = \"signing\"\n", two("amd64", "arm")));
    p.run(&["status"])
        .code_is(2)
        .stderr_has("target `arm` is built on the `signing` runner, the machine holding the key")
        .stderr_has("never run where the key is");
}

/// The workflow `ci-workflow` writes for `pipeline`, parsed by a YAML parser of its own
/// (PyYAML), as JSON.
fn workflow_of(p: &Project) -> serde_json::Value {
    let out = p.scratch.path.join("release.yml");
    p.run(&["ci-workflow", "--output", out.as_str()]).success().stderr_has("wrote");
    let parsed = std::process::Command::new("python3")
        .args(["-c", "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)", out.as_str()])
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("python3 (with PyYAML: .ci/deps installs python3-yaml)");
    assert!(parsed.status.success(), "the workflow is not YAML: {}", String::from_utf8_lossy(&parsed.stderr));
    serde_json::from_slice(&parsed.stdout).unwrap()
}

#[test]
fn the_generated_workflow_builds_each_target_on_its_runner_and_signs_once() {
    let p = Project::new("");
    p.write_config(&targets("image = false\n\n[gate]\nbackend = \"qemu\"\n"));
    let w = workflow_of(&p);
    let jobs = w["jobs"].as_object().unwrap();
    let run_lines = |job: &str| -> Vec<String> {
        w["jobs"][job]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["run"].as_str().map(str::to_owned))
            .collect()
    };
    // One build job per target, on its runner label, ending with its bundle.
    for (name, label) in [("amd64", "freebsd-amd64"), ("aarch64", "freebsd-aarch64")] {
        let id = format!("build-{name}");
        assert_eq!(w["jobs"][&id]["runs-on"], label, "{id}");
        let runs = run_lines(&id);
        assert!(runs.contains(&format!("cargo xtask --target {name} bulk")), "{runs:?}");
        assert!(
            runs.contains(&format!("cargo xtask --target {name} bundle --stage bulk --output bulk-{name}.bundle")),
            "{runs:?}"
        );
        assert!(runs.contains(&"cargo xtask audit".to_owned()), "audit runs on each builder: {runs:?}");
        assert_eq!(runs[1], format!("cargo xtask --target {name} setup --check --role builder"), "{runs:?}");
    }
    // A single signing job on the signing runner, needing every build job.
    let signing: Vec<&String> = jobs.keys().filter(|k| run_lines(k).contains(&"cargo xtask sign".to_owned())).collect();
    assert_eq!(signing, ["sign-publish"]);
    assert_eq!(w["jobs"]["sign-publish"]["runs-on"], "signing");
    let mut needs: Vec<&str> =
        w["jobs"]["sign-publish"]["needs"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    needs.sort();
    assert_eq!(needs, ["build-aarch64", "build-amd64"]);
    let runs = run_lines("sign-publish");
    assert_eq!(runs[0], "cargo xtask setup --check --role signing");
    assert_eq!(
        runs.iter().filter(|r| r.starts_with("cargo xtask unbundle")).collect::<Vec<_>>(),
        ["cargo xtask unbundle --new-run bulk-amd64.bundle", "cargo xtask unbundle bulk-aarch64.bundle"]
    );
    // iso and gate only for the image target, after signing.
    assert!(jobs.contains_key("image-amd64"));
    assert!(!jobs.contains_key("image-aarch64"), "aarch64 has image = false");
    assert_eq!(w["jobs"]["image-amd64"]["needs"], "sign-publish");
    assert_eq!(
        run_lines("image-amd64"),
        ["cargo xtask --target amd64 iso", "cargo xtask --target amd64 gate", "cargo xtask status --json"]
    );

    // The colibri tag reaches git as a variable, not as script text.
    let checkout = &w["jobs"]["build-amd64"]["steps"][1];
    assert_eq!(checkout["env"]["COLIBRI_TAG"], "${{ inputs.colibri_tag }}");
    assert!(!checkout["run"].as_str().unwrap().contains("${{"), "{checkout}");

    let out = p.scratch.path.join("release.yml");
    test_support::workflow::actionlint(&out, &["freebsd-amd64", "freebsd-aarch64", "signing"]);

    // --check fails on a stale file, naming the command that fixes it.
    fs::write(&out, "stale\n").unwrap();
    p.run(&["ci-workflow", "--check", "--output", out.as_str()])
        .code_is(2)
        .stderr_has("is stale")
        .stderr_has("cargo xtask --config pipeline.toml ci-workflow");
}

/// The generated workflow's jobs run as written, each as its own machine: every
/// `cargo xtask` line of a job with that job's state directory (a runner's
/// `target/mother-build`), the bundles handed over as files (the artifacts), and each
/// image job given a copy of the signing job's run directory at another path
/// (downloaded on another runner). Only the colibri checkout, which the test's host
/// already has, is not run. The builders hold no key at all: each is provisioned with
/// `setup --role builder` on a poudriere of its own (the key file is not there while
/// they run), bulk commits unsigned repositories, and the signing job signs them.
#[test]
fn the_generated_workflow_runs_job_by_job_on_separate_state_directories() {
    let r = two_targets();
    let w = workflow_of(&r.h.p);
    let machines = r.h.p.scratch.path.join("machines");

    let run_job = |job: &str, state_dir: &Utf8Path, host: &[String]| {
        let steps = w["jobs"][job]["steps"].as_array().unwrap_or_else(|| panic!("no job {job}"));
        let lines: Vec<&str> =
            steps.iter().filter_map(|s| s["run"].as_str()).filter_map(|l| l.strip_prefix("cargo xtask ")).collect();
        assert!(!lines.is_empty(), "{job} runs no cargo xtask line");
        for line in lines {
            let mut args = vec!["--state-dir", state_dir.as_str()];
            args.extend(host.iter().map(String::as_str));
            // One pkg on a real host both keeps the host's packages (what setup checks)
            // and installs into the ISO root (`pkg -r`); here those are two stand-ins,
            // and the pipeline names the ISO's (Release::start).
            if line.split_whitespace().any(|w| w == "setup") {
                args.extend(["-o", "tools.pkg=pkg"]);
            }
            args.extend(line.split_whitespace());
            r.run(&args).success();
        }
    };
    // The key is on the signing host only: elsewhere while the other jobs run.
    let key = r.h.key();
    let away = r.h.p.scratch.path.join("on-the-signing-host.key");
    fs::rename(&key, &away).unwrap();

    for t in ["amd64", "aarch64"] {
        let m = machines.join(format!("build-{t}"));
        // The builder's own poudriere (its configuration, jails, trees, packages), as
        // its operator provisions it once: `setup --role builder --target NAME`.
        let host: Vec<String> =
            [("etc", m.join("etc")), ("basefs", m.join("poudriere")), ("data", m.join("poudriere/data"))]
                .iter()
                .flat_map(|(k, v)| ["-o".to_owned(), format!("poudriere.{k}={v}")])
                .collect();
        let mut provision = vec!["--state-dir", m.as_str(), "--target", t, "-o", "tools.pkg=pkg"];
        provision.extend(host.iter().map(String::as_str));
        provision.extend(["setup", "--role", "builder"]);
        r.run(&provision).success();
        let conf = fs::read_to_string(m.join("etc/poudriere.conf")).unwrap();
        assert!(!conf.contains("PKG_REPO_SIGNING_KEY"), "{conf}");

        run_job(&format!("build-{t}"), &m, &host);
        assert!(r.h.p.root.join(format!("bulk-{t}.bundle")).is_file(), "build-{t} left no bundle");
        assert!(!key.exists(), "build-{t} made a key");
        // poudriere committed the repository unsigned: its catalogues hold their inner
        // file alone.
        let repo = m.join(format!("poudriere/data/packages/clawdie-{t}-clawdie/.latest"));
        for (archive, inner) in [("data.pkg", "data"), ("packagesite.pkg", "packagesite.yaml")] {
            let entries: Vec<String> = read_archive(&repo.join(archive)).into_iter().map(|(name, _)| name).collect();
            assert_eq!(entries, [inner], "build-{t}: {archive}");
        }
    }

    let signing = machines.join("signing");
    fs::rename(&away, &key).unwrap();
    run_job("sign-publish", &signing, &[]);
    fs::rename(&key, &away).unwrap();
    let site = r.h.site();
    assert!(latest(&site, "FreeBSD:15:amd64").is_some());
    assert!(latest(&site, "FreeBSD:15:aarch64").is_some());
    let state = |dir: &Utf8Path| -> serde_json::Value {
        let id = fs::read_to_string(dir.join("current")).unwrap();
        serde_json::from_str(&fs::read_to_string(dir.join("runs").join(id.trim()).join("state.json")).unwrap()).unwrap()
    };
    for t in ["amd64", "aarch64"] {
        let sign = &state(&signing)["records"][format!("sign@{t}")]["last_success"]["outputs"];
        assert_eq!(sign["signed"], true, "the signing host signed {t}'s unsigned repository: {sign:#}");
    }
    // Each image runner (a builder, without the key) gets the signing job's run
    // directory somewhere else.
    for t in ["amd64", "aarch64"] {
        let image = machines.join(format!("image-{t}"));
        test_support::copy_tree(&signing, &image);
        run_job(&format!("image-{t}"), &image, &[]);
        assert_eq!(state(&image)["records"][format!("gate@{t}")]["last_success"]["outputs"]["verdict"], "pass");
    }
}
