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
    p.run(&["-o", "pipeline.tail_lines=\"x\"", "status"]).code_is(2).stderr_has("-o pipeline.tail_lines");
    p.run(&["-o", "pipeline.tail_lines=5", "status"]).success();
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
