//! The offline commands, run as a user would: `formats`, `check-config`, `explain`.

use std::fs;
use std::process::Output;

use s3_compressor_tests::{s3_compressor, workspace_root};

fn run(args: &[&str]) -> Output {
    s3_compressor()
        .args(args)
        .output()
        .expect("the s3-compressor binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn shipped_config() -> String {
    workspace_root()
        .join("config/compressor.toml")
        .to_string_lossy()
        .into_owned()
}

/// Writes `text` as a config file and returns the directory keeping it alive with its path.
fn config_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("compressor.toml");
    fs::write(&path, text).expect("write config");
    (dir, path.to_string_lossy().into_owned())
}

#[test]
fn formats_lists_every_linked_format_sorted() {
    let output = run(&["formats"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let names: Vec<&str> = text
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(
        names,
        ["brotli", "gzip", "tar", "tar.gz", "tar.zst", "zip", "zstd"]
    );
    let zip = text
        .lines()
        .find(|line| line.starts_with("zip "))
        .expect("zip row");
    assert!(zip.contains(".zip") && zip.contains("application/zip") && zip.contains("1-12"));
    assert!(zip.contains("report.csv -> report.zip"), "{zip}");
    let gzip = text
        .lines()
        .find(|line| line.starts_with("gzip "))
        .expect("gzip row");
    assert!(gzip.contains("report.csv -> report.csv.gz"), "{gzip}");
}

#[test]
fn check_config_accepts_the_shipped_config_and_summarises_it() {
    let config = shipped_config();
    let output = run(&["check-config", &config]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("OK"), "{text}");
    assert!(
        text.contains("incoming/logs/") && text.contains("gzip"),
        "{text}"
    );
    assert!(text.contains("tar.zst"), "{text}");
}

#[test]
fn check_config_without_a_file_describes_the_builtin_default() {
    let output = run(&["check-config"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("built-in default"), "{text}");
    assert!(
        text.contains("incoming/") && text.contains("processed/"),
        "{text}"
    );
    assert!(text.contains("zip, level 6"), "{text}");
}

#[test]
fn check_config_reports_every_problem_with_line_and_column() {
    let (_dir, path) = config_file(
        r#"[defaults]
format = "zip"

[[rule]]
prefix = "incoming/"
output_prefix = "processed/"
format = "zipp"

[[rule]]
prefix = "incoming/archives/"
output_prefix = "processed/archives/"
format = "zstd"
level = 30
"#,
    );
    let output = run(&["check-config", &path]);
    assert!(!output.status.success(), "a bad config must fail");
    let errors = stderr(&output);
    assert!(
        errors.contains(&format!("{path}:7:10")) && errors.contains("unknown format \"zipp\""),
        "{errors}"
    );
    assert!(
        errors.contains("brotli, gzip, tar"),
        "lists known formats: {errors}"
    );
    assert!(
        errors.contains(&format!("{path}:13:9")) && errors.contains("from 1 to 22"),
        "{errors}"
    );
}

#[test]
fn check_config_rejects_an_output_prefix_inside_a_source_prefix() {
    let (_dir, path) = config_file(
        r#"[[rule]]
prefix = "incoming/"
output_prefix = "incoming/done/"
"#,
    );
    let output = run(&["check-config", &path]);
    assert!(!output.status.success());
    let errors = stderr(&output);
    assert!(errors.contains(&format!("{path}:3:")), "{errors}");
    assert!(errors.contains("incoming/done/"), "{errors}");
}

#[test]
fn check_config_reports_a_missing_file_once() {
    let output = run(&["check-config", "/nonexistent/compressor.toml"]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stderr(&output),
        "error: cannot read config file /nonexistent/compressor.toml: No such file or directory \
         (os error 2)\n"
    );
}

/// README: every command loads and checks the config first.
#[test]
fn every_command_stops_on_a_bad_config_from_the_flag_or_the_environment() {
    let (_dir, path) =
        config_file("[[rule]]\nprefix = \"incoming\"\noutput_prefix = \"processed/\"\n");
    for command in [
        &["formats"][..],
        &["explain", "incoming/x.csv"],
        &["check-config"],
        &["compress", "s3://bucket/incoming/x.csv"],
        &["invoke", "--event", "/nonexistent/event.json"],
        &[
            "serve",
            "--addr",
            "127.0.0.1:1",
            "--data",
            "/nonexistent/data",
        ],
        &["lambda"],
    ] {
        let by_flag = run(&[&["--config", path.as_str()][..], command].concat());
        let by_environment = s3_compressor()
            .env("S3_COMPRESSOR_CONFIG", &path)
            .args(command)
            .output()
            .expect("the s3-compressor binary runs");
        for (how, output) in [
            ("--config", by_flag),
            ("S3_COMPRESSOR_CONFIG", by_environment),
        ] {
            assert_eq!(output.status.code(), Some(1), "{command:?} with {how}");
            assert!(
                stderr(&output).contains(&format!("{path}:2:10")),
                "{command:?} with {how}: {}",
                stderr(&output)
            );
            assert!(stdout(&output).is_empty(), "{command:?} with {how}");
        }
    }
}

#[test]
fn explain_with_the_builtin_default_zips_into_processed() {
    let output = run(&["explain", "incoming/a/b/report.csv"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("output:  processed/a/b/report.zip"), "{text}");
    assert!(text.contains("format:  zip, level 6"), "{text}");
    assert!(
        text.contains("deleted once the output is verified"),
        "{text}"
    );
}

#[test]
fn explain_follows_the_longest_prefix_of_the_shipped_config() {
    let config = shipped_config();
    let output = run(&["explain", "--config", &config, "incoming/logs/app 1+2.log"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(
        text.contains("rule:    incoming/logs/ -> processed/logs/"),
        "{text}"
    );
    assert!(
        text.contains("output:  processed/logs/app 1+2.log.gz"),
        "{text}"
    );

    let output = run(&[
        "explain",
        "--config",
        &config,
        "incoming/bundles/日本/site.html",
    ]);
    let text = stdout(&output);
    assert!(
        text.contains("output:  processed/bundles/日本/site.tar.zst"),
        "{text}"
    );
}

#[test]
fn explain_reads_the_config_from_the_environment_and_the_flag_wins() {
    let (_dir, path) = config_file(
        r#"[[rule]]
prefix = "in/"
output_prefix = "out/"
format = "zstd"
"#,
    );
    let output = s3_compressor()
        .env("S3_COMPRESSOR_CONFIG", &path)
        .args(["explain", "in/x.csv"])
        .output()
        .expect("runs");
    assert!(
        stdout(&output).contains("output:  out/x.csv.zst"),
        "{}",
        stdout(&output)
    );

    let shipped = shipped_config();
    let output = s3_compressor()
        .env("S3_COMPRESSOR_CONFIG", &path)
        .args(["explain", "--config", &shipped, "in/x.csv"])
        .output()
        .expect("runs");
    assert!(stdout(&output).contains("skipped"), "{}", stdout(&output));
}

#[test]
fn explain_says_why_a_key_is_skipped() {
    for (key, reason) in [
        ("processed/report.zip", "processed/"),
        ("elsewhere/report.csv", "no rule"),
        ("incoming/folder/", "folder"),
    ] {
        let output = run(&["explain", key]);
        assert!(output.status.success(), "{}", stderr(&output));
        let text = stdout(&output);
        assert!(text.contains("skipped:"), "{key}: {text}");
        assert!(text.contains(reason), "{key}: {text}");
    }
}

#[test]
fn a_bad_config_stops_explain_before_anything_else() {
    let (_dir, path) =
        config_file("[[rule]]\nprefix = \"incoming\"\noutput_prefix = \"processed/\"\n");
    let output = run(&["explain", "--config", &path, "incoming/x.csv"]);
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains(&format!("{path}:2:10")),
        "{}",
        stderr(&output)
    );
    assert!(stdout(&output).is_empty());
}

/// Every option `--help` shows is in README's table of commands, on the command's own row, so
/// the README cannot fall behind the command line.
#[test]
fn readme_lists_every_option_of_every_command() {
    let readme = fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let rows: Vec<&str> = readme
        .lines()
        .filter(|line| line.starts_with("| `s3-compressor "))
        .collect();
    for command in [
        "serve",
        "compress",
        "invoke",
        "lambda",
        "formats",
        "check-config",
        "explain",
    ] {
        let help = run(&[command, "--help"]);
        assert!(help.status.success(), "{command} --help: {}", stderr(&help));
        let row = rows
            .iter()
            .find(|row| {
                row.contains(&format!("s3-compressor {command}"))
                    || row.contains(&format!("`{command}"))
            })
            .unwrap_or_else(|| panic!("README's table has no row for {command}"));
        let options: Vec<String> = stdout(&help)
            .split_whitespace()
            .filter(|word| word.starts_with("--"))
            .map(|word| word.trim_end_matches([',', '.']).to_owned())
            .filter(|option| !["--help", "--config", "--stall-secs"].contains(&option.as_str()))
            .collect();
        for option in options {
            assert!(
                row.contains(&option),
                "README's row for {command} lacks {option}: {row}"
            );
        }
    }
    // The global options are described under the table.
    assert!(readme.contains("`--config PATH`"));
    assert!(readme.contains("`--stall-secs SECONDS`"));
}

fn check_config_json(args: &[&str]) -> serde_json::Value {
    let output = run(args);
    assert!(output.status.success(), "{}", stderr(&output));
    serde_json::from_slice(&output.stdout).expect("check-config --json prints JSON")
}

#[test]
fn check_config_json_prints_the_rules_as_the_worker_applies_them() {
    let text = r#"[defaults]
format = "zip"
delete_source = true

[[rule]]
prefix = "incoming/"
output_prefix = "processed/"

[[rule]]
prefix = "incoming/month end/"
output_prefix = "processed/month end/"
format = "tar"
delete_source = false

[[rule]]
prefix = "logs/"
output_prefix = "archive/logs/"
format = "zstd"
level = 19
threads = 2
"#;
    let (_dir, path) = config_file(text);
    let report = check_config_json(&["check-config", &path, "--json"]);
    assert_eq!(report["origin"], path.as_str());
    let hash = report["hash"].as_str().expect("a hash");
    assert!(
        hash.len() == 12 && hash.chars().all(|c| c.is_ascii_hexdigit()),
        "{hash}"
    );
    assert_eq!(
        report["rules"],
        serde_json::json!([
            {"prefix": "incoming/", "output_prefix": "processed/", "format": "zip",
             "level": 6, "threads": null, "delete_source": true},
            {"prefix": "incoming/month end/", "output_prefix": "processed/month end/",
             "format": "tar", "level": null, "threads": null, "delete_source": false},
            {"prefix": "logs/", "output_prefix": "archive/logs/", "format": "zstd",
             "level": 19, "threads": 2, "delete_source": true},
        ]),
        "the effective level, null for tar, and [defaults] applied: {report}"
    );
    // The table names the same hash.
    let table = stdout(&run(&["check-config", &path]));
    assert!(table.contains(&format!("hash {hash}")), "{table}");

    // The hash names what the worker does: a comment, or a default written out, changes
    // nothing; another level does.
    let (_same_dir, same) = config_file(&format!("# the same rules\n{text}"));
    let same_report = check_config_json(&["check-config", &same, "--json"]);
    assert_eq!(same_report["hash"], hash, "{same_report}");
    let (_other_dir, other) = config_file(&text.replace("level = 19", "level = 18"));
    let other_report = check_config_json(&["check-config", &other, "--json"]);
    assert_ne!(other_report["hash"], hash, "{other_report}");
}

/// The policy for objects that do not pay shows in `check-config` (and its hash) and in
/// `explain`, which judges a size it is given; written out at its defaults, it changes nothing.
#[test]
fn the_not_worth_it_policy_shows_in_check_config_and_explain() {
    let base = "[[rule]]\nprefix = \"incoming/\"\noutput_prefix = \"processed/\"\n";
    let (_base_dir, base_path) = config_file(base);
    let base_hash = check_config_json(&["check-config", &base_path, "--json"])["hash"].clone();
    let (_same_dir, same) = config_file(&format!("{base}if_not_worth_it = \"compress\"\n"));
    let same_report = check_config_json(&["check-config", &same, "--json"]);
    assert_eq!(same_report["hash"], base_hash, "{same_report}");

    let (_dir, path) = config_file(&format!(
        "{base}if_not_worth_it = \"keep\"\nmin_size = 4096\n"
    ));
    let report = check_config_json(&["check-config", &path, "--json"]);
    assert_ne!(report["hash"], base_hash, "{report}");
    assert_eq!(report["rules"][0]["if_not_worth_it"], "keep", "{report}");
    assert_eq!(report["rules"][0]["min_size"], 4096, "{report}");
    let table = stdout(&run(&["check-config", &path]));
    assert!(
        table.contains("already-compressed content and objects under 4096 bytes are kept"),
        "{table}"
    );

    let small = stdout(&run(&[
        "explain",
        "--config",
        &path,
        "incoming/a.csv",
        "--size",
        "100",
    ]));
    assert!(small.contains("size:    100 bytes"), "{small}");
    assert!(
        small.contains("kept:    below min_size 4096 (100 bytes); the object is left where it is"),
        "{small}"
    );
    assert!(!small.contains("output:"), "{small}");
    let large = stdout(&run(&[
        "explain",
        "--config",
        &path,
        "incoming/a.csv",
        "--size",
        "4096",
    ]));
    assert!(large.contains("output:  processed/a.zip"), "{large}");
    assert!(
        large.contains("policy:  already-compressed content and objects under 4096 bytes are kept; the content is judged on the first bytes read"),
        "{large}"
    );
    let no_size = stdout(&run(&["explain", "--config", &path, "incoming/a.csv"]));
    assert!(
        no_size.contains("(give --size to judge this object's size)"),
        "{no_size}"
    );
}

#[test]
fn check_config_json_of_the_builtin_default_and_from_the_environment() {
    let builtin = check_config_json(&["check-config", "--json"]);
    assert_eq!(builtin["origin"], "built-in default");
    assert_eq!(
        builtin["rules"],
        serde_json::json!([{"prefix": "incoming/", "output_prefix": "processed/",
            "format": "zip", "level": 6, "threads": null, "delete_source": true}])
    );
    let config = shipped_config();
    let output = s3_compressor()
        .args(["check-config", "--json"])
        .env("S3_COMPRESSOR_CONFIG", &config)
        .output()
        .expect("the s3-compressor binary runs");
    assert!(output.status.success(), "{}", stderr(&output));
    let shipped: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(shipped["origin"], config.as_str());
    assert_ne!(shipped["hash"], builtin["hash"]);
    assert!(
        shipped["rules"]
            .as_array()
            .is_some_and(|rules| rules.iter().any(|rule| rule["prefix"] == "incoming/logs/")),
        "{shipped}"
    );
}

#[test]
fn version_names_the_build_and_the_config_with_its_hash() {
    // What build.rs found: the checkout's commit, or "unknown" outside a git checkout.
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(workspace_root())
        .output()
        .ok()
        .filter(|git| git.status.success())
        .map_or_else(
            || "unknown".to_owned(),
            |git| String::from_utf8_lossy(&git.stdout).trim().to_owned(),
        );
    let builtin = check_config_json(&["check-config", "--json"]);
    let output = run(&["--version"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert_eq!(
        text,
        format!(
            "s3-compressor {}+{commit}\nconfig: built-in default (hash {})\n",
            env!("CARGO_PKG_VERSION"),
            builtin["hash"].as_str().expect("hash")
        )
    );
    // The config as every command finds it: the flag, then the environment.
    let config = shipped_config();
    let shipped = check_config_json(&["check-config", &config, "--json"]);
    let expected = format!(
        "config: {config} (hash {})",
        shipped["hash"].as_str().expect("hash")
    );
    let flag = stdout(&run(&["--version", "--config", &config]));
    assert!(flag.ends_with(&format!("{expected}\n")), "{flag}");
    let from_env = s3_compressor()
        .arg("-V")
        .env("S3_COMPRESSOR_CONFIG", &config)
        .output()
        .expect("the s3-compressor binary runs");
    assert!(
        stdout(&from_env).ends_with(&format!("{expected}\n")),
        "{}",
        stdout(&from_env)
    );
}
