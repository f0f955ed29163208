//! mother-build's `cargo xtask`: parses the command line, hands it to the library, and
//! turns the outcome into an exit status.

use std::process::ExitCode;

use clap::Parser;

use xtask::cli::Cli;
use xtask::failure::{self, Class};
use xtask::proc;
use xtask::ui::Ui;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The display lives as long as the program: the signal thread tells it what a stop
    // signal makes the program wait for.
    let ui: &'static Ui = Box::leak(Box::new(Ui::from_env(cli.verbose)));
    proc::on_teardown(|event| ui.teardown(event));
    if let Err(e) = proc::install_signal_handlers() {
        ui.error(&e);
        return ExitCode::from(2);
    }
    let result = xtask::run(cli, ui);
    // Anything still being removed out of sight is gone before the program ends.
    for problem in xtask::fsx::wait_removals() {
        ui.eprintln(&format!("warning: {problem}"));
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !failure::is_reported(&e) {
                ui.error(&e);
            }
            // Outside a stage, what is not classed is a usage or setup problem (exit 2).
            let class = if proc::interrupted().is_some() {
                Class::Interrupted
            } else {
                failure::class_of(&e).unwrap_or(Class::Usage)
            };
            ExitCode::from(class.exit_code())
        }
    }
}
