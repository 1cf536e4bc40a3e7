//! `faultbridge config check FILE`: validates a configuration without
//! starting anything; a mistake is reported with its line and column.

use super::CliResult;
use crate::config::Config;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file.
    Check {
        /// The file to check.
        file: PathBuf,
    },
}

pub fn run(cmd: ConfigCommand) -> CliResult {
    match cmd {
        ConfigCommand::Check { file } => {
            let c = Config::load(&file)?;
            println!(
                "{}: OK — bus {}, expdrv {} (protocol {}, group {}, accept {}), {} monitor(s), history {}",
                file.display(),
                c.bus.as_ref().map_or("none".to_string(), |b| b.to_string()),
                if c.expdrv.enabled { "on" } else { "off" },
                c.expdrv.netlink_protocol,
                c.expdrv.netlink_group,
                c.expdrv.accept,
                c.monitors.len(),
                c.history
                    .as_ref()
                    .map_or("off".to_string(), |h| h.path.display().to_string())
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes the man page generated from the command-line definition.
pub fn man(out: Option<PathBuf>) -> CliResult {
    let cmd = <super::Cli as clap::CommandFactory>::command();
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut buf)?;
    match out {
        Some(p) => std::fs::write(&p, buf)?,
        None => std::io::Write::write_all(&mut std::io::stdout(), &buf)?,
    }
    Ok(ExitCode::SUCCESS)
}
