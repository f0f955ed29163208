//! pipeline.toml errors: each bad file gives FILE:LINE:COL, the offending word and the
//! valid choices, and writes no state.

use test_support::Project;

#[track_caller]
fn refused(text: &str, wants: &[&str]) {
    let p = Project::new("");
    p.write_raw_config(text);
    let run = p.run(&["release", "--to", "port"]);
    run.code_is(2);
    for w in wants {
        run.stderr_has(w);
    }
    assert!(!p.state_dir().exists(), "a bad pipeline.toml must write no state");
}

#[test]
fn unknown_key_names_line_column_and_choices() {
    refused(
        "[pipeline]\nstate_dir = \"target/mother-build\"\n\n[port]\ncolibrii = \"../colibri\"\n",
        &["pipeline.toml:5:1", "unknown field `colibrii`", "expected one of", "`colibri`"],
    );
}

#[test]
fn unknown_table_is_refused() {
    refused("[gat]\nbackend = \"qemu\"\n", &["pipeline.toml:1:2", "unknown field `gat`", "`gate`"]);
}

#[test]
fn unknown_stage_names_the_valid_stages() {
    refused(
        "[pipeline]\nstages = [\"port\", \"prot\"]\n",
        &["pipeline.toml:2:19", "unknown variant `prot`", "`makesum`", "`gate`"],
    );
}

#[test]
fn wrong_type_is_refused() {
    refused("[pipeline]\ntail_lines = \"many\"\n", &["pipeline.toml:2:14", "invalid type", "usize"]);
}

#[test]
fn duplicate_stage_is_refused() {
    refused("[pipeline]\nstages = [\"port\", \"port\"]\n", &["pipeline.toml:2:10", "listed twice"]);
}

#[test]
fn setup_is_not_a_release_stage() {
    refused("[pipeline]\nstages = [\"setup\", \"port\"]\n", &["pipeline.toml:2:10", "not a release stage"]);
}

#[test]
fn poudriere_names_are_checked() {
    refused("[poudriere]\njail = \"clawdie-15.0\"\n", &["pipeline.toml:2:8", "contains `.`"]);
    refused("[poudriere]\ntree = \"clawdie-main\"\n", &["pipeline.toml:2:8", "contains `-`"]);
    refused(
        "[poudriere]\ntree = \"clawdie:main\"\n",
        &["pipeline.toml:2:8", "contains `:`", "`poudriere ports -c` refuses it"],
    );
    refused(
        "[poudriere]\ntree = \"clawdie.main\"\n",
        &["pipeline.toml:2:8", "contains `.`", "`poudriere bulk` refuses it when it starts the build jail"],
    );
    refused("[poudriere]\noverlay = \"ours:x\"\n", &["pipeline.toml:2:11", "contains `:`"]);
}

#[test]
fn a_signing_command_poudriere_cannot_carry_is_refused() {
    refused(
        "[signing]\ntrust = \"fingerprints\"\ncommand = [\"/usr/local/bin/sign\", \"$KEY\"]\n",
        &["pipeline.toml:3:", "word `$KEY` contains `$`", "pkg's `sh -c` would expand it"],
    );
}

#[test]
fn syntax_error_is_located() {
    refused("[pipeline\nstages = []\n", &["pipeline.toml:1:"]);
}

#[test]
fn missing_file_says_how_to_pick_another() {
    let p = Project::new("");
    std::fs::remove_file(p.config_path()).unwrap();
    p.run(&["status"]).code_is(2).stderr_has("cannot read the pipeline file").stderr_has("--config");
}

#[test]
fn option_overrides_are_type_checked() {
    let p = Project::new("");
    p.run(&["-o", "pipeline.tail_lines=\"x\"", "status"]).code_is(2).stderr_has("-o 'pipeline.tail_lines=\"x\"': ");
    p.run(&["-o", "pipeline.tail_lines=5", "status"]).success();
}

/// Writes `bytes` as pipeline.toml and expects it refused, naming each of `wants`.
#[track_caller]
fn refused_bytes(bytes: &[u8], wants: &[&str]) {
    let p = Project::new("");
    std::fs::write(p.config_path(), bytes).unwrap();
    let run = p.run(&["status"]);
    run.code_is(2);
    for w in wants {
        run.stderr_has(w);
    }
}

#[test]
fn a_byte_that_is_not_utf8_is_located() {
    refused_bytes(b"[pipeline]\ntail_lines = 5\n# caf\xe9\n", &["pipeline.toml:3:6: byte 0xe9 is not UTF-8"]);
    refused_bytes(b"[repository]\nname = \"cl\xffawdie\"\n", &["pipeline.toml:2:11: byte 0xff is not UTF-8"]);
}

#[test]
fn an_integer_beyond_its_type_is_located() {
    refused("[repository]\nosversion = 5000000000\n", &["pipeline.toml:2:13", "expected u32"]);
    refused("[repository]\nosversion = -1\n", &["pipeline.toml:2:13", "expected u32"]);
    refused("[pipeline]\ntail_lines = 99999999999999999999999\n", &["pipeline.toml:2:14"]);
    refused(
        "[gate]\nmarkers = [{ text = \"login: \", within_secs = 18446744073709551616 }]\n",
        &["pipeline.toml:2:46"],
    );
}

#[test]
fn settings_that_can_never_work_are_refused_when_loaded() {
    refused("[publish]\nkeep = 0\n", &["pipeline.toml:2:8", "keep must be at least 1"]);
    refused(
        "[gate]\nforbidden_extra = [{ name = \"big\", regex = \"a{1000}{1000}\" }]\n",
        &["pipeline.toml:2:44", "is too big to compile"],
    );
    refused("[iso]\nprofile = \"prod\"\n", &["pipeline.toml:2:11", "there is no profile `prod`", "production"]);
    refused("[iso]\npackages = []\n", &["pipeline.toml:2:12", "no packages"]);
    refused("[makesum]\njobs = 0\n", &["pipeline.toml:2:8", "at least one download"]);
    refused("[port]\norigin = \"colibri\"\n", &["pipeline.toml:2:10", "not a port origin"]);
    refused("[port]\norigin = \"../x\"\n", &["pipeline.toml:2:10", "not a port origin"]);
    refused("[publish]\ntarget = \"host:relative\"\n", &["pipeline.toml:2:10", "not absolute"]);
    // A default made impossible by another setting: located at its table.
    refused(
        "[iso]\nprofiles = { validation = { require = [] } }\n",
        &["pipeline.toml:1:1", "there is no profile `production`", "leaves `iso.profile` at its default"],
    );
}

#[test]
fn an_error_caused_by_an_override_names_it_and_only_those_mention_overrides() {
    let p = Project::new("");
    // Caused by -o: named as given, with no file location.
    let run = p.run(&["-o", "publish.keep=0", "status"]);
    run.code_is(2).stderr_has("-o publish.keep=0: keep must be at least 1");
    assert!(!run.stderr().contains("pipeline.toml:"), "{}", run.stderr());
    let run = p.run(&["-o", "poudriere.jail=a.b", "status"]);
    run.code_is(2).stderr_has("-o poudriere.jail=a.b: jail name `a.b`");
    // An override of the same key wins over the file, and so does its error.
    p.write_config("[publish]\nkeep = 3\n");
    p.run(&["-o", "publish.keep=0", "status"]).code_is(2).stderr_has("-o publish.keep=0:");
    // Caused by the file while overrides are given: located in the file, overrides unmentioned.
    p.write_config("[publish]\nkeep = 0\n");
    let run = p.run(&["-o", "gate.timeout_secs=60", "--colibri", "elsewhere", "status"]);
    run.code_is(2).stderr_has("pipeline.toml:8:8: keep must be at least 1");
    let stderr = run.stderr();
    assert!(!stderr.contains("-o ") && !stderr.contains("override") && !stderr.contains("--colibri"), "{stderr}");
}

/// 1,000 mutations of a full pipeline.toml (bytes replaced, digits blown up, pieces cut
/// or doubled): each either loads or is refused with FILE:LINE:COL.
#[test]
fn every_configuration_error_is_located() {
    let scratch = test_support::scratch();
    let path = scratch.path.join("pipeline.toml");
    let mut base = std::fs::read(test_support::repo_root().join("pipeline.toml")).unwrap();
    base.extend_from_slice(
        b"\n[gate]\ntimeout_secs = 600\nmarkers = [ { text = \"login:\", within_secs = 300 }, { regex = \"colibri.*ready\", within_secs = 60 } ]\nforbidden_extra = [{ name = \"oops\", regex = \"oops \\\\d+\" }]\nrestart_loop = { regex = \"again\", count = 3, within_secs = 9 }\n\n[gate.qemu]\naccel = \"tcg\"\n\n[publish]\nkeep = 5\n\n[makesum]\njobs = 4\n\n[iso]\nprofile = \"validation\"\n",
    );
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let (mut refused, mut unlocated) = (0, Vec::new());
    for round in 0..1000 {
        let mut text = base.clone();
        let at = next(text.len());
        match next(5) {
            0 => text[at] = 0x80 + next(128) as u8,
            1 => text[at] = next(256) as u8,
            2 => {
                let digits: Vec<usize> = (0..text.len()).filter(|i| text[*i].is_ascii_digit()).collect();
                let d = digits[next(digits.len())];
                let big: &[&[u8]] = &[b"99999999999999999999999", b"4294967296", b"-1", b"0", b"1e999"];
                text.splice(d..d + 1, big[next(big.len())].iter().copied());
            }
            3 => {
                let end = (at + 1 + next(8)).min(text.len());
                text.drain(at..end);
            }
            _ => {
                let end = (at + 1 + next(12)).min(text.len());
                let piece = text[at..end].to_vec();
                text.splice(at..at, piece);
            }
        }
        std::fs::write(&path, &text).unwrap();
        let invocation = xtask::config::Invocation { config: Some(path.clone()), ..Default::default() };
        if let Err(e) = xtask::config::Loaded::load(&invocation) {
            refused += 1;
            let message = xtask::ui::render_error(&e);
            let located = message.strip_prefix(&format!("{path}:")).is_some_and(|rest| {
                let mut parts = rest.splitn(3, ':');
                let number =
                    |p: Option<&str>| p.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
                number(parts.next()) && number(parts.next())
            });
            if !located {
                unlocated.push(format!("round {round}: {message}"));
            }
        }
    }
    assert!(refused > 300, "only {refused} of 1000 mutations were refused: the mutations are too mild");
    assert!(unlocated.is_empty(), "{} errors without FILE:LINE:COL:\n{}", unlocated.len(), unlocated.join("\n"));
}

#[test]
fn an_osversion_of_another_major_than_the_abi_is_refused() {
    refused(
        "[repository]\nosversion = 1403000\n",
        &[
            "pipeline.toml:2:13",
            "OSVERSION 1403000 is FreeBSD 14, but repository.abi `FreeBSD:15:amd64` is FreeBSD 15",
            "1500068 for 15.0-RELEASE",
        ],
    );
}
