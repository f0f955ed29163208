//! `--pf-allow`: opens the guest's network for the run, as bhyve-pf-allow.sh did: a tap
//! interface on a bridge, and pf pass rules for it in an anchor, once the main ruleset is
//! seen to reference that anchor (docs/reference/freebsd-host.md, "pf and `gate
//! --pf-allow`"). Everything is removed again after the run, on every path.

use anyhow::{Result, anyhow, bail};
use camino::{Utf8Path, Utf8PathBuf};

use super::backend::{short, teardown};
use crate::config::{Tool, Tools};
use crate::failure;
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

    /// `pfctl -s rules`: the main ruleset, as pf holds it.
    fn show_main(&self) -> CmdLine {
        self.pfctl().args(["-s", "rules"])
    }

    /// The anchor rules that make pf evaluate the anchor from the main ruleset: for
    /// `a/b`, `anchor "a/b"` or `anchor "a/*"` (every child of `a`, not recursively).
    fn references(&self) -> Vec<String> {
        let mut names = vec![self.anchor.clone()];
        if let Some((parent, _)) = self.anchor.rsplit_once('/') {
            names.push(format!("{parent}/*"));
        }
        names.iter().map(|n| format!("anchor \"{n}\"")).collect()
    }

    /// Whether `pfctl -s rules` output has one of [`NetworkPlan::references`]. pfctl
    /// prints an anchor rule as `anchor "NAME"` and its match, `all` when it has none
    /// (`print_rule()` in sbin/pfctl/pfctl_parser.c): `anchor "mother-build/*" all`.
    fn referenced_in(&self, rules: &str) -> bool {
        let wanted = self.references();
        rules.lines().map(str::trim).any(|line| {
            wanted
                .iter()
                .any(|w| line.strip_prefix(w.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with(' ')))
        })
    }

    /// The line /etc/pf.conf needs.
    fn line_to_add(&self) -> String {
        self.references().pop().unwrap_or_default()
    }

    /// Rules loaded into an anchor that nothing references load without an error and
    /// never apply (pf.conf(5), ANCHORS): check the main ruleset before loading them.
    /// `pfctl -s Anchors` would prove nothing: it lists every anchor that exists.
    fn check_anchor(&self, log: &Log, ui: &Ui) -> Result<()> {
        let show = self.show_main();
        let out = short(&show, log, ui)?;
        if !out.success() {
            bail!(
                failure!("cannot read pf's main ruleset: {}", show.failure(&out))
                    .help("is pf loaded and enabled? (kldload pf; pfctl -e; pf_enable=\"YES\" in rc.conf)")
                    .infrastructure()
            );
        }
        if self.referenced_in(&out.stdout_str()) {
            return Ok(());
        }
        let wanted: Vec<String> = self.references().iter().map(|r| format!("`{r}`")).collect();
        bail!(
            failure!(
                "pf's main ruleset does not reference the anchor {}, so rules loaded into it would never apply: `{show}` shows no {}",
                self.anchor,
                wanted.join(" or ")
            )
            .help(format!(
                "add the line `{}` to /etc/pf.conf (after its nat rules, before rules that would block the guest), load it with `pfctl -f /etc/pf.conf`, and run the gate again",
                self.line_to_add()
            ))
            .infrastructure()
        );
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
        steps.run(&self.show_main());
        let wanted: Vec<String> = self.references().iter().map(|r| format!("`{r}`")).collect();
        steps.check(format!(
            "the main ruleset references the anchor {} ({}); else the gate stops here",
            self.anchor,
            wanted.join(" or ")
        ));
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
        self.check_anchor(log, ui)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(anchor: &str) -> NetworkPlan {
        NetworkPlan { tools: Tools::default(), bridge: "bridge0".into(), anchor: anchor.into(), rules: Vec::new() }
    }

    #[test]
    fn the_anchor_is_referenced_by_name_or_by_its_parent() {
        let p = plan("mother-build/gate");
        // As pfctl -s rules prints them.
        assert!(
            p.referenced_in("block drop in all\nanchor \"mother-build/*\" all\npass out all flags S/SA keep state\n")
        );
        assert!(p.referenced_in("anchor \"mother-build/gate\" in on bridge0 all\n"));
        assert!(!p.referenced_in("anchor \"mother-build/gates\" all\nanchor \"other/*\" all\n"));
        assert!(!p.referenced_in("anchor \"mother-build\" all\n"), "the parent alone does not evaluate its children");
        assert!(!p.referenced_in(""));
        assert_eq!(p.line_to_add(), "anchor \"mother-build/*\"");
        let top = plan("gate");
        assert!(top.referenced_in("anchor \"gate\" all\n"));
        assert_eq!(top.line_to_add(), "anchor \"gate\"");
    }
}
