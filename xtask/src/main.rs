//! mother-build's `cargo xtask`: parses the command line, hands it to the library, and
//! turns the outcome into an exit status.

use std::process::ExitCode;

use clap::Parser;

use xtask::cli::Cli;
use xtask::engine::Exit;
use xtask::proc;
use xtask::ui::Ui;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ui = Ui::from_env(cli.verbose);
    if let Err(e) = proc::install_signal_handlers() {
        ui.error(&e);
        return ExitCode::from(2);
    }
    match xtask::run(cli, &ui) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => match e.downcast_ref::<Exit>() {
            Some(Exit(code)) => ExitCode::from(*code as u8),
            None => {
                ui.error(&e);
                ExitCode::from(if proc::interrupted().is_some() { 130 } else { 2 })
            }
        },
    }
}
