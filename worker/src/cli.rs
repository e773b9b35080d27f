//! The command line, as clap sees it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::parser::ValueSource;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};

use crate::{Routes, Tuning};

#[derive(Debug, Parser)]
// clap's own --version could not name the config, which is known only once it is loaded.
#[command(name = "s3-compressor", about, disable_version_flag = true)]
pub struct Cli {
    /// Print the version, the commit it was built from, and the config in use (--config,
    /// $S3_COMPRESSOR_CONFIG or the built-in default) with its hash.
    #[arg(short = 'V', long)]
    pub version: bool,

    /// The TOML config with the prefix rules; without it, the built-in default
    /// (incoming/ -> processed/, zip, delete the source).
    #[arg(long, global = true, env = CONFIG_VARIABLE, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Whether `config` came from the flag or the environment, which only clap's matches know:
    /// a deployment's --version must say which of the two it runs.
    #[arg(skip)]
    config_source: ConfigSource,

    /// Seconds an S3 request may wait for an answer, or a download for more data, before it
    /// is given up and retried (a download resumes where it stopped).
    #[arg(
        long,
        global = true,
        env = "S3_COMPRESSOR_STALL_SECS",
        value_name = "SECONDS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub stall_secs: u64,

    /// The largest object a move (if_not_worth_it = "move") copies with one CopyObject; a
    /// larger one is copied in parts. S3 copies at most 5 GiB in one request.
    #[arg(
        long,
        global = true,
        env = "S3_COMPRESSOR_COPY_THRESHOLD",
        value_name = "BYTES",
        default_value_t = Tuning::default().copy_threshold,
        value_parser = clap::value_parser!(u64).range(0..=MAX_COPY_BYTES)
    )]
    pub copy_threshold: u64,

    /// The smallest part of a move copied in parts (S3 takes parts of 5 MiB to 5 GiB); parts
    /// grow so that 10,000 hold the object.
    #[arg(
        long,
        global = true,
        env = "S3_COMPRESSOR_COPY_PART_SIZE",
        value_name = "BYTES",
        default_value_t = Tuning::default().copy_part_size,
        value_parser = clap::value_parser!(u64).range(MIN_COPY_PART_BYTES..=MAX_COPY_BYTES)
    )]
    pub copy_part_size: u64,

    /// Without a command, the binary serves the Lambda Runtime API if AWS_LAMBDA_RUNTIME_API
    /// is set (so it can be an image's entry point as it is).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// S3's largest single copy and largest part.
const MAX_COPY_BYTES: u64 = 5 * 1024 * 1024 * 1024;

/// S3's smallest part, but for the last.
const MIN_COPY_PART_BYTES: u64 = 5 * 1024 * 1024;

/// How the commands that talk to S3 do it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// How long a request may wait for an answer.
    pub stall: std::time::Duration,
    pub tuning: Tuning,
}

/// The environment variable naming the config (the image sets it to the config it bakes in).
pub(crate) const CONFIG_VARIABLE: &str = "S3_COMPRESSOR_CONFIG";

/// Where the config in use was named.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum ConfigSource {
    #[default]
    Flag,
    Environment,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the formats linked into this binary.
    Formats,

    /// Validate a config and summarise its rules (exit status 1 if it has errors).
    CheckConfig {
        /// The config to check; defaults to --config, then $S3_COMPRESSOR_CONFIG.
        path: Option<PathBuf>,
        /// Print the validated rules as JSON (origin, hash, and each rule's prefix,
        /// output_prefix, format, effective level, threads, delete_source).
        #[arg(long)]
        json: bool,
    },

    /// Show what would happen to an object key: rule, format, level and output key, or why it
    /// would be skipped or kept.
    Explain {
        /// The object key as stored in S3, e.g. incoming/reports/2024.csv
        key: String,
        /// The object's size in bytes, for a rule with a min_size.
        #[arg(long, value_name = "BYTES")]
        size: Option<u64>,
    },

    /// Run as an AWS Lambda function (the Lambda Runtime API loop).
    Lambda,

    /// Run the handler once on an event JSON file against the S3 endpoint of the environment
    /// (AWS_ENDPOINT_URL, AWS_PROFILE, ...) and print its response, like `sam local invoke`.
    Invoke {
        /// An S3 notification, SQS batch, EventBridge event, S3 Batch Operations job or S3 test
        /// event.
        #[arg(long, value_name = "FILE")]
        event: PathBuf,
        /// Give the invocation this long, as a function's timeout does: an object that cannot
        /// finish in time (judged by AWS_LAMBDA_FUNCTION_MEMORY_SIZE's CPU, else this
        /// machine's) is not started, and goes to the Fargate task S3_COMPRESSOR_HANDOFF_*
        /// configure, if any.
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
        timeout: Option<u64>,
    },

    /// Compress one object with the same rules and pipeline as the Lambda function.
    Compress {
        /// s3://BUCKET/KEY
        url: String,
        /// A specific version of the object (versioned buckets).
        #[arg(long)]
        version_id: Option<String>,
        /// The key (in the same bucket) of the hand-off record the function wrote when it
        /// started this run as a Fargate task: removed once the object has an outcome, so a
        /// later delivery of the object is handed off anew.
        #[arg(long, value_name = "KEY")]
        handoff_record: Option<String>,
    },

    /// Compress the objects already in a bucket: list them and run each one a rule takes
    /// through the same pipeline as an upload. Safe to interrupt (Ctrl-C) and run again.
    Backfill {
        /// s3://BUCKET (every source prefix of the config) or s3://BUCKET/PREFIX
        url: String,
        /// Print what would happen to each key (rule, format, output key) and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Objects compressed at once; a memory budget still keeps large ones apart.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
        concurrency: u16,
        /// Stop after this many objects a rule takes.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },

    /// Estimate what compressing the objects already in a bucket would save and cost, from a
    /// bounded sample read through each rule's own codec. Writes nothing.
    Estimate {
        /// s3://BUCKET (every source prefix of the config) or s3://BUCKET/PREFIX
        url: String,
        /// Print the estimate as JSON (the fields are in docs/commands.md).
        #[arg(long)]
        json: bool,
        /// The most of the bytes to compress it reads, in percent.
        #[arg(long, default_value_t = 10.0, value_name = "PERCENT", value_parser = percent)]
        sample_percent: f64,
        /// The most bytes it reads, whatever --sample-percent allows.
        #[arg(long, default_value_t = 1 << 30, value_name = "BYTES")]
        sample_bytes: u64,
        /// The function's memory size, which its compute is billed at (the Lambda stack's
        /// default is 512).
        #[arg(long, default_value_t = 512, value_name = "MB", value_parser = clap::value_parser!(u32).range(128..=10_240))]
        lambda_memory_mb: u32,
        /// An object whose one-time cost its storage saving does not repay within this many
        /// months is counted below break-even.
        #[arg(long, default_value_t = 12.0, value_name = "MONTHS")]
        horizon_months: f64,
        /// Objects read at once.
        #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
        concurrency: u16,
    },

    /// Run an S3-compatible endpoint backed by a folder, and compress every upload to it.
    Serve {
        #[arg(long, default_value = "127.0.0.1:9000")]
        addr: SocketAddr,
        /// The folder holding the buckets.
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        /// The bucket to create and watch.
        #[arg(long, default_value = "files")]
        bucket: String,
        #[arg(
            long,
            env = "S3_COMPRESSOR_ACCESS_KEY",
            default_value = "s3-compressor"
        )]
        access_key: String,
        #[arg(
            long,
            env = "S3_COMPRESSOR_SECRET_KEY",
            default_value = crate::online::DEFAULT_SECRET_KEY
        )]
        secret_key: String,
        /// Milliseconds an upload waits before it is compressed, so that a client reading back
        /// what it has just written (rclone, SDK waiters, mounts) still finds it, as on S3,
        /// whose notifications take about a second. 0 compresses at once.
        #[arg(long, value_name = "MS", default_value_t = 250)]
        settle_ms: u64,
    },
}

impl Cli {
    /// Parses the process's arguments (exiting with clap's message on a mistake, as
    /// [`Parser::parse`] does), remembering where the config was named.
    pub fn from_command_line() -> Self {
        let matches = Self::command().get_matches();
        let mut cli = Self::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
        if matches.value_source("config") == Some(ValueSource::EnvVariable) {
            cli.config_source = ConfigSource::Environment;
        }
        cli
    }

    /// How the config in use was named: `None` for the built-in default.
    fn config_named(&self) -> Option<ConfigSource> {
        self.config.as_ref().map(|_| self.config_source)
    }

    /// Runs the chosen command, writing its report to `out`.
    ///
    /// Every command loads and checks the config first: a bad one stops the process before
    /// anything else happens, whatever the command.
    pub fn run(self, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
        let registry = s3_compressor_formats::Registry::from_inventory()?;
        if self.version {
            let routes = Routes::load(self.config.as_deref(), &registry)?;
            writeln!(out, "s3-compressor {}", crate::VERSION)?;
            crate::commands::config_in_use(self.config_named(), &routes, out)?;
            return Ok(());
        }
        let named = self.config_named();
        let command = match self.command {
            Some(command) => command,
            None if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() => Command::Lambda,
            None => anyhow::bail!(
                "no command given; run `s3-compressor --help` for the list (without a command the \
                 binary only runs as a Lambda function, when AWS_LAMBDA_RUNTIME_API is set)"
            ),
        };
        // check-config checks the file it is given, which need not be the one in use.
        let config = match &command {
            Command::CheckConfig {
                path: Some(path), ..
            } => Some(path.as_path()),
            _ => self.config.as_deref(),
        };
        let routes = Arc::new(Routes::load(config, &registry)?);
        let settings = Settings {
            stall: std::time::Duration::from_secs(self.stall_secs),
            tuning: Tuning {
                copy_threshold: self.copy_threshold,
                copy_part_size: self.copy_part_size,
                ..Tuning::default()
            },
        };
        match command {
            Command::CheckConfig { json: true, .. } => {
                crate::commands::check_config_json(&routes, out)
            }
            Command::CheckConfig { json: false, .. } => crate::commands::check_config(&routes, out),
            Command::Formats => crate::commands::formats(&registry, out),
            Command::Explain { key, size } => crate::commands::explain(&key, size, &routes, out),
            Command::Lambda => runtime()?.block_on(crate::online::lambda(routes, settings)),
            Command::Invoke { event, timeout } => {
                let timeout = timeout.map(std::time::Duration::from_secs);
                runtime()?.block_on(crate::online::invoke(
                    &event, timeout, routes, settings, out,
                ))
            }
            Command::Compress {
                url,
                version_id,
                handoff_record,
            } => runtime()?.block_on(crate::online::compress(
                &url,
                version_id,
                handoff_record,
                routes,
                settings,
                out,
            )),
            Command::Backfill {
                url,
                dry_run,
                concurrency,
                limit,
            } => {
                let options = crate::backfill::Options {
                    url,
                    dry_run,
                    concurrency: usize::from(concurrency),
                    limit,
                };
                runtime()?.block_on(crate::backfill::run(options, routes, settings, out))
            }
            Command::Estimate {
                url,
                json,
                sample_percent,
                sample_bytes,
                lambda_memory_mb,
                horizon_months,
                concurrency,
            } => {
                let options = crate::estimate::Options {
                    url,
                    json,
                    sample_percent,
                    sample_bytes,
                    lambda_memory_mb,
                    horizon_months,
                    concurrency: usize::from(concurrency),
                };
                runtime()?.block_on(crate::estimate::run(options, routes, settings.stall, out))
            }
            Command::Serve {
                addr,
                data,
                bucket,
                access_key,
                secret_key,
                settle_ms,
            } => {
                let options = s3_compressor_serve::ServeOptions {
                    addr,
                    data_dir: data,
                    bucket,
                    access_key,
                    secret_key,
                    // Like an S3 event notification's prefix filter: only keys a rule takes are
                    // announced, so the worker's own outputs never queue behind uploads it has
                    // not got to yet.
                    announce_prefixes: routes
                        .config()
                        .rules()
                        .iter()
                        .map(|rule| rule.prefix.clone())
                        .collect(),
                };
                crate::commands::config_in_use(named, &routes, out)?;
                if self.config.is_none() && Path::new(CHECKOUT_CONFIG).is_file() {
                    writeln!(
                        out,
                        "        {CHECKOUT_CONFIG} is here but not in use: \
                         add --config {CHECKOUT_CONFIG} to run its rules"
                    )?;
                }
                let settle = std::time::Duration::from_millis(settle_ms);
                runtime()?.block_on(crate::online::serve(options, routes, settings, settle, out))
            }
        }
    }
}

/// The documented config of a checkout, relative to its root, where the quick start runs
/// `serve`: named in the banner when it is there but not in use, since it is the file a
/// newcomer reads.
const CHECKOUT_CONFIG: &str = "config/compressor.toml";

/// A share of the bytes, in percent: more than 0, at most 100.
fn percent(value: &str) -> Result<f64, String> {
    let percent: f64 = value
        .parse()
        .map_err(|_| format!("{value:?} is not a number"))?;
    if percent > 0.0 && percent <= 100.0 {
        Ok(percent)
    } else {
        Err(format!(
            "{percent} is not a percentage above 0 and at most 100"
        ))
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
