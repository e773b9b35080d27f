//! README's quick start, run as written: the commands come from README.md's two `quick-start`
//! blocks, so the README cannot drift from what works. Also what README and docs/ promise
//! beyond it: the Tests section names what `.ci/run` installs, and every link resolves.
//!
//! The server block (`cargo run --release -- serve`) runs in a copy of the checkout — its
//! tracked and not-ignored files, as a fresh clone has them — so that `serve`'s `./data` does
//! not land in this one; cargo builds into this workspace's target folder, so only the first
//! run compiles everything, and builds it unoptimised (README's figures for the first build are
//! measured by hand, with optimisation). The client block runs in an empty folder, with the AWS CLI. They
//! run on a free port rather than the README's 9000, which may be taken on the machine (the
//! server's command gets `--addr`, the client's endpoint is rewritten); that 9000 is what
//! `serve` listens on without `--addr` is checked against its `--help`.
#![allow(clippy::unwrap_used)]

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use s3_compressor_tests::have;
use s3_compressor_tests::process::{free_port, run, Finished, Running};
use s3_compressor_tests::{s3_compressor, workspace_root, PYTHON_TOOLS};

/// Where README's blocks say the server listens: `serve`'s default address.
const README_ADDRESS: &str = "127.0.0.1:9000";
/// The first `cargo run --release` compiles the whole worker: minutes on 2 cores, more while
/// other tests run.
const BUILD_LIMIT: Duration = Duration::from_secs(30 * 60);

/// The release profile's settings for the quick start's build: no optimisation and no debug
/// information, as the image tests build their binary.
const UNOPTIMISED_RELEASE: [(&str, &str); 2] = [
    ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0"),
    ("CARGO_PROFILE_RELEASE_DEBUG", "false"),
];

/// The commands of the ```sh block that follows `<!-- quick-start: NAME` in README.md.
fn block(readme: &str, name: &str) -> String {
    let marker = format!("<!-- quick-start: {name}");
    let after = readme
        .split_once(&marker)
        .unwrap_or_else(|| panic!("README.md has no {marker:?} block"))
        .1;
    let body = after
        .split_once("```sh\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .unwrap_or_else(|| panic!("no ```sh block after {marker:?} in README.md"))
        .0;
    body.to_owned()
}

/// The files a fresh clone would have: tracked, plus new ones git does not ignore.
fn copy_checkout(to: &Path) {
    let root = workspace_root();
    let listed = run(Command::new("git").current_dir(root).args([
        "ls-files",
        "-z",
        "--cached",
        "--others",
        "--exclude-standard",
    ]));
    assert!(listed.success(), "git ls-files: {}", listed.describe());
    for file in listed.stdout.split('\0').filter(|file| !file.is_empty()) {
        let source = root.join(file);
        // Listed in the index but deleted in the working tree.
        if !source.is_file() {
            continue;
        }
        let target = to.join(file);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::copy(&source, &target).unwrap();
    }
}

/// The target folder of this build, so the quick start's build shares its downloads and
/// anything already compiled.
fn target_dir() -> PathBuf {
    s3_compressor_tests::target_dir().canonicalize().unwrap()
}

/// The keys in what `aws s3 ls --recursive` printed (`DATE TIME SIZE KEY` lines), skipping
/// whatever else the block printed.
fn listed_keys(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|line| {
            let mut rest = line;
            let mut fields = Vec::new();
            for _ in 0..3 {
                let (field, after) = rest.trim_start().split_once(' ')?;
                fields.push(field);
                rest = after;
            }
            let is_date = fields[0].len() == 10 && fields[0].as_bytes()[4] == b'-';
            let is_size = fields[2].bytes().all(|b| b.is_ascii_digit());
            (is_date && is_size).then(|| rest.trim_start().to_owned())
        })
        .collect()
}

/// The output keys the comment of the block's listing line names (`# processed/a.zip, ...`),
/// sorted as the listing is.
fn promised_keys(listing_line: &str) -> Vec<String> {
    let comment = listing_line
        .split_once('#')
        .unwrap_or_else(|| panic!("the listing line has no comment: {listing_line}"))
        .1;
    let mut keys: Vec<String> = comment
        .split_whitespace()
        .filter(|word| word.starts_with("processed/"))
        .map(|word| word.trim_end_matches([',', ';', '.']).to_owned())
        .collect();
    keys.sort();
    keys
}

/// Runs `script` with bash in `dir`, with only the AWS settings the script makes itself.
fn bash(dir: &Path, script: &str) -> Finished {
    run(Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"))
}

#[test]
fn the_readme_quick_start_works_as_written() {
    if !have(&["aws", "git", "unzip", "gzip"], PYTHON_TOOLS) {
        return;
    }
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let server = block(&readme, "server");
    let client = block(&readme, "client");

    // The README's address is serve's default; the blocks run on a free port instead.
    let help = run(s3_compressor().args(["serve", "--help"]));
    assert!(
        help.success()
            && help
                .stdout
                .contains(&format!("[default: {README_ADDRESS}]")),
        "README's quick start says serve listens on {README_ADDRESS}: {}",
        help.describe()
    );
    let port = free_port();
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let commands: Vec<&str> = server
        .lines()
        .filter_map(|line| line.split('#').next())
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let [command] = commands[..] else {
        panic!("README's server block is not one command: {server}")
    };
    let server = format!("{command} --addr {address}");
    let endpoint = format!("http://{README_ADDRESS}");
    assert!(
        client.contains(&endpoint),
        "README's client block does not use {endpoint}: {client}"
    );
    let client = client.replace(&endpoint, &format!("http://{address}"));

    let work = tempfile::tempdir().unwrap();
    let checkout = work.path().join("checkout");
    let shell = work.path().join("shell");
    std::fs::create_dir_all(&shell).unwrap();
    copy_checkout(&checkout);

    // Terminal 1. Its own process group, so Ctrl-C reaches cargo and serve alike, as a
    // terminal sends it.
    let started = Instant::now();
    let mut command = Command::new("bash");
    command
        .args(["-c", &server])
        .current_dir(&checkout)
        .env("CARGO_TARGET_DIR", target_dir())
        // README's commands as written, built without optimisation: what is checked is that
        // they work, and optimising every dependency once more (the tests' build is another
        // profile) would cost several minutes of CI's two cores.
        .envs(UNOPTIMISED_RELEASE)
        .process_group(0);
    let mut serving = Running::spawn(&mut command);
    let group = serving.id();
    while std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
        if let Some(finished) = serving.try_finish() {
            panic!("the server block exited: {}", finished.describe());
        }
        assert!(
            started.elapsed() < BUILD_LIMIT,
            "the server block did not listen on {address} within {BUILD_LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "MEASURED: quick start, `{}` to listening (unoptimised): {:.1?}",
        server.lines().next().unwrap_or_default(),
        started.elapsed()
    );

    // Terminal 2. The upload returns before the worker has compressed it (and deleted it), so
    // the listing (the block's last command) is looked at again for a while, as a person would.
    let finished = bash(&shell, &client);
    assert!(
        finished.success(),
        "the client block: {}",
        finished.describe()
    );
    let exports: Vec<&str> = client
        .lines()
        .filter(|line| line.starts_with("export "))
        .collect();
    let listing_command = client
        .lines()
        .rfind(|line| !line.trim().is_empty())
        .unwrap();
    // What README says the listing shows: the config's rules at work, each upload in its
    // rule's format.
    let promised = promised_keys(listing_command);
    assert!(
        promised.contains(&"processed/report.zip".to_owned())
            && promised.contains(&"processed/logs/app.log.gz".to_owned()),
        "{listing_command}"
    );
    let mut listed = listed_keys(&finished.stdout);
    let deadline = Instant::now() + Duration::from_secs(30);
    while listed != promised && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let again = bash(
            &shell,
            &[exports.join("\n").as_str(), listing_command].join("\n"),
        );
        assert!(again.success(), "{}", again.describe());
        listed = listed_keys(&again.stdout);
    }
    assert_eq!(listed, promised, "{}", finished.describe());

    // The outputs are the upload, zipped and gzipped.
    let fetched = bash(
        &shell,
        &[
            exports.join("\n").as_str(),
            "aws s3 cp --only-show-errors s3://files/processed/report.zip fetched.zip",
            "aws s3 cp --only-show-errors s3://files/processed/logs/app.log.gz fetched.log.gz",
        ]
        .join("\n"),
    );
    assert!(fetched.success(), "{}", fetched.describe());
    let unzipped = Command::new("unzip")
        .args(["-p", "fetched.zip", "report.csv"])
        .current_dir(&shell)
        .output()
        .unwrap();
    assert!(unzipped.status.success());
    let original = std::fs::read(shell.join("report.csv")).unwrap();
    assert!(original.len() > 1_000_000, "{} bytes", original.len());
    assert!(unzipped.stdout == original, "the zip holds the upload");
    let gunzipped = Command::new("gzip")
        .args(["-dc", "fetched.log.gz"])
        .current_dir(&shell)
        .output()
        .unwrap();
    assert!(gunzipped.status.success());
    assert!(gunzipped.stdout == original, "the gzip holds the upload");

    // Ctrl-C. serve prints the settings the client block uses.
    let sent = Command::new("kill")
        .args(["-INT", "--", &format!("-{group}")])
        .status()
        .unwrap();
    assert!(sent.success());
    let stopped = serving.finish(Duration::from_secs(60));
    assert!(stopped.success(), "after Ctrl-C: {}", stopped.describe());
    // It said which config it ran, as --version says it for the same --config.
    let version = run(s3_compressor()
        .args(["--config", "config/compressor.toml", "--version"])
        .current_dir(&checkout));
    assert!(version.success(), "{}", version.describe());
    let config_lines = version.stdout.split_once('\n').unwrap().1;
    assert!(
        config_lines.starts_with("config: config/compressor.toml (--config), hash "),
        "{config_lines}"
    );
    assert!(
        stopped.stdout.starts_with(config_lines),
        "the banner does not name the config --version does ({config_lines}): {}",
        stopped.describe()
    );
    for setting in exports
        .iter()
        .flat_map(|line| line.split_whitespace().skip(1))
    {
        assert!(
            stopped.stdout.contains(&format!("export {setting}\n")),
            "serve does not print {setting}: {}",
            stopped.describe()
        );
    }

    // serve kept the bucket in ./data, which git ignores: every file it wrote there.
    let written = files_under(&checkout.join("data/files"));
    assert!(!written.is_empty(), "nothing kept in ./data/files");
    for file in written {
        let relative = file.strip_prefix(&checkout).unwrap();
        let ignored = Command::new("git")
            .args(["check-ignore", "-q"])
            .arg(relative)
            .current_dir(workspace_root())
            .status()
            .unwrap();
        assert!(
            ignored.success(),
            ".gitignore does not cover {} in serve's ./data",
            relative.display()
        );
    }
}

fn files_under(folder: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new();
    };
    entries
        .flatten()
        .flat_map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                files_under(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

/// Everything `.ci/run` installs is named in the Tests section of docs/development.md, which
/// README links from its own: a newcomer running it knows what it will put on their machine.
#[test]
fn the_tests_section_names_everything_ci_installs() {
    let root = workspace_root();
    let script = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains("(docs/development.md#tests)"),
        "README.md does not link the Tests section"
    );
    let development = std::fs::read_to_string(root.join("docs/development.md")).unwrap();
    let tests_section = development
        .split_once("\n## Tests\n")
        .map(|(_, rest)| rest)
        .expect("docs/development.md has a Tests section");
    let mut installed = Vec::new();
    for line in script.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        // What follows `apt_install`, `pip_install`, `rustup component|target add`,
        // `cargo install` and `.../pip install`.
        let start = words.iter().enumerate().find_map(|(i, word)| {
            let next = words.get(i + 1).copied();
            match (*word, next) {
                ("apt_install" | "pip_install", _) if i == 0 => Some(i + 1),
                ("add", _) if i == 2 && words[0] == "rustup" => Some(i + 1),
                (word, Some("install")) if word == "cargo" || word.ends_with("/pip") => Some(i + 2),
                _ => None,
            }
        });
        let Some(start) = start else { continue };
        installed.extend(
            words[start..]
                .iter()
                .take_while(|word| !word.contains('>') && **word != "||")
                .filter(|word| !word.starts_with('-') && !word.contains('$'))
                // 'moto[server]==5.2.5' -> moto[server]; cfn-lint==1.51.0 -> cfn-lint
                .map(|word| {
                    word.trim_matches('\'')
                        .split("==")
                        .next()
                        .unwrap_or_default()
                        .to_owned()
                }),
        );
    }
    assert!(
        installed.len() > 15,
        "read too little from .ci/run: {installed:?}"
    );
    for name in installed {
        assert!(
            tests_section.contains(&format!("`{name}`")),
            "docs/development.md's Tests section does not name `{name}`, which .ci/run installs"
        );
    }
    assert!(tests_section.contains("Debian") && tests_section.contains("root"));
}

/// The lines of a Markdown file outside its fenced code blocks.
fn prose(markdown: &str) -> Vec<&str> {
    let mut fenced = false;
    markdown
        .lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// The anchor GitHub gives a heading: lower case, punctuation other than `-` and `_` dropped,
/// spaces as `-`.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Every relative link of README.md and docs/*.md names a file that exists, and every
/// `#anchor` a heading of the file it points into: reference moved between them keeps its
/// links.
#[test]
fn every_link_of_the_readme_and_docs_resolves() {
    let root = workspace_root();
    let mut files = vec![root.join("README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|extension| extension == "md") {
            files.push(path);
        }
    }
    let mut checked = 0;
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for line in prose(&text) {
            for (_, after) in line
                .match_indices("](")
                .map(|(at, _)| line.split_at(at + 2))
            {
                let Some((target, _)) = after.split_once(')') else {
                    continue;
                };
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (path, fragment) = target.split_once('#').unwrap_or((target, ""));
                let linked = if path.is_empty() {
                    file.clone()
                } else {
                    file.parent().unwrap().join(path)
                };
                if !linked.exists() {
                    broken.push(format!("{}: {target}: no such file", file.display()));
                    continue;
                }
                if fragment.is_empty() {
                    continue;
                }
                let headings = std::fs::read_to_string(&linked).unwrap();
                let found = prose(&headings)
                    .iter()
                    .filter_map(|line| line.strip_prefix('#'))
                    .map(|heading| anchor(heading.trim_start_matches('#')))
                    .any(|anchor| anchor == fragment);
                if !found {
                    broken.push(format!("{}: {target}: no such heading", file.display()));
                }
            }
        }
    }
    assert!(checked > 20, "read only {checked} links");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
