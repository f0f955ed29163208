//! `--pf-allow`: opens the guest's network for the run, as bhyve-pf-allow.sh did: a tap
//! interface on a bridge, and pf pass rules for it in an anchor (docs/reference/boot-gate.md,
//! "bhyve": guest networking). Everything is removed again after the run, on every path.

use anyhow::{Result, anyhow, bail};
use camino::{Utf8Path, Utf8PathBuf};

use super::backend::{short, teardown};
use crate::config::{Tool, Tools};
use crate::failure::Failure;
use crate::proc::CmdLine;
use crate::run::Log;
use crate::stage::{Cx, Plan, Step};
use crate::ui::Ui;

/// What `--pf-allow` will do.
#[derive(Debug, Clone)]
pub struct NetworkPlan {
    tools: Tools,
    bridge: String,
    anchor: String,
    rules: Vec<String>,
}

impl NetworkPlan {
    pub fn new(cx: &Cx) -> NetworkPlan {
        let b = &cx.config().gate.bhyve;
        NetworkPlan {
            tools: cx.config().tools.clone(),
            bridge: b.bridge.clone(),
            anchor: b.pf_anchor.clone(),
            rules: b.pf_rules.clone(),
        }
    }

    pub fn bridge(&self) -> &str {
        &self.bridge
    }

    fn ifconfig(&self) -> CmdLine {
        CmdLine::tool(&self.tools, Tool::ifconfig)
    }

    fn pfctl(&self) -> CmdLine {
        CmdLine::tool(&self.tools, Tool::pfctl)
    }

    fn rules_text(&self, tap: &str) -> String {
        let mut text =
            format!("# mother-build gate --pf-allow: the boot-gate guest ({tap} on {}) may talk\n", self.bridge);
        for rule in &self.rules {
            text.push_str(&rule.replace("{tap}", tap).replace("{bridge}", &self.bridge));
            text.push('\n');
        }
        text
    }

    fn open_cmds(&self, tap: &str, rules: &Utf8Path) -> [CmdLine; 3] {
        [
            self.ifconfig().args([tap, "up"]),
            self.ifconfig().args([self.bridge.as_str(), "addm", tap, "up"]),
            self.pfctl().args(["-a", self.anchor.as_str(), "-f", rules.as_str()]),
        ]
    }

    fn close_cmds(&self, tap: &str) -> [CmdLine; 3] {
        [
            self.pfctl().args(["-a", self.anchor.as_str(), "-F", "rules"]),
            self.ifconfig().args([self.bridge.as_str(), "deletem", tap]),
            self.ifconfig().args([tap, "destroy"]),
        ]
    }

    /// The steps, as `--dry-run` shows them (TAP: the interface `tap create` names).
    pub fn plan(&self, steps: &mut Plan) {
        steps.run(&self.ifconfig().args(["tap", "create"]));
        steps.note("TAP below is the interface `ifconfig tap create` printed");
        let rules = Utf8PathBuf::from("RUN_DIR/gate/pf-allow.conf");
        let [up, addm, load] = self.open_cmds("TAP", &rules);
        steps.run(&up);
        steps.run(&addm);
        steps.push(Step::Write { path: rules, what: self.rules_text("TAP").trim_end().replace('\n', "; ") });
        steps.run(&load);
    }

    /// The steps that remove it again, as `--dry-run` shows them.
    pub fn plan_close(&self, steps: &mut Plan) {
        for cmd in self.close_cmds("TAP") {
            steps.run(&cmd);
        }
    }

    /// Creates the tap, adds it to the bridge and loads the rules. On an error, what was
    /// done is undone before returning.
    pub fn open<'l>(&self, dir: &Utf8Path, log: &'l Log, ui: &'l Ui) -> Result<Network<'l>> {
        let create = self.ifconfig().args(["tap", "create"]);
        let out = short(&create, log, ui)?;
        if !out.success() {
            bail!("{}", create.failure(&out));
        }
        let tap = out.stdout_str().lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default().trim().to_owned();
        if tap.is_empty() || !tap.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') {
            bail!("`ifconfig tap create` printed `{tap}`, not an interface name");
        }
        let mut net = Network { plan: self.clone(), tap, log, done: 0 };
        let rules = dir.join("pf-allow.conf");
        crate::fsx::write_atomic(&rules, net.plan.rules_text(&net.tap).as_bytes())?;
        for cmd in self.open_cmds(&net.tap, &rules) {
            let done = short(&cmd, log, ui)
                .and_then(|out| if out.success() { Ok(()) } else { Err(anyhow!("{}", cmd.failure(&out))) });
            if let Err(e) = done {
                let mut message = format!("cannot open the guest network: {e}");
                for p in net.close() {
                    message.push_str(&format!("\nand cleaning up failed too: {p}"));
                }
                // The cause carries its help (a program that is missing) on.
                bail!(Failure::new(message).caused_by(e));
            }
            net.done += 1;
        }
        Ok(net)
    }
}

/// An opened guest network. Closed by [`Network::close`], or when dropped.
pub struct Network<'l> {
    plan: NetworkPlan,
    tap: String,
    log: &'l Log,
    /// How many opening steps after `tap create` succeeded (0..=3). `tap` is emptied
    /// once closed.
    done: usize,
}

impl Network<'_> {
    pub fn tap(&self) -> &str {
        &self.tap
    }

    /// Removes the rules, the bridge member and the tap (whatever was set up), each even
    /// when an earlier one fails. Returns what could not be removed.
    pub fn close(&mut self) -> Vec<String> {
        if self.tap.is_empty() {
            return Vec::new();
        }
        let [flush, deletem, destroy] = self.plan.close_cmds(&self.tap);
        let mut todo = Vec::new();
        if self.done >= 3 {
            todo.push(flush);
        }
        if self.done >= 2 {
            todo.push(deletem);
        }
        todo.push(destroy);
        let problems = todo
            .iter()
            .filter_map(|cmd| match teardown(cmd, self.log) {
                Ok(out) if out.success() => None,
                Ok(out) => Some(cmd.failure(&out)),
                Err(e) => Some(e.to_string()),
            })
            .collect();
        self.tap.clear();
        problems
    }
}

impl Drop for Network<'_> {
    fn drop(&mut self) {
        self.close();
    }
}
