//! The command line, as clap sees it.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "s3-compressor", version, about)]
pub struct Cli {
    /// The TOML config with the prefix rules; without it, the built-in default
    /// (incoming/ -> processed/, zip, delete the source).
    #[arg(long, global = true, env = "S3_COMPRESSOR_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the formats linked into this binary.
    Formats,

    /// Validate a config and summarise its rules (exit status 1 if it has errors).
    CheckConfig {
        /// The config to check; defaults to --config, then $S3_COMPRESSOR_CONFIG.
        path: Option<PathBuf>,
    },

    /// Show what would happen to an object key: rule, format, level and output key, or why it
    /// would be skipped.
    Explain {
        /// The object key as stored in S3, e.g. incoming/reports/2024.csv
        key: String,
    },
}

impl Cli {
    /// Runs the chosen command, writing its report to `out`.
    pub fn run(self, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
        let registry = s3_compressor_formats::Registry::from_inventory()?;
        match self.command {
            Command::Formats => crate::commands::formats(&registry, out),
            Command::CheckConfig { path } => {
                crate::commands::check_config(path.or(self.config).as_deref(), &registry, out)
            }
            Command::Explain { key } => {
                crate::commands::explain(&key, self.config.as_deref(), &registry, out)
            }
        }
    }
}
