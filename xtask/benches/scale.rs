//! Benchmark: how the cost grows with the repository, at 2,000, 10,000 and 35,000
//! packages (a full ports tree): small synthetic packages whose catalogue entries are
//! as full as real ones, signed with the RSA test key. Run with
//! `cargo bench -p xtask --bench scale` (not part of CI; `SCALE_SIZES=2000,10000` picks
//! the sizes, `SCALE_ROUNDS=N` the rounds of each figure, `SCALE_FIGURES=publish,judge`
//! the figures: any of `verify`, `sign`, `publish` (both publish figures) and `judge`).
//!
//! Each figure times the built xtask binary (not `cargo xtask`) against a baseline
//! measured in the same run, in turns within each round, and takes the medians:
//! - `sign --verify-only` against `b2sum` over the same package files (goal at most
//!   0.5x at 35,000);
//! - `sign` on the unsigned repository (verify, sign both catalogues, verify again,
//!   write the manifest), against the same `b2sum`;
//! - the first `publish` to an empty site, against `cp -al` of the repository, with
//!   `rsync -a --fsync` of the repository beside it for reference (a copy that syncs each
//!   file, as publish must; how the file system's own cost grows shows in its growth);
//! - a `publish` in which one package changed (goal under 1 s and at most 0.05x the
//!   first publish at 35,000);
//! - `bulk --judge` of a finished poudriere build of as many ports, against `wc -l`
//!   over its status lists.
//!
//! Each figure is printed with its CPU time (user + system) beside its wall time: on a
//! machine other work shares, the wall time of the xtask's threads suffers more than a
//! single-threaded baseline's, and the CPU ratio shows what the code costs.
//!
//! Every figure also has its peak memory (the xtask process's maximum resident set, from
//! `wait4`; goal under 256 MB at every size) and, past the first size, its growth
//! factor: (t(n) / t(2,000)) / (n / 2,000), which is at most about 1 when the cost
//! grows no faster than linearly (goal <= 1.1, allowing for noise). The goal is judged
//! on the CPU time (the wall time's factor is printed beside it): the wall time of a
//! figure of a few tens of milliseconds moves with whatever else the machine runs.
//!
//! Nothing is deleted while figures are timed: each size's scratch directory (under
//! TMPDIR; about 4 GB at 35,000 packages with the sites and copies publish's figures
//! make) is removed when every size is measured.

// A benchmark may start processes and print: the product's boundaries (clippy.toml) are
// not theirs.
#![allow(clippy::disallowed_methods, clippy::disallowed_macros, clippy::print_stdout, clippy::print_stderr)]

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use camino::{Utf8Path, Utf8PathBuf};
use test_support::repo::{private_key, pubkey, signing_project};
use test_support::{Project, scale};

const SIZES: [usize; 3] = [2_000, 10_000, 35_000];
const MEMORY_GOAL: u64 = 256 << 20;
const GROWTH_GOAL: f64 = 1.1;
/// The package that differs in the second release.
const CHANGED: usize = 1_234;

/// What one run of a command cost.
#[derive(Clone, Copy)]
struct Cost {
    wall: Duration,
    /// User + system time of the process: what the machine's other load does not change.
    cpu: Duration,
    /// Peak resident set of the process, in bytes.
    rss: u64,
}

/// The first argument that makes this program the measuring parent of one command.
const MEASURE: &str = "--measure-child";

/// Runs `cmd` (its output to `log`), returning its wall time and peak memory; panics,
/// showing the output, when it fails.
///
/// The command is started by a fresh copy of this program ([`measure_child`]): a
/// process's peak RSS counts the memory of the process it was forked from until its
/// exec, and this benchmark holds whole catalogues.
fn run(cmd: &mut Command, log: &Utf8Path) -> Cost {
    let result = log.with_extension("cost");
    let mut helper = Command::new(std::env::current_exe().unwrap());
    helper.arg(MEASURE).arg(&result).arg(cmd.get_program()).args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => helper.env(k, v),
            None => helper.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        helper.current_dir(dir);
    }
    let out = fs::File::create(log).unwrap();
    helper.stdin(Stdio::null()).stdout(out.try_clone().unwrap()).stderr(out).env("CI", "1");
    let status = helper.status().unwrap();
    let text = fs::read_to_string(&result).unwrap_or_default();
    let fields: Vec<u64> = text.split_whitespace().map(|f| f.parse().unwrap()).collect();
    assert!(
        status.success() && fields.len() == 4 && fields[3] == 0,
        "{cmd:?} failed ({text}):\n{}",
        fs::read_to_string(log).unwrap_or_default()
    );
    Cost { wall: Duration::from_nanos(fields[0]), cpu: Duration::from_nanos(fields[1]), rss: fields[2] * 1024 }
}

/// `MEASURE RESULT PROGRAM ARGS...`: runs the program (same directory, environment and
/// output) and writes its wall time and CPU time (user + system) in nanoseconds, its
/// peak RSS in KiB (`wait4`) and its exit status (or 128 + signal) to RESULT.
fn measure_child(args: &[String]) {
    let [result, program, rest @ ..] = args else { panic!("{MEASURE} RESULT PROGRAM ARGS...") };
    let start = Instant::now();
    // Reaped by wait4 below, which also gives its peak memory.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(program).args(rest).spawn().unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it and reaps the child, which
    // `child` is not asked about again.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = start.elapsed();
    assert_eq!(rc, pid, "wait4: {}", std::io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) { libc::WEXITSTATUS(status) } else { 128 + libc::WTERMSIG(status) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let cpu = tv(usage.ru_utime) + tv(usage.ru_stime);
    fs::write(result, format!("{} {} {} {code}\n", wall.as_nanos(), cpu.as_nanos(), usage.ru_maxrss)).unwrap();
}

/// The median wall and CPU times (each on its own) and the largest peak memory.
fn median(mut v: Vec<Cost>) -> Cost {
    v.sort_by_key(|c| c.wall);
    let wall = v[v.len() / 2].wall;
    v.sort_by_key(|c| c.cpu);
    let cpu = v[v.len() / 2].cpu;
    Cost { wall, cpu, rss: v.iter().map(|c| c.rss).max().unwrap_or(0) }
}

/// The figures of one size: ours and the baseline's, by figure.
struct Figures {
    packages: usize,
    bytes: u64,
    rows: Vec<(Figure, Cost, Cost)>,
    /// `rsync -a --fsync` of the repository, when rsync is there and publish was timed.
    synced: Option<Cost>,
    /// The size's scratch directory, removed only when every size is measured: a
    /// command timed within a minute of tens of thousands of files being deleted pays
    /// for the deletion (see the first publishes' sites in `measure`).
    _scratch: Project,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Figure {
    Verify,
    Sign,
    FirstPublish,
    NextPublish,
    Judge,
}

impl Figure {
    fn name(self) -> &'static str {
        match self {
            Figure::Verify => "sign --verify-only",
            Figure::Sign => "sign (verify + sign)",
            Figure::FirstPublish => "publish, first release",
            Figure::NextPublish => "publish, 1 package changed",
            Figure::Judge => "bulk --judge",
        }
    }

    fn baseline(self) -> &'static str {
        match self {
            Figure::Verify | Figure::Sign => "b2sum",
            Figure::FirstPublish => "cp -al",
            Figure::NextPublish => "first publish",
            Figure::Judge => "wc -l",
        }
    }

    /// The goal on the ratio to the baseline, at the largest size.
    /// The word of `SCALE_FIGURES` that picks this figure.
    fn word(self) -> &'static str {
        match self {
            Figure::Verify => "verify",
            Figure::Sign => "sign",
            Figure::FirstPublish | Figure::NextPublish => "publish",
            Figure::Judge => "judge",
        }
    }

    fn ratio_goal(self) -> Option<f64> {
        match self {
            Figure::Verify => Some(0.5),
            Figure::NextPublish => Some(0.05),
            _ => None,
        }
    }
}

/// A scratch project signing with the test key, and its pipeline.toml without a target.
struct Bench {
    project: Project,
    config: String,
    root: Utf8PathBuf,
    rounds: usize,
    /// The `SCALE_FIGURES` words; empty for every figure.
    figures: Vec<String>,
}

impl Bench {
    fn xtask(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(test_support::xtask_bin());
        cmd.arg("--config").arg(self.project.config_path()).args(args).env("NO_COLOR", "1");
        cmd
    }

    fn wants(&self, figure: Figure) -> bool {
        self.figures.is_empty() || self.figures.iter().any(|w| w == figure.word())
    }

    fn log(&self) -> Utf8PathBuf {
        self.root.join("last.log")
    }

    fn target(&self, site: &Utf8Path) {
        self.project.write_raw_config(&format!("{}target = \"{site}\"\n", self.config));
    }

    /// Runs ours and the baseline in turns, `rounds` times after a warm-up of each;
    /// `before` runs untimed before each of ours.
    fn pair(
        &self,
        mut before: impl FnMut(usize),
        mut ours: impl FnMut(usize) -> Command,
        mut theirs: impl FnMut(usize) -> Option<Command>,
        mut after: impl FnMut(usize),
    ) -> (Cost, Cost) {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for round in 0..=self.rounds {
            before(round);
            let cost = run(&mut ours(round), &self.log());
            if let Some(mut cmd) = theirs(round) {
                let base = run(&mut cmd, &self.log());
                if round > 0 {
                    b.push(base);
                }
            }
            after(round);
            if round > 0 {
                a.push(cost);
            }
        }
        (median(a), if b.is_empty() { Cost { wall: Duration::ZERO, cpu: Duration::ZERO, rss: 0 } } else { median(b) })
    }
}

fn measure(n: usize, rounds: usize, figures: &[String]) -> Figures {
    let project = signing_project("pubkey", "\n[publish]\ncheck = false\nkeep = 3\n");
    let config = fs::read_to_string(project.config_path()).unwrap();
    let root = project.scratch.path.clone();
    let bench = Bench { project, config, root: root.clone(), rounds, figures: figures.to_vec() };
    let key = private_key(&root.join("keys"));

    // Release a, release b (package CHANGED differs; the rest are a's files, linked),
    // and u: a's packages under unsigned catalogues, for sign to sign.
    let start = Instant::now();
    let (a, b, u) = (root.join("a"), root.join("b"), root.join("u"));
    let lines = scale::write_packages(&a, n, 0, &|_| false, None);
    scale::write_catalogues(&a, &lines);
    let lines_b = scale::write_packages(&b, n, 1, &|i| i == CHANGED, Some(&a));
    scale::write_catalogues(&b, &lines_b);
    let _ = scale::write_packages(&u, n, 0, &|_| false, Some(&a));
    scale::write_catalogues(&u, &lines);
    let unsigned = root.join("unsigned");
    fs::create_dir_all(&unsigned).unwrap();
    for archive in ["data.pkg", "packagesite.pkg"] {
        fs::copy(u.join(archive), unsigned.join(archive)).unwrap();
    }
    scale::sign(&a, &key, &pubkey());
    scale::sign(&b, &key, &pubkey());
    let paths = scale::package_paths(n, 0, &|_| false);
    let bytes: u64 = (0..n).map(|i| scale::package_size(i) as u64).sum();
    eprintln!("{n} packages ({:.0} MB) made in {:.1} s", bytes as f64 / 1e6, start.elapsed().as_secs_f64());
    // Written out before anything is timed: the kernel's writeback of hundreds of
    // megabytes would otherwise share the cores with whatever runs first, and with a
    // command using both cores more than with a baseline using one.
    let synced = Command::new("sync").status().is_ok_and(|s| s.success());
    assert!(synced, "sync failed");

    let b2sum = |dir: &Utf8Path| {
        let mut cmd = Command::new("b2sum");
        cmd.args(&paths).current_dir(dir);
        cmd
    };
    let mut rows = Vec::new();
    let mut synced = None;

    // sign --verify-only, against b2sum.
    if bench.wants(Figure::Verify) {
        let (ours, theirs) = bench.pair(
            |_| {},
            |_| bench.xtask(&["sign", "--verify-only", "--repo", a.as_str()]),
            |_| Some(b2sum(&a)),
            |_| {},
        );
        rows.push((Figure::Verify, ours, theirs));
    }

    // sign on the unsigned catalogues, restored before each round.
    if bench.wants(Figure::Sign) {
        let (ours, theirs) = bench.pair(
            |_| {
                for archive in ["data.pkg", "packagesite.pkg"] {
                    fs::copy(unsigned.join(archive), u.join(archive)).unwrap();
                }
            },
            |_| bench.xtask(&["sign", "--repo", u.as_str()]),
            |_| Some(b2sum(&u)),
            |_| {},
        );
        rows.push((Figure::Sign, ours, theirs));
    }

    // The first publish of a to an empty site, against cp -al of a.
    if bench.wants(Figure::FirstPublish) {
        run(&mut bench.xtask(&["sign", "--repo", a.as_str()]), &bench.log());
        let site = |round: usize| root.join(format!("site{round}"));
        let copy = |round: usize| root.join(format!("copy{round}"));
        let rsynced = |round: usize| root.join(format!("rsync{round}"));
        let has_rsync =
            Command::new("rsync").arg("--version").stdout(Stdio::null()).status().is_ok_and(|s| s.success());
        let mut references = Vec::new();
        let (ours, theirs) = bench.pair(
            |round| bench.target(&site(round)),
            |_| bench.xtask(&["publish"]),
            |round| {
                let mut cmd = Command::new("cp");
                cmd.arg("-al").arg(a.as_str()).arg(copy(round).as_str());
                Some(cmd)
            },
            |round| {
                if has_rsync {
                    let mut cmd = Command::new("rsync");
                    cmd.args(["-a", "--fsync"]).arg(format!("{a}/")).arg(rsynced(round).as_str());
                    let cost = run(&mut cmd, &bench.log());
                    if round > 0 {
                        references.push(cost);
                    }
                }
            },
        );
        rows.push((Figure::FirstPublish, ours, theirs));
        synced = (!references.is_empty()).then(|| median(references));
        let first = ours;

        // The next releases alternate between b and a: one package differs each time.
        let (ours, _) = bench.pair(
            |round| {
                let repo = if round % 2 == 0 { &b } else { &a };
                run(&mut bench.xtask(&["sign", "--repo", repo.as_str()]), &bench.log());
            },
            |_| bench.xtask(&["publish"]),
            |_| None,
            |_| {},
        );
        rows.push((Figure::NextPublish, ours, first));
        // The sites of the first publishes and the baselines' copies stay until every
        // size is measured (with the size's scratch directory): a command timed within a
        // minute of tens of thousands of files being deleted pays for the deletion,
        // which no real publish does (ext4 passes over each inode freed in the last
        // minute when it allocates one: `find_inode_bit` and `recently_deleted` in the
        // kernel's fs/ext4/ialloc.c). At 35,000 packages they take about 3 GB.
    }

    // bulk --judge of a build of n ports, against wc -l.
    if bench.wants(Figure::Judge) {
        let (build, files) = scale::poudriere_build(root.as_std_path(), n);
        let (ours, theirs) = bench.pair(
            |_| {},
            |_| bench.xtask(&["bulk", "--judge", build.to_str().unwrap()]),
            |_| {
                let mut cmd = Command::new("wc");
                cmd.arg("-l").args(&files);
                Some(cmd)
            },
            |_| {},
        );
        rows.push((Figure::Judge, ours, theirs));
    }
    Figures { packages: n, bytes, rows, synced, _scratch: bench.project }
}

/// `--make DIR PACKAGES`: a signed repository of that many packages in `DIR/repo`, the
/// next release in `DIR/next` (package [`CHANGED`] differs, the rest hard-linked from
/// `repo`), an unsigned copy in `DIR/unsigned`, the key in `DIR/keys` and a
/// pipeline.toml signing with it, to profile one command by hand (an incremental
/// publish: `sign --repo DIR/repo`, `publish`, `sign --repo DIR/next`, `publish`).
fn make(dir: &Utf8Path, n: usize) {
    let key = private_key(&dir.join("keys"));
    for name in ["repo", "unsigned"] {
        let lines = scale::write_packages(&dir.join(name), n, 0, &|_| false, None);
        scale::write_catalogues(&dir.join(name), &lines);
    }
    let lines = scale::write_packages(&dir.join("next"), n, 1, &|i| i == CHANGED, Some(&dir.join("repo")));
    scale::write_catalogues(&dir.join("next"), &lines);
    scale::sign(&dir.join("repo"), &key, &pubkey());
    scale::sign(&dir.join("next"), &key, &pubkey());
    let config = test_support::repo::signing_config(&key, "pubkey");
    fs::write(
        dir.join("pipeline.toml"),
        format!(
            "[pipeline]\nstate_dir = \"{dir}/state\"\n\n{config}\n[publish]\ncheck = false\nkeep = 3\ntarget = \"{dir}/site\"\n"
        ),
    )
    .unwrap();
    println!("{dir}: repo and next (signed), unsigned, pipeline.toml");
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(MEASURE) {
        return measure_child(&args[2..]);
    }
    if let [_, flag, dir, n] = &args[..]
        && flag == "--make"
    {
        return make(Utf8Path::new(dir), n.parse().expect("--make DIR PACKAGES"));
    }
    let sizes: Vec<usize> = match std::env::var("SCALE_SIZES") {
        Ok(s) => s.split(',').map(|n| n.trim().parse().expect("SCALE_SIZES: numbers, comma-separated")).collect(),
        Err(_) => SIZES.to_vec(),
    };
    let rounds: usize = std::env::var("SCALE_ROUNDS").map_or(3, |r| r.parse().expect("SCALE_ROUNDS: a number"));
    let figures: Vec<String> = std::env::var("SCALE_FIGURES")
        .map(|s| s.split(',').map(|w| w.trim().to_owned()).filter(|w| !w.is_empty()).collect())
        .unwrap_or_default();
    for w in &figures {
        assert!(
            ["verify", "sign", "publish", "judge"].contains(&w.as_str()),
            "SCALE_FIGURES: {w:?} is none of verify, sign, publish, judge"
        );
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "scale benchmark on {cores} cores: the xtask binary, median of {rounds} rounds; peak memory is the xtask process's maximum RSS"
    );
    let mut all: Vec<Figures> = Vec::new();
    for &n in &sizes {
        let figures = measure(n, rounds, &figures);
        let largest = n == *sizes.iter().max().unwrap();
        println!("{} packages ({:.0} MB of packages):", figures.packages, figures.bytes as f64 / 1e6);
        for &(figure, ours, theirs) in &figures.rows {
            let ratio = secs(ours.wall) / secs(theirs.wall);
            let mut goals = Vec::new();
            let mut line = format!(
                "  {:<27} {:>8.3} s (cpu {:.3} s), {:>4.0} MB; {} {:.3} s (cpu {:.3} s): {ratio:.3}x, cpu {:.3}x",
                figure.name(),
                secs(ours.wall),
                secs(ours.cpu),
                ours.rss as f64 / (1 << 20) as f64,
                figure.baseline(),
                secs(theirs.wall),
                secs(theirs.cpu),
                secs(ours.cpu) / secs(theirs.cpu),
            );
            if let (Some(goal), true) = (figure.ratio_goal(), largest) {
                goals.push(format!("<= {goal}x: {}", verdict(ratio <= goal)));
            }
            if figure == Figure::NextPublish && largest {
                goals.push(format!("< 1 s: {}", verdict(ours.wall < Duration::from_secs(1))));
            }
            goals.push(format!("memory < 256 MB: {}", verdict(ours.rss < MEMORY_GOAL)));
            if let Some(base) = all.first().filter(|f| f.packages < n) {
                let first = base.rows.iter().find(|r| r.0 == figure).unwrap().1;
                let scale = n as f64 / base.packages as f64;
                let growth = (secs(ours.cpu) / secs(first.cpu)) / scale;
                let wall = (secs(ours.wall) / secs(first.wall)) / scale;
                line.push_str(&format!("; growth {growth:.2} (wall {wall:.2})"));
                goals.push(format!("growth <= {GROWTH_GOAL}: {}", verdict(growth <= GROWTH_GOAL)));
            }
            println!("{line} (goals: {})", goals.join(", "));
            if let (Figure::FirstPublish, Some(synced)) = (figure, figures.synced) {
                let mut line = format!(
                    "    for reference, rsync -a --fsync {:.3} s (cpu {:.3} s): publish {:.3}x, cpu {:.3}x",
                    secs(synced.wall),
                    secs(synced.cpu),
                    secs(ours.wall) / secs(synced.wall),
                    secs(ours.cpu) / secs(synced.cpu),
                );
                if let Some((base, first)) = all.first().filter(|f| f.packages < n).and_then(|f| Some((f, f.synced?))) {
                    let scale = n as f64 / base.packages as f64;
                    let growth = (secs(synced.cpu) / secs(first.cpu)) / scale;
                    let wall = (secs(synced.wall) / secs(first.wall)) / scale;
                    line.push_str(&format!("; its growth {growth:.2} (wall {wall:.2})"));
                }
                println!("{line}");
            }
        }
        all.push(figures);
    }
}
