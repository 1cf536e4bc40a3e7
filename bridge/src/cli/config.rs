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

/// The configuration's man page, faultbridge.toml(5), written by hand.
pub const CONFIG_MAN_PAGE: &str = include_str!("../../../dist/man/faultbridge.toml.5");

/// Writes faultbridge(1) to `out` (or standard output), or with `dir` every
/// man page: faultbridge(1), one per subcommand (`faultbridge-run.1`,
/// `faultbridge-sim-send.1`, …) and faultbridge.toml(5).
pub fn man(out: Option<PathBuf>, dir: Option<PathBuf>) -> CliResult {
    let cmd = <super::Cli as clap::CommandFactory>::command();
    if let Some(dir) = dir {
        std::fs::create_dir_all(&dir)?;
        clap_mangen::generate_to(cmd, &dir)?;
        std::fs::write(dir.join("faultbridge.toml.5"), CONFIG_MAN_PAGE)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut buf = Vec::new();
    clap_mangen::Man::new(cmd).render(&mut buf)?;
    match out {
        Some(p) => std::fs::write(&p, buf)?,
        None => std::io::Write::write_all(&mut std::io::stdout(), &buf)?,
    }
    Ok(ExitCode::SUCCESS)
}
