//! The `faultbridge` command: one file per subcommand.

pub mod demo;
pub mod format;
pub mod run;
pub mod sim;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Bridges hardware fault messages from the expanded device driver and the
/// kernel to cluster managers, D-Bus and in-process subscribers.
#[derive(Debug, Parser)]
#[command(name = "faultbridge", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground.
    Run(run::RunArgs),
    /// A newcomer's first run: daemon, driver simulator and a live view.
    Demo(demo::DemoArgs),
    /// The driver simulator: emit ABI v1 records on netlink.
    #[command(subcommand)]
    Sim(sim::SimCommand),
}

/// Parses the command line and runs the subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => run::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Sim(c) => sim::run(c),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("faultbridge: {}", error_chain(e.as_ref()));
            ExitCode::from(1)
        }
    }
}

/// "what failed: because: because" — each source error once.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The error type of subcommands.
pub type CliResult = Result<ExitCode, Box<dyn std::error::Error + Send + Sync + 'static>>;
