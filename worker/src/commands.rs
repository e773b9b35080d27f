//! The offline commands: everything here works without S3.

use std::io::Write;

use s3_compressor_config::{IfNotWorthIt, Rule};
use s3_compressor_formats::{Compressor, Kind, Registry};

use crate::cli::{ConfigSource, CONFIG_VARIABLE};
use crate::{Decision, Routes};

pub(crate) fn formats(registry: &Registry, out: &mut dyn Write) -> anyhow::Result<()> {
    let header = ["NAME", "EXTENSION", "CONTENT TYPE", "LEVELS", "OUTPUT NAME"];
    let rows: Vec<[String; 5]> = registry
        .iter()
        .map(|format| {
            let levels = format.levels.map_or_else(
                || "-".to_owned(),
                |levels| format!("{}-{} (default {})", levels.min, levels.max, levels.default),
            );
            let naming = match format.kind {
                Kind::Archive => format!("report.csv -> report.{}", format.extension),
                Kind::Stream => format!("report.csv -> report.csv.{}", format.extension),
            };
            [
                format.name.to_owned(),
                format!(".{}", format.extension),
                format.content_type.to_owned(),
                levels,
                naming,
            ]
        })
        .collect();
    write_table(out, header, &rows)?;
    Ok(())
}

/// `check-config --json`: the validated rules as the worker applies them, for scripts
/// (deploy.sh reads its prefixes from it).
pub(crate) fn check_config_json(routes: &Routes, out: &mut dyn Write) -> anyhow::Result<()> {
    let prices: serde_json::Map<String, serde_json::Value> = routes
        .config()
        .prices()
        .fields()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), value.into()))
        .collect();
    let report = serde_json::json!({
        "origin": routes.config().origin(),
        "hash": routes.config_hash(),
        "rules": routes.summaries(),
        "prices": prices,
    });
    serde_json::to_writer_pretty(&mut *out, &report)?;
    writeln!(out)?;
    Ok(())
}

/// The config in use, as `--version` and `serve`'s banner show it: its path and how it was
/// `named` (`None`: the built-in default) with its hash, then its rules on one line, each
/// source prefix with its format.
pub(crate) fn config_in_use(
    named: Option<ConfigSource>,
    routes: &Routes,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let how = match named {
        None => format!("no --config, no ${CONFIG_VARIABLE}"),
        Some(ConfigSource::Flag) => "--config".to_owned(),
        Some(ConfigSource::Environment) => format!("${CONFIG_VARIABLE}"),
    };
    writeln!(
        out,
        "config: {} ({how}), hash {}",
        routes.config().origin(),
        routes.config_hash()
    )?;
    let rules: Vec<String> = routes
        .rules()
        .map(|(rule, compressor)| format!("{} -> {}", rule.prefix, compressor.registration().name))
        .collect();
    writeln!(
        out,
        "        {} rule{}: {}",
        rules.len(),
        if rules.len() == 1 { "" } else { "s" },
        rules.join(", ")
    )?;
    Ok(())
}

pub(crate) fn check_config(routes: &Routes, out: &mut dyn Write) -> anyhow::Result<()> {
    let rule_count = routes.config().rules().len();
    writeln!(
        out,
        "{}: OK, {} rule{}, hash {}",
        routes.config().origin(),
        rule_count,
        if rule_count == 1 { "" } else { "s" },
        routes.config_hash()
    )?;
    let rows = routes.rules().map(|(rule, compressor)| {
        [
            rule.prefix.clone(),
            format!("-> {}", rule.output_prefix),
            describe_compression(compressor),
            describe_source_handling(rule).to_owned(),
        ]
    });
    let header = ["SOURCE", "OUTPUT", "FORMAT", "SOURCE AFTERWARDS"];
    // The policy's column only where a rule has one, so the table of a config without it
    // reads as before.
    if routes.rules().all(|(rule, _)| rule.policy().is_none()) {
        write_table(out, header, &rows.collect::<Vec<_>>())?;
        return describe_prices(routes, out);
    }
    let rows: Vec<[String; 5]> = rows
        .zip(routes.rules())
        .map(|([source, output, format, afterwards], (rule, _))| {
            let policy = rule
                .policy()
                .unwrap_or_else(|| "everything is compressed".to_owned());
            [source, output, format, afterwards, policy]
        })
        .collect();
    let [source, output, format, afterwards] = header;
    write_table(
        out,
        [source, output, format, afterwards, "NOT WORTH COMPRESSING"],
        &rows,
    )?;
    describe_prices(routes, out)
}

/// The prices `estimate` reckons with: those the config's `[prices]` changes, each with its
/// default, or that it uses the defaults.
fn describe_prices(routes: &Routes, out: &mut dyn Write) -> anyhow::Result<()> {
    let defaults = s3_compressor_config::Prices::default().fields();
    let changed: Vec<String> = routes
        .config()
        .prices()
        .fields()
        .into_iter()
        .zip(defaults)
        .filter(|((_, value), (_, default))| value != default)
        .map(|((name, value), (_, default))| format!("{name} {value} (default {default})"))
        .collect();
    if changed.is_empty() {
        writeln!(out, "prices: us-east-1 list prices (the defaults)")?;
    } else {
        writeln!(
            out,
            "prices: {}; the rest us-east-1 list prices",
            changed.join(", ")
        )?;
    }
    Ok(())
}

pub(crate) fn explain(
    key: &str,
    size: Option<u64>,
    routes: &Routes,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    writeln!(out, "key:     {key}")?;
    if let Some(size) = size {
        writeln!(out, "size:    {size} bytes")?;
    }
    writeln!(out, "config:  {}", routes.config().origin())?;
    match routes.decide(key, size) {
        Decision::Compress(plan) => {
            writeln!(
                out,
                "rule:    {} -> {}",
                plan.rule.prefix, plan.rule.output_prefix
            )?;
            writeln!(out, "format:  {}", describe_compression(plan.compressor))?;
            writeln!(out, "output:  {}", plan.output_key)?;
            writeln!(out, "source:  {}", describe_source_handling(plan.rule))?;
            if let Some(policy) = describe_policy(key, plan.rule, size) {
                writeln!(out, "policy:  {policy}")?;
            }
        }
        Decision::Keep { rule, reason } => {
            writeln!(out, "rule:    {} -> {}", rule.prefix, rule.output_prefix)?;
            writeln!(
                out,
                "kept:    {reason}; the object is left where it is and nothing is written"
            )?;
        }
        Decision::Move { plan, reason } => {
            writeln!(
                out,
                "rule:    {} -> {}",
                plan.rule.prefix, plan.rule.output_prefix
            )?;
            writeln!(
                out,
                "moved:   {reason}; copied unchanged, server-side, to the output prefix"
            )?;
            writeln!(out, "output:  {}", plan.output_key)?;
            writeln!(
                out,
                "source:  {}",
                describe_source_handling(plan.rule).replace("the output", "the copy")
            )?;
        }
        Decision::Skip(reason) => writeln!(out, "skipped: {reason}")?,
        Decision::Refuse(reason) => writeln!(out, "refused: {reason}")?,
    }
    Ok(())
}

/// The rule's policy for objects that do not pay, as far as `explain` can tell it without
/// reading the object; `None` for a rule that compresses everything.
fn describe_policy(key: &str, rule: &Rule, size: Option<u64>) -> Option<String> {
    let policy = rule.policy()?;
    let unknown_size = if size.is_none() && rule.min_size > 0 {
        " (give --size to judge this object's size)"
    } else {
        ""
    };
    let moved = if rule.if_not_worth_it == IfNotWorthIt::Move {
        format!(" (to {})", rule.moved_key(key))
    } else {
        String::new()
    };
    Some(format!(
        "{policy}{moved}{unknown_size}; the content is judged on the first bytes read"
    ))
}

pub(crate) fn describe_compression(compressor: &Compressor) -> String {
    let name = compressor.registration().name;
    match compressor.settings().level {
        Some(level) => format!("{name}, level {level}"),
        None => name.to_owned(),
    }
}

pub(crate) fn describe_source_handling(rule: &Rule) -> &'static str {
    if rule.delete_source && rule.delete_without_if_match {
        "deleted once the output is verified, even where the store ignores If-Match"
    } else if rule.delete_source {
        "deleted once the output is verified"
    } else {
        "kept"
    }
}

/// Writes left-aligned columns sized to their widest cell.
pub(crate) fn write_table<const N: usize>(
    out: &mut dyn Write,
    header: [&str; N],
    rows: &[[String; N]],
) -> std::io::Result<()> {
    let mut widths = header.map(|cell| cell.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header = header.map(str::to_owned);
    for row in std::iter::once(&header).chain(rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    Ok(())
}
