//! `s3-compressor estimate` against a mixed bucket of real files, held against what
//! `backfill` of the same bucket then does: the same check on moto and on `serve`.
//!
//! The bucket holds the repository's own sources and docs, HTML and man pages from
//! /usr/share where the machine has them (gzip, so already compressed), PNG images, random
//! bytes, many small objects and one text object of a few MiB, which is sampled in windows.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::faults::{FaultProxy, Op};
use crate::process::run;
use crate::{csv_text, random, s3_client, workspace_root};

/// Two rules: everything under `incoming/` as zip, keeping compressed content and objects
/// under 1 KiB where they are; `incoming/logs/` as gzip, compressing everything.
pub const CONFIG: &str = r#"
[[rule]]
prefix = "incoming/"
output_prefix = "processed/"
if_not_worth_it = "keep"
min_size = 1024

[[rule]]
prefix = "incoming/logs/"
output_prefix = "processed/logs/"
format = "gzip"
"#;

/// Where the estimate runs: an S3 endpoint with a key pair, and a bucket that exists.
#[derive(Debug)]
pub struct Target<'a> {
    pub endpoint: &'a str,
    pub access_key: &'a str,
    pub secret_key: &'a str,
    pub bucket: &'a str,
}

/// What the test measured, for its log.
#[derive(Debug)]
pub struct Figures {
    pub bucket_bytes: u64,
    pub estimated_after: f64,
    pub error_bound: f64,
    pub actual_after: u64,
    pub read_on_the_wire: u64,
    pub seconds: f64,
}

/// The files of the mixed bucket, by key.
pub fn mixed_objects() -> BTreeMap<String, Vec<u8>> {
    let root = workspace_root();
    let mut objects = BTreeMap::new();
    let mut text_files = Vec::new();
    for folder in [
        "worker/src",
        "formats/src",
        "config/src",
        "serve/src",
        "events/src",
    ] {
        for path in files_under(&root.join(folder), &|name| name.ends_with(".rs")) {
            let key = path.strip_prefix(root).unwrap_or(&path).display();
            objects.insert(format!("incoming/src/{key}"), read(&path));
            text_files.push(path);
        }
    }
    for path in files_under(&root.join("docs"), &|name| name.ends_with(".md")) {
        objects.insert(format!("incoming/docs/{}", file_name(&path)), read(&path));
        text_files.push(path);
    }
    let html = files_under(Path::new("/usr/share/doc"), &|name| name.ends_with(".html"));
    for path in html
        .iter()
        .filter(|path| sized(path, 10 << 10, 1 << 20))
        .take(4)
    {
        objects.insert(format!("incoming/html/{}", file_name(path)), read(path));
    }
    let man = files_under(Path::new("/usr/share/man/man1"), &|name| {
        name.ends_with(".gz")
    });
    for path in man
        .iter()
        .filter(|path| sized(path, 2 << 10, 256 << 10))
        .take(6)
    {
        objects.insert(format!("incoming/man/{}", file_name(path)), read(path));
    }
    let png = files_under(Path::new("/usr/share"), &|name| name.ends_with(".png"));
    for path in png
        .iter()
        .filter(|path| sized(path, 4 << 10, 512 << 10))
        .take(3)
    {
        objects.insert(format!("incoming/images/{}", file_name(path)), read(path));
    }
    // Compressed content the repository itself makes, for a machine without any of the above.
    objects.insert(
        "incoming/archives/docs.zip".to_owned(),
        zipped(&text_files[..text_files.len().min(8)]),
    );
    objects.insert("incoming/random/noise-1.bin".to_owned(), random(2 << 20, 1));
    objects.insert("incoming/random/noise-2.bin".to_owned(), random(2 << 20, 2));
    objects.insert("incoming/logs/noise.bin".to_owned(), random(512 << 10, 3));
    for index in 0..300_u64 {
        let len = 200 + (index as usize * 37) % 3000;
        objects.insert(
            format!("incoming/small/row-{index:03}.csv"),
            csv_text(len, index * 1000),
        );
    }
    // A few MiB of real text: the repository's text files one after another.
    let mut log = Vec::new();
    let text = files_under(root, &|name| {
        [".rs", ".md", ".toml", ".yaml", ".sh"]
            .iter()
            .any(|extension| name.ends_with(extension))
    });
    for path in text
        .iter()
        .filter(|path| !path.starts_with(root.join("target")))
    {
        if log.len() >= 4 << 20 {
            break;
        }
        log.extend(read(path));
    }
    objects.insert("incoming/logs/app.log".to_owned(), log);
    objects
}

/// Fills `target`'s bucket with [`mixed_objects`], estimates it through a proxy that counts
/// what is read and written, then backfills it, and checks: the estimate wrote nothing (no
/// write request, the same keys, ETags and sizes after), read at most 10 % of the bytes, its
/// `--json` has the documented fields, and its projected bytes are within 5 % (and within its
/// own error bound) of what the backfill left in the bucket.
pub fn estimate_then_backfill(
    target: &Target<'_>,
    dir: &Path,
    s3_compressor: &dyn Fn(&str) -> Command,
) -> Figures {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the S3 client");
    let client = s3_client(target.endpoint, target.access_key, target.secret_key);
    let objects = mixed_objects();
    runtime.block_on(async {
        let mut uploads = tokio::task::JoinSet::new();
        for (key, body) in objects {
            let (client, bucket) = (client.clone(), target.bucket.to_owned());
            uploads.spawn(async move {
                client
                    .put_object()
                    .bucket(bucket)
                    .key(&key)
                    .body(body.into())
                    .send()
                    .await
                    .unwrap_or_else(|error| panic!("PutObject {key}: {error:?}"));
            });
            while uploads.len() >= 16 {
                uploads.join_next().await;
            }
        }
        while uploads.join_next().await.is_some() {}
    });
    let before = runtime.block_on(listing(&client, target.bucket));
    let bucket_bytes: u64 = before.values().map(|(_, size)| size).sum();
    let config = dir.join("estimate.toml");
    std::fs::write(&config, CONFIG).expect("the config is written");
    let url = format!("s3://{}", target.bucket);

    let proxy = FaultProxy::start(target.endpoint);
    let started = Instant::now();
    let finished = run(s3_compressor(proxy.endpoint())
        .arg("--config")
        .arg(&config)
        .args(["estimate", &url, "--json"]));
    let seconds = started.elapsed().as_secs_f64();
    assert!(finished.success(), "estimate: {}", finished.describe());
    for op in [
        Op::PutObject,
        Op::CreateMultipartUpload,
        Op::UploadPart,
        Op::CompleteMultipartUpload,
        Op::AbortMultipartUpload,
        Op::DeleteObject,
    ] {
        assert_eq!(proxy.count(op), 0, "estimate sent a {op:?}");
    }
    let read_on_the_wire = proxy.bytes_got();
    let after = runtime.block_on(listing(&client, target.bucket));
    assert_eq!(after, before, "the estimate changed the bucket");

    let report: serde_json::Value = serde_json::from_str(&finished.stdout)
        .unwrap_or_else(|error| panic!("--json is not JSON ({error}): {}", finished.stdout));
    let number = |value: &serde_json::Value, path: &str| {
        value
            .pointer(path)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or_else(|| panic!("no number at {path} in {value:#}"))
    };
    assert_eq!(number(&report, "/objects") as usize, before.len());
    assert_eq!(number(&report, "/bytes") as u64, bucket_bytes);
    let reported_read = number(&report, "/read/bytes") as u64;
    assert!(
        reported_read > 0 && reported_read <= read_on_the_wire,
        "it says it read {reported_read} bytes, {read_on_the_wire} went by"
    );
    assert!(
        read_on_the_wire as f64 <= 0.10 * bucket_bytes as f64,
        "it read {read_on_the_wire} of {bucket_bytes} bytes"
    );
    for field in [
        "/total/bytes_after",
        "/total/bytes_after_error",
        "/total/saved_usd_per_month",
        "/total/one_time_usd/requests",
        "/total/one_time_usd/lambda",
        "/total/below_break_even_objects",
        "/prices/standard_gb_month",
        "/lambda_memory_mb",
        "/read/budget_bytes",
    ] {
        number(&report, field);
    }
    let rows = report["rows"].as_array().expect("rows is a list");
    let row = |rule: &str, kind: &str| {
        rows.iter()
            .find(|row| row["rule"] == rule && row["kind"] == kind)
            .unwrap_or_else(|| panic!("no row for {rule} {kind} in {rows:#?}"))
    };
    // The large log is sampled in windows, not read whole; the random bytes are kept by the
    // policy of incoming/, and compressed (to nothing less) by that of incoming/logs/.
    let log = row("incoming/logs/", "text");
    assert!(number(log, "/sampled_objects") >= 1.0, "{log:#}");
    assert!(
        number(&report, "/read/bytes") < number(log, "/bytes"),
        "{log:#}"
    );
    let noise = row("incoming/", "binary");
    assert_eq!(number(noise, "/kept_objects"), number(noise, "/objects"));
    let noise = row("incoming/logs/", "binary");
    assert!(
        number(noise, "/bytes_after") > (512 << 10) as f64,
        "{noise:#}"
    );
    let unchanged = report["unchanged"].as_array().expect("unchanged is a list");
    assert!(
        unchanged
            .iter()
            .any(|row| row["kind"] == "kept: below min_size 1024"),
        "{unchanged:#?}"
    );

    let human = run(s3_compressor(target.endpoint)
        .arg("--config")
        .arg(&config)
        .args(["estimate", &url]));
    assert!(human.success(), "estimate: {}", human.describe());
    assert!(
        human
            .stdout
            .contains("Compressing this bucket would save about"),
        "{}",
        human.stdout
    );
    println!(
        "$ s3-compressor --config estimate.toml estimate {url}\n{}",
        human.stdout
    );

    let backfill = run(s3_compressor(target.endpoint)
        .arg("--config")
        .arg(&config)
        .args(["backfill", &url]));
    assert!(backfill.success(), "backfill: {}", backfill.describe());
    let compressed = runtime.block_on(listing(&client, target.bucket));
    let actual_after: u64 = compressed.values().map(|(_, size)| size).sum();
    let estimated_after = number(&report, "/total/bytes_after");
    let error_bound = number(&report, "/total/bytes_after_error");
    let error = (estimated_after - actual_after as f64).abs();
    assert!(
        error <= 0.05 * actual_after as f64,
        "estimated {estimated_after:.0} bytes after, the backfill left {actual_after}"
    );
    assert!(
        error <= error_bound,
        "estimated {estimated_after:.0} ± {error_bound:.0} bytes, the backfill left {actual_after}"
    );
    Figures {
        bucket_bytes,
        estimated_after,
        error_bound,
        actual_after,
        read_on_the_wire,
        seconds,
    }
}

/// Every key of `bucket` with its ETag and size.
async fn listing(client: &aws_sdk_s3::Client, bucket: &str) -> BTreeMap<String, (String, u64)> {
    let mut found = BTreeMap::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.unwrap_or_else(|error| panic!("ListObjectsV2 {bucket}: {error:?}"));
        for object in page.contents() {
            found.insert(
                object.key().unwrap_or_default().to_owned(),
                (
                    object.e_tag().unwrap_or_default().to_owned(),
                    object.size().unwrap_or(0).try_into().unwrap_or(0),
                ),
            );
        }
    }
    found
}

/// The files under `dir` (recursively, sorted) whose name `wanted` accepts; none if it is
/// not there.
fn files_under(dir: &Path, wanted: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut folders = vec![dir.to_owned()];
    while let Some(folder) = folders.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => folders.push(path),
                Ok(kind) if kind.is_file() && wanted(&file_name(&path)) => found.push(path),
                _ => {}
            }
        }
    }
    found.sort();
    found
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn sized(path: &Path, min: u64, max: u64) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| (min..=max).contains(&meta.len()))
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|error| panic!("read {}: {error}", path.display()))
}

/// A zip of `files`, deflated: compressed content that no signature check can miss.
fn zipped(files: &[PathBuf]) -> Vec<u8> {
    let mut archive = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for path in files {
        archive
            .start_file(file_name(path), options)
            .expect("a zip entry");
        std::io::Write::write_all(&mut archive, &read(path)).expect("the entry's bytes");
    }
    archive.finish().expect("the zip's directory").into_inner()
}
