//! The demo, the run report, the diff between runs and the notifications: `cargo xtask
//! demo` runs all seven stages twice (QEMU, then the recorded console), the report is
//! read with a real HTML parser (verdict, every stage, the diff rows, the highlighted
//! deciding line), `cargo xtask diff` compares two runs with a changed package and a
//! changed crate, and a release notifies a receiver on 127.0.0.1 when it passes and when
//! it fails, while a dead receiver changes nothing.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use camino::{Utf8Path, Utf8PathBuf};
use scraper::{Html, Selector};

use test_support::pipeline::{Release, STAGES};
use test_support::{Project, QEMU, scratch, write_script, xtask_bin};

fn select<'a>(doc: &'a Html, css: &str) -> Vec<scraper::ElementRef<'a>> {
    doc.select(&Selector::parse(css).unwrap()).collect()
}

fn text(e: &scraper::ElementRef) -> String {
    e.text().collect::<String>()
}

fn page(path: &Utf8Path) -> Html {
    let html = fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(!html.contains("<script"), "the report needs no script");
    assert!(!html.contains("http://") || !html.contains("<link"), "the report fetches nothing");
    Html::parse_document(&html)
}

/// The path after `the report: ` in the demo's output.
fn report_path(stderr: &str) -> Utf8PathBuf {
    let line = stderr.lines().find_map(|l| l.strip_prefix("the report: ")).expect("the demo names its report");
    Utf8PathBuf::from(line.trim())
}

fn demo(dir: &Utf8Path, extra: &[&str]) -> test_support::Run {
    let mut cmd = std::process::Command::new(xtask_bin());
    cmd.args(["demo", "--dir", dir.as_str()]).args(extra);
    cmd.env("CI", "1").env("NO_COLOR", "1").env_remove("MOTHER_BUILD_CONFIG").stdin(std::process::Stdio::null());
    let output = cmd.output().unwrap();
    test_support::Run { desc: format!("xtask demo {extra:?}"), dir: dir.to_owned(), output }
}

#[test]
fn the_demo_runs_every_stage_twice_and_leaves_a_report() {
    let s = scratch();
    let dir = s.path.join("demo");

    // 1. With QEMU (what .ci/deps installs): every stage, then every stage skipped.
    let first = {
        let _one_qemu_at_a_time = QEMU.lock().unwrap_or_else(|e| e.into_inner());
        demo(&dir, &[])
    };
    first.success();
    for stage in STAGES {
        first.stderr_has(&format!("[{stage}] ok")).stderr_has(&format!("[{stage}] up to date"));
    }
    first.stderr_has("every stage is up to date").stderr_has("gate     real: QEMU boots the image");
    first.stderr_has("bulk     simulated: poudriere is simhost/poudriere/poudriere");
    let key = dir.join("ssl/demo-signing.key");
    assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600, "the demo key is 0600");
    let report = report_path(&first.stderr());
    let doc = page(&report);
    let verdict = select(&doc, "header#verdict");
    assert_eq!(verdict[0].value().attr("class"), Some("verdict pass"));
    assert!(text(&verdict[0]).contains("Release passed"), "{}", text(&verdict[0]));
    for stage in STAGES {
        let section = select(&doc, &format!("section#stage-{stage}"));
        assert_eq!(section.len(), 1, "{stage}");
        let badge = text(&select(&doc, &format!("section#stage-{stage} .badge"))[0]);
        assert_eq!(badge, "succeeded", "{stage}");
        let track = select(&doc, &format!(".track[data-stage={stage}] .bar"));
        assert_eq!(track.len(), 1, "{stage} has a bar in the timeline");
    }
    let how = text(&select(&doc, "section#stage-bulk .how")[0]);
    assert!(how.contains("simulated"), "{how}");
    let deciding = select(&doc, "pre.console mark.deciding");
    assert_eq!(deciding.len(), 1);
    assert!(text(&deciding[0]).contains("login: "), "{}", text(&deciding[0]));
    assert_eq!(select(&doc, "pre.console mark.marker").len(), 3, "the three markers before the last");
    let sign = text(&select(&doc, "section#stage-sign")[0]);
    assert!(sign.contains("key fingerprint") && sign.contains("pubkey"), "{sign}");
    let audit = text(&select(&doc, "section#stage-audit")[0]);
    assert!(audit.contains("advisory database") && audit.contains("RUSTSEC-2026-9901"), "{audit}");
    assert!(audit.contains("0 fail the policy"), "{audit}");
    let publish = text(&select(&doc, "section#stage-publish")[0]);
    assert!(publish.contains("http://127.0.0.1:"), "{publish}");

    // 2. Without QEMU: the gate replays the recorded console; the report compares with
    // the first release.
    let second = demo(&dir, &["--no-qemu"]);
    second.success().stderr_has("[gate] ok").stderr_has("replays a recorded console");
    let report2 = report_path(&second.stderr());
    assert_ne!(report, report2, "the second demo made a new run");
    let doc = page(&report2);
    assert_eq!(select(&doc, "header#verdict")[0].value().attr("class"), Some("verdict pass"));
    let changes = text(&select(&doc, "section#changes")[0]);
    let first_run = report.parent().unwrap().file_name().unwrap();
    assert!(changes.contains(first_run), "compared with the first release:\n{changes}");
    assert_eq!(select(&doc, "#diff-durations tr").len(), STAGES.len() + 1, "a row per stage and the header");
    assert!(text(&select(&doc, "section#stage-gate .how")[0]).contains("simulated"));
    assert_eq!(text(&select(&doc, "section#stage-port .badge")[0]), "up-to-date");
    assert_eq!(select(&doc, "pre.console mark.deciding").len(), 1);
}

/// An HTTP receiver on 127.0.0.1 that answers 200 and keeps every request.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<(String, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (g, st) = (got.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        if let Some(req) = read_request(conn) {
                            g.lock().unwrap().push(req);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Receiver { port, got, stop, thread: Some(thread) }
    }

    fn requests(&self) -> Vec<(String, String)> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Reads one request (its first line and body) and answers 200.
fn read_request(mut conn: TcpStream) -> Option<(String, String)> {
    conn.set_nonblocking(false).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0)))
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let first = head.lines().next().unwrap_or_default().to_owned();
    Some((first, String::from_utf8_lossy(&buf[head_end..]).into_owned()))
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn a_release_notifies_when_it_passes_and_when_it_fails_and_its_report_shows_the_failure() {
    let r = Release::start();
    let receiver = Receiver::start();
    let s = &r.h.p.scratch.path;
    let mail = s.join("mail.txt");
    let sendmail = s.join("bin/sendmail");
    write_script(&sendmail, &format!("#!/bin/sh\n{{ echo \"ARGS: $*\"; cat; }} >> '{mail}'\n"));
    // The same settings as Release::start, plus [notify]: the receiver (json and slack),
    // a dead one with a token in its URL, and mail.
    let config = fs::read_to_string(r.h.p.config_path()).unwrap();
    let notify = format!(
        "\n[notify]\nmail_command = [\"{sendmail}\", \"-oi\"]\nmail_to = [\"ops@clawdie.si\"]\ntimeout_secs = 5\n\
         webhooks = [\n  {{ url = \"http://127.0.0.1:{p}/hook?token=SECRETTOKEN1\" }},\n\
           {{ url = \"http://127.0.0.1:{p}/services/T1/B2/SLACKSECRET\", format = \"slack\", on = [\"fail\"] }},\n\
           {{ url = \"http://bot:PASSWORDSECRET@127.0.0.1:{dead}/dead?access_token=DEADSECRET\", format = \"matrix\" }},\n]\n",
        p = receiver.port,
        dead = dead_port()
    );
    r.h.p.write_raw_config(&format!("{config}{notify}"));

    // A release that passes: one notification to the receiver (json; slack is for
    // failures only), the mail, and a warning about the dead one; exit 0 all the same.
    let run = r.run(&["release"]);
    run.success().stderr_has("warning: notification not sent: webhook http://127.0.0.1:");
    let got = receiver.requests();
    assert_eq!(got.len(), 1, "{got:?}\n{}", run.stderr());
    assert!(got[0].0.starts_with("POST /hook?token=SECRETTOKEN1 "), "{}", got[0].0);
    let body: serde_json::Value = serde_json::from_str(&got[0].1).unwrap();
    assert_eq!(body["event"], "pass");
    assert_eq!(body["verdict"], "pass");
    assert!(body["summary"].as_str().unwrap().contains("first successful release"), "{body}");
    let mail_text = fs::read_to_string(&mail).unwrap();
    assert!(mail_text.contains("ARGS: -oi ops@clawdie.si"), "{mail_text}");
    assert!(mail_text.contains("Subject: mother-build: release passed"), "{mail_text}");
    let state = r.h.p.state();
    let run_dir = r.h.p.state_dir().join("runs").join(state["id"].as_str().unwrap());
    let notify_log = fs::read_to_string(run_dir.join("logs/notify.log")).unwrap();
    for secret in ["SECRETTOKEN1", "SLACKSECRET", "PASSWORDSECRET", "DEADSECRET"] {
        assert!(!run.stderr().contains(secret), "{secret} shown:\n{}", run.stderr());
        assert!(!notify_log.contains(secret), "{secret} logged:\n{notify_log}");
    }
    assert!(notify_log.contains("NOT sent"), "{notify_log}");

    // A broken image: the forced gate fails (exit 1, as without notifications); json and
    // slack hear of it with the stage, the error and the rerun command.
    r.build_image(true);
    let failed = r.run(&["release", "--force", "--from", "gate"]);
    failed.code_is(1).stderr_has("the image failed the boot gate").stderr_has("report: ");
    let got = receiver.requests();
    assert_eq!(got.len(), 3, "{got:?}");
    let json: serde_json::Value = serde_json::from_str(&got[1].1).unwrap();
    assert_eq!((json["event"].as_str(), json["stage"].as_str()), (Some("fail"), Some("gate")));
    assert!(json["rerun"].as_str().unwrap().starts_with("cargo xtask --config "), "{json}");
    assert!(json["rerun"].as_str().unwrap().ends_with(" gate"), "{json}");
    assert!(json["error"].as_str().unwrap().contains("failed the boot gate"), "{json}");
    let slack: serde_json::Value = serde_json::from_str(&got[2].1).unwrap();
    assert!(slack["text"].as_str().unwrap().contains("release failed at gate"), "{slack}");
    assert!(fs::read_to_string(&mail).unwrap().contains("Subject: mother-build: release failed at gate"));

    // The failed run's report: the verdict, the error, the log, the deciding line.
    let state = r.h.p.state();
    let report = r.h.p.state_dir().join("runs").join(state["id"].as_str().unwrap()).join("report.html");
    let doc = page(&report);
    assert_eq!(select(&doc, "header#verdict")[0].value().attr("class"), Some("verdict fail"));
    assert!(text(&select(&doc, "header#verdict h1")[0]).contains("failed at gate"));
    assert!(text(&select(&doc, "section#stage-gate pre.error-text")[0]).contains("failed the boot gate"));
    assert!(!select(&doc, "section#stage-gate pre.log-tail").is_empty());
    assert_eq!(select(&doc, "section#stage-gate a.log")[0].value().attr("href"), Some("logs/gate.log"));
    let deciding = select(&doc, "pre.console mark.deciding");
    assert_eq!(deciding.len(), 1);
    assert!(text(&deciding[0]).contains("Kernel panic - not syncing"), "{}", text(&deciding[0]));
    assert!(text(&deciding[0]).contains("decided: forbidden"), "{}", text(&deciding[0]));
    // `cargo xtask report` writes it again.
    fs::remove_file(&report).unwrap();
    r.run(&["report"]).success().stdout_has("report.html");
    assert!(report.is_file());
}

/// A run's state.json with makesum and sign done: `crates` in distinfo, `packages` signed.
fn fake_run(state_dir: &Utf8Path, id: &str, crates: &[(&str, &str)], packages: &[(&str, &str, u64)], sign_ms: u64) {
    let distfiles: Vec<serde_json::Value> = crates
        .iter()
        .map(|(n, v)| serde_json::json!({"name": format!("rust/crates/{n}-{v}.crate"), "size": 100, "sha256": format!("{n}{v}")}))
        .collect();
    let pkgs: Vec<serde_json::Value> = packages
        .iter()
        .map(|(n, v, size)| {
            serde_json::json!({"name": n, "version": v, "origin": "sysutils/colibri", "path": format!("All/{n}-{v}.pkg"),
                "size": size, "sum": format!("2$sum{v}"), "sha256": "00"})
        })
        .collect();
    let success = |outputs: serde_json::Value| serde_json::json!({"run": id, "ended": "2026-06-20T00:00:01.000Z", "fingerprint": "f", "outputs": outputs});
    let state = serde_json::json!({
        "version": 1, "id": id, "created": "2026-06-20T00:00:00.000Z", "command": "release",
        "stages": ["makesum", "sign"],
        "records": {
            "makesum": {"status": "succeeded", "duration_ms": 1000, "attempts": 1,
                "last_success": success(serde_json::json!({"distinfo": "ports/sysutils/colibri/distinfo", "distdir": "/d", "distfiles": distfiles}))},
            "sign": {"status": "succeeded", "duration_ms": sign_ms, "attempts": 1,
                "last_success": success(serde_json::json!({"repo": "/r", "manifest": "m.json", "trust": "pubkey",
                    "key_fingerprint": "abc", "packages": pkgs}))},
        }
    });
    let dir = state_dir.join("runs").join(id);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("state.json"), serde_json::to_string_pretty(&state).unwrap()).unwrap();
    fs::write(state_dir.join("current"), format!("{id}\n")).unwrap();
}

#[test]
fn diff_shows_a_changed_package_and_a_changed_crate_as_text_json_and_in_the_report() {
    let p = Project::new("");
    let state = p.state_dir();
    let old_crates = [("anyhow", "1.0.99"), ("libc", "0.2.170"), ("itoa", "1.0.15")];
    let new_crates = [("anyhow", "1.0.100"), ("libc", "0.2.170"), ("ryu", "1.0.20")];
    for (i, id) in ["20260101T000000Z-0001", "20260102T000000Z-0002", "20260103T000000Z-0003"].iter().enumerate() {
        fake_run(&state, id, &old_crates, &[("colibri", "0.9.0", 1800)], 1000 * (i as u64 + 1));
    }
    fake_run(&state, "20260104T000000Z-0004", &new_crates, &[("colibri", "0.9.1", 1900)], 9000);

    let text_out = p.run(&["diff", "20260103", "20260104"]);
    text_out.success();
    let out = text_out.stdout();
    assert!(out.contains("colibri 0.9.0 -> 0.9.1"), "{out}");
    assert!(out.contains("updated  anyhow 1.0.99 -> 1.0.100"), "{out}");
    assert!(out.contains("added    ryu 1.0.20") && out.contains("removed  itoa 1.0.15"), "{out}");
    // Without arguments: the current run against the last successful release before it.
    let json = p.run(&["diff", "--json"]);
    json.success();
    let d: serde_json::Value = serde_json::from_str(&json.stdout()).unwrap();
    assert_eq!(d["older"], "20260103T000000Z-0003");
    assert_eq!(d["packages"][0]["change"], "updated");
    assert_eq!(d["packages"][0]["new"]["size"], 1900);
    assert_eq!(d["crates"]["updated"][0]["name"], "anyhow");
    let sign = d["durations"].as_array().unwrap().iter().find(|s| s["stage"] == "sign").unwrap();
    assert_eq!((sign["ms"].as_u64(), sign["older_ms"].as_u64()), (Some(9000), Some(3000)));
    assert_eq!((sign["median_ms"].as_u64(), sign["median_of"].as_u64()), (Some(2000), Some(3)));
    p.run(&["diff", "nosuchrun"]).code_is(2).stderr_has("there is no run `nosuchrun`");

    // The report of the newest run shows the same rows.
    let report = p.run(&["report"]);
    report.success();
    let doc = page(&Utf8PathBuf::from(report.stdout().trim()));
    let pkg = select(&doc, "#diff-packages tr.updated");
    assert_eq!(pkg.len(), 1);
    assert!(text(&pkg[0]).contains("0.9.0 → 0.9.1"), "{}", text(&pkg[0]));
    let crates: Vec<String> = select(&doc, "#diff-crates tr").iter().skip(1).map(text).collect();
    assert_eq!(crates.len(), 3, "{crates:?}");
    assert!(crates.iter().any(|c| c.contains("anyhow") && c.contains("1.0.99 → 1.0.100")), "{crates:?}");
    let durations: Vec<String> = select(&doc, "#diff-durations tr").iter().map(text).collect();
    assert!(durations.iter().any(|r| r.starts_with("sign") && r.contains("(of 3)")), "{durations:?}");
    assert_eq!(select(&doc, "header#verdict")[0].value().attr("class"), Some("verdict pass"));
}
