//! `s3-compressor serve` as a user runs it: the embedded endpoint, the AWS CLI uploading to it,
//! the compressed objects appearing, and Ctrl-C stopping it.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_s3::error::ProvideErrorMetadata;
use indicatif::HumanBytes;

use s3_compressor_tests::events::{s3_event, sqs_batch, sqs_message, write_event};
use s3_compressor_tests::moto::{list_keys, put_in_parts, Moto};
use s3_compressor_tests::process::{free_port, run, Finished, Running, HANG_LIMIT};
use s3_compressor_tests::{
    crc32, csv_text, random, s3_client, s3_compressor, workspace_root, zip_entry,
};

const BUCKET: &str = "files";
const ACCESS_KEY: &str = "serve-test";
const SECRET_KEY: &str = "serve-test-secret";

/// A running `serve` with its own data folder.
struct Serve {
    process: Option<Running>,
    port: u16,
    dir: tempfile::TempDir,
}

impl Serve {
    fn start(config: Option<&Path>) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), config)
    }

    /// `serve` on a folder that may already hold data (under `DIR/data`).
    fn start_in(dir: tempfile::TempDir, config: Option<&Path>) -> Self {
        let data = dir.path().join("data");
        Self::start_on(&data, dir, config)
    }

    /// `serve` with `data` as its data directory; `dir` is the test's own folder.
    fn start_on(data: &Path, dir: tempfile::TempDir, config: Option<&Path>) -> Self {
        let port = free_port();
        let mut command = s3_compressor();
        command
            .arg("serve")
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .arg("--data")
            .arg(data)
            .args(["--bucket", BUCKET])
            .env("S3_COMPRESSOR_ACCESS_KEY", ACCESS_KEY)
            .env("S3_COMPRESSOR_SECRET_KEY", SECRET_KEY);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        Self::listening(Running::spawn(&mut command), port, dir)
    }

    /// Waits until `process`, a `serve` started on `port`, listens.
    fn listening(mut process: Running, port: u16, dir: tempfile::TempDir) -> Self {
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_err() {
            if let Some(finished) = process.try_finish() {
                panic!("serve exited before listening:\n{}", finished.describe());
            }
            assert!(
                Instant::now() < deadline,
                "serve did not listen on {address}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            process: Some(process),
            port,
            dir,
        }
    }

    /// The AWS CLI, configured as `serve` tells its user to.
    fn aws(&self) -> Command {
        let mut command = Command::new("aws");
        self.aws_environment(&mut command);
        command
    }

    /// `command` with the settings `serve` tells its user to export.
    fn aws_environment<'c>(&self, command: &'c mut Command) -> &'c mut Command {
        command
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env(
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.port),
            )
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
        command
    }

    fn upload(&self, file: &Path, key: &str) {
        let finished = run(self
            .aws()
            .args(["s3", "cp", "--only-show-errors"])
            .arg(file)
            .arg(format!("s3://{BUCKET}/{key}")));
        assert!(finished.success(), "aws s3 cp: {}", finished.describe());
    }

    fn keys(&self) -> Vec<String> {
        let finished = run(self.aws().args([
            "s3api",
            "list-objects-v2",
            "--bucket",
            BUCKET,
            "--query",
            "Contents[].Key",
            "--output",
            "json",
        ]));
        assert!(finished.success(), "list: {}", finished.describe());
        let keys: Option<Vec<String>> = serde_json::from_str(&finished.stdout).unwrap();
        let mut keys = keys.unwrap_or_default();
        keys.sort();
        keys
    }

    /// Waits until the bucket holds exactly `expected`: compression runs after the upload
    /// returns, so the test watches as a user would.
    fn wait_for_keys(&self, expected: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let keys = self.keys();
            if keys == expected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the bucket holds {keys:?}, expected {expected:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn download(&self, key: &str) -> PathBuf {
        let path = self.dir.path().join(key.replace('/', "_"));
        let finished = run(self
            .aws()
            .args(["s3", "cp", "--only-show-errors"])
            .arg(format!("s3://{BUCKET}/{key}"))
            .arg(&path));
        assert!(finished.success(), "download: {}", finished.describe());
        path
    }

    /// `s3-compressor compress s3://BUCKET/KEY` against this endpoint, with `secret` as the
    /// secret key.
    fn compress(&self, bucket: &str, key: &str, secret: &str) -> Finished {
        run(self
            .worker(secret)
            .args(["compress", &format!("s3://{bucket}/{key}")]))
    }

    /// Another `s3-compressor` pointed at this endpoint, with `secret` as the secret key.
    fn worker(&self, secret: &str) -> Command {
        let mut command = s3_compressor();
        command
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env(
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{}", self.port),
            )
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true");
        command
    }

    /// The failure report of `key` as a user reads it, if there is one.
    fn failure_report(&self, key: &str) -> Option<serde_json::Value> {
        let finished = run(self
            .aws()
            .args(["s3", "cp", "--only-show-errors"])
            .arg(format!("s3://{BUCKET}/s3-compressor/failures/{key}.json"))
            .arg("-"));
        finished
            .success()
            .then(|| serde_json::from_str(&finished.stdout).unwrap())
    }

    /// The Rust SDK against this endpoint: a step takes milliseconds, where a CLI process
    /// takes seconds on a busy machine.
    fn sdk(&self) -> Sdk {
        Sdk {
            runtime: tokio::runtime::Runtime::new().unwrap(),
            client: s3_client(
                &format!("http://127.0.0.1:{}", self.port),
                ACCESS_KEY,
                SECRET_KEY,
            ),
        }
    }

    /// Ctrl-C, as a user stops it.
    fn interrupt(mut self) -> Finished {
        self.stop()
    }

    /// Ctrl-C, then `serve` again on the same folder.
    fn restart(mut self, config: Option<&Path>) -> (Finished, Self) {
        let finished = self.stop();
        (finished, Self::start_in(self.dir, config))
    }

    fn stop(&mut self) -> Finished {
        let process = self.process.take().unwrap();
        let sent = Command::new("kill")
            .args(["-INT", &process.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        process.finish(Duration::from_secs(60))
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn unzip(path: &Path) -> Vec<u8> {
    let finished = Command::new("unzip").arg("-p").arg(path).output().unwrap();
    assert!(finished.status.success(), "unzip -p {}", path.display());
    finished.stdout
}

fn text(lines: usize) -> Vec<u8> {
    (0..lines)
        .map(|n| format!("{{\"line\":{n},\"level\":\"info\",\"msg\":\"request served\"}}\n"))
        .collect::<String>()
        .into_bytes()
}

#[test]
fn an_upload_from_the_aws_cli_comes_out_zipped_and_ctrl_c_stops_cleanly() {
    let serve = Serve::start(None);
    let original = text(20_000);
    let file = write(serve.dir.path(), "report.csv", &original);
    serve.upload(&file, "incoming/report.csv");

    serve.wait_for_keys(&["processed/report.zip"]);
    let zip = serve.download("processed/report.zip");
    assert_eq!(unzip(&zip), original);
    let listing = Command::new("unzip").arg("-Z1").arg(&zip).output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&listing.stdout).trim(),
        "report.csv"
    );

    let zipped = std::fs::metadata(&zip).unwrap().len();
    let port = serve.port;
    let finished = serve.interrupt();
    assert!(finished.success(), "{}", finished.describe());
    // It ends saying what the run saved: this one text file, compressed.
    assert!(
        finished.stdout.contains(&format!(
            "Stopped: 1 compressed in this run, {} -> {}, saved {} (",
            HumanBytes(original.len() as u64),
            HumanBytes(zipped),
            HumanBytes(original.len() as u64 - zipped)
        )),
        "{}",
        finished.describe()
    );
    // What the user pastes into a shell; a secret key they chose is not printed (the harness
    // checks every run's output for it).
    for line in [
        format!("export AWS_ACCESS_KEY_ID={ACCESS_KEY}"),
        "export AWS_SECRET_ACCESS_KEY=...   # the secret key serve was given".to_owned(),
        format!("export AWS_ENDPOINT_URL=http://127.0.0.1:{port}"),
    ] {
        assert!(finished.stdout.contains(&line), "{}", finished.describe());
    }
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the port is closed after Ctrl-C"
    );
}

#[test]
fn awkward_keys_empty_files_and_multipart_uploads_are_all_compressed() {
    let serve = Serve::start(None);
    let small = write(serve.dir.path(), "small", b"a,b\n1,2\n");
    let empty = write(serve.dir.path(), "empty", b"");
    // Random bytes over the CLI's 8 MiB threshold: uploaded in parts, compressed in parts.
    let noise = random(20 * 1024 * 1024, 9);
    let big = write(serve.dir.path(), "big", &noise);

    serve.upload(&small, "incoming/a b+c/100% 日本.csv");
    serve.upload(&empty, "incoming/deep/er/still/empty.txt");
    serve.upload(&big, "incoming/noise.bin");

    serve.wait_for_keys(&[
        "processed/a b+c/100% 日本.zip",
        "processed/deep/er/still/empty.zip",
        "processed/noise.zip",
    ]);
    assert_eq!(
        unzip(&serve.download("processed/a b+c/100% 日本.zip")),
        b"a,b\n1,2\n"
    );
    assert!(unzip(&serve.download("processed/deep/er/still/empty.zip")).is_empty());
    assert!(unzip(&serve.download("processed/noise.zip")) == noise);
    assert!(serve.interrupt().success());
}

#[test]
fn a_folder_of_more_files_than_the_upload_queue_holds_is_all_compressed() {
    // More than the 256 notices serve queues: uploads outrun the compression, the queue fills,
    // and the worker's own output writes must still get through.
    const FILES: usize = 600;
    let serve = Serve::start(None);
    let folder = serve.dir.path().join("many");
    std::fs::create_dir(&folder).unwrap();
    for n in 0..FILES {
        write(&folder, &format!("{n:04}.json"), &text(1 + n % 50));
    }
    let finished = run(serve
        .aws()
        .args(["s3", "cp", "--recursive", "--only-show-errors"])
        .arg(&folder)
        .arg(format!("s3://{BUCKET}/incoming/many/")));
    assert!(
        finished.success(),
        "aws s3 cp --recursive: {}",
        finished.describe()
    );

    let expected: Vec<String> = (0..FILES)
        .map(|n| format!("processed/many/{n:04}.zip"))
        .collect();
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    serve.wait_for_keys(&expected);
    assert_eq!(
        unzip(&serve.download("processed/many/0123.zip")),
        text(1 + 123 % 50)
    );
    assert!(serve.interrupt().success());
}

/// rclone as its users run it: it HEADs each object right after uploading it, to check it, and
/// lists with `delimiter=` (empty).
#[test]
fn rclone_copies_a_folder_of_small_files_reads_each_back_and_lists_what_serve_made() {
    if !s3_compressor_tests::have(&["rclone"], "apt-get install rclone") {
        return;
    }
    // More than one page of a listing (1,000 keys).
    const FILES: usize = 1_100;
    let serve = Serve::start(None);
    let folder = serve.dir.path().join("many");
    std::fs::create_dir(&folder).unwrap();
    for n in 0..FILES {
        write(&folder, &format!("{n:04}.json"), &text(1 + n % 7));
    }
    let config = write(
        serve.dir.path(),
        "rclone.conf",
        format!(
            "[s]\ntype = s3\nprovider = Other\nendpoint = http://127.0.0.1:{}\n\
             access_key_id = {ACCESS_KEY}\nsecret_access_key = {SECRET_KEY}\nregion = us-east-1\n",
            serve.port
        )
        .as_bytes(),
    );
    let rclone = |args: &[&str]| {
        let mut command = Command::new("rclone");
        // rclone refuses to start with AWS_CA_BUNDLE set (LoadCustomCABundleError).
        command
            .env_remove("AWS_CA_BUNDLE")
            .arg("--config")
            .arg(&config)
            .args(args);
        run(&mut command)
    };

    // Each PUT is followed at once by a HEAD of the same key: serve's settle delay keeps the
    // source in place until then, as S3's notification delay does. Without it rclone logged
    // "Failed to copy: object not found" for the objects already compressed, and copied them
    // again.
    let copied = rclone(&[
        "copy",
        &folder.to_string_lossy(),
        &format!("s:{BUCKET}/incoming/many/"),
    ]);
    assert!(copied.success(), "rclone copy: {}", copied.describe());
    assert!(!copied.stderr.contains("ERROR"), "{}", copied.stderr);

    let expected: Vec<String> = (0..FILES)
        .map(|n| format!("processed/many/{n:04}.zip"))
        .collect();
    let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
    serve.wait_for_keys(&expected);

    // `rclone ls` lists every output, across the pages of the listing.
    let listed = rclone(&["ls", &format!("s:{BUCKET}/processed/many/")]);
    assert!(listed.success(), "rclone ls: {}", listed.describe());
    let mut names: Vec<&str> = listed
        .stdout
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .collect();
    names.sort_unstable();
    let wanted: Vec<String> = (0..FILES).map(|n| format!("{n:04}.zip")).collect();
    assert_eq!(names, wanted);

    // And copies them back: each decodes to the file sent.
    let back = serve.dir.path().join("back");
    let fetched = rclone(&[
        "copy",
        &format!("s:{BUCKET}/processed/many/"),
        &back.to_string_lossy(),
    ]);
    assert!(
        fetched.success(),
        "rclone copy back: {}",
        fetched.describe()
    );
    for n in 0..FILES {
        let sent = text(1 + n % 7);
        assert_eq!(
            zip_entry(&std::fs::read(back.join(format!("{n:04}.zip"))).unwrap()),
            (format!("{n:04}.json"), sent.len() as u64, crc32(&sent)),
        );
    }
    assert!(serve.interrupt().success());
}

/// Files for the everyday clients: small JSON under awkward names (spaces, `+`, non-ASCII)
/// and one large enough for each client to upload in parts.
fn client_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = (0..12)
        .map(|n| (format!("rëport {n}+ünï.json"), text(1 + n * 3)))
        .collect();
    // About 12 MiB: three parts of 5 MiB.
    files.push(("large log.json".to_owned(), text(250_000)));
    for (name, bytes) in &files {
        write(dir, name, bytes);
    }
    files
}

/// Waits for each of `files`' outputs under `processed/FOLDER/`, then checks that each decodes
/// to the file sent.
fn assert_each_compressed(serve: &Serve, folder: &str, files: &[(String, Vec<u8>)]) {
    let sdk = serve.sdk();
    let output = |name: &str| {
        let stem = name.strip_suffix(".json").unwrap();
        format!("processed/{folder}/{stem}.zip")
    };
    sdk.wait_for("every upload compressed", |sdk| {
        files
            .iter()
            .all(|(name, _)| sdk.head(&output(name)).is_ok())
    });
    for (name, sent) in files {
        let zip = sdk.get(&output(name)).unwrap();
        assert_eq!(
            zip_entry(&zip),
            (name.clone(), sent.len() as u64, crc32(sent)),
            "{name}"
        );
        assert_eq!(sdk.head(&format!("incoming/{folder}/{name}")), Err(404));
    }
}

/// boto3's transfer manager, as a Python program uploads: multipart above its threshold, parts
/// on several threads.
#[test]
fn boto3_uploads_in_parts_on_several_threads_and_each_file_is_compressed() {
    if !s3_compressor_tests::have(&["python3"], "apt-get install python3") {
        return;
    }
    let serve = Serve::start(None);
    let folder = serve.dir.path().join("boto3");
    std::fs::create_dir(&folder).unwrap();
    let files = client_files(&folder);
    let program = r#"
import os, sys, boto3
from boto3.s3.transfer import TransferConfig
s3 = boto3.client("s3")
config = TransferConfig(multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20, max_concurrency=4)
folder = sys.argv[1]
for name in sorted(os.listdir(folder)):
    s3.upload_file(os.path.join(folder, name), "files", "incoming/boto3/" + name, Config=config)
    print("uploaded", name)
"#;
    let uploaded = run(serve
        .aws_environment(Command::new("python3").arg("-c").arg(program))
        .arg(&folder));
    assert!(uploaded.success(), "boto3: {}", uploaded.describe());
    assert_eq!(
        uploaded.stdout.lines().count(),
        files.len(),
        "{}",
        uploaded.stdout
    );
    assert_each_compressed(&serve, "boto3", &files);
    assert!(serve.interrupt().success());
}

/// s3cmd, configured for a local endpoint as its users do, uploading in parts of 5 MiB.
#[test]
fn s3cmd_puts_lists_and_gets_and_each_file_is_compressed() {
    if !s3_compressor_tests::have(&["s3cmd"], "apt-get install s3cmd") {
        return;
    }
    let serve = Serve::start(None);
    let folder = serve.dir.path().join("s3cmd");
    std::fs::create_dir(&folder).unwrap();
    let files = client_files(&folder);
    let config = write(
        serve.dir.path(),
        "s3cfg",
        format!(
            "[default]\naccess_key = {ACCESS_KEY}\nsecret_key = {SECRET_KEY}\n\
             host_base = 127.0.0.1:{port}\nhost_bucket = 127.0.0.1:{port}\nuse_https = False\n\
             bucket_location = us-east-1\n",
            port = serve.port
        )
        .as_bytes(),
    );
    let s3cmd = |args: &[&str]| {
        let mut command = Command::new("s3cmd");
        command.arg("-c").arg(&config).args(args);
        run(&mut command)
    };
    let put = s3cmd(&[
        "put",
        "--recursive",
        "--multipart-chunk-size-mb=5",
        &format!("{}/", folder.display()),
        &format!("s3://{BUCKET}/incoming/s3cmd/"),
    ]);
    assert!(put.success(), "s3cmd put: {}", put.describe());
    assert!(!put.stderr.contains("ERROR"), "{}", put.stderr);
    assert_each_compressed(&serve, "s3cmd", &files);

    let listed = s3cmd(&["ls", &format!("s3://{BUCKET}/processed/s3cmd/")]);
    assert!(listed.success(), "s3cmd ls: {}", listed.describe());
    assert_eq!(
        listed.stdout.lines().count(),
        files.len(),
        "{}",
        listed.stdout
    );
    let fetched = serve.dir.path().join("fetched.zip");
    let got = s3cmd(&[
        "get",
        &format!("s3://{BUCKET}/processed/s3cmd/large log.zip"),
        &fetched.to_string_lossy(),
    ]);
    assert!(got.success(), "s3cmd get: {}", got.describe());
    assert_eq!(unzip(&fetched), files.last().unwrap().1);
    assert!(serve.interrupt().success());
}

/// One listing request: prefix, delimiter, start-after (v2) or marker (v1), and page size.
#[derive(Debug, Clone, Copy)]
struct Listing {
    prefix: Option<&'static str>,
    delimiter: Option<&'static str>,
    after: Option<&'static str>,
    max_keys: Option<i32>,
}

/// What one page of a listing holds, without the continuation tokens, which each store makes
/// its own way.
#[derive(Debug, PartialEq, Eq)]
struct Page {
    keys: Vec<String>,
    prefixes: Vec<String>,
    truncated: bool,
}

/// Every page of `listing` with ListObjectsV2, following the continuation tokens.
async fn pages_v2(client: &aws_sdk_s3::Client, listing: Listing) -> Vec<Page> {
    let mut pages = Vec::new();
    let mut token = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(BUCKET)
            .set_prefix(listing.prefix.map(str::to_owned))
            .set_delimiter(listing.delimiter.map(str::to_owned))
            .set_start_after(listing.after.map(str::to_owned))
            .set_max_keys(listing.max_keys)
            .set_continuation_token(token.take())
            .send()
            .await
            .unwrap_or_else(|error| panic!("{listing:?}: {error:?}"));
        pages.push(Page {
            keys: page
                .contents()
                .iter()
                .filter_map(|o| o.key().map(str::to_owned))
                .collect(),
            prefixes: page
                .common_prefixes()
                .iter()
                .filter_map(|p| p.prefix().map(str::to_owned))
                .collect(),
            truncated: page.is_truncated().unwrap_or_default(),
        });
        token = page.next_continuation_token().map(str::to_owned);
        if token.is_none() {
            return pages;
        }
    }
}

/// Every page of `listing` with ListObjects (v1), following `NextMarker` or the last key.
async fn pages_v1(client: &aws_sdk_s3::Client, listing: Listing) -> Vec<Page> {
    let mut pages = Vec::new();
    let mut marker = listing.after.map(str::to_owned);
    loop {
        let page = client
            .list_objects()
            .bucket(BUCKET)
            .set_prefix(listing.prefix.map(str::to_owned))
            .set_delimiter(listing.delimiter.map(str::to_owned))
            .set_marker(marker.take())
            .set_max_keys(listing.max_keys)
            .send()
            .await
            .unwrap_or_else(|error| panic!("{listing:?}: {error:?}"));
        let keys: Vec<String> = page
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect();
        let prefixes: Vec<String> = page
            .common_prefixes()
            .iter()
            .filter_map(|p| p.prefix().map(str::to_owned))
            .collect();
        let truncated = page.is_truncated().unwrap_or_default();
        marker = page
            .next_marker()
            .map(str::to_owned)
            .or_else(|| keys.iter().chain(&prefixes).max().cloned());
        pages.push(Page {
            keys,
            prefixes,
            truncated,
        });
        if !truncated {
            return pages;
        }
    }
}

/// The same listings, sent to `serve` and to moto over the same objects, get the same pages:
/// prefixes, delimiters (empty too), start-after and markers, and paging.
#[test]
fn listings_page_and_group_as_moto_answers_the_same_requests() {
    if !s3_compressor_tests::have(&["moto_server"], s3_compressor_tests::PYTHON_TOOLS) {
        return;
    }
    let serve = Serve::start(None);
    let sdk = serve.sdk();
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    // Outside every rule's prefix, so that serve leaves them as they are.
    let keys = [
        "data/a b+c.csv",
        "data/a%41.csv",
        "data/a.csv",
        "data/b/1.csv",
        "data/b/2.csv",
        "data/b/c/3.csv",
        "data/bz.csv",
        "data/z",
        "data/ü/x.csv",
        "top.csv",
    ];
    for key in keys {
        sdk.put(key, key.as_bytes());
        moto.put(BUCKET, key, key.as_bytes());
    }
    let listing = |prefix, delimiter, after, max_keys| Listing {
        prefix,
        delimiter,
        after,
        max_keys,
    };
    let listings = [
        listing(None, None, None, None),
        listing(None, Some("/"), None, None),
        listing(Some("data/"), Some("/"), None, None),
        listing(Some("data/"), Some(""), None, None),
        listing(Some("data/b"), Some("/"), None, None),
        listing(Some("data/"), Some("b"), None, None),
        listing(Some("data/"), None, Some("data/b/1.csv"), None),
        listing(Some("data/"), None, None, Some(3)),
        listing(Some("data/"), Some("/"), None, Some(2)),
        listing(Some("data/"), Some("/"), Some("data/b/"), Some(2)),
        listing(Some("nothing/"), None, None, None),
        listing(Some("/"), None, None, None),
    ];
    let flat = |pages: &[Page]| -> (Vec<String>, Vec<String>) {
        let keys = pages.iter().flat_map(|p| p.keys.clone()).collect();
        let prefixes = pages.iter().flat_map(|p| p.prefixes.clone()).collect();
        (keys, prefixes)
    };
    for listing in listings {
        let ours_v2 = sdk.runtime.block_on(pages_v2(&sdk.client, listing));
        let moto_v2 = moto.block_on(pages_v2(moto.client(), listing));
        assert_eq!(ours_v2, moto_v2, "ListObjectsV2 {listing:?}");
        let ours_v1 = sdk.runtime.block_on(pages_v1(&sdk.client, listing));
        if listing.delimiter.is_some() && listing.max_keys.is_some() {
            // moto 5.2.5 repeats every common prefix on every page of a ListObjects (v1) with
            // a delimiter and max-keys; S3 counts each towards max-keys, once, as in v2.
            assert_eq!(flat(&ours_v1), flat(&ours_v2), "ListObjects {listing:?}");
            let page_size = usize::try_from(listing.max_keys.unwrap_or_default()).unwrap();
            assert!(
                ours_v1
                    .iter()
                    .all(|page| page.keys.len() + page.prefixes.len() <= page_size),
                "ListObjects {listing:?}: {ours_v1:?}"
            );
            continue;
        }
        let moto_v1 = moto.block_on(pages_v1(moto.client(), listing));
        assert_eq!(ours_v1, moto_v1, "ListObjects {listing:?}");
    }
    assert!(serve.interrupt().success());
}

#[test]
fn serve_follows_the_config_it_is_given() {
    let config = workspace_root().join("config/compressor.toml");
    let serve = Serve::start(Some(&config));
    let original = text(1000);
    let file = write(serve.dir.path(), "app.log", &original);
    serve.upload(&file, "incoming/logs/app.log");
    // Outside every rule's prefix: stays as it is.
    serve.upload(&file, "elsewhere/app.log");

    serve.wait_for_keys(&["elsewhere/app.log", "processed/logs/app.log.gz"]);
    let gz = serve.download("processed/logs/app.log.gz");
    let decoded = Command::new("gzip").arg("-dc").arg(&gz).output().unwrap();
    assert!(decoded.status.success());
    assert_eq!(decoded.stdout, original);
    assert!(serve.interrupt().success());
}

#[test]
fn a_bad_config_stops_serve_before_it_listens() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "bad.toml",
        b"[[rule]]\nprefix = \"incoming/\"\noutput_prefix = \"incoming/done/\"\n",
    );
    let port = free_port();
    let finished = run(s3_compressor()
        .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
        .arg("--data")
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config));
    assert!(!finished.success(), "{}", finished.describe());
    assert!(
        finished.stderr.contains("bad.toml:3:"),
        "{}",
        finished.describe()
    );
    assert!(!dir.path().join("data").exists(), "nothing was served");
}

/// What a person who mistyped something gets from `compress`: what was wrong, and exit status 1.
#[test]
fn compress_says_not_found_for_a_missing_key_or_bucket_and_names_refused_credentials() {
    let serve = Serve::start(None);
    let file = write(serve.dir.path(), "kept.csv", &text(100));
    serve.upload(&file, "elsewhere/kept.csv");

    let missing_key = serve.compress(BUCKET, "incoming/no-such-report.csv", SECRET_KEY);
    assert_eq!(
        missing_key.status.code(),
        Some(1),
        "{}",
        missing_key.describe()
    );
    assert_eq!(
        missing_key.stdout,
        format!("s3://{BUCKET}/incoming/no-such-report.csv: not found\n"),
        "{}",
        missing_key.describe()
    );

    let missing_bucket = serve.compress("no-such-bucket", "incoming/report.csv", SECRET_KEY);
    assert_eq!(
        missing_bucket.status.code(),
        Some(1),
        "{}",
        missing_bucket.describe()
    );
    assert!(
        missing_bucket.stdout.contains("NoSuchBucket"),
        "{}",
        missing_bucket.describe()
    );

    let refused = serve.compress(BUCKET, "incoming/report.csv", "not-the-secret");
    assert_eq!(refused.status.code(), Some(1), "{}", refused.describe());
    assert!(
        refused.stdout.contains("403") && refused.stdout.contains("credentials were refused"),
        "{}",
        refused.describe()
    );
    assert!(
        !refused.stdout.contains("unhandled error"),
        "{}",
        refused.describe()
    );

    // Nothing was written or deleted by any of them.
    assert_eq!(serve.keys(), ["elsewhere/kept.csv"]);
}

/// Sources left in the folder (by a run stopped before it finished them, or copied in) are
/// taken up when `serve` starts, and a failure is printed on its console, not only logged.
#[test]
fn serve_takes_up_sources_left_from_before_and_prints_failures() {
    let dir = tempfile::tempdir().unwrap();
    let incoming = dir.path().join("data").join(BUCKET).join("incoming");
    std::fs::create_dir_all(incoming.join("nested")).unwrap();
    let left = text(3_000);
    std::fs::write(incoming.join("left.csv"), &left).unwrap();
    std::fs::write(incoming.join("nested").join("deeper.log"), text(10)).unwrap();
    // Two sources with one output key: one of them cannot be compressed.
    std::fs::write(incoming.join("clash.csv"), b"a,b\n").unwrap();
    std::fs::write(incoming.join("clash.txt"), b"a b\n").unwrap();

    let serve = Serve::start_in(dir, None);
    let deadline = Instant::now() + Duration::from_secs(120);
    let expected_outputs = [
        "processed/clash.zip",
        "processed/left.zip",
        "processed/nested/deeper.zip",
    ];
    loop {
        let keys = serve.keys();
        let outputs: Vec<&str> = keys
            .iter()
            .map(String::as_str)
            .filter(|key| key.starts_with("processed/"))
            .collect();
        let sources = keys
            .iter()
            .filter(|key| key.starts_with("incoming/"))
            .count();
        if outputs == expected_outputs && sources == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the bucket holds {keys:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(unzip(&serve.download("processed/left.zip")), left);

    let finished = serve.interrupt();
    assert!(finished.success(), "{}", finished.describe());
    let failure = finished
        .stdout
        .lines()
        .find(|line| line.starts_with("s3://files/incoming/clash."))
        .unwrap_or_else(|| panic!("no failure on the console: {}", finished.describe()));
    assert!(
        failure.contains("failed (trying again will not help)")
            && failure.contains("processed/clash.zip"),
        "{failure}"
    );
}

/// See [`Serve::sdk`].
struct Sdk {
    runtime: tokio::runtime::Runtime,
    client: aws_sdk_s3::Client,
}

impl Sdk {
    fn put(&self, key: &str, body: &[u8]) {
        let put = self.client.put_object().bucket(BUCKET).key(key);
        self.runtime
            .block_on(put.body(body.to_vec().into()).send())
            .unwrap();
    }

    /// Uploads each `(key, body)`, 16 at a time.
    fn put_all(&self, objects: impl Iterator<Item = (String, Vec<u8>)>) {
        use futures::StreamExt as _;
        let client = &self.client;
        let puts = futures::stream::iter(objects).map(|(key, body)| async move {
            let put = client.put_object().bucket(BUCKET).key(&key);
            put.body(body.into())
                .send()
                .await
                .unwrap_or_else(|error| panic!("PutObject {key}: {error:?}"));
        });
        self.runtime
            .block_on(puts.buffer_unordered(16).collect::<Vec<()>>());
    }

    fn delete(&self, key: &str) {
        let delete = self.client.delete_object().bucket(BUCKET).key(key);
        self.runtime.block_on(delete.send()).unwrap();
    }

    /// The object's bytes, or the S3 error code that refused them.
    fn get(&self, key: &str) -> Result<Vec<u8>, String> {
        let get = self.client.get_object().bucket(BUCKET).key(key).send();
        self.runtime.block_on(async {
            match get.await {
                Ok(object) => Ok(object.body.collect().await.unwrap().to_vec()),
                Err(error) => Err(error.code().unwrap_or("no code").to_owned()),
            }
        })
    }

    /// The object's size, or the HTTP status that refused the HEAD.
    fn head(&self, key: &str) -> Result<i64, u16> {
        let head = self.client.head_object().bucket(BUCKET).key(key).send();
        match self.runtime.block_on(head) {
            Ok(head) => Ok(head.content_length().unwrap_or_default()),
            Err(error) => Err(error.raw_response().map_or(0, |r| r.status().as_u16())),
        }
    }

    /// How many times `key`'s failure report says it failed, if there is one.
    fn attempts(&self, key: &str) -> Option<u64> {
        let report = format!("s3-compressor/failures/{key}.json");
        let get = self.client.get_object().bucket(BUCKET).key(report).send();
        let body = self
            .runtime
            .block_on(async { get.await.ok()?.body.collect().await.ok() })?;
        let report: serde_json::Value = serde_json::from_slice(&body.into_bytes()).unwrap();
        report["attempts"].as_u64()
    }

    /// Polls until `done`, as a user watching the bucket would.
    fn wait_for(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !done(self) {
            let keys = self.runtime.block_on(list_keys(&self.client, BUCKET));
            assert!(Instant::now() < deadline, "not {what}: {keys:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn only(&self, expected: &[&str]) -> bool {
        self.runtime.block_on(list_keys(&self.client, BUCKET)) == expected
    }
}

/// Small uploads do not wait behind a large, slow one. With the shipped config, a 3 MiB
/// upload under `incoming/archives/` (zstd level 19, about 0.5 MB/s on this text, with tables
/// larger than the shared memory budget) takes seconds of CPU; a log and a page uploaded after
/// it are compressed while it still runs, beside it, and every output decodes to what was
/// sent.
#[test]
fn small_uploads_finish_first_beside_a_large_slow_one() {
    let config = workspace_root().join("config/compressor.toml");
    let serve = Serve::start(Some(&config));
    let sdk = serve.sdk();
    let large = csv_text(3 * 1024 * 1024, 19);
    let log = text(1);
    let page = csv_text(2_500_000, 25);
    sdk.put("incoming/archives/large.csv", &large);
    // Past the settle delay (250 ms), the large one is at work.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        sdk.head("incoming/archives/large.csv").is_ok(),
        "the large upload is still being compressed"
    );
    sdk.put("incoming/logs/app.log", &log);
    sdk.put("incoming/page.html", &page);

    sdk.wait_for("the small uploads compressed", |sdk| {
        sdk.head("processed/logs/app.log.gz").is_ok() && sdk.head("processed/page.zip").is_ok()
    });
    assert!(
        sdk.head("processed/archives/large.csv.zst").is_err(),
        "the small uploads finished first"
    );
    sdk.wait_for("the large upload compressed", |sdk| {
        sdk.only(&[
            "processed/archives/large.csv.zst",
            "processed/logs/app.log.gz",
            "processed/page.zip",
        ])
    });

    let gz = serve.download("processed/logs/app.log.gz");
    let decoded = Command::new("gzip").arg("-dc").arg(&gz).output().unwrap();
    assert_eq!(decoded.stdout, log);
    assert_eq!(unzip(&serve.download("processed/page.zip")), page);
    let zst = serve.download("processed/archives/large.csv.zst");
    let decoded = Command::new("zstd").arg("-dc").arg(&zst).output().unwrap();
    assert!(
        decoded.stdout == large,
        "the large output decodes to what was sent"
    );
    let stopped = serve.interrupt();
    assert!(stopped.success(), "{}", stopped.describe());
    assert!(
        !stopped.stdout.contains("waited for memory")
            && !stopped.stderr.contains("waited for memory"),
        "nothing waited for memory: {}",
        stopped.describe()
    );
}

/// Clients read back what they have just written (rclone's check, SDK waiters, mounts): the
/// upload settles before it is compressed, as an S3 notification takes its time. An overwrite
/// landing while the first upload settles is what gets compressed, and nothing fails.
#[test]
fn a_read_right_after_a_write_finds_the_upload_and_an_overwrite_while_it_settles_wins() {
    let serve = Serve::start(None);
    let sdk = serve.sdk();
    for n in 0..20 {
        let key = format!("incoming/read-back/{n}.json");
        let body = text(1 + n);
        sdk.put(&key, &body);
        assert_eq!(sdk.head(&key), Ok(body.len() as i64), "{key}");
        assert_eq!(sdk.get(&key).as_deref(), Ok(body.as_slice()), "{key}");
    }

    let first = text(10);
    let second = text(20);
    sdk.put("incoming/over.json", &first);
    sdk.put("incoming/over.json", &second);
    sdk.wait_for("compressed", |sdk| {
        sdk.head("incoming/over.json") == Err(404) && sdk.head("processed/over.zip").is_ok()
    });
    let output = sdk.get("processed/over.zip").unwrap();
    assert_eq!(
        zip_entry(&output),
        ("over.json".to_owned(), second.len() as u64, crc32(&second))
    );
    assert_eq!(sdk.attempts("incoming/over.json"), None);
    sdk.wait_for("every read-back compressed", |sdk| {
        (0..20).all(|n| sdk.head(&format!("processed/read-back/{n}.zip")).is_ok())
    });
    let stopped = serve.interrupt();
    assert!(stopped.success(), "{}", stopped.describe());
    assert!(!stopped.stdout.contains("failed"), "{}", stopped.stdout);
}

/// `serve` compresses uploads to any bucket made on it (`aws s3 mb`), not only `--bucket`'s;
/// a failure is reported in its own bucket, and what happens to a key of the same name in
/// another bucket leaves that report alone.
#[test]
fn another_buckets_uploads_are_compressed_and_its_failures_reported_in_it() {
    let serve = Serve::start(None);
    let sdk = serve.sdk();
    let client = &sdk.client;
    let put = |bucket: &str, key: &str, body: &[u8]| {
        let put = client.put_object().bucket(bucket).key(key);
        sdk.runtime
            .block_on(put.body(body.to_vec().into()).send())
            .unwrap();
    };
    let keys = |bucket: &str| sdk.runtime.block_on(list_keys(client, bucket));
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !done() {
            assert!(Instant::now() < deadline, "not {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    sdk.runtime
        .block_on(client.create_bucket().bucket("other").send())
        .unwrap();

    // Two sources with one output name in `other`: the second fails, reported in `other`.
    put("other", "incoming/report.csv", b"a,b\n");
    wait("compressed in other", &|| {
        keys("other") == ["processed/report.zip"]
    });
    put("other", "incoming/report.txt", b"a b\n");
    let report = "s3-compressor/failures/incoming/report.txt.json";
    wait("reported in other", &|| {
        keys("other").contains(&report.to_owned())
    });
    assert!(!keys(BUCKET).contains(&report.to_owned()));

    // The same key succeeds in the main bucket: other's report stays.
    put(BUCKET, "incoming/report.txt", b"a b\n");
    wait("compressed in files", &|| {
        keys(BUCKET) == ["processed/report.zip"]
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        keys("other").contains(&report.to_owned()),
        "{:?}",
        keys("other")
    );

    // Its source deleted, other's report goes.
    sdk.runtime
        .block_on(
            client
                .delete_object()
                .bucket("other")
                .key("incoming/report.txt")
                .send(),
        )
        .unwrap();
    wait("report removed", &|| {
        keys("other") == ["processed/report.zip"]
    });
    assert!(serve.interrupt().success());
}

/// A collision is reported in the bucket, where the uploader's own S3 client reads it; a
/// restart tries the source again without printing the same failure again; the report goes
/// when the key succeeds, or when its source is deleted. The rule keeps sources, so neither
/// rides on the worker's own delete of a source.
#[test]
fn a_failure_is_reported_in_the_bucket_until_it_is_fixed() {
    const CSV: &[u8] = b"a,b\n";
    const TXT: &[u8] = b"a b\n";
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "keep.toml",
        b"[[rule]]\nprefix = \"incoming/\"\noutput_prefix = \"processed/\"\ndelete_source = false\n",
    );
    let serve = Serve::start(Some(&config));
    let sdk = serve.sdk();
    sdk.put("incoming/report.csv", CSV);
    sdk.wait_for("compressed", |sdk| {
        sdk.only(&["incoming/report.csv", "processed/report.zip"])
    });
    sdk.put("incoming/report.txt", TXT);
    sdk.wait_for("reported", |sdk| {
        sdk.attempts("incoming/report.txt") == Some(1)
    });
    let report = serve.failure_report("incoming/report.txt").unwrap();
    assert_eq!(report["key"], "incoming/report.txt");
    let md5 = <md5::Md5 as md5::Digest>::digest(TXT);
    let md5: String = md5.iter().map(|byte| format!("{byte:02x}")).collect();
    assert_eq!(report["etag"], md5);
    assert_eq!(report["outcome"], "failed_permanent");
    let message = report["message"].as_str().unwrap();
    assert!(
        message.contains("processed/report.zip already exists, made from incoming/report.csv"),
        "{report}"
    );

    // Restarted with the collision still there: tried again, counted, not printed again.
    let (first, serve) = serve.restart(Some(&config));
    assert!(first
        .stdout
        .contains("s3://files/incoming/report.txt: failed"));
    let sdk = serve.sdk();
    sdk.wait_for("retried", |sdk| {
        sdk.attempts("incoming/report.txt") == Some(2)
    });

    // Fixed by making room and uploading again: compressed, and the report goes.
    sdk.delete("processed/report.zip");
    sdk.put("incoming/report.txt", TXT);
    let compressed = [
        "incoming/report.csv",
        "incoming/report.txt",
        "processed/report.zip",
    ];
    sdk.wait_for("fixed", |sdk| sdk.only(&compressed));

    // Fixed by deleting the source: its report goes too.
    sdk.put("incoming/report.csv", CSV);
    sdk.wait_for("reported", |sdk| {
        sdk.attempts("incoming/report.csv") == Some(1)
    });
    sdk.delete("incoming/report.csv");
    sdk.wait_for("cleared", |sdk| {
        sdk.only(&["incoming/report.txt", "processed/report.zip"])
    });

    let second = serve.interrupt();
    assert!(
        second.stdout.contains("(1 from before)"),
        "{}",
        second.describe()
    );
    assert!(
        !second
            .stdout
            .contains("s3://files/incoming/report.txt: failed"),
        "{}",
        second.describe()
    );
}

/// The most a worker's peak resident set may be with a batch in flight: 64 MiB, what one
/// large object may take, plus 1 KiB per record for the batch itself (the record as parsed
/// and its result, held until the answer).
fn batch_peak_rss_limit_kib(records: usize) -> u64 {
    64 * 1024 + records as u64
}

/// A batch of 10,000 SQS messages, each an S3 event for one small object (the largest batch an
/// event source mapping hands over), through `invoke` against the embedded endpoint: the
/// objects run many at a time within the worker's memory budget, every one is compressed and
/// proven, and the peak resident set stays within that of one large object plus the batch's
/// own records. Each record is a whole S3 event, so the payload (15 MB) is larger than the
/// 6 MB Lambda would ever hand over.
#[test]
fn a_batch_of_ten_thousand_small_objects_runs_at_once_in_bounded_memory() {
    const OBJECTS: usize = 10_000;
    // `serve` itself leaves incoming/ alone: the batch is the `invoke` run's to process.
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "serve.toml",
        b"[[rule]]\nprefix = \"elsewhere/\"\noutput_prefix = \"elsewhere-out/\"\n",
    );
    let serve = Serve::start(Some(&config));
    let content = |index: usize| csv_text(100 + index * 7919 % 4_000, index as u64);
    // Through the SDK: the AWS CLI's recursive copy of 10,000 files took three minutes of CPU,
    // and what is tested here is the batch.
    let started = Instant::now();
    serve.sdk().put_all(
        (0..OBJECTS).map(|index| (format!("incoming/batch/{index:05}.csv"), content(index))),
    );
    let uploaded_in = started.elapsed();

    let messages: Vec<serde_json::Value> = (0..OBJECTS)
        .map(|index| {
            let key = format!("incoming/batch/{index:05}.csv");
            sqs_message(
                &format!("m-{index}"),
                &s3_event(BUCKET, &[&key]).to_string(),
            )
        })
        .collect();
    let event = write_event(dir.path(), "batch.json", &sqs_batch(messages));
    let started = Instant::now();
    let (finished, memory) = Running::spawn(
        serve
            .worker(SECRET_KEY)
            .env("RUST_LOG", "warn")
            .args(["invoke", "--event"])
            .arg(&event),
    )
    .finish_measuring_memory(HANG_LIMIT);
    let processed_in = started.elapsed();

    assert!(finished.success(), "{}", finished.describe());
    let response: serde_json::Value = serde_json::from_str(&finished.stdout).unwrap();
    assert_eq!(response, serde_json::json!({ "batchItemFailures": [] }));
    let keys = serve.keys();
    assert_eq!(
        keys.len(),
        OBJECTS,
        "one output per source, every source deleted"
    );
    assert!(keys.iter().all(|key| key.starts_with("processed/batch/")));
    for index in [0, 4_321, OBJECTS - 1] {
        let output = serve.download(&format!("processed/batch/{index:05}.zip"));
        assert!(
            unzip(&output) == content(index),
            "output {index} unzips to its source"
        );
    }
    eprintln!(
        "{OBJECTS} objects: uploaded in {uploaded_in:.1?}, processed in {processed_in:.1?} \
         ({:.0} objects/s), peak RSS {} MiB (VmHWM)",
        OBJECTS as f64 / processed_in.as_secs_f64(),
        memory.peak / 1024
    );
    let limit = batch_peak_rss_limit_kib(OBJECTS);
    assert!(
        memory.peak <= limit,
        "peak RSS {} KiB, over {limit} KiB",
        memory.peak
    );
}

// ---------------------------------------------------------------------------------------------
// Under load, and what it cannot store

/// One upload of the load test: its key, and the length and CRC-32 of its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    key: String,
    len: u64,
    crc: u32,
}

/// The bytes of upload `index` of the load test, `len` long: CSV text, different for every
/// index. Large ones repeat a 1 MiB block after their own first line (cheap to make, and far
/// beyond deflate's window, so it compresses like fresh text).
fn load_content(index: usize, len: usize) -> Vec<u8> {
    const BLOCK: usize = 1024 * 1024;
    if len <= BLOCK {
        return csv_text(len, index as u64 * 1_000);
    }
    let block = csv_text(BLOCK, 7);
    let mut bytes = format!("upload {index}\n").into_bytes();
    while bytes.len() < len {
        let take = block.len().min(len - bytes.len());
        bytes.extend_from_slice(&block[..take]);
    }
    bytes
}

/// The most `serve` may hold resident under the load test: the 96 MiB the worker may take for
/// any object (`worker_moto::PEAK_RSS_LIMIT_KIB`), plus 16 MiB for the endpoint's side, which
/// streams each request's body to disk. Measured: 77 MiB (139 MiB before freed buffers went
/// back to the system: see the s3-compressor-allocator crate).
const SERVE_PEAK_RSS_LIMIT_KIB: u64 = (96 + 16) * 1024;

/// 2,000 uploads from 8 clients at once, from 0 bytes to 50 MiB (the large ones in parts):
/// every one is compressed, exactly once, and decodes back to what was sent; nothing is lost,
/// `incoming/` ends empty, and `serve`'s peak resident set stays bounded.
#[test]
fn two_thousand_uploads_from_eight_clients_are_each_compressed_once() {
    const CLIENTS: usize = 8;
    const UPLOADS: usize = 2_000;
    const MIB: usize = 1024 * 1024;
    let serve = Serve::start(None);
    // Three of 50 MiB and six of 10 MiB in parts; the rest small, 0 bytes to 64 KiB.
    let size = |index: usize| match index {
        0..=2 => 50 * MIB,
        3..=8 => 10 * MIB + index,
        _ => index * 7_919 % (64 * 1024 + 1) * usize::from(index % 10 != 0),
    };
    let key = |index: usize| format!("incoming/load/c{}/{index:04}.csv", index % CLIENTS);
    let endpoint = format!("http://127.0.0.1:{}", serve.port);

    let started = Instant::now();
    let sent: Vec<Sent> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client_index| {
                let endpoint = &endpoint;
                scope.spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    let client = s3_client(endpoint, ACCESS_KEY, SECRET_KEY);
                    let mut sent = Vec::new();
                    // Each client takes every 8th upload, so the large ones start at once.
                    for index in (client_index..UPLOADS).step_by(CLIENTS) {
                        let key = key(index);
                        let body = load_content(index, size(index));
                        runtime.block_on(async {
                            if body.len() > 8 * MIB {
                                let mut source = body.as_slice();
                                put_in_parts(&client, BUCKET, &key, &mut source, 8 * MIB).await;
                            } else {
                                client
                                    .put_object()
                                    .bucket(BUCKET)
                                    .key(&key)
                                    .body(body.clone().into())
                                    .send()
                                    .await
                                    .unwrap_or_else(|error| panic!("PutObject {key}: {error:?}"));
                            }
                        });
                        sent.push(Sent {
                            key,
                            len: body.len() as u64,
                            crc: crc32(&body),
                        });
                    }
                    sent
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|client| client.join().unwrap())
            .collect()
    });
    let uploaded_in = started.elapsed();
    let volume: u64 = sent.iter().map(|sent| sent.len).sum();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = s3_client(&endpoint, ACCESS_KEY, SECRET_KEY);
    let output_of = |key: &str| {
        let stem = key.strip_prefix("incoming/").unwrap().strip_suffix(".csv");
        format!("processed/{}.zip", stem.unwrap())
    };
    let mut expected: Vec<String> = sent.iter().map(|sent| output_of(&sent.key)).collect();
    expected.sort();
    let deadline = Instant::now() + Duration::from_secs(120);
    let keys = loop {
        let keys = runtime.block_on(list_keys(&client, BUCKET));
        if keys.iter().all(|key| key.starts_with("processed/")) && keys.len() >= UPLOADS {
            break keys;
        }
        assert!(
            Instant::now() < deadline,
            "after 120 s, {} keys, {} of them under incoming/",
            keys.len(),
            keys.iter()
                .filter(|key| key.starts_with("incoming/"))
                .count()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let compressed_in = started.elapsed();
    let pid = serve.process.as_ref().unwrap().id();
    let peak = s3_compressor_tests::process::peak_rss_kib(pid).unwrap();

    assert_eq!(keys.len(), UPLOADS, "one output per upload, nothing else");
    assert_eq!(keys, expected, "exactly the outputs of the uploads");
    for sent in &sent {
        let output = output_of(&sent.key);
        let bytes = runtime.block_on(async {
            client
                .get_object()
                .bucket(BUCKET)
                .key(&output)
                .send()
                .await
                .unwrap_or_else(|error| panic!("GetObject {output}: {error:?}"))
                .body
                .collect()
                .await
                .unwrap()
                .to_vec()
        });
        let name = sent.key.rsplit('/').next().unwrap().to_owned();
        assert_eq!(
            zip_entry(&bytes),
            (name, sent.len, sent.crc),
            "{output} decodes to {}",
            sent.key
        );
    }
    let finished = serve.interrupt();
    assert!(finished.success(), "{}", finished.describe());
    assert!(
        !finished.stdout.contains("failed"),
        "no failure on the console: {}",
        finished.describe()
    );
    eprintln!(
        "{UPLOADS} uploads from {CLIENTS} clients ({} MiB, 9 of them multipart): uploaded in \
         {uploaded_in:.1?}, all compressed {compressed_in:.1?} after the first upload \
         ({:.0} objects/s), serve's peak RSS {} MiB (VmHWM)",
        volume / MIB as u64,
        UPLOADS as f64 / compressed_in.as_secs_f64(),
        peak / 1024
    );
    assert!(
        peak <= SERVE_PEAK_RSS_LIMIT_KIB,
        "serve's peak RSS was {peak} KiB, over {SERVE_PEAK_RSS_LIMIT_KIB} KiB"
    );
}

/// The code, HTTP status and message of an S3 error the SDK got.
fn refusal<E: ProvideErrorMetadata>(
    result: Result<
        impl std::fmt::Debug,
        aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    >,
) -> (String, u16, String) {
    let error = result.expect_err("refused");
    let status = error.raw_response().map_or(0, |r| r.status().as_u16());
    (
        error.code().unwrap_or_default().to_owned(),
        status,
        error.message().unwrap_or_default().to_owned(),
    )
}

impl Serve {
    /// Uploads a small file with the SDK and waits until it is compressed and its source gone:
    /// the server still serves, and the worker behind it still works.
    fn still_compresses(&self, runtime: &tokio::runtime::Runtime, name: &str) {
        let client = s3_client(
            &format!("http://127.0.0.1:{}", self.port),
            ACCESS_KEY,
            SECRET_KEY,
        );
        let original = text(500);
        runtime
            .block_on(
                client
                    .put_object()
                    .bucket(BUCKET)
                    .key(format!("incoming/{name}.csv"))
                    .body(original.clone().into())
                    .send(),
            )
            .unwrap_or_else(|error| panic!("a normal upload after a refusal: {error:?}"));
        let output = format!("processed/{name}.zip");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let keys = self.keys();
            if keys.contains(&output) && !keys.iter().any(|key| key.starts_with("incoming/")) {
                break;
            }
            assert!(Instant::now() < deadline, "not compressed: {keys:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert_eq!(unzip(&self.download(&output)), original);
    }
}

/// Keys over S3's limit and bodies that do not match their checksum are refused with S3's own
/// errors, nothing of them is kept, and the next upload is compressed as usual.
#[test]
fn serve_refuses_long_keys_and_bad_checksums_as_s3_does_and_keeps_serving() {
    let serve = Serve::start(None);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = s3_client(
        &format!("http://127.0.0.1:{}", serve.port),
        ACCESS_KEY,
        SECRET_KEY,
    );
    let put = |key: String| {
        client
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .body(b"a,b\n1,2\n".to_vec().into())
    };

    // Over S3's own limit of 1,024 bytes.
    let (code, status, _) =
        refusal(runtime.block_on(put(format!("incoming/{}", "k".repeat(1_016))).send()));
    assert_eq!((code.as_str(), status), ("KeyTooLongError", 400));
    serve.still_compresses(&runtime, "after-s3-limit");

    let (code, _, _) = refusal(
        runtime.block_on(
            client
                .create_multipart_upload()
                .bucket(BUCKET)
                .key(format!("incoming/{}", "ü".repeat(508)))
                .send(),
        ),
    );
    assert_eq!(code, "KeyTooLongError");

    // A CRC32 that is not the body's.
    let (code, status, _) = refusal(
        runtime.block_on(
            put("incoming/bad-crc32.csv".to_owned())
                .checksum_algorithm(aws_sdk_s3::types::ChecksumAlgorithm::Crc32)
                .checksum_crc32("AAAAAA==")
                .send(),
        ),
    );
    assert_eq!((code.as_str(), status), ("BadDigest", 400));
    serve.still_compresses(&runtime, "after-bad-crc32");

    // A Content-MD5 of other bytes, and one that is no MD5 at all.
    for (content_md5, expected) in [
        ("1B2M2Y8AsgTpgAmY7PhCfg==", "BadDigest"),
        ("not an md5", "InvalidDigest"),
    ] {
        let put = put("incoming/bad-md5.csv".to_owned()).content_md5(content_md5);
        let (code, status, _) = refusal(runtime.block_on(put.send()));
        assert_eq!((code.as_str(), status), (expected, 400), "{content_md5}");
    }
    serve.still_compresses(&runtime, "after-bad-md5");

    let keys = serve.keys();
    assert!(
        keys.iter().all(|key| key.starts_with("processed/")),
        "nothing refused was kept: {keys:?}"
    );
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(serve.interrupt().success());
}

/// Through `serve`, a source whose output key is exactly S3's 1,024 bytes (with a segment of
/// 300, longer than a file name may be) is compressed, proven and deleted, and its output reads
/// back; a source of 1,024 bytes, whose output would be one byte over, is refused by the worker
/// in words and kept.
#[test]
fn keys_up_to_s3s_limit_are_compressed_through_serve_and_one_whose_output_would_pass_it_is_kept() {
    let serve = Serve::start(None);
    let sdk = serve.sdk();
    // `incoming/NAME.csv` becomes `processed/NAME.zip`, one byte longer.
    let name = |len: usize| format!("{}/{}", "s".repeat(300), "t".repeat(len - 301));
    let fits = format!("incoming/{}.csv", name(1_010));
    let output = format!("processed/{}.zip", name(1_010));
    assert_eq!((fits.len(), output.len()), (1_023, 1_024));
    let original = text(2_000);
    sdk.put(&fits, &original);
    sdk.wait_for("compressed", |sdk| sdk.only(&[output.as_str()]));
    let zip = serve.dir.path().join("long.zip");
    std::fs::write(&zip, sdk.get(&output).unwrap()).unwrap();
    assert_eq!(unzip(&zip), original);

    let too_long = format!("incoming/{}.csv", name(1_011));
    assert_eq!(too_long.len(), 1_024);
    sdk.put(&too_long, &original);
    sdk.put("incoming/after.csv", &original);
    sdk.wait_for("the next upload compressed", |sdk| {
        let keys = sdk.runtime.block_on(list_keys(&sdk.client, BUCKET));
        keys.contains(&"processed/after.zip".to_owned())
            && !keys.contains(&"incoming/after.csv".to_owned())
    });
    assert_eq!(sdk.get(&too_long).unwrap(), original, "the source is kept");
    let finished = serve.interrupt();
    assert!(finished.success(), "{}", finished.describe());
    assert!(
        finished.stdout.contains("over S3's limit of 1024")
            || finished.stderr.contains("over S3's limit of 1024"),
        "the refusal names the limit: {}",
        finished.describe()
    );
}

/// A tmpfs of `size` mounted on a new folder of `dir`, unmounted on drop. `None` where mounting
/// is not allowed (not root): the test is then skipped, except on CI.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        let path = dir.join("small-disk");
        std::fs::create_dir(&path).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .unwrap();
        if mounted.status.success() {
            return Some(Self(path));
        }
        let why = String::from_utf8_lossy(&mounted.stderr);
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "cannot mount a tmpfs (CI=true): {why}"
        );
        println!("SKIPPED: cannot mount a tmpfs (run as root): {why}");
        None
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// `serve` on an 8 MiB file system: an upload larger than the space left is refused with 503
/// ServiceUnavailable saying the disk is full, as a single PutObject and as a part of a
/// multipart upload; nothing of it is left, and the next upload is stored and compressed.
#[test]
fn serve_answers_a_full_disk_with_an_s3_error_keeps_nothing_of_it_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let Some(disk) = SmallDisk::mount(dir.path(), "8m") else {
        return;
    };
    let serve = Serve::start_on(&disk.0, tempfile::tempdir().unwrap(), None);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = s3_client(
        &format!("http://127.0.0.1:{}", serve.port),
        ACCESS_KEY,
        SECRET_KEY,
    );
    let big = random(12 * 1024 * 1024, 5);

    let started = Instant::now();
    let (code, status, message) = refusal(
        runtime.block_on(
            client
                .put_object()
                .bucket(BUCKET)
                .key("incoming/big.bin")
                .body(big.clone().into())
                .send(),
        ),
    );
    assert_eq!(
        (code.as_str(), status),
        ("ServiceUnavailable", 503),
        "{message}"
    );
    assert!(
        message.contains("disk is full") && message.contains("incoming/big.bin"),
        "{message}"
    );
    eprintln!(
        "a 12 MiB PutObject on an 8 MiB disk: refused in {:.1?} (the SDK's retries included)",
        started.elapsed()
    );
    assert!(
        serve.keys().is_empty(),
        "nothing of it is visible: {:?}",
        serve.keys()
    );
    serve.still_compresses(&runtime, "after-put");

    // In parts: the second 5 MiB part does not fit.
    let created = runtime
        .block_on(
            client
                .create_multipart_upload()
                .bucket(BUCKET)
                .key("incoming/parts.bin")
                .send(),
        )
        .unwrap();
    let upload_id = created.upload_id().unwrap();
    let part = |number: i32| {
        client
            .upload_part()
            .bucket(BUCKET)
            .key("incoming/parts.bin")
            .upload_id(upload_id)
            .part_number(number)
            .body(big[..5 * 1024 * 1024].to_vec().into())
            .send()
    };
    runtime.block_on(part(1)).unwrap();
    let (code, status, _) = refusal(runtime.block_on(part(2)));
    assert_eq!((code.as_str(), status), ("ServiceUnavailable", 503));
    runtime
        .block_on(
            client
                .abort_multipart_upload()
                .bucket(BUCKET)
                .key("incoming/parts.bin")
                .upload_id(upload_id)
                .send(),
        )
        .unwrap();
    serve.still_compresses(&runtime, "after-parts");

    // No scratch file of the refused writes is left taking space.
    let leftovers: Vec<String> = std::fs::read_dir(&disk.0)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".tmp.") || name.starts_with(".upload"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(
        serve.keys(),
        ["processed/after-parts.zip", "processed/after-put.zip"]
    );
    assert!(serve.interrupt().success());
}

/// `estimate` of a mixed bucket of real files on `serve` writes nothing, reads at most a tenth
/// of it, and comes within 5 % of what `backfill` then leaves in it. `serve` itself compresses
/// only `uploads/` here, so the objects under `incoming/` wait for the backfill.
#[test]
fn an_estimate_of_a_mixed_bucket_on_serve_matches_the_backfill_that_follows() {
    use s3_compressor_tests::estimate::{estimate_then_backfill, Target};
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "serve.toml",
        b"[[rule]]\nprefix = \"uploads/\"\noutput_prefix = \"served/\"\n",
    );
    let serve = Serve::start(Some(&config));
    let endpoint = format!("http://127.0.0.1:{}", serve.port);
    let target = Target {
        endpoint: &endpoint,
        access_key: ACCESS_KEY,
        secret_key: SECRET_KEY,
        bucket: BUCKET,
    };
    let figures = estimate_then_backfill(&target, dir.path(), &|endpoint| {
        let mut command = s3_compressor();
        command
            .env("AWS_ENDPOINT_URL", endpoint)
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
            .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("AWS_PROFILE")
            .env_remove("RUST_LOG");
        command
    });
    println!("{figures:?}");
}
