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
    assert!(text.contains("zip, level 7"), "{text}");
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

/// docs/commands.md: every command loads and checks the config first.
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
    assert!(text.contains("format:  zip, level 7"), "{text}");
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

/// What every command's `--help` shows, documented once in the section of their own.
const GLOBAL_OPTIONS: [&str; 5] = [
    "--help",
    "--config",
    "--stall-secs",
    "--copy-threshold",
    "--copy-part-size",
];

/// Every option `--help` shows is in docs/commands.md, in the command's own section, so the
/// reference cannot fall behind the command line.
#[test]
fn the_command_reference_lists_every_option_of_every_command() {
    let reference =
        fs::read_to_string(workspace_root().join("docs/commands.md")).expect("docs/commands.md");
    // Each `## NAME` heading and the text up to the next one.
    let sections: Vec<(&str, &str)> = reference
        .split("\n## ")
        .skip(1)
        .filter_map(|section| section.split_once('\n'))
        .collect();
    for command in [
        "serve",
        "compress",
        "backfill",
        "invoke",
        "lambda",
        "formats",
        "check-config",
        "explain",
    ] {
        let help = run(&[command, "--help"]);
        assert!(help.status.success(), "{command} --help: {}", stderr(&help));
        let (_, section) = sections
            .iter()
            .find(|(heading, _)| heading.trim() == command)
            .unwrap_or_else(|| panic!("docs/commands.md has no `## {command}` section"));
        let options: Vec<String> = stdout(&help)
            .split_whitespace()
            .filter(|word| word.starts_with("--"))
            .map(|word| word.trim_end_matches([',', '.']).to_owned())
            .filter(|option| !GLOBAL_OPTIONS.contains(&option.as_str()))
            .collect();
        for option in options {
            assert!(
                section.contains(&option),
                "docs/commands.md's section for {command} lacks {option}: {section}"
            );
        }
    }
    // The options every command takes have a section of their own.
    let (_, global) = sections
        .iter()
        .find(|(heading, _)| heading.trim() == "Options every command takes")
        .expect("docs/commands.md has a section for the options every command takes");
    assert!(global.contains("`--config PATH`"));
    assert!(global.contains("`--stall-secs SECONDS`"));
    assert!(global.contains("`--copy-threshold BYTES`"));
    assert!(global.contains("`--copy-part-size BYTES`"));
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
             "level": 7, "threads": null, "delete_source": true},
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

/// The prices `estimate` uses show in `check-config`, and change no hash.
#[test]
fn check_config_shows_the_prices_in_use() {
    let base = "[[rule]]\nprefix = \"incoming/\"\noutput_prefix = \"processed/\"\n";
    let (_dir, plain) = config_file(base);
    let table = stdout(&run(&["check-config", &plain]));
    assert!(
        table.contains("prices: us-east-1 list prices (the defaults)"),
        "{table}"
    );
    let (_other_dir, priced) = config_file(&format!("{base}[prices]\nstandard_gb_month = 0.025\n"));
    let table = stdout(&run(&["check-config", &priced]));
    assert!(
        table.contains("prices: standard_gb_month 0.025 (default 0.023); the rest"),
        "{table}"
    );
    let report = check_config_json(&["check-config", &priced, "--json"]);
    assert_eq!(report["prices"]["standard_gb_month"], 0.025, "{report}");
    assert_eq!(report["prices"]["get_per_1000"], 0.0004, "{report}");
    let plain_report = check_config_json(&["check-config", &plain, "--json"]);
    assert_eq!(plain_report["hash"], report["hash"]);
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

/// A rule that moves what does not pay says so in check-config (text and JSON) and explain,
/// with the key a moved object is copied to.
#[test]
fn the_move_policy_shows_in_check_config_and_explain() {
    let (_dir, path) = config_file(
        "[[rule]]\nprefix = \"incoming/\"\noutput_prefix = \"processed/\"\n\
         if_not_worth_it = \"move\"\nmin_size = 4096\n",
    );
    let report = check_config_json(&["check-config", &path, "--json"]);
    assert_eq!(report["rules"][0]["if_not_worth_it"], "move", "{report}");
    let table = stdout(&run(&["check-config", &path]));
    assert!(
        table.contains(
            "already-compressed content and objects under 4096 bytes are moved unchanged to the \
             output prefix"
        ),
        "{table}"
    );
    let small = stdout(&run(&[
        "explain",
        "--config",
        &path,
        "incoming/a/x.jpg",
        "--size",
        "100",
    ]));
    for said in [
        "moved:   below min_size 4096 (100 bytes); copied unchanged, server-side, to the output \
         prefix\n",
        "output:  processed/a/x.jpg\n",
        "source:  deleted once the copy is verified\n",
    ] {
        assert!(small.contains(said), "{said}: {small}");
    }
    let large = stdout(&run(&["explain", "--config", &path, "incoming/a/x.jpg"]));
    assert!(large.contains("output:  processed/a/x.zip"), "{large}");
    assert!(
        large.contains("(to processed/a/x.jpg) (give --size to judge this object's size)"),
        "{large}"
    );
}

#[test]
fn check_config_json_of_the_builtin_default_and_from_the_environment() {
    let builtin = check_config_json(&["check-config", "--json"]);
    assert_eq!(builtin["origin"], "built-in default");
    assert_eq!(
        builtin["rules"],
        serde_json::json!([{"prefix": "incoming/", "output_prefix": "processed/",
            "format": "zip", "level": 7, "threads": null, "delete_source": true}])
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

/// The two lines `--version` and `serve`'s banner give the config in use: where it came from
/// with its hash, then each rule's prefix and format.
fn config_lines(origin: &str, hash: &serde_json::Value, rules: &str) -> String {
    let hash = hash.as_str().expect("hash");
    format!("config: {origin}, hash {hash}\n        {rules}\n")
}

const SHIPPED_RULES: &str = "4 rules: incoming/ -> zip, incoming/logs/ -> gzip, \
                             incoming/archives/ -> zstd, incoming/bundles/ -> tar.zst";

#[test]
fn version_names_the_build_and_the_config_with_its_hash_and_rules() {
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
    assert_eq!(
        stdout(&output),
        format!(
            "s3-compressor {}+{commit}\n{}",
            env!("CARGO_PKG_VERSION"),
            config_lines(
                "built-in default (no --config, no $S3_COMPRESSOR_CONFIG)",
                &builtin["hash"],
                "1 rule: incoming/ -> zip"
            )
        )
    );
    // The config as every command finds it: the flag, then the environment; each says which.
    let config = shipped_config();
    let shipped = check_config_json(&["check-config", &config, "--json"]);
    let flag = stdout(&run(&["--version", "--config", &config]));
    let expected = config_lines(
        &format!("{config} (--config)"),
        &shipped["hash"],
        SHIPPED_RULES,
    );
    assert!(flag.ends_with(&expected), "{flag}");
    let both = s3_compressor()
        .args(["--version", "--config", &config])
        .env("S3_COMPRESSOR_CONFIG", "/nonexistent/compressor.toml")
        .output()
        .expect("the s3-compressor binary runs");
    assert!(stdout(&both).ends_with(&expected), "{}", stdout(&both));
    let from_env = s3_compressor()
        .arg("-V")
        .env("S3_COMPRESSOR_CONFIG", &config)
        .output()
        .expect("the s3-compressor binary runs");
    let expected = config_lines(
        &format!("{config} ($S3_COMPRESSOR_CONFIG)"),
        &shipped["hash"],
        SHIPPED_RULES,
    );
    assert!(
        stdout(&from_env).ends_with(&expected),
        "{}",
        stdout(&from_env)
    );
}

/// The image bakes config/compressor.toml in and names it in `S3_COMPRESSOR_CONFIG`, so its
/// `--version` shows the shipped rules, as from the environment.
#[test]
fn the_images_version_names_the_baked_in_config() {
    let dockerfile = fs::read_to_string(workspace_root().join("Dockerfile")).expect("Dockerfile");
    let baked = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix("COPY config/compressor.toml "))
        .expect("the Dockerfile copies config/compressor.toml")
        .trim();
    assert!(
        dockerfile.contains(&format!("S3_COMPRESSOR_CONFIG={baked}")),
        "the image names {baked} in S3_COMPRESSOR_CONFIG: {dockerfile}"
    );
    // The image's file system, as far as the config goes: the shipped file at the baked path.
    let root = tempfile::tempdir().expect("temp dir");
    let path = root.path().join(baked.trim_start_matches('/'));
    fs::create_dir_all(path.parent().expect("a folder")).expect("mkdir");
    fs::copy(shipped_config(), &path).expect("copy the config");
    let output = s3_compressor()
        .arg("--version")
        .env("S3_COMPRESSOR_CONFIG", &path)
        .output()
        .expect("the s3-compressor binary runs");
    let shipped = check_config_json(&["check-config", &shipped_config(), "--json"]);
    let text = stdout(&output);
    assert!(
        text.ends_with(&config_lines(
            &format!("{} ($S3_COMPRESSOR_CONFIG)", path.display()),
            &shipped["hash"],
            SHIPPED_RULES
        )),
        "{text}"
    );
}

/// `serve` says which config it runs before anything else, as `--version` does; run from a
/// checkout without --config, it also says that the checkout's config is not the one running.
/// (Its address is taken here, so it stops right after the banner.)
#[test]
fn the_serve_banner_names_the_config_in_use() {
    let checkout = tempfile::tempdir().expect("temp dir");
    fs::create_dir(checkout.path().join("config")).expect("mkdir");
    fs::copy(
        shipped_config(),
        checkout.path().join("config/compressor.toml"),
    )
    .expect("copy the config");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().expect("its address").to_string();
    let serve = |config: &[&str]| {
        let output = s3_compressor()
            .args(config)
            .args(["serve", "--addr", &addr, "--data", "data"])
            .current_dir(checkout.path())
            .output()
            .expect("the s3-compressor binary runs");
        assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
        stdout(&output)
    };
    let version = |config: &[&str]| {
        let output = s3_compressor()
            .args(config)
            .arg("--version")
            .current_dir(checkout.path())
            .output()
            .expect("the s3-compressor binary runs");
        let text = stdout(&output);
        text.split_once('\n').expect("two lines").1.to_owned()
    };

    let builtin = serve(&[]);
    assert_eq!(
        builtin,
        format!(
            "{}        config/compressor.toml is here but not in use: add --config \
             config/compressor.toml to run its rules\n",
            version(&[])
        )
    );
    let named = ["--config", "config/compressor.toml"];
    let shipped = serve(&named);
    assert_eq!(shipped, version(&named));
    assert!(shipped.contains(SHIPPED_RULES), "{shipped}");
}

/// A config with several kinds of problem reports all of them in one run, each at its place.
#[test]
fn check_config_reports_type_errors_with_every_other_problem() {
    let (_dir, path) = config_file(
        r#"[defaults]
delete_source = "yes"
level = 13

[[rule]]
prefix = "incoming/"
output_prefix = "incoming/done/"
threads = "all"
formt = "gzip"
"#,
    );
    let output = run(&["check-config", &path]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).is_empty());
    let problems: Vec<String> = stderr(&output)
        .trim_start_matches("error: ")
        .lines()
        .map(|line| line.replacen(&path, "FILE", 1))
        .collect();
    assert_eq!(
        problems,
        [
            "FILE:2:17: delete_source: invalid type: string \"yes\", expected a boolean",
            "FILE:3:9: level 13 is out of range for format \"zip\"; use a level from 1 to 12",
            "FILE:7:17: output_prefix \"incoming/done/\" lies inside the prefix \"incoming/\" \
             of this rule, so the worker would pick up its own output and compress it again, \
             forever; choose an output_prefix that is outside every prefix",
            "FILE:8:11: threads: invalid type: string \"all\", expected i64",
            "FILE:9:1: unknown field \"formt\" in [[rule]]; did you mean \"format\"? known \
             fields: prefix, output_prefix, format, level, threads, delete_source, \
             delete_without_if_match, min_size, if_not_worth_it",
        ]
    );
}
