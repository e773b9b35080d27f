//! Hostile input, end to end against moto_server: object keys anyone who can upload may choose,
//! and events that are malformed in every way a payload can be. Each ends in its documented
//! outcome (docs/how-it-works.md, "Hostile input"), and the archives the worker makes from
//! hostile keys are unpacked by `unzip`, `bsdtar`, GNU `tar`, `gzip -dN` and Python's `zipfile`
//! and `tarfile` (with the `data` filter) without anything landing outside the folder they were
//! given.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use s3_compressor_tests::events::{s3_event, s3_record, sqs_batch, sqs_message, write_event};
use s3_compressor_tests::process::{run, Finished};
use s3_compressor_tests::{csv_text, have, Moto};
use serde_json::{json, Value};

const BUCKET: &str = "hostile-input";

/// One rule per kind of output: an archive that records the name (zip, tar) and a stream whose
/// header does (gzip).
const CONFIG: &str = r#"
[[rule]]
prefix = "incoming/"
output_prefix = "processed/"
format = "zip"

[[rule]]
prefix = "tars/"
output_prefix = "tarred/"
format = "tar"

[[rule]]
prefix = "streams/"
output_prefix = "gzipped/"
format = "gzip"
"#;

/// `(source prefix, output prefix, extension, whether the extension replaces the source's)`.
const RULES: [(&str, &str, &str, bool); 3] = [
    ("incoming/", "processed/", "zip", true),
    ("tars/", "tarred/", "tar", true),
    ("streams/", "gzipped/", "gz", false),
];

/// File names (the part after the source prefix) that try to escape, hide or confuse.
const HOSTILE_NAMES: [&str; 9] = [
    "../../escape.csv",
    "..\\..\\windows-escape.csv",
    "C:\\Windows\\drive.csv",
    "/absolute/path.csv",
    "nul\0byte.csv",
    // (No line feed: moto_server cannot store a key with one.)
    "ansi\u{1b}[31mred\rbell\u{7}\ttab.csv",
    // The same name in Unicode NFC and NFD: two keys, two objects, two outputs.
    "caf\u{e9}.csv",
    "cafe\u{301}.csv",
    "..",
];

fn config_file(moto: &Moto) -> PathBuf {
    moto.write_file("hostile.toml", CONFIG.as_bytes())
}

/// The key the worker writes for `source` (a key under one of [`RULES`]' prefixes).
fn output_key(source: &str) -> String {
    let (prefix, output_prefix, extension, replaces) = RULES
        .iter()
        .find(|rule| source.starts_with(rule.0))
        .copied()
        .unwrap_or_else(|| panic!("{source:?} is under no rule"));
    let relative = &source[prefix.len()..];
    let (folder, name) = relative
        .rfind('/')
        .map_or(("", relative), |slash| relative.split_at(slash + 1));
    let stem = match name.rsplit_once('.') {
        Some((stem, _)) if replaces && stem.chars().any(|c| c != '.') => stem,
        _ => name,
    };
    format!("{output_prefix}{folder}{stem}.{extension}")
}

fn invoke(moto: &Moto, event_file: &Path) -> Finished {
    let mut command = moto.s3_compressor();
    command
        .arg("--config")
        .arg(config_file(moto))
        .arg("invoke")
        .arg("--event")
        .arg(event_file);
    run(&mut command)
}

fn response_of(finished: &Finished) -> Value {
    assert!(finished.success(), "invoke failed: {}", finished.describe());
    serde_json::from_str(&finished.stdout)
        .unwrap_or_else(|error| panic!("not JSON ({error}): {}", finished.describe()))
}

// ---------------------------------------------------------------------------------------------
// Hostile keys

/// Every hostile name under every rule, plus the keys whose outcome is not "compressed": S3's
/// key length limit on both sides, an archived object, an empty object and a folder marker.
/// All arrive as one SQS batch of S3 notifications, the keys form-encoded as S3 encodes them.
#[test]
fn hostile_keys_end_in_their_documented_outcome_and_unpack_safely() {
    if !have(
        &["unzip", "bsdtar", "tar", "gzip", "python3"],
        "apt-get install unzip libarchive-tools tar gzip python3",
    ) {
        return;
    }
    let moto = Moto::start();
    moto.create_bucket(BUCKET);

    let mut compressible: Vec<(String, Vec<u8>)> = Vec::new();
    for (seed, (prefix, ..)) in RULES.iter().enumerate() {
        for (index, name) in HOSTILE_NAMES.iter().enumerate() {
            let content = csv_text(3000 + index * 100, (seed * 100 + index) as u64);
            compressible.push((format!("{prefix}{name}"), content));
        }
    }
    // The longest key whose zip output still fits S3's 1,024 bytes (".csv" -> ".zip", and
    // "processed/" is one byte longer than "incoming/"), and one byte more.
    let fits = format!(
        "incoming/{}.csv",
        "k".repeat(1024 - "processed/".len() - ".zip".len())
    );
    assert_eq!(output_key(&fits).len(), 1024);
    let too_long = format!(
        "incoming/{}.csv",
        "k".repeat(1024 - "processed/".len() - ".zip".len() + 1)
    );
    compressible.push((fits, csv_text(2000, 7)));
    compressible.push(("incoming/empty.csv".to_owned(), Vec::new()));
    for (key, content) in &compressible {
        moto.put(BUCKET, key, content.clone());
    }
    moto.put(BUCKET, &too_long, csv_text(2000, 8));
    let archived = "incoming/archived.csv";
    moto.block_on(
        moto.client()
            .put_object()
            .bucket(BUCKET)
            .key(archived)
            .storage_class(aws_sdk_s3::types::StorageClass::Glacier)
            .body(csv_text(2000, 9).into())
            .send(),
    )
    .expect("PutObject in GLACIER");
    let folder_marker = "incoming/folder/";
    moto.put(BUCKET, folder_marker, Vec::new());

    // One message per key; the refused ones are the two that must come back.
    let mut messages = Vec::new();
    let mut keys: Vec<&str> = compressible.iter().map(|(key, _)| key.as_str()).collect();
    keys.extend([too_long.as_str(), archived, folder_marker]);
    for (index, key) in keys.iter().enumerate() {
        let body = s3_event(BUCKET, &[key]).to_string();
        messages.push(sqs_message(&format!("m{index}"), &body));
    }
    let event = write_event(moto.dir(), "hostile-keys.json", &sqs_batch(messages));
    let finished = invoke(&moto, &event);
    let response = response_of(&finished);
    let failed: BTreeSet<String> = response["batchItemFailures"]
        .as_array()
        .unwrap_or_else(|| panic!("no batchItemFailures: {response}"))
        .iter()
        .map(|item| {
            item["itemIdentifier"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let expected_failures: BTreeSet<String> = [too_long.as_str(), archived]
        .iter()
        .map(|key| {
            format!(
                "m{}",
                keys.iter().position(|k| k == key).unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(failed, expected_failures, "{}", finished.describe());
    assert!(
        finished.stderr.contains("over S3's limit of 1024"),
        "the refusal names the limit: {}",
        finished.stderr
    );
    assert!(
        finished.stderr.contains("archived storage class")
            && finished.stderr.contains("restore-object"),
        "the archived object's failure says to restore it: {}",
        finished.stderr
    );

    // Refused, archived and folder marker: untouched, and nothing written for them.
    for kept in [too_long.as_str(), archived, folder_marker] {
        assert!(moto.head(BUCKET, kept).is_some(), "{kept:?} is kept");
    }
    assert!(moto.head(BUCKET, &output_key(archived)).is_none());

    // Everything else: the source gone, exactly one output, which unpacks to the source.
    let mut expected_keys: BTreeSet<String> = [
        too_long.clone(),
        archived.to_owned(),
        folder_marker.to_owned(),
    ]
    .into();
    for (key, content) in &compressible {
        assert!(moto.head(BUCKET, key).is_none(), "{key:?} was deleted");
        let output = output_key(key);
        let bytes = moto
            .try_get(BUCKET, &output)
            .unwrap_or_else(|| panic!("no output {output:?} for {key:?}"));
        assert_unpacks_safely(&output, &bytes, content);
        expected_keys.insert(output);
    }
    let listed: BTreeSet<String> = moto.keys(BUCKET).into_iter().collect();
    assert_eq!(
        listed, expected_keys,
        "exactly one output per compressed source, nothing else"
    );
}

/// A Python script that unpacks an archive into a folder with the standard library (`zipfile`,
/// or `tarfile` with the `data` filter) and prints each entry's name, size and CRC-32 as the
/// archive claims them, one JSON object per entry.
const PYTHON_UNPACK: &str = r#"
import json, sys, tarfile, zipfile
kind, archive, target = sys.argv[1:4]
if kind == "zip":
    with zipfile.ZipFile(archive) as z:
        entries = [{"name": i.filename, "size": i.file_size, "crc": i.CRC} for i in z.infolist()]
        z.extractall(target)
else:
    with tarfile.open(archive) as t:
        entries = [{"name": m.name, "size": m.size, "crc": None} for m in t.getmembers()]
        t.extractall(target, filter="data")
print(json.dumps(entries))
"#;

/// Unpacks `bytes` (the output at `key`) with every tool that reads its format, each into an
/// empty folder of its own inside a scratch folder, and checks: each tool extracted exactly one
/// file, whose content is `content`, and nothing else appeared anywhere in the scratch folder;
/// the entry's recorded name has no path separator or control character; and the sizes and
/// CRC the archive records are those of `content`.
fn assert_unpacks_safely(key: &str, bytes: &[u8], content: &[u8]) {
    let scratch = tempfile::tempdir().expect("scratch folder");
    let kind = key.rsplit('.').next().unwrap_or_default();
    let archive = scratch.path().join(format!("output.{kind}"));
    std::fs::write(&archive, bytes).expect("write the output");
    let mut targets = Vec::new();
    let mut target = |tool: &str| {
        let target = scratch.path().join(format!("into-{tool}"));
        std::fs::create_dir(&target).expect("target folder");
        targets.push(target.clone());
        target
    };
    let claimed: Value = match kind {
        "zip" | "tar" => {
            if kind == "zip" {
                let into = target("unzip");
                tool(
                    "unzip",
                    &[
                        "-q".as_ref(),
                        archive.as_os_str(),
                        "-d".as_ref(),
                        into.as_os_str(),
                    ],
                );
            } else {
                let into = target("gnu-tar");
                tool(
                    "tar",
                    &[
                        "-xf".as_ref(),
                        archive.as_os_str(),
                        "-C".as_ref(),
                        into.as_os_str(),
                    ],
                );
            }
            let into = target("bsdtar");
            tool(
                "bsdtar",
                &[
                    "-xf".as_ref(),
                    archive.as_os_str(),
                    "-C".as_ref(),
                    into.as_os_str(),
                ],
            );
            let into = target("python");
            let printed = tool(
                "python3",
                &[
                    "-c".as_ref(),
                    PYTHON_UNPACK.as_ref(),
                    kind.as_ref(),
                    archive.as_os_str(),
                    into.as_os_str(),
                ],
            );
            serde_json::from_slice(&printed).expect("the script prints JSON")
        }
        "gz" => {
            // gzip -dN restores the name in the header, next to the .gz it was given.
            let into = target("gzip");
            let inside = into.join("output.gz");
            std::fs::copy(&archive, &inside).expect("copy the .gz");
            tool("gzip", &["-dN".as_ref(), inside.as_os_str()]);
            let size = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().expect("4 bytes"));
            let crc = u32::from_le_bytes(
                bytes[bytes.len() - 8..bytes.len() - 4]
                    .try_into()
                    .expect("4 bytes"),
            );
            json!([{"name": gzip_name(bytes), "size": size, "crc": crc}])
        }
        other => panic!("no unpacking check for .{other}"),
    };

    let entries = claimed.as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{key:?}: one entry: {claimed}");
    let name = entries[0]["name"].as_str().expect("a name");
    assert!(
        !name.is_empty()
            && !name.contains(['/', '\\'])
            && !name.chars().any(char::is_control)
            && name != "."
            && name != "..",
        "{key:?}: the entry name {name:?} is one plain file name"
    );
    assert_eq!(
        entries[0]["size"],
        json!(content.len()),
        "{key:?}: the recorded size"
    );
    if !entries[0]["crc"].is_null() {
        assert_eq!(
            entries[0]["crc"],
            json!(crc32fast::hash(content)),
            "{key:?}: the recorded CRC-32"
        );
    }

    // Nothing but the archive and one file in each target, anywhere under the scratch folder.
    let mut found = Vec::new();
    files_under(scratch.path(), &mut found);
    let expected_files = 1 + targets.len();
    assert_eq!(
        found.len(),
        expected_files,
        "{key:?}: files after unpacking: {found:?}"
    );
    for target in &targets {
        let inside: Vec<&PathBuf> = found
            .iter()
            .filter(|path| path.starts_with(target))
            .collect();
        assert_eq!(
            inside.len(),
            1,
            "{key:?}: {} holds one file: {found:?}",
            target.display()
        );
        assert_eq!(
            inside[0].parent(),
            Some(target.as_path()),
            "{key:?}: no folders: {found:?}"
        );
        let unpacked = std::fs::read(inside[0]).expect("read what was unpacked");
        assert!(
            unpacked == content,
            "{key:?}: {} unpacked other bytes",
            inside[0].display()
        );
    }
}

/// The FNAME field of a gzip header (RFC 1952), if the header has one.
fn gzip_name(bytes: &[u8]) -> Option<String> {
    const FEXTRA: u8 = 4;
    const FNAME: u8 = 8;
    let flags = bytes[3];
    let mut at = 10;
    if flags & FEXTRA != 0 {
        at += 2 + usize::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]));
    }
    if flags & FNAME == 0 {
        return None;
    }
    let end = bytes[at..].iter().position(|&b| b == 0)? + at;
    Some(String::from_utf8_lossy(&bytes[at..end]).into_owned())
}

/// Every file (not folder) under `dir`, recursively; symlinks count as files and are not
/// followed.
fn files_under(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read a folder") {
        let entry = entry.expect("a folder entry");
        let kind = entry.file_type().expect("its type");
        if kind.is_dir() {
            files_under(&entry.path(), found);
        } else {
            found.push(entry.path());
        }
    }
}

/// Runs `program` with `args`; fails the test if it fails. Its stdout.
fn tool(program: &str, args: &[&std::ffi::OsStr]) -> Vec<u8> {
    let output = Command::new(program)
        .args(args)
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

// ---------------------------------------------------------------------------------------------
// Hostile events

/// A payload file of `tests/fixtures/hostile/` with the error `invoke` must give for it.
struct Refused {
    file: &'static str,
    /// What the error must say: where the problem is, and what was there.
    message: &'static str,
}

const REFUSED: &[Refused] = &[
    Refused { file: "not-json.json", message: "is not JSON" },
    Refused { file: "empty-file.json", message: "is not JSON" },
    Refused { file: "null.json", message: "payload: expected an object, received null" },
    Refused { file: "nested-too-deep.json", message: "recursion limit exceeded" },
    Refused { file: "api-gateway.json", message: "payload is not an S3 notification" },
    Refused { file: "records-empty.json", message: "payload.Records is empty" },
    Refused { file: "records-not-array.json", message: "payload.Records: expected an array, received an object" },
    Refused { file: "unknown-source.json", message: "payload.Records[0].eventSource" },
    Refused { file: "key-missing.json", message: "payload.Records[0].s3.object.key is missing" },
    Refused { file: "key-a-number.json", message: "payload.Records[0].s3.object.key: expected a string, received the number 42" },
    Refused { file: "size-a-string.json", message: "payload.Records[0].s3.object.size: expected a non-negative integer, received the string \"12\"" },
    Refused { file: "size-negative.json", message: "payload.Records[0].s3.object.size: expected a non-negative integer" },
    Refused { file: "key-bad-escape.json", message: "payload.Records[0].s3.object.key \"incoming/100%.csv\" has an invalid percent-escape \"%.c\" at byte 12" },
    Refused { file: "key-not-utf8.json", message: "payload.Records[0].s3.object.key \"incoming/%FF%FE.csv\" decodes to bytes that are not UTF-8" },
    Refused { file: "bucket-missing.json", message: "payload.Records[0].s3.bucket.name is missing" },
];

fn hostile_fixture(name: &str) -> PathBuf {
    s3_compressor_tests::workspace_root()
        .join("tests/fixtures/hostile")
        .join(name)
}

/// Each refused payload: exit status 1, an error naming where the problem is, no panic, and
/// the bucket exactly as it was.
#[test]
fn malformed_events_are_refused_with_where_and_nothing_changes() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    moto.put(BUCKET, "incoming/report.csv", csv_text(5000, 1));
    let before = moto.keys(BUCKET);
    for refused in REFUSED {
        let finished = invoke(&moto, &hostile_fixture(refused.file));
        assert_eq!(
            finished.status.code(),
            Some(1),
            "{}: {}",
            refused.file,
            finished.describe()
        );
        assert!(
            finished.stderr.contains(refused.message),
            "{}: the error says {:?}: {}",
            refused.file,
            refused.message,
            finished.describe()
        );
        assert!(
            !finished.stderr.contains("panicked"),
            "{}: {}",
            refused.file,
            finished.describe()
        );
        assert_eq!(
            moto.keys(BUCKET),
            before,
            "{}: the bucket is unchanged",
            refused.file
        );
    }
}

/// The payloads that are not errors: fields S3 may add are ignored, a removal is not a
/// creation, and an event of 10,000 records is read whole.
#[test]
fn odd_but_valid_events_do_what_they_say() {
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let content = csv_text(5000, 1);
    moto.put(BUCKET, "incoming/report.csv", content.clone());

    // A record with extra fields everywhere is still a creation.
    let response = response_of(&invoke(&moto, &hostile_fixture("extra-fields.json")));
    assert_eq!(
        response["results"][0]["outcome"], "compressed",
        "{response}"
    );
    assert!(moto.head(BUCKET, "incoming/report.csv").is_none());
    assert!(moto.head(BUCKET, "processed/report.zip").is_some());

    // A removal, and 10,000 of them in one event: ignored, nothing touched.
    moto.put(BUCKET, "incoming/kept.csv", content);
    let mut removal = s3_record(BUCKET, "incoming/kept.csv", None);
    removal["eventName"] = json!("ObjectRemoved:Delete");
    let records: Vec<Value> = (0..10_000).map(|_| removal.clone()).collect();
    let event = write_event(moto.dir(), "removals.json", &json!({ "Records": records }));
    let response = response_of(&invoke(&moto, &event));
    let results = response["results"].as_array().expect("results");
    assert_eq!(results.len(), 10_000);
    assert!(
        results.iter().all(|result| result["outcome"] == "skipped"
            && result["detail"] == "skipped: ObjectRemoved:Delete is not an object creation"),
        "{}",
        results[0]
    );
    assert!(moto.head(BUCKET, "incoming/kept.csv").is_some());
}
