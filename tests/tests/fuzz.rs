//! Fuzzing of everything the worker reads from outside: invocation payloads (as bytes and as
//! JSON trees), object keys as S3 notifications encode them, and the config file.
//!
//! Each target first replays its corpus — the payloads of `tests/fixtures/events/` and
//! `tests/fixtures/hostile/`, or the shipped config — then mutates it at random with proptest.
//! By default that is one round of [`CASES_PER_ROUND`] cases, part of every test run.
//! `S3_COMPRESSOR_FUZZ_SECS=N` keeps each target going for N seconds instead (`.ci/run` gives
//! them a fixed budget). A failure is shrunk to a small input, printed, and kept in
//! `tests/fuzz-regressions/TARGET.txt`, which every later run replays first: commit that file
//! with the fix.
//!
//! The property is the same everywhere: no panic, and every rejection is an error that says
//! where the problem is (a path into the payload, a line and column of the config).

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use s3_compressor_config::{Config as CompressorConfig, Naming, Routing};
use s3_compressor_events::{decode_key, parse, EventError, Invocation};
use s3_compressor_formats::{safe_entry_name, Options, Registry};
use serde_json::{Map, Value};

const CASES_PER_ROUND: u32 = 256;

/// Runs `property` on every corpus input, then on mutants from `strategy` for the budget.
fn fuzz<S>(
    target: &'static str,
    corpus: &[S::Value],
    strategy: S,
    property: impl Fn(&S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug + Clone,
{
    for (index, input) in corpus.iter().enumerate() {
        if let Err(failure) = property(input) {
            panic!("{target}: corpus input {index} fails: {failure}\n{input:?}");
        }
    }
    let budget = std::env::var("S3_COMPRESSOR_FUZZ_SECS")
        .ok()
        .and_then(|secs| secs.parse().ok())
        .map(Duration::from_secs);
    let started = Instant::now();
    let mut cases = 0;
    loop {
        let config = Config {
            cases: CASES_PER_ROUND,
            failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions_file(
                target,
            )))),
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        if let Err(failure) = runner.run(&strategy, |input| property(&input)) {
            panic!("{target}: {failure}");
        }
        cases += CASES_PER_ROUND;
        if budget.is_none_or(|budget| started.elapsed() >= budget) {
            break;
        }
    }
    println!(
        "{target}: {} corpus inputs and {cases} mutants in {:.1} s, no failure",
        corpus.len(),
        started.elapsed().as_secs_f64()
    );
}

/// proptest wants a `&'static str`; one leaked path per target and run is fine in a test.
fn regressions_file(target: &str) -> &'static str {
    let path = fixtures()
        .join("../fuzz-regressions")
        .join(format!("{target}.txt"));
    Box::leak(path.display().to_string().into_boxed_str())
}

fn fixtures() -> PathBuf {
    s3_compressor_tests::workspace_root().join("tests/fixtures")
}

fn files_in(dir: &Path) -> Vec<Vec<u8>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.expect("a folder entry").path())
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| {
            std::fs::read(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        })
        .collect()
}

/// Every payload the tests know: real events of each kind and the hostile ones.
fn payload_corpus() -> Vec<Vec<u8>> {
    let mut corpus = files_in(&fixtures().join("events"));
    corpus.extend(files_in(&fixtures().join("hostile")));
    corpus
}

// ---------------------------------------------------------------------------------------------
// Mutations

/// Tokens that tend to matter to a JSON reader or a key decoder.
const INTERESTING: &[&[u8]] = &[
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"null",
    b"true",
    b"-1",
    b"1e999",
    b"18446744073709551616",
    b"0.5",
    b"\\u0000",
    b"\\ud800",
    b"%",
    b"%FF",
    b"%2F",
    b"+",
    b"../",
    b"\xff",
    b"\xc3",
    b"Records",
    b"body",
    b"detail",
    b"tasks",
    b"s3Key",
    b"aws:s3",
    b"aws:sqs",
];

#[derive(Debug, Clone)]
enum ByteEdit {
    Flip { at: usize, bit: u8 },
    Insert { at: usize, token: usize },
    Remove { at: usize, len: usize },
    Repeat { at: usize, len: usize },
    Truncate { at: usize },
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        (any::<usize>(), 0..8u8).prop_map(|(at, bit)| ByteEdit::Flip { at, bit }),
        (any::<usize>(), any::<usize>()).prop_map(|(at, token)| ByteEdit::Insert { at, token }),
        (any::<usize>(), 1..64usize).prop_map(|(at, len)| ByteEdit::Remove { at, len }),
        (any::<usize>(), 1..64usize).prop_map(|(at, len)| ByteEdit::Repeat { at, len }),
        any::<usize>().prop_map(|at| ByteEdit::Truncate { at }),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[ByteEdit]) -> Vec<u8> {
    for edit in edits {
        let at = |at: usize| {
            if bytes.is_empty() {
                0
            } else {
                at % (bytes.len() + 1)
            }
        };
        match *edit {
            ByteEdit::Flip { at: position, bit } => {
                if !bytes.is_empty() {
                    let position = position % bytes.len();
                    bytes[position] ^= 1 << bit;
                }
            }
            ByteEdit::Insert {
                at: position,
                token,
            } => {
                let position = at(position);
                let token = INTERESTING[token % INTERESTING.len()];
                bytes.splice(position..position, token.iter().copied());
            }
            ByteEdit::Remove { at: position, len } => {
                let start = at(position);
                let end = (start + len).min(bytes.len());
                bytes.drain(start..end);
            }
            ByteEdit::Repeat { at: position, len } => {
                let start = at(position);
                let end = (start + len).min(bytes.len());
                let copy = bytes[start..end].to_vec();
                bytes.splice(end..end, copy);
            }
            ByteEdit::Truncate { at: position } => {
                let position = at(position);
                bytes.truncate(position);
            }
        }
    }
    bytes
}

/// A corpus input with a few byte edits.
fn mutated(corpus: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let count = corpus.len();
    (0..count, proptest::collection::vec(byte_edit(), 1..8))
        .prop_map(move |(pick, edits)| apply(corpus[pick].clone(), &edits))
}

/// Any JSON value, small.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        "[%+0-9A-Fa-f/.]{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("aws:s3"),
            Just("aws:sqs"),
            Just("ObjectCreated:Put"),
            Just("Object Created"),
            Just("3.0"),
            Just("1.0"),
            Just("2.0")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::vec(("[a-zA-Z]{1,10}", inner), 0..4)
                .prop_map(|members| Value::Object(members.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

#[derive(Debug, Clone)]
enum TreeEdit {
    /// Replace the node reached by following `path` (each step picks a child modulo its count).
    Replace {
        path: Vec<usize>,
        with: Value,
    },
    Remove {
        path: Vec<usize>,
    },
    /// A JSON string holding the node (as SQS and SNS bodies hold events).
    Stringify {
        path: Vec<usize>,
    },
}

fn tree_edit() -> impl Strategy<Value = TreeEdit> {
    let path = proptest::collection::vec(any::<usize>(), 0..8);
    prop_oneof![
        (path.clone(), any_json()).prop_map(|(path, with)| TreeEdit::Replace { path, with }),
        path.clone().prop_map(|path| TreeEdit::Remove { path }),
        path.prop_map(|path| TreeEdit::Stringify { path }),
    ]
}

/// The node reached by following `path` as far as it goes.
fn node_at<'a>(node: &'a mut Value, path: &[usize]) -> &'a mut Value {
    let Some((&step, rest)) = path.split_first() else {
        return node;
    };
    let count = match &*node {
        Value::Array(items) => items.len(),
        Value::Object(members) => members.len(),
        _ => 0,
    };
    if count == 0 {
        return node;
    }
    match node {
        Value::Array(items) => node_at(&mut items[step % count], rest),
        Value::Object(members) => {
            let child = members.values_mut().nth(step % count).expect("in range");
            node_at(child, rest)
        }
        other => other,
    }
}

fn edit_tree(mut value: Value, edits: &[TreeEdit]) -> Value {
    for edit in edits {
        match edit {
            TreeEdit::Replace { path, with } => *node_at(&mut value, path) = with.clone(),
            TreeEdit::Stringify { path } => {
                let node = node_at(&mut value, path);
                *node = Value::String(node.to_string());
            }
            TreeEdit::Remove { path } => {
                let Some((last, parent)) = path.split_last() else {
                    continue;
                };
                match node_at(&mut value, parent) {
                    Value::Array(items) if !items.is_empty() => {
                        let count = items.len();
                        items.remove(last % count);
                    }
                    Value::Object(members) if !members.is_empty() => {
                        let count = members.len();
                        let key = members.keys().nth(last % count).expect("in range").clone();
                        members.remove(&key);
                    }
                    _ => {}
                }
            }
        }
    }
    value
}

// ---------------------------------------------------------------------------------------------
// Invocation payloads

/// `roots`: where the error's path may start: `payload`, and also `body` for an error inside
/// one SQS message's body (which the response and the log name by the message's id).
fn check_event_error(error: &EventError, roots: &[&str]) -> Result<(), TestCaseError> {
    prop_assert!(
        roots.iter().any(|root| error.at().starts_with(root)),
        "{} does not say where ({:?})",
        error,
        error.at()
    );
    prop_assert!(
        error.to_string().len() > error.at().len(),
        "{} says nothing more than where",
        error
    );
    Ok(())
}

fn check_payload(payload: &Value) -> Result<(), TestCaseError> {
    match parse(payload) {
        Err(error) => check_event_error(&error, &["payload"]),
        Ok(Invocation::Sqs(messages)) => {
            for message in &messages {
                if let Err(error) = &message.notices {
                    check_event_error(error, &["payload", "body"])?;
                }
            }
            Ok(())
        }
        Ok(_) => Ok(()),
    }
}

/// The bytes the Lambda runtime would hand over: read as JSON (with serde_json's nesting
/// limit), then as a payload.
fn check_payload_bytes(bytes: &[u8]) -> Result<(), TestCaseError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(payload) => check_payload(&payload),
        Err(error) => {
            prop_assert!(error.line() >= 1, "a JSON error without a place: {error}");
            Ok(())
        }
    }
}

#[test]
fn fuzz_payload_bytes() {
    let corpus = payload_corpus();
    fuzz("payload_bytes", &corpus, mutated(corpus.clone()), |bytes| {
        check_payload_bytes(bytes)
    });
}

#[test]
fn fuzz_payload_trees() {
    let corpus: Vec<Value> = payload_corpus()
        .iter()
        .filter_map(|bytes| serde_json::from_slice(bytes).ok())
        .collect();
    let count = corpus.len();
    let seeds = corpus.clone();
    let strategy = (0..count, proptest::collection::vec(tree_edit(), 1..6))
        .prop_map(move |(pick, edits)| edit_tree(seeds[pick].clone(), &edits));
    fuzz("payload_trees", &corpus, strategy, check_payload);
}

// ---------------------------------------------------------------------------------------------
// Object keys

/// Decodes a key as a notification carries it, routes it and names its output and archive
/// entry: the output stays under the rule's output prefix, never under a source prefix, and
/// the entry name is one plain file name.
fn check_key(raw: &str) -> Result<(), TestCaseError> {
    let key = match decode_key(raw) {
        Ok(key) => key,
        Err(error) => return check_event_error(&error, &["key"]),
    };
    let config = routing_config();
    if let Routing::Matched(rule) = config.route(&key) {
        for naming in [Naming::ReplaceExtension, Naming::AppendExtension] {
            let output = rule.output_key(&key, "zip", naming);
            prop_assert!(output.starts_with(&rule.output_prefix), "{output:?}");
            prop_assert!(
                config
                    .rules()
                    .iter()
                    .all(|other| !output.starts_with(&other.prefix)),
                "{output:?} is under a source prefix"
            );
        }
    }
    let name = safe_entry_name(key.rsplit('/').next().unwrap_or_default());
    prop_assert!(!name.is_empty());
    prop_assert!(
        !name.contains(['/', '\\']) && !name.chars().any(char::is_control),
        "{name:?}"
    );
    prop_assert!(name != "." && name != "..");
    Ok(())
}

fn routing_config() -> CompressorConfig {
    const RULES: &str = r#"
[[rule]]
prefix = "incoming/"
output_prefix = "processed/"

[[rule]]
prefix = "incoming/logs/"
output_prefix = "archive/logs/"
format = "gzip"
"#;
    CompressorConfig::parse(RULES, "fuzz", &catalog).expect("a valid config")
}

fn key_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "(incoming/|incoming/logs/|processed/|archive/logs/)?[%+./\\\\a-fA-F0-9 \u{0}-\u{1f}é日]{0,40}",
        "(incoming/)?(%[0-9A-Fa-f]{2}|%|[a-z+/.]){0,24}",
    ]
}

#[test]
fn fuzz_keys() {
    let corpus: Vec<String> = [
        "incoming/report.csv",
        "incoming/a+b%2Bc%25.csv",
        "incoming/..%2F..%2Fetc%2Fpasswd",
        "incoming/%00%1B%5B31m.csv",
        "incoming/caf%C3%A9.csv",
        "incoming/cafe%CC%81.csv",
        "incoming/100%.csv",
        "incoming/%FF%FE.csv",
        "incoming/C%3A%5CWindows%5Cwin.ini",
        "incoming/folder/",
        "processed/report.zip",
        "",
    ]
    .map(str::to_owned)
    .to_vec();
    fuzz("keys", &corpus, key_text(), |key| check_key(key));
}

// ---------------------------------------------------------------------------------------------
// The config file

fn registry() -> &'static Registry {
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(|| Registry::from_inventory().expect("the linked-in formats"))
}

/// Checks formats and levels against the linked-in formats, as the worker does.
fn catalog(format: &str, level: Option<i32>, threads: Option<usize>) -> Result<(), String> {
    let options = Options { level, threads };
    let registration = registry().get(format).map_err(|error| error.to_string())?;
    registration
        .settings(&options)
        .map(drop)
        .map_err(|error| error.to_string())
}

/// A valid config's rules keep their promises; an invalid one's problems are each at a line
/// and column inside the text, with a message.
fn check_config(bytes: &[u8]) -> Result<(), TestCaseError> {
    let text = String::from_utf8_lossy(bytes);
    match CompressorConfig::parse(&text, "fuzz.toml", &catalog) {
        Ok(config) => {
            for rule in config.rules() {
                prop_assert!(
                    rule.prefix.ends_with('/') && !rule.prefix.starts_with('/'),
                    "{rule:?}"
                );
                prop_assert!(rule.output_prefix.ends_with('/'), "{rule:?}");
                prop_assert!(
                    config
                        .rules()
                        .iter()
                        .all(|other| !rule.output_prefix.starts_with(&other.prefix)
                            && !other.prefix.starts_with(&rule.output_prefix)),
                    "{rule:?} writes where a rule reads"
                );
            }
        }
        Err(error) => {
            let problems = error.problems();
            prop_assert!(
                !problems.is_empty(),
                "an invalid config with no problem named: {error}"
            );
            let lines = text.lines().count() + 1;
            for problem in problems {
                prop_assert!(
                    problem.line >= 1 && problem.line <= lines,
                    "{problem} is not inside the text"
                );
                prop_assert!(problem.column >= 1, "{problem}");
                prop_assert!(!problem.message.trim().is_empty(), "{problem}");
            }
            prop_assert!(error.to_string().starts_with("fuzz.toml:"), "{error}");
        }
    }
    Ok(())
}

/// Config files built from pieces: any section, any field, values of any type.
fn config_text() -> impl Strategy<Value = Vec<u8>> {
    let field = prop_oneof![
        Just("prefix"),
        Just("output_prefix"),
        Just("format"),
        Just("level"),
        Just("threads"),
        Just("delete_source"),
        Just("unknown"),
    ];
    let value = prop_oneof![
        "\"[a-z/.]{0,12}\"",
        "\"(incoming|processed|logs|a)/(x/)?\"",
        "\"(zip|gzip|zstd|tar|tar.gz|tar.zst|brotli|rar)\"",
        "-?[0-9]{1,3}",
        Just("true".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("1.5".to_owned()),
    ];
    let line = prop_oneof![
        Just("[[rule]]".to_owned()),
        Just("[defaults]".to_owned()),
        Just("[other]".to_owned()),
        (field, value).prop_map(|(field, value)| format!("{field} = {value}")),
        ".{0,16}",
    ];
    proptest::collection::vec(line, 0..16).prop_map(|lines| lines.join("\n").into_bytes())
}

#[test]
fn fuzz_config() {
    let shipped = s3_compressor_tests::workspace_root().join("config/compressor.toml");
    let corpus = vec![
        std::fs::read(shipped).expect("the shipped config"),
        Vec::new(),
    ];
    let strategy = prop_oneof![mutated(corpus.clone()), config_text()];
    fuzz("config", &corpus, strategy, |bytes| check_config(bytes));
}
