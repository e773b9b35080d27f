//! The binary as a Lambda function: started with no command and the Lambda runtime's
//! environment, polling cargo-lambda's Runtime API emulator, invoked over HTTP as the Lambda
//! Invoke API is, against a real S3 API (moto_server). Everything on 127.0.0.1.

use s3_compressor_tests::events::{fixture, s3_event, sqs_batch, sqs_message};
use s3_compressor_tests::{LambdaFunction, Moto};
use serde_json::{json, Value};

fn csv(rows: usize) -> Vec<u8> {
    let mut out = b"id,amount\n".to_vec();
    for row in 0..rows {
        out.extend_from_slice(format!("{row},{}\n", row * 37 % 1000).as_bytes());
    }
    out
}

/// The entry of a one-file zip, read with the `zip` crate.
fn unzip(bytes: Vec<u8>) -> (String, Vec<u8>) {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a zip");
    assert_eq!(archive.len(), 1);
    let mut entry = archive.by_index(0).expect("its entry");
    let mut content = Vec::new();
    std::io::Read::read_to_end(&mut entry, &mut content).expect("the entry reads");
    let name = entry.name().expect("a UTF-8 entry name").into_owned();
    (name, content)
}

#[test]
fn an_s3_event_compresses_the_object() {
    let moto = Moto::start();
    moto.create_bucket("lambda");
    let key = "incoming/daily/sales 2024+05.csv";
    let content = csv(5_000);
    moto.put("lambda", key, content.clone());
    let mut function = LambdaFunction::start(&moto, None, &[]);

    let answer = function.invoke(&s3_event("lambda", &[key]));

    assert_eq!(answer.status, 200, "{answer:?}");
    let results = &answer.body["results"];
    assert_eq!(results[0]["key"], key, "{answer:?}");
    assert_eq!(results[0]["outcome"], "compressed", "{answer:?}");
    let output = "processed/daily/sales 2024+05.zip";
    assert_eq!(moto.keys("lambda"), [output]);
    assert_eq!(
        unzip(moto.get("lambda", output)),
        ("sales 2024+05.csv".to_owned(), content)
    );
}

#[test]
fn the_s3_test_event_is_acknowledged() {
    let moto = Moto::start();
    moto.create_bucket("files");
    let mut function = LambdaFunction::start(&moto, None, &[]);

    let answer = function.invoke(&fixture("s3-test-event.json"));

    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.body["status"], "s3:TestEvent acknowledged",
        "{answer:?}"
    );
    assert_eq!(answer.body["bucket"], "files", "{answer:?}");
}

#[test]
fn an_unrecognised_payload_is_an_error_and_the_function_keeps_serving() {
    let moto = Moto::start();
    moto.create_bucket("lambda");
    moto.put("lambda", "incoming/after.csv", csv(10));
    let mut function = LambdaFunction::start(&moto, None, &[]);

    let answer = function.invoke(&fixture("unknown.json"));

    assert_eq!(answer.body["errorType"], "UnrecognisedEvent", "{answer:?}");
    let message = answer.body["errorMessage"].as_str().unwrap_or_default();
    assert!(
        message.contains("payload") && message.contains("httpMethod"),
        "the message says where and what it found: {message}"
    );
    assert!(function.is_running(), "{}", function.stderr());

    let answer = function.invoke(&s3_event("lambda", &["incoming/after.csv"]));
    assert_eq!(
        answer.body["results"][0]["outcome"], "compressed",
        "{answer:?}"
    );
    assert_eq!(moto.keys("lambda"), ["processed/after.zip"]);
}

#[test]
fn an_sqs_batch_returns_the_messages_to_retry() {
    let moto = Moto::start();
    moto.create_bucket("queue");
    moto.put("queue", "incoming/a.csv", csv(100));
    moto.put("queue", "incoming/b.csv", csv(200));
    let mut function = LambdaFunction::start(&moto, None, &[]);
    let batch = sqs_batch(vec![
        sqs_message("m-a", &s3_event("queue", &["incoming/a.csv"]).to_string()),
        sqs_message("m-garbage", "{\"not\": \"an event\"}"),
        sqs_message("m-b", &s3_event("queue", &["incoming/b.csv"]).to_string()),
    ]);

    let answer = function.invoke(&batch);

    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(
        answer.body,
        json!({ "batchItemFailures": [{ "itemIdentifier": "m-garbage" }] })
    );
    assert_eq!(moto.keys("queue"), ["processed/a.zip", "processed/b.zip"]);
}

#[test]
fn json_logs_have_one_line_per_object_and_stdout_has_the_metrics() {
    let moto = Moto::start();
    moto.create_bucket("logs");
    let config = moto.write_file(
        "logs.toml",
        b"[[rule]]\nprefix = \"incoming/\"\noutput_prefix = \"processed/\"\n\n\
          [[rule]]\nprefix = \"incoming/logs/\"\noutput_prefix = \"processed/logs/\"\nformat = \"gzip\"\n",
    );
    let content = csv(20_000);
    moto.put("logs", "incoming/logs/app.log", content.clone());
    let mut function =
        LambdaFunction::start(&moto, Some(&config), &[("AWS_LAMBDA_LOG_FORMAT", "JSON")]);

    let answer = function.invoke(&s3_event(
        "logs",
        &["incoming/logs/app.log", "elsewhere/skip.csv"],
    ));
    assert_eq!(answer.status, 200, "{answer:?}");

    let stderr = function.stderr();
    let lines: Vec<Value> = stderr
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("a log line that is not JSON ({error}): {line}"))
        })
        .collect();
    let starting = lines
        .iter()
        .find(|line| line["message"] == "starting")
        .unwrap_or_else(|| panic!("no start line in:\n{stderr}"));
    assert!(
        starting["version"]
            .as_str()
            .is_some_and(|version| version.starts_with(env!("CARGO_PKG_VERSION")))
            && starting["config_hash"]
                .as_str()
                .is_some_and(|hash| hash.len() == 12),
        "{starting}"
    );
    let compressed = lines
        .iter()
        .find(|line| line["key"] == "incoming/logs/app.log")
        .unwrap_or_else(|| panic!("no line for the object in:\n{stderr}"));
    for field in [
        "bucket",
        "key",
        "rule",
        "format",
        "bytes_in",
        "bytes_out",
        "ratio",
        "source_proof",
        "proof",
        "ms",
        "outcome",
    ] {
        assert!(
            compressed.get(field).is_some(),
            "{field} missing: {compressed}"
        );
    }
    assert_eq!(compressed["bucket"], "logs");
    assert_eq!(compressed["rule"], "incoming/logs/");
    assert_eq!(compressed["format"], "gzip");
    assert_eq!(compressed["outcome"], "compressed");
    // moto keeps the checksums the SDK sends and the worker's CRC-64/NVME of the output.
    assert_eq!(compressed["proof"], "stored-checksum", "{compressed}");
    assert_ne!(compressed["source_proof"], "size", "{compressed}");
    assert_eq!(compressed["bytes_in"], content.len());
    let head = moto
        .head("logs", "processed/logs/app.log.gz")
        .expect("output");
    assert_eq!(compressed["bytes_out"], head.size);
    // What the delete freed: the source's bytes less the output's.
    let saved = content.len() as i64 - head.size as i64;
    assert!(saved > 0, "CSV shrinks: {compressed}");
    assert_eq!(compressed["saved_bytes"], saved, "{compressed}");
    // At S3 Standard's default $0.023 per GB-month.
    let usd = compressed["saved_usd_per_month"]
        .as_f64()
        .expect("a number");
    let expected = saved as f64 / (1u64 << 30) as f64 * 0.023;
    assert!((usd - expected).abs() <= expected * 1e-9, "{compressed}");
    // Input over output, as docs/ and the benchmark quote it: CSV shrinks, so above 1.
    let ratio = compressed["ratio"].as_f64().expect("ratio is a number");
    let expected = content.len() as f64 / head.size as f64;
    assert!(
        ratio > 1.0 && (ratio - expected).abs() < 0.01,
        "ratio {ratio}, expected {expected:.3}: {compressed}"
    );
    let skipped = lines
        .iter()
        .find(|line| line["key"] == "elsewhere/skip.csv")
        .unwrap_or_else(|| panic!("no line for the skipped key in:\n{stderr}"));
    assert_eq!(skipped["outcome"], "skipped", "{skipped}");

    let stdout = function.stdout();
    let metrics: Vec<Value> = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["_aws"]["CloudWatchMetrics"].is_array())
        .collect();
    assert_eq!(metrics.len(), 1, "one EMF line per invocation:\n{stdout}");
    let metrics = &metrics[0];
    assert_eq!(
        metrics["_aws"]["CloudWatchMetrics"][0]["Namespace"],
        "s3-compressor"
    );
    assert_eq!(metrics["Objects"], 2, "{metrics}");
    assert_eq!(metrics["Compressed"], 1, "{metrics}");
    assert_eq!(metrics["Failures"], 0, "{metrics}");
    assert_eq!(metrics["BytesIn"], content.len(), "{metrics}");
    assert_eq!(metrics["BytesOut"], head.size, "{metrics}");
    assert_eq!(metrics["BytesSaved"], saved, "{metrics}");
    // Every name the metric directive declares has a value on the line.
    for declared in metrics["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .expect("metric definitions")
    {
        let name = declared["Name"].as_str().expect("a metric name");
        assert!(metrics[name].is_number(), "{name} has no value: {metrics}");
    }
}

#[test]
fn a_transient_failure_fails_the_invocation_so_lambda_retries_it() {
    let mut moto = Moto::start();
    moto.create_bucket("flaky");
    moto.put("flaky", "incoming/report.csv", csv(10));
    let mut function = LambdaFunction::start(&moto, None, &[]);
    moto.stop();

    let answer = function.invoke(&s3_event("flaky", &["incoming/report.csv"]));

    assert_eq!(answer.body["errorType"], "RetryableFailure", "{answer:?}");
    let message = answer.body["errorMessage"].as_str().unwrap_or_default();
    assert!(
        message.contains("s3://flaky/incoming/report.csv"),
        "names the object: {message}"
    );
    assert!(function.is_running(), "{}", function.stderr());
    let answer = function.invoke(&fixture("s3-test-event.json"));
    assert_eq!(
        answer.body["status"], "s3:TestEvent acknowledged",
        "{answer:?}"
    );
}

/// A failure no retry can fix fails the invocation too, typed so, so that it reaches the
/// on-failure destination after Lambda's retries instead of ending as a log line.
#[test]
fn a_permanent_failure_fails_the_invocation_as_a_permanent_failure() {
    let moto = Moto::start();
    moto.create_bucket("clash");
    moto.put("clash", "incoming/report.csv", csv(10));
    moto.put("clash", "incoming/report.txt", csv(20));
    let mut function = LambdaFunction::start(&moto, None, &[]);

    let first = function.invoke(&s3_event("clash", &["incoming/report.csv"]));
    assert_eq!(
        first.body["results"][0]["outcome"], "compressed",
        "{first:?}"
    );
    let second = function.invoke(&s3_event("clash", &["incoming/report.txt"]));

    assert_eq!(second.body["errorType"], "PermanentFailure", "{second:?}");
    let message = second.body["errorMessage"].as_str().unwrap_or_default();
    assert!(
        message.contains("s3://clash/incoming/report.txt")
            && message.contains("made from incoming/report.csv"),
        "names the object and why: {message}"
    );
    assert!(function.is_running(), "{}", function.stderr());
    assert!(
        moto.head("clash", "incoming/report.txt").is_some(),
        "source kept"
    );
}
