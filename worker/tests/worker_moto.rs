//! The worker against a real S3 API (moto_server on 127.0.0.1), run as a user runs it:
//! `s3-compressor compress s3://BUCKET/KEY` and `s3-compressor invoke --event FILE`.
//!
//! Every test starts its own moto_server (nextest runs each test in a process of its own) and
//! judges by what a user of the bucket would see: listings, versions, metadata, the bytes the
//! outputs decode to with the usual command-line tools, exit codes and the printed response.

use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use s3_compressor_tests::events::{
    fixture, percent_decode, s3_event, s3_record, sqs_batch, sqs_message, write_event,
};
use s3_compressor_tests::faults::{Fault, Op, Times};
use s3_compressor_tests::process::{run, Finished, Running, HANG_LIMIT};
use s3_compressor_tests::{random, splitmix, FaultProxy, Moto};
use serde_json::{json, Value};

const MIB: usize = 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// Running the binary

/// `s3-compressor invoke --event FILE` (plus `args`), with the event written to a file.
fn invoke_with(moto: &Moto, event: &Value, args: &[&str]) -> Finished {
    let path = write_event(moto.dir(), &format!("event-{}.json", unique()), event);
    let mut command = moto.s3_compressor();
    command.args(args).arg("invoke").arg("--event").arg(&path);
    run(&mut command)
}

/// `invoke` that must succeed; its printed response.
fn invoke(moto: &Moto, event: &Value) -> Value {
    let finished = invoke_with(moto, event, &[]);
    assert!(finished.success(), "invoke failed: {}", finished.describe());
    response_of(&finished)
}

fn response_of(finished: &Finished) -> Value {
    serde_json::from_str(&finished.stdout).unwrap_or_else(|error| {
        panic!(
            "invoke printed something that is not JSON ({error}): {}",
            finished.describe()
        )
    })
}

/// `s3-compressor compress s3://BUCKET/KEY`.
fn compress(moto: &Moto, bucket: &str, key: &str) -> Finished {
    let mut command = moto.s3_compressor();
    command.arg("compress").arg(format!("s3://{bucket}/{key}"));
    run(&mut command)
}

/// The run succeeded and compressed every object of its event.
fn assert_all_compressed(finished: &Finished) {
    assert!(finished.success(), "{}", finished.describe());
    let response = response_of(finished);
    assert!(
        outcomes(&response)
            .iter()
            .all(|(_, outcome)| outcome == "compressed"),
        "{response:#}"
    );
}

/// `(key, outcome)` of each result of a direct (S3 or EventBridge) response.
fn outcomes(response: &Value) -> Vec<(String, String)> {
    response["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {response:#}"))
        .iter()
        .map(|result| {
            (
                result["key"].as_str().unwrap_or_default().to_owned(),
                result["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------------
// Content and decoding

/// CSV-like text: the kind of object the worker is mostly given.
fn text(len: usize, seed: u64) -> Vec<u8> {
    s3_compressor_tests::csv_text(len, seed)
}

/// Runs a command-line tool on a file and returns its stdout; fails the test on an error.
fn tool(program: &str, args: &[&str], file: &Path) -> Vec<u8> {
    let output = Command::new(program)
        .args(args)
        .arg(file)
        .env("LC_ALL", "C.UTF-8")
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"));
    assert!(
        output.status.success(),
        "{program} {args:?} {} failed: {}",
        file.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// Downloads an output into the server's folder and returns the local path.
fn download(moto: &Moto, bucket: &str, key: &str) -> PathBuf {
    let path = moto.dir().join(format!("download-{}", unique()));
    moto.download(bucket, key, &path);
    path
}

/// The entry names and the content of a zip output, as `unzip` shows them.
fn unzip(moto: &Moto, bucket: &str, key: &str) -> (Vec<String>, Vec<u8>) {
    unzip_file(&download(moto, bucket, key))
}

/// [`unzip`] of bytes already downloaded.
fn unzip_bytes(moto: &Moto, bytes: &[u8]) -> (Vec<String>, Vec<u8>) {
    let path = moto.write_file(&format!("zip-{}", unique()), bytes);
    unzip_file(&path)
}

fn unzip_file(path: &Path) -> (Vec<String>, Vec<u8>) {
    let names = String::from_utf8(tool("unzip", &["-Z1"], path)).expect("UTF-8 names");
    let content = tool("unzip", &["-p"], path);
    (names.lines().map(str::to_owned).collect(), content)
}

/// The CRC-64/NVME of `bytes`, base64 as S3 reports it.
fn crc64nvme(bytes: &[u8]) -> String {
    let crc = crc_fast::checksum(crc_fast::CrcAlgorithm::Crc64Nvme, bytes);
    base64::engine::general_purpose::STANDARD.encode(crc.to_be_bytes())
}

/// Checks what the output says about its source, and that its checksum is its content's.
fn assert_made_from(moto: &Moto, bucket: &str, output: &str, source: &str, stored: &Stored) {
    let head = moto
        .head(bucket, output)
        .unwrap_or_else(|| panic!("no output s3://{bucket}/{output}"));
    let meta = |name: &str| head.metadata.get(name).cloned().unwrap_or_default();
    assert_eq!(percent_decode(&meta("source-key")), source, "{head:#?}");
    assert!(meta("source-key").is_ascii(), "{head:#?}");
    assert_eq!(meta("source-etag"), stored.0.etag, "{head:#?}");
    assert_eq!(meta("source-size"), stored.1.to_string(), "{head:#?}");
    match &stored.0.version_id {
        Some(version) => assert_eq!(&meta("source-version-id"), version, "{head:#?}"),
        None => assert!(
            !head.metadata.contains_key("source-version-id"),
            "{head:#?}"
        ),
    }
    let bytes = moto.get(bucket, output);
    assert_eq!(
        head.crc64nvme.as_deref(),
        Some(crc64nvme(&bytes).as_str()),
        "the output's stored CRC-64/NVME is its content's: {head:#?}"
    );
}

/// A deleted source in a versioned bucket: hidden behind a delete marker, every version still
/// there to restore (`aws s3api delete-object --version-id MARKER` brings it back).
fn assert_deleted_recoverably(moto: &Moto, bucket: &str, key: &str, versions: &[&str]) {
    let listed: Vec<_> = moto
        .versions(bucket, key)
        .into_iter()
        .filter(|version| version.key == key)
        .collect();
    let latest: Vec<_> = listed.iter().filter(|version| version.is_latest).collect();
    assert!(
        latest.len() == 1 && latest[0].delete_marker,
        "s3://{bucket}/{key}: the latest is a delete marker: {listed:?}"
    );
    for version in versions {
        assert!(
            listed
                .iter()
                .any(|listed| listed.version_id == *version && !listed.delete_marker),
            "s3://{bucket}/{key}: version {version} kept, restorable: {listed:?}"
        );
    }
    assert!(
        moto.head(bucket, key).is_none(),
        "s3://{bucket}/{key} reads as deleted"
    );
}

/// What was uploaded: the write's answer and the size.
struct Stored(s3_compressor_tests::moto::Stored, usize);

fn put(moto: &Moto, bucket: &str, key: &str, body: &[u8]) -> Stored {
    Stored(moto.put(bucket, key, body.to_vec()), body.len())
}

/// Makes a fixture's object the one uploaded: its version id, ETag and size (the fixtures'
/// stand for objects of a real bucket), with the field names of `(etag, version id)`.
fn describe(object: &mut Value, stored: &Stored, (etag, version_id): (&str, &str)) {
    object[etag] = json!(stored.0.etag);
    object["size"] = json!(stored.1);
    object[version_id] = json!(stored.0.version_id.as_deref().expect("versioned"));
}

// ---------------------------------------------------------------------------------------------
// Keys and event shapes

#[test]
fn keys_as_s3_encodes_them_land_decoded_and_unzip_to_the_original_name_and_bytes() {
    let moto = Moto::start();
    moto.create_bucket("keys");
    let cases = [
        (
            "incoming/q1 report + appendix 100% final.csv",
            "processed/q1 report + appendix 100% final.zip",
        ),
        (
            "incoming/日本/データ 2024.csv",
            "processed/日本/データ 2024.zip",
        ),
        (
            "incoming/a/b/c/d/e/f/g/h/i/j/deep.log",
            "processed/a/b/c/d/e/f/g/h/i/j/deep.zip",
        ),
        (
            "incoming/%41 is not an escape.txt",
            "processed/%41 is not an escape.zip",
        ),
        ("incoming/a+b=c&d (1).json", "processed/a+b=c&d (1).zip"),
    ];
    let mut stored = Vec::new();
    for (index, (source, _)) in cases.iter().enumerate() {
        stored.push(put(
            &moto,
            "keys",
            source,
            &text(10_000 + index, index as u64),
        ));
    }
    let sources: Vec<&str> = cases.iter().map(|(source, _)| *source).collect();
    let event = s3_event("keys", &sources);
    // The event carries the keys as S3 writes them.
    assert_eq!(
        event["Records"][0]["s3"]["object"]["key"],
        "incoming/q1+report+%2B+appendix+100%25+final.csv"
    );
    assert_eq!(
        event["Records"][1]["s3"]["object"]["key"],
        "incoming/%E6%97%A5%E6%9C%AC/%E3%83%87%E3%83%BC%E3%82%BF+2024.csv"
    );

    let response = invoke(&moto, &event);

    let expected: Vec<(String, String)> = sources
        .iter()
        .map(|key| ((*key).to_owned(), "compressed".to_owned()))
        .collect();
    assert_eq!(outcomes(&response), expected, "{response:#}");
    let mut outputs: Vec<String> = cases
        .iter()
        .map(|(_, output)| (*output).to_owned())
        .collect();
    outputs.sort();
    assert_eq!(
        moto.keys("keys"),
        outputs,
        "each output at its decoded key, every source deleted"
    );
    for (index, (source, output)) in cases.iter().enumerate() {
        let (names, content) = unzip(&moto, "keys", output);
        let base_name = source.rsplit('/').next().unwrap_or_default();
        assert_eq!(names, [base_name], "the entry in {output}");
        assert!(
            content == text(10_000 + index, index as u64),
            "{output} unzips to the bytes of {source}"
        );
        assert_made_from(&moto, "keys", output, source, &stored[index]);
        let head = moto.head("keys", output).expect("output");
        assert_eq!(head.content_type.as_deref(), Some("application/zip"));
        assert_made_by(&moto, &head.metadata, "incoming/");
    }
}

/// The output's metadata names the worker (as `--version` does), the config (its hash, as
/// `check-config --json` gives it) and the rule that made it.
fn assert_made_by(moto: &Moto, metadata: &std::collections::HashMap<String, String>, rule: &str) {
    let version = run(moto.s3_compressor().arg("--version"));
    let config = run(moto.s3_compressor().args(["check-config", "--json"]));
    let config: Value = serde_json::from_str(&config.stdout).expect("check-config --json");
    let meta = |name: &str| metadata.get(name).cloned().unwrap_or_default();
    assert_eq!(
        version.stdout.lines().next(),
        Some(format!("s3-compressor {}", meta("worker-version")).as_str()),
        "{metadata:?}"
    );
    assert_eq!(config["hash"], meta("config-hash"), "{metadata:?}");
    assert_eq!(percent_decode(&meta("rule-prefix")), rule, "{metadata:?}");
}

/// S3 takes at most 2 KB of user metadata, which a key of 1,000 bytes of non-ASCII characters,
/// percent-encoded, would pass three times over (moto does not enforce the limit, so the test
/// measures it): the output records the key's SHA-256 instead, stays within 2 KB, and a
/// redelivery still recognises it as made from this very source.
#[test]
fn a_key_too_long_to_record_in_metadata_is_compressed_and_recognised_by_its_hash() {
    let moto = Moto::start();
    let bucket = "long-keys";
    moto.create_versioned_bucket(bucket);
    let name: String = "日".repeat(330);
    let key = format!("incoming/{name}.txt");
    assert_eq!(key.len(), 1_003);
    let content = text(5_000, 9);
    let stored = put(&moto, bucket, &key, &content);
    let mut event = s3_event(bucket, &[&key]);
    describe(
        &mut event["Records"][0]["s3"]["object"],
        &stored,
        ("eTag", "versionId"),
    );

    let response = invoke(&moto, &event);
    assert_eq!(
        outcomes(&response),
        [(key.clone(), "compressed".to_owned())],
        "{response:#}"
    );
    let output = format!("processed/{name}.zip");
    let head = moto
        .head(bucket, &output)
        .unwrap_or_else(|| panic!("no output: {:?}", moto.keys(bucket)));
    // As S3 counts it (names and values), and with each name's `x-amz-meta-` too.
    let bytes: usize = head
        .metadata
        .iter()
        .map(|(name, value)| "x-amz-meta-".len() + name.len() + value.len())
        .sum();
    assert!(
        bytes <= 2_048,
        "{bytes} bytes of metadata: {:#?}",
        head.metadata
    );
    assert_eq!(
        head.metadata.get("source-version-id"),
        stored.0.version_id.as_ref(),
        "{head:#?}"
    );
    assert!(unzip(&moto, bucket, &output).1 == content);

    // A redelivery of the same event finds the output made from this source.
    let again = invoke(&moto, &event);
    assert_eq!(
        outcomes(&again),
        [(key.clone(), "already_done".to_owned())],
        "{again:#}"
    );
    assert_eq!(moto.keys(bucket), [output]);
}

#[test]
fn several_records_in_one_event_each_get_a_result_and_an_empty_file_is_archived() {
    let moto = Moto::start();
    // The fixture's bucket; versioned, as its first record names a version.
    moto.create_versioned_bucket("files");
    let report = "incoming/teams/emea/finance/2024/q1/Q1 report + appendix 100% final.csv";
    let empty = "incoming/日本/empty marker.txt";
    let report_stored = put(&moto, "files", report, &text(52_311, 7));
    let empty_stored = put(&moto, "files", empty, b"");
    let mut event = fixture("s3-multi.json");
    describe(
        &mut event["Records"][0]["s3"]["object"],
        &report_stored,
        ("eTag", "versionId"),
    );

    let response = invoke(&moto, &event);

    assert_eq!(
        outcomes(&response),
        [
            (report.to_owned(), "compressed".to_owned()),
            (empty.to_owned(), "compressed".to_owned()),
            ("incoming/old draft.csv".to_owned(), "skipped".to_owned()),
        ],
        "{response:#}"
    );
    let deleted = &response["results"][2]["detail"];
    assert!(
        deleted
            .as_str()
            .is_some_and(|detail| detail.contains("ObjectRemoved:Delete")),
        "{deleted}"
    );
    let report_output = "processed/teams/emea/finance/2024/q1/Q1 report + appendix 100% final.zip";
    let empty_output = "processed/日本/empty marker.zip";
    assert_eq!(
        moto.keys("files"),
        [report_output, empty_output],
        "both outputs, no source left"
    );
    for source in [
        "incoming/teams/emea/finance/2024/q1/Q1 report + appendix 100% final.csv",
        "incoming/日本/empty marker.txt",
    ] {
        assert_deleted_recoverably(&moto, "files", source, &[]);
    }

    let (names, content) = unzip(&moto, "files", report_output);
    assert_eq!(names, ["Q1 report + appendix 100% final.csv"]);
    assert!(content == text(52_311, 7));
    assert_made_from(&moto, "files", report_output, report, &report_stored);

    let (names, content) = unzip(&moto, "files", empty_output);
    assert_eq!(names, ["empty marker.txt"]);
    assert!(content.is_empty(), "the empty file stays empty");
    assert_made_from(&moto, "files", empty_output, empty, &empty_stored);
}

#[test]
fn the_s3_test_event_is_acknowledged_and_changes_nothing() {
    let moto = Moto::start();
    moto.create_bucket("files");
    put(&moto, "files", "incoming/waiting.csv", b"a,b\n1,2\n");

    let response = invoke(&moto, &fixture("s3-test-event.json"));

    assert_eq!(
        response["status"], "s3:TestEvent acknowledged",
        "{response:#}"
    );
    assert_eq!(moto.keys("files"), ["incoming/waiting.csv"]);
}

#[test]
fn an_sqs_batch_lists_only_the_message_it_could_not_read() {
    let moto = Moto::start();
    moto.create_versioned_bucket("files");
    let key = "incoming/batch/orders 2024-05-01.json";
    let orders = br#"{"order":1,"total":12.5}
{"order":2,"total":7}
"#;
    let stored = put(&moto, "files", key, orders);
    // The fixture: an S3 notification, an S3 test event, and a body that is neither.
    let mut batch = fixture("sqs-batch.json");
    let mut body: Value = serde_json::from_str(
        batch["Records"][0]["body"]
            .as_str()
            .expect("the first body is text"),
    )
    .expect("the first body is JSON");
    describe(
        &mut body["Records"][0]["s3"]["object"],
        &stored,
        ("eTag", "versionId"),
    );
    batch["Records"][0]["body"] = json!(body.to_string());

    let response = invoke(&moto, &batch);

    assert_eq!(
        response,
        json!({ "batchItemFailures": [{ "itemIdentifier": "c8f1b3a2-5d4e-4f60-9a7b-1e2d3c4b5a69" }] })
    );
    let output = "processed/batch/orders 2024-05-01.zip";
    assert_eq!(moto.keys("files"), [output]);
    let (names, content) = unzip(&moto, "files", output);
    assert_eq!(names, ["orders 2024-05-01.json"]);
    assert_eq!(content, orders);
}

#[test]
fn an_sqs_message_carrying_an_sns_notification_is_compressed() {
    let moto = Moto::start();
    moto.create_bucket("files");
    let key = "incoming/shared/Budget (2024) v3.xlsx";
    let sheet = random(88_213, 3);
    put(&moto, "files", key, &sheet);

    let response = invoke(&moto, &fixture("sqs-sns.json"));

    assert_eq!(response, json!({ "batchItemFailures": [] }));
    let output = "processed/shared/Budget (2024) v3.zip";
    assert_eq!(moto.keys("files"), [output]);
    let (names, content) = unzip(&moto, "files", output);
    assert_eq!(names, ["Budget (2024) v3.xlsx"]);
    assert!(content == sheet);
}

#[test]
fn a_batch_whose_object_failed_transiently_is_returned_to_the_queue() {
    let mut moto = Moto::start();
    moto.create_bucket("files");
    let key = "incoming/later.csv";
    put(&moto, "files", key, b"x\n");
    let batch = sqs_batch(vec![
        sqs_message("m-ok", &s3_event("files", &[key]).to_string()),
        sqs_message("m-test", &fixture("s3-test-event.json").to_string()),
    ]);
    moto.stop();

    let finished = invoke_with(&moto, &batch, &[]);

    // The batch as a whole is answered: only the message whose object could not be read
    // goes back to the queue.
    assert!(finished.success(), "{}", finished.describe());
    assert_eq!(
        response_of(&finished),
        json!({ "batchItemFailures": [{ "itemIdentifier": "m-ok" }] })
    );
}

/// 2,000 S3 events through four `invoke` runs at once, 500 records each, each run processing
/// its objects 32 at a time, against one moto: every object is compressed exactly once and
/// decodes back to what was put, no source is left, nothing else is written, and each run's
/// peak resident set stays within the worker's limit.
#[test]
fn two_thousand_events_through_concurrent_invocations_are_each_compressed_once() {
    const OBJECTS: usize = 2_000;
    const INVOCATIONS: usize = 4;
    let moto = Moto::start();
    moto.create_bucket("load");
    // 0 bytes for every 50th, a few of 2 to 9 MiB (outputs in parts), the rest up to 64 KiB.
    let size = |index: usize| match index {
        _ if index % 50 == 0 => 0,
        1..=8 => (index + 1) * MIB,
        _ => index * 7_919 % (64 * 1024),
    };
    let key = |index: usize| format!("incoming/load/{}/{index:04}.csv", index % 7);
    let started = Instant::now();
    let mut sent = Vec::with_capacity(OBJECTS);
    for index in 0..OBJECTS {
        let body = text(size(index), index as u64 * 1_000);
        moto.put("load", &key(index), body.as_slice());
        sent.push((
            key(index),
            body.len() as u64,
            s3_compressor_tests::crc32(&body),
        ));
    }
    let put_in = started.elapsed();

    let keys: Vec<String> = (0..OBJECTS).map(key).collect();
    let runs: Vec<Running> = keys
        .chunks(OBJECTS / INVOCATIONS)
        .enumerate()
        .map(|(run, keys)| {
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let event = write_event(
                moto.dir(),
                &format!("load-{run}.json"),
                &s3_event("load", &keys),
            );
            let mut command = moto.s3_compressor();
            command
                .env("RUST_LOG", "warn")
                .args(["invoke", "--event"])
                .arg(event);
            Running::spawn(&mut command)
        })
        .collect();
    let started = Instant::now();
    let finished: Vec<(Finished, u64)> = std::thread::scope(|scope| {
        let runs: Vec<_> = runs
            .into_iter()
            .map(|run| {
                scope.spawn(move || {
                    let (finished, memory) = run.finish_measuring_memory(HANG_LIMIT);
                    (finished, memory.peak)
                })
            })
            .collect();
        runs.into_iter()
            .map(|run| run.join().expect("a run's thread"))
            .collect()
    });
    let processed_in = started.elapsed();

    for (finished, _) in &finished {
        assert!(finished.success(), "{}", finished.describe());
        let response = response_of(finished);
        let results = outcomes(&response);
        assert_eq!(results.len(), OBJECTS / INVOCATIONS);
        assert!(
            results.iter().all(|(_, outcome)| outcome == "compressed"),
            "{response:#}"
        );
    }
    let output_of = |key: &str| {
        let stem = key
            .strip_prefix("incoming/")
            .and_then(|k| k.strip_suffix(".csv"));
        format!("processed/{}.zip", stem.expect("a source key"))
    };
    let mut expected: Vec<String> = keys.iter().map(|key| output_of(key)).collect();
    expected.sort();
    assert_eq!(
        moto.keys("load"),
        expected,
        "one output per source, no source left"
    );
    for (key, len, crc) in &sent {
        let output = output_of(key);
        let name = key.rsplit('/').next().unwrap_or_default().to_owned();
        assert_eq!(
            s3_compressor_tests::zip_entry(&moto.get("load", &output)),
            (name, *len, *crc),
            "{output} decodes to {key}"
        );
    }
    let peak = finished
        .iter()
        .map(|(_, peak)| *peak)
        .max()
        .unwrap_or_default();
    eprintln!(
        "{OBJECTS} objects ({} MiB) put in {put_in:.1?}; {INVOCATIONS} invocations of {} records \
         at once processed them in {processed_in:.1?} ({:.0} objects/s), peak RSS of a run {} MiB \
         (VmHWM; each: {:?} MiB)",
        sent.iter().map(|(_, len, _)| len).sum::<u64>() / MIB as u64,
        OBJECTS / INVOCATIONS,
        OBJECTS as f64 / processed_in.as_secs_f64(),
        peak / 1024,
        finished
            .iter()
            .map(|(_, peak)| peak / 1024)
            .collect::<Vec<_>>()
    );
    assert!(
        peak <= PEAK_RSS_LIMIT_KIB,
        "a run's peak RSS was {peak} KiB, over {PEAK_RSS_LIMIT_KIB} KiB"
    );
}

/// The shipped Lambda function's memory (`MemorySize` in cloudformation/lambda-template.yaml).
const LAMBDA_MEMORY_KIB: u64 = 512 * 1024;

/// 32 small objects in one event, as tar.zst at level 19, the level the shipped config uses
/// for archives: zstd is told each object's size and sizes its window and tables to it, and
/// the memory budget counts what each holds, so the batch stays within the memory of the
/// shipped Lambda function. (Without the size, level 19 takes 80 MiB of tables per object.)
#[test]
fn a_batch_of_small_level_19_tar_zst_objects_stays_within_the_lambda_memory() {
    const OBJECTS: usize = 32;
    let moto = Moto::start();
    moto.create_bucket("bundles");
    let config = moto.write_file(
        "bundles.toml",
        b"[[rule]]\nprefix = \"incoming/\"\noutput_prefix = \"processed/\"\nformat = \"tar.zst\"\nlevel = 19\n",
    );
    let keys: Vec<String> = (0..OBJECTS)
        .map(|index| format!("incoming/site-{index:02}.html"))
        .collect();
    let sizes: Vec<usize> = (0..OBJECTS).map(|index| 4096 + index * 997).collect();
    for (index, key) in keys.iter().enumerate() {
        put(&moto, "bundles", key, &text(sizes[index], index as u64));
    }
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    // With each object's size, as S3's notifications carry it: the worker reserves memory by it.
    let mut event = s3_event("bundles", &keys);
    for (record, size) in event["Records"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .zip(&sizes)
    {
        record["s3"]["object"]["size"] = json!(size);
    }
    let event = write_event(moto.dir(), "bundles.json", &event);
    let mut command = moto.s3_compressor();
    command
        .env("RUST_LOG", "warn")
        .arg("--config")
        .arg(&config)
        .args(["invoke", "--event"])
        .arg(event);

    let (finished, memory) = Running::spawn(&mut command).finish_measuring_memory(HANG_LIMIT);

    assert_all_compressed(&finished);
    let expected: Vec<String> = (0..OBJECTS)
        .map(|index| format!("processed/site-{index:02}.tar.zst"))
        .collect();
    assert_eq!(moto.keys("bundles"), expected);
    eprintln!(
        "{OBJECTS} tar.zst objects at level 19: peak RSS {} MiB (VmHWM)",
        memory.peak / 1024
    );
    assert!(
        memory.peak < LAMBDA_MEMORY_KIB,
        "peak RSS {} KiB, over the Lambda function's {LAMBDA_MEMORY_KIB} KiB",
        memory.peak
    );
}

/// A Batch Operations job in schema `version`, the keys form-encoded as both schemas send
/// them: 1.0 names the bucket by ARN, 2.0 by name.
fn batch_job(version: &str, bucket: &str, tasks: &[(&str, &str)]) -> Value {
    let encoded: Vec<(&str, String)> = tasks
        .iter()
        .map(|(task_id, key)| (*task_id, s3_compressor_tests::events::form_encode(key)))
        .collect();
    let sent: Vec<(&str, &str)> = encoded
        .iter()
        .map(|(task_id, key)| (*task_id, key.as_str()))
        .collect();
    batch_job_as_sent(version, bucket, &sent)
}

/// [`batch_job`] with the keys exactly as given.
fn batch_job_as_sent(version: &str, bucket: &str, tasks: &[(&str, &str)]) -> Value {
    let tasks: Vec<Value> = tasks
        .iter()
        .map(|(task_id, key)| match version {
            "1.0" => json!({
                "taskId": task_id,
                "s3Key": key,
                "s3VersionId": null,
                "s3BucketArn": format!("arn:aws:s3:::{bucket}"),
            }),
            _ => json!({
                "taskId": task_id, "s3Bucket": bucket, "s3Key": key, "s3VersionId": null
            }),
        })
        .collect();
    json!({
        "invocationSchemaVersion": version,
        "invocationId": format!("invocation-{version}"),
        "job": {"id": "job-1", "userArguments": {"note": "ignored"}},
        "tasks": tasks,
    })
}

/// `task id -> (result code, result string)` of a Batch Operations response, after checking
/// that it echoes the invocation.
fn batch_results(response: &Value, version: &str) -> Vec<(String, String, String)> {
    assert_eq!(response["invocationSchemaVersion"], version, "{response:#}");
    assert_eq!(response["invocationId"], format!("invocation-{version}"));
    assert_eq!(response["treatMissingKeysAs"], "PermanentFailure");
    response["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {response:#}"))
        .iter()
        .map(|result| {
            let field = |name: &str| result[name].as_str().unwrap_or_default().to_owned();
            (field("taskId"), field("resultCode"), field("resultString"))
        })
        .collect()
}

/// Both schema versions, every kind of answer in one job, each result string starting with
/// the label a person filters the completion report on: compressed, already done and skipped
/// objects are `Succeeded` (nothing is left to do), a missing one `PermanentFailure` (it was
/// asked for and is not there), a collision `PermanentFailure`, an S3 that fails
/// `TemporaryFailure` (Batch Operations tries it again), a task that names no object
/// `PermanentFailure` with the reason; the invocation itself succeeds.
#[test]
fn a_batch_operations_job_answers_each_task_with_its_own_result_code() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(moto.endpoint());
    for version in ["1.0", "2.0"] {
        let bucket = format!("job-{}", version.replace('.', "-"));
        moto.create_bucket(&bucket);
        let spaced = "incoming/year 2024/a+b%.csv";
        let spaced_content = text(30_000, 3);
        put(&moto, &bucket, spaced, &spaced_content);
        put(&moto, &bucket, "incoming/report.csv", &text(10_000, 4));
        put(&moto, &bucket, "incoming/report.txt", &text(10_000, 5));
        put(&moto, &bucket, "incoming/flaky.csv", &text(10_000, 6));
        put(&moto, &bucket, "notes/readme.txt", b"not under a rule\n");
        // report.csv takes processed/report.zip first; report.txt then collides with it.
        let first = invoke(&moto, &s3_event(&bucket, &["incoming/report.csv"]));
        assert_eq!(outcomes(&first)[0].1, "compressed");
        proxy.inject_for_key(
            Op::GetObject,
            "incoming/flaky.csv",
            Fault::InternalError,
            Times::Always,
        );

        let mut job = batch_job(
            version,
            &bucket,
            &[
                ("t-spaced", spaced),
                ("t-again", "incoming/report.csv"),
                ("t-clash", "incoming/report.txt"),
                ("t-flaky", "incoming/flaky.csv"),
                ("t-outside", "notes/readme.txt"),
                ("t-missing", "incoming/never-uploaded.csv"),
                ("t-bad", "incoming/unnamed.csv"),
            ],
        );
        // A task that names no bucket fails alone.
        let bad = &mut job["tasks"][6];
        if version == "1.0" {
            bad["s3BucketArn"] = json!("not-an-arn");
        } else {
            bad["s3Bucket"] = json!("");
        }
        let path = write_event(moto.dir(), &format!("job-{version}.json"), &job);
        let finished = run(moto
            .s3_compressor()
            .env("AWS_ENDPOINT_URL", proxy.endpoint())
            .arg("invoke")
            .arg("--event")
            .arg(&path));
        proxy.clear();
        assert!(finished.success(), "{version}: {}", finished.describe());
        let results = batch_results(&response_of(&finished), version);
        let codes: Vec<(&str, &str)> = results
            .iter()
            .map(|(task, code, _)| (task.as_str(), code.as_str()))
            .collect();
        assert_eq!(
            codes,
            [
                ("t-spaced", "Succeeded"),
                ("t-again", "Succeeded"),
                ("t-clash", "PermanentFailure"),
                ("t-flaky", "TemporaryFailure"),
                ("t-outside", "Succeeded"),
                ("t-missing", "PermanentFailure"),
                ("t-bad", "PermanentFailure"),
            ],
            "{version}: {results:#?}"
        );
        let labels: Vec<(&str, &str)> = results
            .iter()
            .map(|(task, _, said)| {
                (
                    task.as_str(),
                    said.split_once(": ").map_or("", |(label, _)| label),
                )
            })
            .collect();
        assert_eq!(
            labels,
            [
                ("t-spaced", "compressed"),
                ("t-again", "already_done"),
                ("t-clash", "failed_permanent"),
                ("t-flaky", "failed_transient"),
                ("t-outside", "skipped"),
                ("t-missing", "missing"),
                ("t-bad", "invalid_task"),
            ],
            "{version}: {results:#?}"
        );
        let detail = |task: &str| {
            results
                .iter()
                .find(|(id, _, _)| id == task)
                .map(|(_, _, detail)| detail.clone())
                .unwrap_or_default()
        };
        assert!(
            detail("t-spaced")
                .starts_with("compressed: compressed to processed/year 2024/a+b%.zip"),
            "{version}: {}",
            detail("t-spaced")
        );
        assert!(
            detail("t-clash").contains("made from incoming/report.csv"),
            "{}",
            detail("t-clash")
        );
        assert!(
            detail("t-flaky").starts_with("failed_transient: failed (transient"),
            "{}",
            detail("t-flaky")
        );
        assert!(
            detail("t-outside").starts_with("skipped:"),
            "{}",
            detail("t-outside")
        );
        assert!(
            detail("t-missing").contains("no longer exists"),
            "{}",
            detail("t-missing")
        );
        let expected_bad = if version == "1.0" {
            "invalid_task: payload.tasks[6].s3BucketArn is the string \"not-an-arn\"; expected \
             a bucket ARN, arn:PARTITION:s3:::BUCKET"
        } else {
            "invalid_task: payload.tasks[6].s3Bucket is empty"
        };
        assert_eq!(detail("t-bad"), expected_bad, "{version}");

        assert!(unzip(&moto, &bucket, "processed/year 2024/a+b%.zip").1 == spaced_content);
        assert_eq!(
            moto.keys(&bucket),
            [
                "incoming/flaky.csv",
                "incoming/report.txt",
                "notes/readme.txt",
                "processed/report.zip",
                "processed/year 2024/a+b%.zip",
            ],
            "{version}: what failed or is outside the rules is kept"
        );

        // Batch Operations retries the temporary failure; once S3 answers, it succeeds.
        let retry = invoke(
            &moto,
            &batch_job(version, &bucket, &[("t-flaky", "incoming/flaky.csv")]),
        );
        assert_eq!(
            batch_results(&retry, version)[0].1,
            "Succeeded",
            "{retry:#}"
        );
    }
}

/// Schema 2.0 form-encodes keys as 1.0 does (a space as `+`, a `+` as `%2B`): each task
/// compresses the object its key names, not a key that does not exist.
#[test]
fn a_batch_operations_2_0_job_compresses_the_objects_its_form_encoded_keys_name() {
    let moto = Moto::start();
    let bucket = "job-2-0";
    moto.create_bucket(bucket);
    let spaced = text(20_000, 7);
    let plussed = text(20_000, 8);
    put(&moto, bucket, "incoming/batch me.txt", &spaced);
    put(&moto, bucket, "incoming/1+1.txt", &plussed);

    let job = batch_job_as_sent(
        "2.0",
        bucket,
        &[
            ("t-space", "incoming/batch+me.txt"),
            ("t-plus", "incoming/1%2B1.txt"),
        ],
    );
    let results = batch_results(&invoke(&moto, &job), "2.0");
    let expected = [
        ("t-space", "compressed to processed/batch me.zip (20000 -> "),
        ("t-plus", "compressed to processed/1+1.zip (20000 -> "),
    ];
    assert_eq!(results.len(), expected.len(), "{results:#?}");
    for ((task, code, said), (expected_task, expected_said)) in results.iter().zip(expected) {
        assert_eq!(
            (task.as_str(), code.as_str()),
            (expected_task, "Succeeded"),
            "{said}"
        );
        assert!(said.contains(expected_said), "{task}: {said}");
    }
    assert!(unzip(&moto, bucket, "processed/batch me.zip").1 == spaced);
    assert!(unzip(&moto, bucket, "processed/1+1.zip").1 == plussed);
    assert_eq!(
        moto.keys(bucket),
        ["processed/1+1.zip", "processed/batch me.zip"],
        "the sources deleted once proven"
    );
}

#[test]
fn an_eventbridge_object_created_event_is_compressed_with_its_key_as_sent() {
    let moto = Moto::start();
    moto.create_versioned_bucket("files");
    // EventBridge sends keys as they are: this `+` and `%` are in the key itself.
    let key = "incoming/scans/March report+notes 50%.pdf";
    let scan = random(183_004, 5);
    let stored = put(&moto, "files", key, &scan);
    let mut event = fixture("eventbridge-object-created.json");
    describe(
        &mut event["detail"]["object"],
        &stored,
        ("etag", "version-id"),
    );

    let response = invoke(&moto, &event);

    assert_eq!(
        outcomes(&response),
        [(key.to_owned(), "compressed".to_owned())]
    );
    let output = "processed/scans/March report+notes 50%.zip";
    assert_eq!(moto.keys("files"), [output]);
    let (names, content) = unzip(&moto, "files", output);
    assert_eq!(names, ["March report+notes 50%.pdf"]);
    assert!(content == scan);
    assert_made_from(&moto, "files", output, key, &stored);
}

// ---------------------------------------------------------------------------------------------
// Deliveries: repeated, concurrent, overtaken by a newer upload

#[test]
fn a_repeated_delivery_is_already_done_and_writes_no_second_output() {
    let moto = Moto::start();
    moto.create_versioned_bucket("repeat");
    let key = "incoming/daily/report.csv";
    let stored = put(&moto, "repeat", key, &text(200_000, 1));
    let version = stored.0.version_id.clone().expect("versioned");
    let event = json!({ "Records": [s3_record("repeat", key, Some(&version))] });

    let first = invoke(&moto, &event);
    let second = invoke(&moto, &event);

    assert_eq!(
        outcomes(&first),
        [(key.to_owned(), "compressed".to_owned())]
    );
    assert_eq!(
        outcomes(&second),
        [(key.to_owned(), "already_done".to_owned())],
        "{second:#}"
    );
    let output = "processed/daily/report.zip";
    let outputs = moto.versions("repeat", "processed/");
    assert_eq!(outputs.len(), 1, "one version of the output: {outputs:?}");
    assert_deleted_recoverably(&moto, "repeat", key, &[&version]);
    assert_eq!(
        moto.versions("repeat", "incoming/").len(),
        2,
        "the second delivery adds no second delete marker"
    );
    assert!(unzip(&moto, "repeat", output).1 == text(200_000, 1));

    // `compress` on the same object again says the same, and exits 0.
    let again = compress(&moto, "repeat", key);
    assert!(again.success(), "{}", again.describe());
    assert!(
        again.stdout.starts_with(&format!(
            "s3://repeat/{key}: already compressed to {output}"
        )),
        "{}",
        again.describe()
    );
}

#[test]
fn concurrent_deliveries_of_one_event_make_one_output() {
    let moto = Moto::start();
    // Text makes an output of one PutObject, noise one of a multipart upload: both writes are
    // conditional, and the loser of the race must find the winner's output.
    for (bucket, versioned) in [("race-versioned", true), ("race-plain", false)] {
        let content = if versioned {
            moto.create_versioned_bucket(bucket);
            text(12 * MIB, 11)
        } else {
            moto.create_bucket(bucket);
            random(12 * MIB, 11)
        };
        let key = "incoming/big/export.csv";
        let stored = put(&moto, bucket, key, &content);
        let event = json!({
            "Records": [s3_record(bucket, key, stored.0.version_id.as_deref())]
        });
        let path = write_event(moto.dir(), &format!("{bucket}.json"), &event);
        let spawn = || {
            let mut command = moto.s3_compressor();
            command.arg("invoke").arg("--event").arg(&path);
            Running::spawn(&mut command)
        };

        let (one, two) = (spawn(), spawn());
        let (one, two) = (one.finish(HANG_LIMIT), two.finish(HANG_LIMIT));

        let mut seen = Vec::new();
        for finished in [&one, &two] {
            assert!(finished.success(), "{bucket}: {}", finished.describe());
            let response = response_of(finished);
            let [(_, outcome)] = outcomes(&response)
                .try_into()
                .unwrap_or_else(|_| panic!("one result: {response:#}"));
            seen.push(outcome);
        }
        seen.sort();
        // Against S3 one conditional write wins and the other delivery finds its output
        // (already_done). moto checks the condition and writes in two steps, so two writes at
        // the same moment can both pass: then both say compressed, of identical outputs.
        assert!(
            seen == ["already_done", "compressed"] || seen == ["compressed", "compressed"],
            "{bucket}: {seen:?}"
        );
        let output = "processed/big/export.zip";
        assert_eq!(
            moto.keys(bucket),
            [output],
            "{bucket}: one output, the source deleted"
        );
        assert!(unzip(&moto, bucket, output).1 == content, "{bucket}");
        if versioned {
            let version = stored.0.version_id.as_deref().unwrap_or_default();
            assert_deleted_recoverably(&moto, bucket, key, &[version]);
            for output_version in moto.versions(bucket, "processed/") {
                let id = Some(output_version.version_id.as_str());
                let head = moto.head_version(bucket, output, id).expect("that version");
                assert_eq!(
                    head.metadata.get("source-version-id").map(String::as_str),
                    Some(version),
                    "{bucket}: every output version is made from the delivered version"
                );
                let bytes = moto.get_version(bucket, output, id).expect("that version");
                assert!(unzip_bytes(&moto, &bytes).1 == content, "{bucket}");
            }
        }
        assert!(
            moto.open_uploads(bucket).is_empty(),
            "{bucket}: no upload left open"
        );
    }
}

/// The events of two versions of a key delivered at the same moment: whichever writes first,
/// after the retries Lambda would make the output is the newer version's, and both versions
/// stay restorable.
#[test]
fn events_for_two_versions_at_once_leave_the_newer_versions_output() {
    let moto = Moto::start();
    moto.create_versioned_bucket("at-once");
    for round in 0..3u64 {
        let key = format!("incoming/ledger-{round}.csv");
        let v1 = put(&moto, "at-once", &key, &text(400_000, 10 + round));
        let v2 = put(&moto, "at-once", &key, &text(350_000, 20 + round));
        let versions = [&v1, &v2].map(|stored| stored.0.version_id.clone().expect("versioned"));
        let events = versions.clone().map(|version| {
            let event = json!({ "Records": [s3_record("at-once", &key, Some(&version))] });
            write_event(
                moto.dir(),
                &format!("at-once-{round}-{version}.json"),
                &event,
            )
        });
        let spawn = |path: &PathBuf| {
            let mut command = moto.s3_compressor();
            command.arg("invoke").arg("--event").arg(path);
            Running::spawn(&mut command)
        };
        let (one, two) = (spawn(&events[0]), spawn(&events[1]));
        let (one, two) = (one.finish(HANG_LIMIT), two.finish(HANG_LIMIT));
        // A delivery that lost the race to the output fails transiently and is retried.
        for (path, finished) in events.iter().zip([one, two]) {
            if !finished.success() {
                assert!(
                    finished.stderr.contains("RetryableFailure")
                        || finished.stderr.contains("transient"),
                    "round {round}: {}",
                    finished.describe()
                );
                let retried = run(moto.s3_compressor().arg("invoke").arg("--event").arg(path));
                assert!(retried.success(), "round {round}: {}", retried.describe());
            }
        }
        // At least once: each event may come again. (moto also checks a write's condition and
        // writes in two steps, so two writes at the same moment can both pass; S3 cannot. The
        // redelivery of v2 then puts its output back.)
        for path in &events {
            let again = run(moto.s3_compressor().arg("invoke").arg("--event").arg(path));
            assert!(again.success(), "round {round}: {}", again.describe());
        }
        let output = format!("processed/ledger-{round}.zip");
        assert!(
            unzip(&moto, "at-once", &output).1 == text(350_000, 20 + round),
            "round {round}: the output is v2's content"
        );
        assert_made_from(&moto, "at-once", &output, &key, &v2);
        assert_deleted_recoverably(&moto, "at-once", &key, &[&versions[0], &versions[1]]);
    }
}

/// S3 does not order deliveries: whichever of two versions' events comes first, the output
/// ends as the newer version's, and a late event for the older one is superseded.
#[test]
fn events_for_two_versions_in_either_order_leave_the_newer_versions_output() {
    let moto = Moto::start();
    for (bucket, older_first) in [("in-order", true), ("reordered", false)] {
        moto.create_versioned_bucket(bucket);
        let key = "incoming/ledger.csv";
        let v1 = put(&moto, bucket, key, &text(300_000, 100));
        let v2 = put(&moto, bucket, key, &text(250_000, 200));
        let v1_id = v1.0.version_id.clone().expect("versioned");
        let v2_id = v2.0.version_id.clone().expect("versioned");
        let deliver = |version: &str| {
            let event = json!({ "Records": [s3_record(bucket, key, Some(version))] });
            let response = invoke(&moto, &event);
            let [(_, outcome)] = outcomes(&response)
                .try_into()
                .unwrap_or_else(|_| panic!("one result: {response:#}"));
            outcome
        };
        let output = "processed/ledger.zip";

        if older_first {
            // v1's event after v2 was uploaded, before any output exists: nothing is written
            // from v1 (v2 may never be compressed: too large, archived), which stays as the
            // noncurrent version under v2; v2's event then makes the output.
            assert_eq!(deliver(&v1_id), "superseded", "{bucket}");
            assert!(
                moto.get(bucket, key) == text(250_000, 200),
                "{bucket}: v2 intact"
            );
            assert!(
                moto.head(bucket, output).is_none(),
                "{bucket}: no output from v1"
            );
            assert_eq!(deliver(&v2_id), "compressed", "{bucket}");
        } else {
            assert_eq!(deliver(&v2_id), "compressed", "{bucket}");
            assert_eq!(deliver(&v1_id), "superseded", "{bucket}");
        }
        assert!(
            unzip(&moto, bucket, output).1 == text(250_000, 200),
            "{bucket}: the output is v2's content"
        );
        assert_made_from(&moto, bucket, output, key, &v2);
        assert_deleted_recoverably(&moto, bucket, key, &[&v1_id, &v2_id]);
        // Once more, late: still superseded, nothing changes.
        assert_eq!(deliver(&v1_id), "superseded", "{bucket}");
        assert_made_from(&moto, bucket, output, key, &v2);
    }
}

/// An object uploaded before versioning was enabled has the version id `null`. Named
/// (`--version-id null`, or an event saying so), it is a version like any other: a late run for
/// it after a newer version was compressed is superseded, and the output keeps the newer one.
#[test]
fn a_named_null_version_is_superseded_by_a_newer_version() {
    let moto = Moto::start();
    let bucket = "nulls";
    moto.create_bucket(bucket);
    let key = "incoming/before-versioning.csv";
    let output = "processed/before-versioning.zip";
    let null = put(&moto, bucket, key, &text(20_000, 300));
    assert_eq!(null.0.version_id, None, "written before versioning");
    let enabled = aws_sdk_s3::types::VersioningConfiguration::builder()
        .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
        .build();
    moto.block_on(
        moto.client()
            .put_bucket_versioning()
            .bucket(bucket)
            .versioning_configuration(enabled)
            .send(),
    )
    .expect("PutBucketVersioning");
    let newer = put(&moto, bucket, key, &text(21_000, 301));
    let newer_id = newer.0.version_id.clone().expect("versioned now");
    let compress_version = |version: &str| {
        let mut command = moto.s3_compressor();
        command
            .arg("compress")
            .arg(format!("s3://{bucket}/{key}"))
            .arg("--version-id")
            .arg(version);
        run(&mut command)
    };
    let first = compress_version(&newer_id);
    assert!(first.success(), "{}", first.describe());
    assert_made_from(&moto, bucket, output, key, &newer);

    let late = compress_version("null");
    assert!(
        late.success() && late.stdout.contains("superseded"),
        "{}",
        late.describe()
    );
    assert!(
        unzip(&moto, bucket, output).1 == text(21_000, 301),
        "the output still holds the newer version"
    );
    assert_made_from(&moto, bucket, output, key, &newer);
    assert!(
        moto.get_version(bucket, key, Some("null")).as_deref() == Some(&text(20_000, 300)[..]),
        "the null version stays"
    );
}

// ---------------------------------------------------------------------------------------------
// Nothing to do

#[test]
fn a_missing_object_is_not_found_by_compress_and_missing_for_an_event() {
    let moto = Moto::start();
    moto.create_bucket("empty");

    // A person who mistyped a key is told so, with exit status 1.
    let finished = compress(&moto, "empty", "incoming/never-uploaded.csv");
    assert_eq!(finished.status.code(), Some(1), "{}", finished.describe());
    assert_eq!(
        finished.stdout,
        "s3://empty/incoming/never-uploaded.csv: not found\n",
        "{}",
        finished.describe()
    );
    assert!(
        finished.stderr.contains("does not exist"),
        "{}",
        finished.describe()
    );

    // An event for an object deleted since (a late delivery) has nothing to do: missing, not
    // a failure of the invocation.
    let response = invoke(&moto, &s3_event("empty", &["incoming/never-uploaded.csv"]));
    assert_eq!(
        outcomes(&response),
        [(
            "incoming/never-uploaded.csv".to_owned(),
            "missing".to_owned()
        )]
    );
    assert!(moto.keys("empty").is_empty(), "{:?}", moto.keys("empty"));
    assert!(moto.open_uploads("empty").is_empty());
}

#[test]
fn keys_outside_the_rules_and_outputs_are_skipped_and_left_alone() {
    let moto = Moto::start();
    moto.create_bucket("others");
    let elsewhere = text(5_000, 1);
    let earlier_output = random(4_000, 2);
    put(&moto, "others", "elsewhere/x.csv", &elsewhere);
    put(&moto, "others", "processed/x.zip", &earlier_output);
    put(&moto, "others", "incoming/folder/", b"");

    for key in ["elsewhere/x.csv", "processed/x.zip", "incoming/folder/"] {
        let finished = compress(&moto, "others", key);
        assert!(finished.success(), "{key}: {}", finished.describe());
        assert!(
            finished
                .stdout
                .starts_with(&format!("s3://others/{key}: skipped")),
            "{key}: {}",
            finished.describe()
        );
    }
    let response = invoke(
        &moto,
        &s3_event("others", &["elsewhere/x.csv", "processed/x.zip"]),
    );
    assert_eq!(
        outcomes(&response),
        [
            ("elsewhere/x.csv".to_owned(), "skipped".to_owned()),
            ("processed/x.zip".to_owned(), "skipped".to_owned()),
        ]
    );
    assert_eq!(
        moto.keys("others"),
        ["elsewhere/x.csv", "incoming/folder/", "processed/x.zip"]
    );
    assert!(moto.get("others", "elsewhere/x.csv") == elsewhere);
    assert!(moto.get("others", "processed/x.zip") == earlier_output);
}

// ---------------------------------------------------------------------------------------------
// Failures

#[test]
fn two_sources_with_one_output_key_fail_permanently_and_keep_the_second_source() {
    let moto = Moto::start();
    moto.create_bucket("clash");
    let csv = text(40_000, 1);
    let txt = text(30_000, 2);
    let csv_stored = put(&moto, "clash", "incoming/report.csv", &csv);
    put(&moto, "clash", "incoming/report.txt", &txt);

    let first = invoke(&moto, &s3_event("clash", &["incoming/report.csv"]));
    assert_eq!(
        outcomes(&first),
        [("incoming/report.csv".to_owned(), "compressed".to_owned())]
    );
    let output_before = moto.head("clash", "processed/report.zip").expect("output");

    // A permanent failure fails the invocation too, so that Lambda hands it to the failure
    // queue (after its retries) instead of it ending as a log line; the error names the
    // object, the output and where that came from.
    let second = invoke_with(&moto, &s3_event("clash", &["incoming/report.txt"]), &[]);
    assert_eq!(second.status.code(), Some(1), "{}", second.describe());
    assert!(
        second
            .stderr
            .contains("1 of 1 objects failed: s3://clash/incoming/report.txt")
            && second.stderr.contains("processed/report.zip")
            && second.stderr.contains("made from incoming/report.csv"),
        "{}",
        second.describe()
    );

    // From an SQS batch, the message goes back to its queue (and to the dead-letter queue in
    // the end), while the other messages are done.
    let batch = sqs_batch(vec![
        sqs_message(
            "m-clash",
            &s3_event("clash", &["incoming/report.txt"]).to_string(),
        ),
        sqs_message("m-test", &fixture("s3-test-event.json").to_string()),
    ]);
    assert_eq!(
        invoke(&moto, &batch),
        json!({ "batchItemFailures": [{ "itemIdentifier": "m-clash" }] })
    );

    // `compress` says the same with its exit status.
    let finished = compress(&moto, "clash", "incoming/report.txt");
    assert_eq!(finished.status.code(), Some(1), "{}", finished.describe());
    assert!(
        finished
            .stdout
            .starts_with("s3://clash/incoming/report.txt: failed (trying again will not help)"),
        "{}",
        finished.describe()
    );

    assert_eq!(
        moto.keys("clash"),
        ["incoming/report.txt", "processed/report.zip"]
    );
    assert!(
        moto.get("clash", "incoming/report.txt") == txt,
        "the second source kept"
    );
    let output_after = moto.head("clash", "processed/report.zip").expect("output");
    assert_eq!(output_after, output_before, "the first output unchanged");
    assert!(unzip(&moto, "clash", "processed/report.zip").1 == csv);
    assert_made_from(
        &moto,
        "clash",
        "processed/report.zip",
        "incoming/report.csv",
        &csv_stored,
    );
}

#[test]
fn an_s3_that_does_not_answer_fails_naming_the_operation_bucket_and_key() {
    let mut moto = Moto::start();
    moto.create_bucket("gone");
    put(&moto, "gone", "incoming/report.csv", b"a,b\n");
    moto.stop();

    // Bounded by the harness: a hang fails the test instead of the CI job.
    let finished = compress(&moto, "gone", "incoming/report.csv");

    assert_eq!(finished.status.code(), Some(1), "{}", finished.describe());
    let said = format!("{}{}", finished.stdout, finished.stderr);
    assert!(
        finished.stdout.starts_with(
            "s3://gone/incoming/report.csv: failed (transient: trying again may succeed)"
        ),
        "{}",
        finished.describe()
    );
    assert!(
        said.contains("HeadObject s3://gone/processed/report.zip")
            || said.contains("GetObject s3://gone/incoming/report.csv"),
        "names the operation, bucket and key: {}",
        finished.describe()
    );

    // Through `invoke`, a transient failure fails the handler (so Lambda retries).
    let finished = invoke_with(&moto, &s3_event("gone", &["incoming/report.csv"]), &[]);
    assert_eq!(finished.status.code(), Some(1), "{}", finished.describe());
    assert!(
        finished.stderr.contains("the handler failed")
            && finished.stderr.contains("s3://gone/incoming/report.csv"),
        "{}",
        finished.describe()
    );
}

#[test]
fn a_key_ending_in_a_space_is_compressed() {
    let moto = Moto::start();
    moto.create_bucket("spaces");
    let key = "incoming/notes ";
    let stored = put(&moto, "spaces", key, b"remember the milk\n");

    let finished = compress(&moto, "spaces", key);

    assert!(finished.success(), "{}", finished.describe());
    let output = "processed/notes .zip";
    assert_eq!(moto.keys("spaces"), [output]);
    assert_made_from(&moto, "spaces", output, key, &stored);
}

#[test]
fn a_bucket_that_does_not_exist_is_a_failure_that_names_it() {
    let moto = Moto::start();

    let finished = compress(&moto, "no-such-bucket", "incoming/report.csv");

    assert_eq!(finished.status.code(), Some(1), "{}", finished.describe());
    assert!(
        finished.stdout.contains("NoSuchBucket"),
        "{}",
        finished.describe()
    );
}

// ---------------------------------------------------------------------------------------------
// Formats and sizes

/// `(format, prefix name, output key, content type, decoder)` for every format.
const FORMATS: [(&str, &str, &str, &str, &[&str]); 7] = [
    (
        "zip",
        "zip",
        "report.zip",
        "application/zip",
        &["unzip", "-p"],
    ),
    (
        "gzip",
        "gzip",
        "report.csv.gz",
        "application/gzip",
        &["gzip", "-dc"],
    ),
    (
        "zstd",
        "zstd",
        "report.csv.zst",
        "application/zstd",
        &["zstd", "-dc"],
    ),
    (
        "tar",
        "tar",
        "report.tar",
        "application/x-tar",
        &["tar", "-xOf"],
    ),
    (
        "tar.gz",
        "targz",
        "report.tar.gz",
        "application/gzip",
        &["tar", "-xzOf"],
    ),
    (
        "tar.zst",
        "tarzst",
        "report.tar.zst",
        "application/zstd",
        &["tar", "--zstd", "-xOf"],
    ),
    (
        "brotli",
        "brotli",
        "report.csv.br",
        "application/x-brotli",
        &["brotli", "-dc"],
    ),
];

#[test]
fn every_format_round_trips_through_its_command_line_decoder() {
    let moto = Moto::start();
    moto.create_bucket("formats");
    let mut config = String::new();
    for (format, name, ..) in FORMATS {
        config.push_str(&format!(
            "[[rule]]\nprefix = \"incoming/{name}/\"\noutput_prefix = \"processed/{name}/\"\nformat = \"{format}\"\n\n"
        ));
    }
    let config = moto.write_file("formats.toml", config.as_bytes());
    let mut sources = Vec::new();
    for (index, (_, name, ..)) in FORMATS.iter().enumerate() {
        let key = format!("incoming/{name}/report.csv");
        put(&moto, "formats", &key, &text(MIB, index as u64 * 1000));
        sources.push(key);
    }
    let keys: Vec<&str> = sources.iter().map(String::as_str).collect();

    let finished = invoke_with(
        &moto,
        &s3_event("formats", &keys),
        &["--config", &config.display().to_string()],
    );

    assert_all_compressed(&finished);
    let mut expected_keys: Vec<String> = FORMATS
        .iter()
        .map(|(_, name, output, ..)| format!("processed/{name}/{output}"))
        .collect();
    expected_keys.sort();
    assert_eq!(moto.keys("formats"), expected_keys);
    for (index, (format, name, output, content_type, decoder)) in FORMATS.iter().enumerate() {
        let key = format!("processed/{name}/{output}");
        let head = moto.head("formats", &key).expect("output");
        assert_eq!(
            head.content_type.as_deref(),
            Some(*content_type),
            "{format}"
        );
        assert!(
            head.size < MIB as u64 / 2 || *format == "tar",
            "{format} compresses text: {} bytes",
            head.size
        );
        let path = download(&moto, "formats", &key);
        let decoded = tool(decoder[0], &decoder[1..], &path);
        assert!(
            decoded == text(MIB, index as u64 * 1000),
            "{format}: {key} decodes with {decoder:?} to the source's bytes"
        );
        if format.starts_with("tar") {
            let list_flags: &[&str] = match *format {
                "tar.gz" => &["-tzf"],
                "tar.zst" => &["--zstd", "-tf"],
                _ => &["-tf"],
            };
            let names = tool("tar", list_flags, &path);
            assert_eq!(String::from_utf8_lossy(&names), "report.csv\n", "{format}");
        }
    }
}

#[test]
fn an_output_larger_than_a_part_is_uploaded_in_parts_and_round_trips() {
    let moto = Moto::start();
    moto.create_bucket("large");
    let key = "incoming/media/noise.bin";
    // Incompressible: the zip is as large as the source, well over the 8 MiB part size.
    let noise = random(20 * MIB + 12_345, 99);
    let stored = put(&moto, "large", key, &noise);

    let finished = compress(&moto, "large", key);

    assert!(finished.success(), "{}", finished.describe());
    assert!(
        finished.stdout.starts_with(&format!(
            "s3://large/{key}: compressed to processed/media/noise.zip"
        )),
        "{}",
        finished.describe()
    );
    let output = "processed/media/noise.zip";
    assert_eq!(moto.keys("large"), [output]);
    let head = moto.head("large", output).expect("output");
    assert!(head.size > 16 * MIB as u64, "{head:#?}");
    assert!(head.etag.contains('-'), "uploaded in parts: {head:#?}");
    assert_eq!(
        head.checksum_type.as_deref(),
        Some("FULL_OBJECT"),
        "{head:#?}"
    );
    let (names, content) = unzip(&moto, "large", output);
    assert_eq!(names, ["noise.bin"]);
    assert!(content == noise, "byte-exact");
    assert_made_from(&moto, "large", output, key, &stored);
    assert!(moto.open_uploads("large").is_empty());
}

// ---------------------------------------------------------------------------------------------
// A 1 GiB object in bounded memory

const GIB: u64 = 1024 * 1024 * 1024;

/// The most the worker's resident set may reach while compressing any object: about 52 MiB
/// of buffers (see `Tuning` and the memory budget; deflate's 4 MiB blocks are 12 MiB of it on
/// two threads: the one being filled and one in flight per thread), the decoder that proves
/// the output, and the program itself. Measured: 65 MiB for 1 GiB of JSON logs as zip (83 MiB
/// before freed buffers went back to the system: see the s3-compressor-allocator crate).
const PEAK_RSS_LIMIT_KIB: u64 = 96 * 1024;

/// JSON-lines-like text of exactly `len` bytes, generated as it is read: a 4 MiB block of
/// varied lines, repeated (far beyond any codec window, so it compresses like fresh text).
/// Keeps the CRC-32 of what it produced.
struct Generated {
    block: Vec<u8>,
    offset: usize,
    left: u64,
    crc: crc32fast::Hasher,
}

impl Generated {
    fn new(len: u64) -> Self {
        let mut block = Vec::with_capacity(4 * MIB + 256);
        let mut state = 42u64;
        let mut line = 0u64;
        while block.len() < 4 * MIB {
            let r = splitmix(&mut state);
            let entry = format!(
                "{{\"ts\":\"2024-05-01T{:02}:{:02}:{:02}.{:03}Z\",\"level\":\"{}\",\"req\":\"{:016x}\",\
                 \"path\":\"/api/v1/{}/{}\",\"status\":{},\"ms\":{},\"user\":\"u{:05}\"}}\n",
                r % 24,
                (r >> 8) % 60,
                (r >> 16) % 60,
                (r >> 24) % 1000,
                ["INFO", "INFO", "INFO", "WARN", "ERROR"][((r >> 32) % 5) as usize],
                splitmix(&mut state),
                ["orders", "users", "carts", "search"][((r >> 36) % 4) as usize],
                (r >> 40) % 100_000,
                [200, 200, 201, 204, 404, 500][((r >> 44) % 6) as usize],
                (r >> 48) % 2_000,
                line % 50_000,
            );
            block.extend_from_slice(entry.as_bytes());
            line += 1;
        }
        block.truncate(4 * MIB);
        Self {
            block,
            offset: 0,
            left: len,
            crc: crc32fast::Hasher::new(),
        }
    }
}

impl Read for Generated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = &self.block[self.offset..];
        let n = buf
            .len()
            .min(available.len())
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        buf[..n].copy_from_slice(&available[..n]);
        self.crc.update(&available[..n]);
        self.offset = (self.offset + n) % self.block.len();
        self.left -= n as u64;
        Ok(n)
    }
}

/// Length and CRC-32 of what `unzip -p` writes, read as it streams.
fn unzip_stream(path: &Path) -> (u64, u32) {
    let mut child = Command::new("unzip")
        .arg("-p")
        .arg(path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("unzip runs");
    let mut stdout = BufReader::with_capacity(MIB, child.stdout.take().expect("stdout"));
    let mut crc = crc32fast::Hasher::new();
    let mut len = 0u64;
    loop {
        let chunk = stdout.fill_buf().expect("read unzip's output");
        if chunk.is_empty() {
            break;
        }
        crc.update(chunk);
        len += chunk.len() as u64;
        let n = chunk.len();
        stdout.consume(n);
    }
    let output = child.wait_with_output().expect("unzip finishes");
    assert!(
        output.status.success(),
        "unzip -p: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (len, crc.finalize())
}

#[test]
fn a_one_gib_object_is_compressed_in_bounded_memory() {
    let moto = Moto::start();
    moto.create_bucket("huge");
    let key = "incoming/logs-2024-05-01.jsonl";
    let started = Instant::now();
    let mut source = Generated::new(GIB);
    moto.put_in_parts("huge", key, &mut source, 16 * MIB);
    let source_crc = source.crc.clone().finalize();
    let uploaded_in = started.elapsed();

    let started = Instant::now();
    let mut command = moto.s3_compressor();
    command.arg("compress").arg(format!("s3://huge/{key}"));
    let (finished, memory) = Running::spawn(&mut command).finish_measuring_memory(HANG_LIMIT);
    let (peak, peak_rss) = (memory.peak, memory.largest_sampled);
    let compressed_in = started.elapsed();

    assert!(finished.success(), "{}", finished.describe());
    let output = "processed/logs-2024-05-01.zip";
    assert_eq!(moto.keys("huge"), [output]);
    let started = Instant::now();
    let path = download(&moto, "huge", output);
    let (len, crc) = unzip_stream(&path);
    std::fs::remove_file(&path).expect("remove the download");
    assert_eq!(
        (len, crc),
        (GIB, source_crc),
        "the output unzips to the source"
    );
    let checked_in = started.elapsed();
    eprintln!(
        "1 GiB: uploaded in {uploaded_in:?}, compressed in {compressed_in:?} (peak RSS {} MiB \
         by VmHWM, {} MiB sampled VmRSS), checked in {checked_in:?}",
        peak / 1024,
        peak_rss / 1024
    );
    assert!(
        peak <= PEAK_RSS_LIMIT_KIB,
        "the worker's peak RSS was {peak} KiB ({} MiB), over {} MiB",
        peak / 1024,
        PEAK_RSS_LIMIT_KIB / 1024
    );
}

// ---------------------------------------------------------------------------------------------
// Broken and stalled connections

/// `compress` through a fault proxy in front of moto, with a short stall limit.
fn compress_through(proxy: &FaultProxy, moto: &Moto, bucket: &str, key: &str) -> Finished {
    let mut command = moto.s3_compressor();
    command
        .env("AWS_ENDPOINT_URL", proxy.endpoint())
        .env("S3_COMPRESSOR_STALL_SECS", "2")
        .arg("compress")
        .arg(format!("s3://{bucket}/{key}"));
    run(&mut command)
}

/// A download cut mid-body continues with a ranged GET of the same version from where it
/// stopped, rather than failing the object; the SDK itself never retries a broken body.
#[test]
fn a_download_cut_mid_body_resumes_where_it_stopped() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(moto.endpoint());
    for (bucket, versioned) in [("cut-versioned", true), ("cut-plain", false)] {
        if versioned {
            moto.create_versioned_bucket(bucket);
        } else {
            moto.create_bucket(bucket);
        }
        let key = "incoming/cut.bin";
        let content = random(6 * MIB, 5);
        put(&moto, bucket, key, &content);
        let gets = proxy.count(Op::GetObject);
        let applied = proxy.faults_applied();
        proxy.inject_for_key(Op::GetObject, key, Fault::CutResponse, 2);

        let finished = compress_through(&proxy, &moto, bucket, key);

        assert!(finished.success(), "{bucket}: {}", finished.describe());
        assert_eq!(
            proxy.faults_applied() - applied,
            2,
            "{bucket}: both cuts fired"
        );
        assert_eq!(
            proxy.count(Op::GetObject) - gets,
            3,
            "{bucket}: one GET and two resumes, not a new start"
        );
        assert!(
            unzip(&moto, bucket, "processed/cut.zip").1 == content,
            "{bucket}: the output is the whole source"
        );
        assert!(moto.head(bucket, key).is_none(), "{bucket}: source deleted");
    }
}

/// A store that ignores Range answers a resumed download with the whole object again: the
/// download passes over what it had read and goes on from there, instead of reading more than
/// the object holds and failing the run each time a connection breaks.
#[test]
fn a_download_resumed_on_a_store_ignoring_range_goes_on_where_it_stopped() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(moto.endpoint());
    proxy.ignore_ranges();
    let bucket = "no-ranges";
    moto.create_bucket(bucket);
    let key = "incoming/whole.bin";
    let content = random(6 * MIB, 6);
    put(&moto, bucket, key, &content);
    proxy.inject_for_key(Op::GetObject, key, Fault::CutResponse, 1);

    let finished = compress_through(&proxy, &moto, bucket, key);

    assert_eq!(proxy.faults_applied(), 1, "the cut fired");
    assert_eq!(proxy.count(Op::GetObject), 2, "one GET and one resume");
    assert!(finished.success(), "{}", finished.describe());
    assert!(
        unzip(&moto, bucket, "processed/whole.zip").1 == content,
        "the output is the whole source, once"
    );
    assert!(moto.head(bucket, key).is_none(), "source deleted");
}

/// A store that keeps no checksums (the proxy strips them from requests and answers): a
/// source is proven by the MD5 its ETag is, the output by reading it back. An output damaged
/// on its way to the store, and a download whose resumed range came back altered, are both
/// caught before the source is deleted; a clean run then finishes.
#[test]
fn on_a_store_without_checksums_damaged_bytes_are_caught_before_the_delete() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(moto.endpoint());
    proxy.strip_checksums();
    let bucket = "weak";
    moto.create_bucket(bucket);

    let key = "incoming/fine.csv";
    let content = text(200_000, 11);
    put(&moto, bucket, key, &content);
    let finished = compress_through(&proxy, &moto, bucket, key);
    assert!(finished.success(), "{}", finished.describe());
    for proof in ["\"etag-md5\"", "\"read-back\""] {
        assert!(
            finished.stderr.contains(proof),
            "{proof}: {}",
            finished.stderr
        );
    }
    assert!(unzip(&moto, bucket, "processed/fine.zip").1 == content);
    assert!(moto.head(bucket, key).is_none(), "source deleted");
    // An output in parts is read back the same way.
    let key = "incoming/parts.bin";
    let content = random(12 * MIB, 14);
    put(&moto, bucket, key, &content);
    let finished = compress_through(&proxy, &moto, bucket, key);
    assert!(finished.success(), "{}", finished.describe());
    assert!(
        finished.stderr.contains("\"read-back\""),
        "{}",
        finished.stderr
    );
    assert!(unzip(&moto, bucket, "processed/parts.zip").1 == content);

    // The output's PutObject damaged on its way: moto keeps what it got, and says nothing.
    let key = "incoming/damaged.csv";
    let content = text(200_000, 12);
    put(&moto, bucket, key, &content);
    proxy.inject_for_key(Op::PutObject, "damaged", Fault::DamageBody, 1);
    let finished = compress_through(&proxy, &moto, bucket, key);
    assert_eq!(proxy.faults_applied(), 1);
    assert!(!finished.success(), "{}", finished.describe());
    assert!(
        finished.stdout.contains("verification failed") && finished.stdout.contains("read back"),
        "{}",
        finished.describe()
    );
    assert!(moto.get(bucket, key) == content, "source kept");
    assert!(
        moto.head(bucket, "processed/damaged.zip").is_none(),
        "the damaged output removed"
    );

    // A download cut mid-body, whose resumed range comes back with a byte changed.
    a_resumed_range_altered_is_caught_then_a_clean_run_finishes(&moto, &proxy, bucket);
}

/// A download cut mid-body, whose resumed (ranged) GET comes back with a byte changed: the
/// whole read is held against the source's stored value, so the run fails transiently with
/// the source kept and nothing written; the next, clean run finishes.
fn a_resumed_range_altered_is_caught_then_a_clean_run_finishes(
    moto: &Moto,
    proxy: &FaultProxy,
    bucket: &str,
) {
    let key = "incoming/resumed.bin";
    let content = random(6 * MIB, 13);
    put(moto, bucket, key, &content);
    let applied = proxy.faults_applied();
    proxy.inject_for_key(Op::GetObject, key, Fault::CutResponse, 1);
    proxy.inject_for_key(Op::GetObject, key, Fault::DamageBody, 1);
    let finished = compress_through(proxy, moto, bucket, key);
    assert_eq!(
        proxy.faults_applied() - applied,
        2,
        "{bucket}: the cut and the damage fired"
    );
    assert!(!finished.success(), "{bucket}: {}", finished.describe());
    assert!(
        finished.stdout.contains("the source was not read whole"),
        "{bucket}: {}",
        finished.describe()
    );
    assert!(moto.get(bucket, key) == content, "{bucket}: source kept");
    assert!(
        moto.head(bucket, "processed/resumed.zip").is_none(),
        "{bucket}: nothing written"
    );

    let finished = compress_through(proxy, moto, bucket, key);
    assert!(finished.success(), "{bucket}: {}", finished.describe());
    assert!(unzip(moto, bucket, "processed/resumed.zip").1 == content);
    assert!(moto.head(bucket, key).is_none(), "{bucket}: source deleted");
}

/// The bad-read row of docs/how-it-works.md's Guarantees against moto as it is (it keeps the
/// checksum the SDK sent with the source): a resumed range that comes back altered is caught by that checksum.
#[test]
fn a_resumed_range_that_comes_back_altered_is_caught_by_the_stored_checksum() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(moto.endpoint());
    moto.create_bucket("altered");
    a_resumed_range_altered_is_caught_then_a_clean_run_finishes(&moto, &proxy, "altered");
}

/// A source uploaded in two parts has no full-object value moto keeps, only its ETag, the MD5
/// of its parts' MD5s: a HEAD of part 1 tells where the parts meet, and the read is held
/// against that ETag. A read with a byte changed is caught (the source kept, nothing
/// written); the next run proves it and compresses it.
#[test]
fn a_multipart_source_is_proven_against_its_parts_and_a_damaged_read_is_caught() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(moto.endpoint());
    let bucket = "parts";
    moto.create_bucket(bucket);
    let key = "incoming/parts.bin";
    let content = random(5 * MIB + 1000, 21);
    moto.put_in_parts(bucket, key, &mut content.as_slice(), 5 * MIB);
    proxy.inject_for_key(Op::GetObject, key, Fault::DamageBody, 1);
    let finished = compress_through(&proxy, &moto, bucket, key);
    assert_eq!(proxy.faults_applied(), 1, "the damage fired");
    assert!(!finished.success(), "{}", finished.describe());
    assert!(
        finished.stdout.contains("the source was not read whole")
            && finished.stdout.contains("MD5 of its parts' MD5s"),
        "{}",
        finished.describe()
    );
    assert!(moto.get(bucket, key) == content, "source kept");
    assert!(
        moto.head(bucket, "processed/parts.zip").is_none(),
        "nothing written"
    );

    let finished = compress_through(&proxy, &moto, bucket, key);
    assert!(finished.success(), "{}", finished.describe());
    assert!(
        finished.stderr.contains("\"etag-md5-parts\""),
        "{}",
        finished.stderr
    );
    assert!(unzip(&moto, bucket, "processed/parts.zip").1 == content);
    assert!(moto.head(bucket, key).is_none(), "source deleted");
}

/// A server that stops answering is given up on after the stall limit and the request
/// retried, instead of holding the worker until its deadline.
#[test]
fn a_stalled_request_is_retried_after_the_stall_limit() {
    let moto = Moto::start();
    moto.create_bucket("stall");
    let proxy = FaultProxy::start(moto.endpoint());
    let key = "incoming/stall.csv";
    let content = text(100_000, 3);
    put(&moto, "stall", key, &content);
    for op in [Op::HeadObject, Op::PutObject, Op::DeleteObject] {
        proxy.inject(op, Fault::Stall, 1);
    }

    let finished = compress_through(&proxy, &moto, "stall", key);

    assert!(finished.success(), "{}", finished.describe());
    assert_eq!(proxy.faults_applied(), 3, "every stall fired");
    assert!(unzip(&moto, "stall", "processed/stall.zip").1 == content);
    assert!(moto.head("stall", key).is_none(), "source deleted");
}

/// An invocation stopped at its deadline mid-upload aborts the multipart upload before it
/// answers: when `invoke` returns, no upload is left open on the output's key (an abort left
/// running would die with the process, the upload then costing storage until the lifecycle
/// rule removes it). The parts stall, so the deadline comes mid-upload; the abort is slowed
/// so that only waiting for it finishes it in time.
#[test]
fn an_invocation_stopped_at_its_deadline_leaves_no_multipart_upload_open() {
    let moto = Moto::start();
    let bucket = "deadline";
    moto.create_bucket(bucket);
    let proxy = FaultProxy::start(moto.endpoint());
    let key = "incoming/noise.bin";
    // Bytes that do not shrink: more than one 8 MiB part, so a multipart upload.
    let content = random(10 * MIB, 11);
    put(&moto, bucket, key, &content);
    proxy.inject(Op::UploadPart, Fault::Stall, Times::Always);
    proxy.inject(
        Op::AbortMultipartUpload,
        Fault::Latency(Duration::from_millis(700)),
        Times::Always,
    );

    // 20 s less a 2 s margin: stopped at 18 s, with 1 s of the margin for the abort.
    let path = write_event(moto.dir(), "deadline.json", &s3_event(bucket, &[key]));
    let finished = run(moto
        .s3_compressor()
        .env("AWS_ENDPOINT_URL", proxy.endpoint())
        .env("S3_COMPRESSOR_STALL_SECS", "60")
        .args(["invoke", "--timeout", "20", "--event"])
        .arg(&path));
    let open = moto.open_uploads(bucket);

    assert_eq!(finished.status.code(), Some(1), "{}", finished.describe());
    assert!(
        finished
            .stderr
            .contains("stopped at the invocation deadline"),
        "{}",
        finished.describe()
    );
    assert!(proxy.count(Op::UploadPart) > 0, "the upload had started");
    assert_eq!(open, Vec::<String>::new(), "{}", finished.describe());
    assert_eq!(proxy.count(Op::AbortMultipartUpload), 1);
    assert_eq!(moto.keys(bucket), [key], "the source untouched, no output");
    assert!(moto.get(bucket, key) == content);
}

// ---------------------------------------------------------------------------------------------
// Backfill

/// The bytes of a backfill test object: text, different for every key.
fn backfill_content(key: &str) -> Vec<u8> {
    let seed = key.bytes().fold(7u64, |hash, byte| {
        hash.wrapping_mul(31).wrapping_add(u64::from(byte))
    });
    text(200 + (seed % 3_000) as usize, seed % 100_000)
}

/// `s3-compressor --config CONFIG backfill ARGS...`
fn backfill(moto: &Moto, config: &Path, args: &[&str]) -> Command {
    let mut command = moto.s3_compressor();
    command
        .arg("--config")
        .arg(config)
        .arg("backfill")
        .args(args);
    command
}

/// The count on a summary row (`  compressed   1200  ...`).
fn summary_count(summary: &str, row: &str) -> u64 {
    summary
        .lines()
        .find_map(|line| {
            let rest = line.trim_start().strip_prefix(row)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no row {row:?} in the summary:\n{summary}"))
}

/// 1,100 objects already in a bucket (more than a listing page), across three rules (one
/// keeps its sources):
/// a dry run changes nothing, `--limit` stops where it says, a run interrupted with Ctrl-C
/// finishes what is in flight and loses nothing, and the rerun does the rest, recognising
/// what is done.
#[test]
fn backfill_compresses_what_is_there_and_resumes_after_an_interrupt() {
    let moto = Moto::start();
    let bucket = "existing";
    moto.create_bucket(bucket);
    let config = moto.write_file(
        "backfill.toml",
        b"[[rule]]\nprefix = \"incoming/\"\noutput_prefix = \"processed/\"\nformat = \"zip\"\n\n\
          [[rule]]\nprefix = \"incoming/logs/\"\noutput_prefix = \"processed-logs/\"\nformat = \"gzip\"\n\n\
          [[rule]]\nprefix = \"archive/\"\noutput_prefix = \"archive-zstd/\"\nformat = \"zstd\"\ndelete_source = false\n",
    );
    let mut sources = Vec::new();
    for index in 0..600 {
        sources.push(format!("incoming/team-{}/report {index}.csv", index % 7));
    }
    for index in 0..300 {
        sources.push(format!("incoming/logs/app-{index}.log"));
    }
    for index in 0..200 {
        sources.push(format!("archive/2024/{index}.json"));
    }
    for key in &sources {
        moto.put(bucket, key, backfill_content(key));
    }
    // Not for the worker: outside every rule, and a folder marker.
    moto.put(bucket, "notes/readme.txt", b"left alone".to_vec());
    moto.put(bucket, "incoming/team-0/", Vec::new());
    let output_of = |key: &str| -> String {
        if let Some(rest) = key.strip_prefix("incoming/logs/") {
            format!("processed-logs/{rest}.gz")
        } else if let Some(rest) = key.strip_prefix("archive/") {
            format!("archive-zstd/{rest}.zst")
        } else {
            let rest = key.strip_prefix("incoming/").unwrap_or(key);
            format!(
                "processed/{}.zip",
                rest.strip_suffix(".csv").unwrap_or(rest)
            )
        }
    };
    let before = moto.keys(bucket);

    // A dry run lists every decision and touches nothing.
    let dry = run(&mut backfill(
        &moto,
        &config,
        &[&format!("s3://{bucket}"), "--dry-run"],
    ));
    assert!(dry.success(), "{}", dry.describe());
    let example = "incoming/logs/app-7.log -> processed-logs/app-7.log.gz (rule incoming/logs/, gzip, level 7, source deleted once the output is verified)";
    assert!(
        dry.stdout.lines().any(|line| line == example),
        "{}",
        dry.describe()
    );
    assert!(dry
        .stdout
        .contains("incoming/team-0/: skipped: the key ends with \"/\""));
    assert_eq!(
        summary_count(&dry.stdout, "would compress"),
        1_100,
        "{}",
        dry.stdout
    );
    assert_eq!(moto.keys(bucket), before, "a dry run changes nothing");

    // --limit: exactly that many.
    let limited = run(&mut backfill(
        &moto,
        &config,
        &[&format!("s3://{bucket}/incoming/logs/"), "--limit", "50"],
    ));
    assert!(limited.success(), "{}", limited.describe());
    assert_eq!(
        summary_count(&limited.stdout, "compressed"),
        50,
        "{}",
        limited.stdout
    );

    // Ctrl-C once some outputs are there: what is in flight finishes, nothing new starts.
    let mut interrupted = Running::spawn(&mut backfill(
        &moto,
        &config,
        &[&format!("s3://{bucket}"), "--concurrency", "8"],
    ));
    let started = Instant::now();
    while moto
        .keys(bucket)
        .iter()
        .filter(|key| key.starts_with("processed/"))
        .count()
        < 100
    {
        assert!(started.elapsed() < HANG_LIMIT, "backfill made no progress");
        assert!(
            interrupted.try_finish().is_none(),
            "backfill ended before it was interrupted"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let sent = Command::new("kill")
        .args(["-INT", &interrupted.id().to_string()])
        .status();
    assert!(sent.is_ok_and(|status| status.success()), "kill -INT");
    let interrupted = interrupted.finish(HANG_LIMIT);
    assert_eq!(
        interrupted.status.code(),
        Some(1),
        "{}",
        interrupted.describe()
    );
    assert!(
        interrupted
            .stdout
            .contains("interrupted after the objects in flight finished")
            && interrupted
                .stderr
                .contains("rerun to go on where this run stopped"),
        "{}",
        interrupted.describe()
    );
    let done_first = summary_count(&interrupted.stdout, "compressed");
    assert!(
        done_first > 0 && done_first < 1_050,
        "{}",
        interrupted.stdout
    );

    // Nothing lost: every source is still there or has its output, never neither; the
    // sources of the deleting rules are never both.
    let after_interrupt: std::collections::BTreeSet<String> =
        moto.keys(bucket).into_iter().collect();
    let mut compressed = 0;
    for key in &sources {
        let (source, output) = (
            after_interrupt.contains(key),
            after_interrupt.contains(&output_of(key)),
        );
        assert!(source || output, "{key}: lost");
        if !key.starts_with("archive/") {
            assert!(
                !(source && output),
                "{key}: both source and output after the run stopped"
            );
        }
        compressed += usize::from(output);
    }
    assert_eq!(compressed as u64, 50 + done_first);
    assert!(moto.open_uploads(bucket).is_empty(), "no upload left open");

    // The rerun does the rest; what the first run did is not done again.
    let rerun = run(&mut backfill(&moto, &config, &[&format!("s3://{bucket}")]));
    assert!(rerun.success(), "{}", rerun.describe());
    let archive_done_before = sources
        .iter()
        .filter(|key| key.starts_with("archive/") && after_interrupt.contains(&output_of(key)))
        .count() as u64;
    assert_eq!(
        summary_count(&rerun.stdout, "compressed"),
        1_100 - compressed as u64,
        "{}",
        rerun.stdout
    );
    assert_eq!(
        summary_count(&rerun.stdout, "already done"),
        archive_done_before,
        "{}",
        rerun.stdout
    );
    assert_eq!(
        summary_count(&rerun.stdout, "skipped: folder marker"),
        1,
        "{}",
        rerun.stdout
    );

    let mut expected: Vec<String> = sources.iter().map(|key| output_of(key)).collect();
    expected.extend(
        sources
            .iter()
            .filter(|key| key.starts_with("archive/"))
            .cloned(),
    );
    expected.extend(["incoming/team-0/".to_owned(), "notes/readme.txt".to_owned()]);
    expected.sort();
    assert_eq!(
        moto.keys(bucket),
        expected,
        "every output, the kept sources and what is not for the worker"
    );

    // One output of each rule decodes to its source, with the usual tools.
    for (key, decoder) in [
        ("incoming/team-3/report 10.csv", None),
        ("incoming/logs/app-200.log", Some(["gzip", "-dc"])),
        ("archive/2024/199.json", Some(["zstd", "-dcq"])),
    ] {
        let output = output_of(key);
        let decoded = match decoder {
            None => unzip(&moto, bucket, &output).1,
            Some([program, flag]) => tool(program, &[flag], &download(&moto, bucket, &output)),
        };
        assert!(
            decoded == backfill_content(key),
            "{output} decodes to {key}"
        );
    }

    // A third run finds nothing left to do.
    let third = run(&mut backfill(&moto, &config, &[&format!("s3://{bucket}")]));
    assert!(third.success(), "{}", third.describe());
    assert_eq!(
        summary_count(&third.stdout, "compressed"),
        0,
        "{}",
        third.stdout
    );
    assert_eq!(
        summary_count(&third.stdout, "already done"),
        200,
        "{}",
        third.stdout
    );
}

// ---------------------------------------------------------------------------------------------
// Objects beyond one invocation

/// The string at `pointer` (`/Vpc/VpcId`) of an answer.
fn string_at(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value:#}"))
        .to_owned()
}

/// The AWS CLI against moto, answering JSON.
fn aws_json(moto: &Moto, args: &[&str]) -> Value {
    let mut command = Command::new("aws");
    moto.point_at(&mut command);
    let finished = run(command.args(args).args(["--output", "json"]));
    assert!(finished.success(), "aws {args:?}: {}", finished.describe());
    if finished.stdout.trim().is_empty() {
        return Value::Null;
    }
    serde_json::from_str(&finished.stdout).unwrap_or_else(|error| panic!("aws {args:?}: {error}"))
}

/// An invocation with a deadline does not start an object it cannot finish in time: with the
/// Fargate task configured it starts the task (ECS RunTask, the command `compress s3://...`
/// in the function's subnets) and answers `handed_off`; without, it fails permanently saying
/// why and what to do. The source is untouched either way, and the task's command compresses
/// it. The hand-off is recorded with a write only if absent: a redelivery of the invocation,
/// or two deliveries at once, start no second task; the task removes the record.
#[test]
fn an_object_too_large_for_the_invocation_goes_to_a_fargate_task() {
    let moto = Moto::start();
    let bucket = "large";
    moto.create_bucket(bucket);
    let big = "incoming/big.csv";
    let big_content = text(8 * MIB, 1);
    put(&moto, bucket, big, &big_content);
    put(&moto, bucket, "incoming/small.csv", &text(1_000, 2));

    let vpc = aws_json(&moto, &["ec2", "create-vpc", "--cidr-block", "10.0.0.0/16"]);
    let vpc = string_at(&vpc, "/Vpc/VpcId");
    // As a VPC with interface endpoints must be (and moto's RunTask needs it to name the
    // task's network interface).
    aws_json(
        &moto,
        &[
            "ec2",
            "modify-vpc-attribute",
            "--vpc-id",
            &vpc,
            "--enable-dns-hostnames",
            r#"{"Value": true}"#,
        ],
    );
    let subnet = aws_json(
        &moto,
        &[
            "ec2",
            "create-subnet",
            "--vpc-id",
            &vpc,
            "--cidr-block",
            "10.0.1.0/24",
        ],
    );
    let subnet = string_at(&subnet, "/Subnet/SubnetId");
    let group = aws_json(
        &moto,
        &[
            "ec2",
            "create-security-group",
            "--group-name",
            "worker",
            "--description",
            "worker",
            "--vpc-id",
            &vpc,
        ],
    );
    let group = string_at(&group, "/GroupId");
    let cluster = aws_json(
        &moto,
        &["ecs", "create-cluster", "--cluster-name", "large-objects"],
    );
    let cluster = string_at(&cluster, "/cluster/clusterArn");
    let task_definition = aws_json(
        &moto,
        &[
            "ecs",
            "register-task-definition",
            "--family",
            "s3-compressor-large",
            "--requires-compatibilities",
            "FARGATE",
            "--network-mode",
            "awsvpc",
            "--cpu",
            "2048",
            "--memory",
            "4096",
            "--container-definitions",
            r#"[{"name": "worker", "image": "s3-compressor", "essential": true, "cpu": 2048, "memory": 4096}]"#,
        ],
    );
    let task_definition = string_at(&task_definition, "/taskDefinition/taskDefinitionArn");

    // A 128 MB function has 0.07 vCPU: 8 MiB of zip needs about 6 s, more than the 4.5 s a
    // 5 s invocation has; 1 KB needs the requests' 2 s.
    let event = s3_event(bucket, &[big, "incoming/small.csv"]);
    let path = write_event(moto.dir(), "large.json", &event);
    let invoke_with = |handoff: bool, event: &Path| {
        let mut command = moto.s3_compressor();
        command
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .args(["invoke", "--timeout", "5", "--event"])
            .arg(event);
        if handoff {
            command
                .env("S3_COMPRESSOR_HANDOFF_CLUSTER", &cluster)
                .env("S3_COMPRESSOR_HANDOFF_TASK_DEFINITION", &task_definition)
                .env("S3_COMPRESSOR_HANDOFF_CONTAINER", "worker")
                .env("S3_COMPRESSOR_HANDOFF_SUBNETS", &subnet)
                .env("S3_COMPRESSOR_HANDOFF_SECURITY_GROUPS", &group)
                .env("S3_COMPRESSOR_HANDOFF_RECORDS", "s3-compressor/handoffs/");
        }
        command
    };
    let invoke = |handoff: bool| invoke_with(handoff, &path);
    let task_arns = || -> Vec<String> {
        let tasks = aws_json(&moto, &["ecs", "list-tasks", "--cluster", &cluster]);
        tasks["taskArns"]
            .as_array()
            .map(|arns| {
                arns.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    };

    // Without a task to hand it to: a permanent failure that says why and what would work.
    let refused = run(&mut invoke(false));
    assert_eq!(refused.status.code(), Some(1), "{}", refused.describe());
    assert!(
        refused.stderr.contains("PermanentFailure")
            || refused.stderr.contains("trying again will not help"),
        "{}",
        refused.describe()
    );
    for part in [
        "s3://large/incoming/big.csv is 8388608 bytes",
        "an invocation has 4 s",
        "`s3-compressor compress s3://large/incoming/big.csv`",
        "--large-objects fargate",
    ] {
        assert!(
            refused.stderr.contains(part),
            "{part:?} in {}",
            refused.describe()
        );
    }
    assert_eq!(
        moto.keys(bucket),
        [big, "processed/small.zip"],
        "the small one compressed, the big one untouched"
    );

    // With the task configured: handed off, and the task started with the command that
    // compresses it.
    put(&moto, bucket, "incoming/small.csv", &text(1_000, 2));
    let handed = run(&mut invoke(true));
    assert!(handed.success(), "{}", handed.describe());
    let outcomes = outcomes(&response_of(&handed));
    assert_eq!(
        outcomes,
        [
            (big.to_owned(), "handed_off".to_owned()),
            ("incoming/small.csv".to_owned(), "already_done".to_owned())
        ]
    );
    let task_arns_now = task_arns();
    assert_eq!(task_arns_now.len(), 1, "{task_arns_now:?}");
    let task_arn = task_arns_now[0].clone();
    let described = aws_json(
        &moto,
        &[
            "ecs",
            "describe-tasks",
            "--cluster",
            &cluster,
            "--tasks",
            &task_arn,
        ],
    );
    let task = &described["tasks"][0];
    assert_eq!(
        task["taskDefinitionArn"],
        task_definition.as_str(),
        "{task:#}"
    );
    assert_eq!(task["startedBy"], "s3-compressor");
    // The record, and the command that compresses the object and then removes the record.
    let records: Vec<String> = moto
        .keys(bucket)
        .into_iter()
        .filter(|key| key.starts_with("s3-compressor/handoffs/"))
        .collect();
    assert_eq!(records.len(), 1, "{:?}", moto.keys(bucket));
    let record = &records[0];
    let container = &task["overrides"]["containerOverrides"][0];
    assert_eq!(
        container,
        &json!({"name": "worker", "command": [
            "compress", "s3://large/incoming/big.csv", "--handoff-record", record
        ]}),
        "{task:#}"
    );
    let record_head = moto.client().head_object().bucket(bucket).key(record);
    let record_head = moto
        .block_on(record_head.send())
        .expect("HEAD of the hand-off record");
    assert_eq!(
        record_head
            .metadata()
            .and_then(|metadata| metadata.get("handoff-task")),
        Some(&task_arn),
        "the record names the task"
    );
    assert!(
        handed.stdout.contains(&task_arn),
        "the answer names the task: {}",
        handed.stdout
    );
    assert!(moto.get(bucket, big) == big_content, "the source untouched");

    // Lambda's retry of the invocation (another record of it failed): its write of the record,
    // only if absent, is refused; it finds the task and starts none.
    let again = run(&mut invoke(true));
    assert!(again.success(), "{}", again.describe());
    assert!(again.stdout.contains(&task_arn), "{}", again.stdout);
    assert_eq!(
        task_arns(),
        std::slice::from_ref(&task_arn),
        "no second task"
    );

    // Two deliveries of another one at once: one task. The one that loses the race answers
    // that task, or fails for a retry while it is being started.
    let other = "incoming/other.csv";
    put(&moto, bucket, other, &text(8 * MIB, 3));
    let other_event = write_event(moto.dir(), "other.json", &s3_event(bucket, &[other]));
    let at_once: Vec<Running> = (0..2)
        .map(|_| Running::spawn(&mut invoke_with(true, &other_event)))
        .collect();
    let answers: Vec<Finished> = at_once
        .into_iter()
        .map(|delivery| delivery.finish(HANG_LIMIT))
        .collect();
    let tasks_now = task_arns();
    assert_eq!(tasks_now.len(), 2, "one more task: {tasks_now:?}");
    for answer in &answers {
        assert!(
            (answer.success()
                && tasks_now
                    .iter()
                    .any(|arn| answer.stdout.contains(arn.as_str())))
                || answer
                    .stderr
                    .contains("another delivery is starting its task"),
            "{}",
            answer.describe()
        );
    }

    // What the task runs, with no deadline: the same pipeline compresses it, and the record goes.
    let command: Vec<&str> = container["command"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let finished = run(moto.s3_compressor().args(&command));
    assert!(finished.success(), "{}", finished.describe());
    assert!(unzip(&moto, bucket, "processed/big.zip").1 == big_content);
    let keys = moto.keys(bucket);
    assert!(
        !keys.contains(record),
        "the task removed its record: {keys:?}"
    );
    assert!(
        !keys.contains(&big.to_owned()) && keys.contains(&"processed/big.zip".to_owned()),
        "{keys:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Objects that do not pay

/// A PNG as an image library writes it: 64x64 grey pixels of noise, zlib-compressed by
/// Python's zlib (about 4 KiB).
fn png(moto: &Moto) -> Vec<u8> {
    let script = "import random, struct, sys, zlib\n\
        def chunk(kind, data):\n\
        \x20   body = kind + data\n\
        \x20   return struct.pack('>I', len(data)) + body + struct.pack('>I', zlib.crc32(body))\n\
        pixels = b''.join(b'\\x00' + random.Random(i).randbytes(64) for i in range(64))\n\
        sys.stdout.buffer.write(b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 64, 64, 8, 0, 0, 0, 0))\n\
        \x20   + chunk(b'IDAT', zlib.compress(pixels)) + chunk(b'IEND', b''))\n";
    let path = moto.write_file("png.py", script.as_bytes());
    tool("python3", &[], &path)
}

/// With `if_not_worth_it = "keep"`, a real gzip file, a real PNG (under a name that does not
/// say so) and an object below `min_size` are left untouched, each with its reason and a
/// success, while text beside them is compressed; `backfill --dry-run` shows the decisions.
#[test]
fn a_keeping_rule_leaves_compressed_and_small_objects_untouched_and_compresses_text() {
    let moto = Moto::start();
    let bucket = "policy";
    moto.create_versioned_bucket(bucket);
    let config = moto.write_file(
        "keep.toml",
        b"[[rule]]\nprefix = \"incoming/\"\noutput_prefix = \"processed/\"\n\
          if_not_worth_it = \"keep\"\nmin_size = 1024\n",
    );
    let plain = moto.write_file("logs.csv", &text(20_000, 3));
    let gzip = tool("gzip", &["-c", "-6"], &plain);
    let png = png(&moto);
    let sealed = random(100_000, 5);
    let kept: [(&str, &[u8]); 4] = [
        ("incoming/logs.csv.gz", &gzip),
        ("incoming/scan.bin", &png),
        ("incoming/sealed", &sealed),
        ("incoming/tiny.csv", b"a,b\n1,2\n"),
    ];
    for (key, body) in kept {
        put(&moto, bucket, key, body);
    }
    let report = text(20_000, 4);
    put(&moto, bucket, "incoming/report.csv", &report);

    let keys: Vec<&str> = kept
        .iter()
        .map(|(key, _)| *key)
        .chain(["incoming/report.csv"])
        .collect();
    // The tiny object's record carries its size, as S3's do: kept before anything is read.
    let mut event = s3_event(bucket, &keys);
    event["Records"][3]["s3"]["object"]["size"] = json!(8);
    let finished = invoke_with(
        &moto,
        &event,
        &["--config", config.to_str().unwrap_or_default()],
    );
    assert!(finished.success(), "{}", finished.describe());
    let response = response_of(&finished);
    let expected: Vec<(String, String)> = keys
        .iter()
        .map(|key| {
            let outcome = if *key == "incoming/report.csv" {
                "compressed"
            } else {
                "kept"
            };
            ((*key).to_owned(), outcome.to_owned())
        })
        .collect();
    assert_eq!(outcomes(&response), expected, "{response:#}");
    // Each kept object's log line names the rule that kept it, the size alone included.
    let logged = finished
        .stderr
        .lines()
        .find(|line| line.contains("incoming/tiny.csv") && line.contains("outcome=\"kept\""))
        .unwrap_or_else(|| panic!("no log line for the tiny object: {}", finished.stderr));
    assert!(logged.contains("rule=\"incoming/\""), "{logged}");
    let details: Vec<&str> = response["results"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|result| result["detail"].as_str())
        .collect();
    for said in [
        "kept: already compressed (gzip)",
        "kept: already compressed (png)",
        "kept: below min_size 1024 (8 bytes)",
        "kept: does not shrink (its first 65536 bytes compress to ",
    ] {
        assert!(
            details.iter().any(|detail| detail.starts_with(said)),
            "{said}: {details:?}"
        );
    }
    for (key, body) in kept {
        assert!(moto.get(bucket, key) == body, "{key} is untouched");
        let versions = moto.versions(bucket, key);
        assert_eq!(
            versions.len(),
            1,
            "{key}: one version, no delete marker: {versions:?}"
        );
    }
    assert_eq!(
        moto.keys(bucket),
        [
            "incoming/logs.csv.gz",
            "incoming/scan.bin",
            "incoming/sealed",
            "incoming/tiny.csv",
            "processed/report.zip",
        ]
    );
    assert!(unzip(&moto, bucket, "processed/report.zip").1 == report);

    // A dry run judges the sizes it lists, and says the content is judged when read.
    let dry = run(&mut backfill(
        &moto,
        &config,
        &[&format!("s3://{bucket}"), "--dry-run"],
    ));
    assert!(dry.success(), "{}", dry.describe());
    assert!(
        dry.stdout
            .contains("incoming/tiny.csv: kept: below min_size 1024 (8 bytes)\n"),
        "{}",
        dry.describe()
    );
    assert!(
        dry.stdout.contains("incoming/scan.bin -> processed/scan.zip (rule incoming/, zip, level 7, source deleted once the output is verified; kept instead if its first bytes show compressed content)"),
        "{}",
        dry.describe()
    );
    assert_eq!(
        summary_count(&dry.stdout, "kept: below min_size 1024"),
        1,
        "{}",
        dry.stdout
    );
}

// ---------------------------------------------------------------------------------------------
// estimate

/// `estimate` of a mixed bucket of real files writes nothing, reads at most a tenth of it,
/// and comes within 5 % of what `backfill` then leaves in it.
#[test]
fn an_estimate_of_a_mixed_bucket_matches_the_backfill_that_follows() {
    use s3_compressor_tests::estimate::{estimate_then_backfill, Target};
    let moto = Moto::start();
    moto.create_bucket("mixed");
    let target = Target {
        endpoint: moto.endpoint(),
        access_key: s3_compressor_tests::MOTO_ACCESS_KEY,
        secret_key: s3_compressor_tests::MOTO_SECRET_KEY,
        bucket: "mixed",
    };
    let figures = estimate_then_backfill(&target, moto.dir(), &|endpoint| {
        let mut command = moto.s3_compressor();
        command.env("AWS_ENDPOINT_URL", endpoint);
        command
    });
    println!("{figures:?}");
}

/// `--copy-threshold` and `--copy-part-size` for a test: objects over 6 MiB are copied in parts
/// of 5 MiB, S3's smallest.
const SMALL_COPIES: [&str; 4] = ["--copy-threshold", "6291456", "--copy-part-size", "5242880"];

/// With `if_not_worth_it = "move"`, a real gzip file, a real PNG (uploaded with a CRC-64/NVME,
/// so its copy is proven without reading it), random bytes of 11 MiB (copied in three parts)
/// and an object below `min_size` each end byte-identical under the output prefix, under their
/// own names and with their content type, the source deleted recoverably (its version stays
/// behind a delete marker); text beside them is compressed, and a `keep` rule's object stays
/// untouched. `backfill --dry-run` shows the decisions.
#[test]
fn a_moving_rule_copies_what_does_not_pay_unchanged_and_deletes_the_source_recoverably() {
    let moto = Moto::start();
    let bucket = "moving";
    moto.create_versioned_bucket(bucket);
    let config = moto.write_file(
        "move.toml",
        b"[[rule]]\nprefix = \"incoming/\"\noutput_prefix = \"processed/\"\n\
          if_not_worth_it = \"move\"\nmin_size = 1024\n\n\
          [[rule]]\nprefix = \"incoming/keep/\"\noutput_prefix = \"processed/keep/\"\n\
          if_not_worth_it = \"keep\"\n",
    );
    let plain = moto.write_file("logs.csv", &text(20_000, 3));
    let gzip = tool("gzip", &["-c", "-6"], &plain);
    let png = png(&moto);
    let large = random(11 * MIB, 6);
    let moved: [(&str, &[u8]); 4] = [
        ("incoming/a/logs.csv.gz", &gzip),
        ("incoming/a/scan.png", &png),
        ("incoming/large.bin", &large),
        ("incoming/tiny.csv", b"a,b\n1,2\n"),
    ];
    for (key, body) in moved {
        if key.ends_with(".png") {
            moto.block_on(
                moto.client()
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .content_type("image/png")
                    .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc64Nvme)
                    .body(body.to_vec().into())
                    .send(),
            )
            .expect("PutObject with a CRC-64/NVME");
        } else {
            put(&moto, bucket, key, body);
        }
    }
    put(&moto, bucket, "incoming/keep/old.gz", &gzip);
    let report = text(20_000, 4);
    put(&moto, bucket, "incoming/report.csv", &report);

    let keys: Vec<&str> = moved
        .iter()
        .map(|(key, _)| *key)
        .chain(["incoming/keep/old.gz", "incoming/report.csv"])
        .collect();
    let mut event = s3_event(bucket, &keys);
    event["Records"][3]["s3"]["object"]["size"] = json!(8);
    let mut args = vec!["--config", config.to_str().unwrap_or_default()];
    args.extend(SMALL_COPIES);
    let started = Instant::now();
    let finished = invoke_with(&moto, &event, &args);
    assert!(finished.success(), "{}", finished.describe());
    let response = response_of(&finished);
    let expected: Vec<(String, String)> = keys
        .iter()
        .map(|key| {
            let outcome = match *key {
                "incoming/report.csv" => "compressed",
                "incoming/keep/old.gz" => "kept",
                _ => "moved",
            };
            ((*key).to_owned(), outcome.to_owned())
        })
        .collect();
    assert_eq!(outcomes(&response), expected, "{response:#}");
    eprintln!("moved and compressed in {:?}", started.elapsed());

    for (key, body) in moved {
        let output = key.replacen("incoming/", "processed/", 1);
        assert!(
            moto.get(bucket, &output) == body,
            "{output} is {key}'s bytes"
        );
        let head = moto.head(bucket, &output).expect("the copy");
        assert_eq!(
            head.metadata.get("source-key").map(String::as_str),
            Some(key)
        );
        let versions = moto.versions(bucket, key);
        let marker = versions.iter().find(|version| version.is_latest);
        let source = versions.iter().find(|version| !version.delete_marker);
        assert!(
            versions.len() == 2 && marker.is_some_and(|marker| marker.delete_marker),
            "{key}: its version behind a delete marker: {versions:?}"
        );
        let kept = moto
            .get_version(bucket, key, source.map(|source| source.version_id.as_str()))
            .expect("the source's version");
        assert!(kept == body, "{key}'s version is intact");
    }
    assert_eq!(
        moto.head(bucket, "processed/a/scan.png")
            .and_then(|head| head.content_type)
            .as_deref(),
        Some("image/png")
    );
    // What each delete rested on: the PNG's own CRC-64/NVME, read nowhere; the others keep a
    // CRC-32 (the SDK's default), so they were read once and held against it.
    let logged = |key: &str| {
        finished
            .stderr
            .lines()
            .find(|line| {
                line.contains(&format!("key={key} ")) && line.contains("outcome=\"moved\"")
            })
            .unwrap_or_else(|| panic!("no log line for {key}: {}", finished.stderr))
            .to_owned()
    };
    assert!(logged("incoming/a/scan.png").contains("source_proof=\"crc64nvme\""));
    assert!(logged("incoming/large.bin").contains("source_proof=\"crc32\""));
    assert!(logged("incoming/large.bin").contains("proof=\"stored-checksum\""));
    let large_copy = moto.head(bucket, "processed/large.bin").expect("the copy");
    assert!(
        large_copy.etag.ends_with("-3"),
        "copied in three parts: {large_copy:?}"
    );
    assert!(
        moto.get(bucket, "incoming/keep/old.gz") == gzip,
        "kept untouched"
    );
    assert_eq!(moto.versions(bucket, "incoming/keep/old.gz").len(), 1);
    assert!(unzip(&moto, bucket, "processed/report.zip").1 == report);
    assert!(moto.open_uploads(bucket).is_empty());

    // A dry run shows the move of what its size decides, and what the content may decide.
    put(&moto, bucket, "incoming/small.txt", b"hello");
    put(&moto, bucket, "incoming/notes.csv", &text(5_000, 5));
    let dry = run(&mut backfill(
        &moto,
        &config,
        &[&format!("s3://{bucket}"), "--dry-run"],
    ));
    assert!(dry.success(), "{}", dry.describe());
    for said in [
        "incoming/small.txt: moved: below min_size 1024 (5 bytes) -> processed/small.txt\n",
        "incoming/notes.csv -> processed/notes.zip (rule incoming/, zip, level 7, source deleted once the output is verified; moved unchanged to processed/notes.csv instead if its first bytes show compressed content)",
    ] {
        assert!(dry.stdout.contains(said), "{said}: {}", dry.describe());
    }
    // The run itself counts what it moved, which saved nothing.
    let done = run(&mut backfill(&moto, &config, &[&format!("s3://{bucket}")]));
    assert!(done.success(), "{}", done.describe());
    assert!(
        done.stdout.contains("moved: below min_size 1024"),
        "{}",
        done.stdout
    );
    assert!(done.stdout.contains("5 B, saved 0"), "{}", done.stdout);
    assert!(moto.get(bucket, "processed/small.txt") == b"hello");
}
