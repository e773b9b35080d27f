//! The promise under fault: an uploaded file is never lost. After any fault it ends either
//! compressed and verified under `processed/` with the source deleted (in a versioned bucket:
//! hidden behind a delete marker, its version kept), or untouched under `incoming/`; never
//! both missing. And a redelivery, once S3 behaves again, finishes the job.
//!
//! `s3-compressor compress` runs as a user runs it, against moto_server through a
//! [`FaultProxy`] that spoils the S3 operation a case picks: error answers, cut requests and
//! answers, answers lost after moto did the work, latency, stalls. Every state is judged on
//! moto directly, never through the proxy.
//!
//! - the fault matrix: operation × fault × once (the SDK's retries absorb it: the run
//!   succeeds) or always (the run fails), each case followed by a redelivery without faults;
//!   one test per operation, so nextest runs them side by side, and the stalls in a test of
//!   their own;
//! - SIGKILL at 50+ moments of a multipart run, each followed by a redelivery;
//! - races: concurrent deliveries of one object, a newer upload landing mid-compression, two
//!   sources mapping to one output.
//!
//! Each test starts its own moto_server and proxy, and prints what it saw as a table on
//! stderr (`cargo nextest run --test faults --no-capture` shows them).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::process::Command;
use std::time::{Duration, Instant};

use s3_compressor_tests::faults::{Fault, Op, Times};
use s3_compressor_tests::moto::{Head, Stored};
use s3_compressor_tests::process::{run, Finished, Running, HANG_LIMIT};
use s3_compressor_tests::{random, FaultProxy, Moto};

const MIB: usize = 1024 * 1024;

/// Large enough that the zip of incompressible bytes is over the worker's 8 MiB part size:
/// a multipart upload of two parts.
const MULTIPART_SIZE: usize = 12 * MIB;

/// The per-attempt limit the stall cases give the worker: seconds a request may go without an
/// answer, or without progress of its body, before the SDK tries it again.
const STALL_SECS: &str = "2";

// ---------------------------------------------------------------------------------------------
// moto, the proxy, the buckets and the binary

/// moto_server, and a fault proxy in front of it through which the worker talks.
struct Bench {
    moto: Moto,
    proxy: FaultProxy,
    /// What each output seen so far (bucket, key, ETag, version) was found to be.
    decoded: RefCell<HashMap<OutputSeen, Option<String>>>,
    /// The config of a rule that moves what does not pay, when the bench runs moves: its
    /// sources are random bytes, copied unchanged to `processed/` under their own names.
    moves: Option<std::path::PathBuf>,
}

type OutputSeen = (String, String, String, Option<String>);

impl Bench {
    fn start() -> Self {
        let moto = Moto::start();
        let proxy = FaultProxy::start(moto.endpoint());
        Self {
            moto,
            proxy,
            decoded: RefCell::default(),
            moves: None,
        }
    }

    /// A bench whose runs move what does not pay (`if_not_worth_it = "move"`), copying objects
    /// over 5 MiB in parts of 5 MiB, S3's smallest.
    fn start_moving() -> Self {
        let bench = Self::start();
        let config = bench.moto.write_file(
            "move.toml",
            b"[[rule]]\nprefix = \"incoming/\"\noutput_prefix = \"processed/\"\n\
              if_not_worth_it = \"move\"\n",
        );
        Self {
            moves: Some(config),
            ..bench
        }
    }

    /// `s3-compressor compress s3://BUCKET/KEY` through the proxy.
    fn command(&self, bucket: &str, key: &str) -> Command {
        let mut command = self.moto.s3_compressor();
        command.env("AWS_ENDPOINT_URL", self.proxy.endpoint());
        if let Some(config) = &self.moves {
            command.arg("--config").arg(config).args([
                "--copy-threshold",
                &(5 * MIB).to_string(),
                "--copy-part-size",
                &(5 * MIB).to_string(),
            ]);
        }
        command.arg("compress").arg(format!("s3://{bucket}/{key}"));
        command
    }

    fn compress(&self, bucket: &str, key: &str) -> Finished {
        run(&mut self.command(bucket, key))
    }

    /// A bucket in which another source has been compressed already (straight against moto):
    /// every case checks that its output is left exactly as it was.
    fn bucket(&self, name: &'static str, versioned: bool) -> Bucket {
        if versioned {
            self.moto.create_versioned_bucket(name);
        } else {
            self.moto.create_bucket(name);
        }
        let key = "incoming/other/keep.csv";
        let content = text(30_000, 424_242);
        self.moto.put(name, key, content.clone());
        let mut command = self.moto.s3_compressor();
        command.arg("compress").arg(format!("s3://{name}/{key}"));
        let finished = run(&mut command);
        assert!(finished.success(), "{name}: {}", finished.describe());
        let output = output_key(key);
        let head = self
            .moto
            .head(name, &output)
            .unwrap_or_else(|| panic!("{name}: no output {output}"));
        let bytes = self.moto.get(name, &output);
        assert!(
            unzip(&bytes).is_ok_and(|(_, decoded)| decoded == content),
            "{name}: {output} unzips to {key}"
        );
        Bucket {
            name,
            versioned,
            other_versions: self.moto.versions(name, &output).len(),
            other_output: output,
            other_etag: head.etag,
        }
    }

    /// Whether the other source's output is exactly as it was: same ETag, no new version.
    fn other_problem(&self, bucket: &Bucket) -> Option<String> {
        let head = self.moto.head(bucket.name, &bucket.other_output);
        let versions = self.moto.versions(bucket.name, &bucket.other_output).len();
        match head {
            Some(head) if head.etag == bucket.other_etag && versions == bucket.other_versions => {
                None
            }
            head => Some(format!(
                "the other output {} changed: ETag {:?} (was {}), {versions} versions (were {})",
                bucket.other_output,
                head.map(|head| head.etag),
                bucket.other_etag,
                bucket.other_versions
            )),
        }
    }

    /// What is wrong once a newer upload's own delivery (`again`, leaving `last`) has run
    /// after a race with the `older` one: `settled` says whether `last` is as the case needs
    /// it; the older version must still be there, and the other output as it was.
    fn after_the_newer_delivery(
        &self,
        case: &str,
        bucket: &Bucket,
        older: &Source,
        again: &Finished,
        last: &Look,
        settled: bool,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        if !again.success() || !settled {
            problems.push(format!(
                "{case}: the newer upload's delivery: exit {}, {} ({last:?}): {}",
                exit(again),
                last.label(),
                tail(again)
            ));
        }
        if bucket.versioned && !self.look(older).version_kept {
            problems.push(format!("{case}: the older version is gone"));
        }
        problems.extend(
            self.other_problem(bucket)
                .map(|why| format!("{case}: {why}")),
        );
        problems
    }

    fn put_source(&self, bucket: &Bucket, key: &str, content: Vec<u8>) -> Source {
        let stored = self.moto.put(bucket.name, key, content.clone());
        assert_eq!(
            stored.version_id.is_some(),
            bucket.versioned,
            "{}: versioning as created",
            bucket.name
        );
        let (output, moved) = match self.moves {
            Some(_) => (key.replacen("incoming/", "processed/", 1), true),
            None => (output_key(key), false),
        };
        Source {
            bucket: bucket.name,
            versioned: bucket.versioned,
            key: key.to_owned(),
            output,
            moved,
            content,
            stored,
        }
    }

    /// What a user of the bucket sees of `source` and its output, read on moto directly: the
    /// source first, so that a delete landing between the two reads (after the output was
    /// complete) cannot make a kept file look lost.
    ///
    /// The source is judged by HEAD: S3 objects are never changed in place, and any write makes
    /// a new ETag (and, versioned, a new version), so the ETag and version id that were
    /// uploaded still being there means the same bytes are.
    fn look(&self, source: &Source) -> Look {
        let moto = &self.moto;
        let same = |head: &Head| {
            head.etag == source.stored.etag && head.version_id == source.stored.version_id
        };
        let source_state = match moto.head(source.bucket, &source.key) {
            Some(head) if same(&head) => SourceState::Intact,
            Some(head) => SourceState::Replaced(head.etag),
            None => SourceState::Gone,
        };
        let output = self.output_state(source);
        let version_kept = match &source.stored.version_id {
            Some(version) => moto
                .head_version(source.bucket, &source.key, Some(version))
                .is_some_and(|head| same(&head)),
            None => true,
        };
        let listed: Vec<_> = moto
            .versions(source.bucket, &source.key)
            .into_iter()
            .filter(|version| version.key == source.key)
            .collect();
        Look {
            source: source_state,
            output,
            version_kept,
            latest_is_marker: listed
                .iter()
                .any(|version| version.is_latest && version.delete_marker),
            delete_markers: listed
                .iter()
                .filter(|version| version.delete_marker)
                .count(),
            versioned: source.versioned,
            open_uploads: moto
                .open_uploads(source.bucket)
                .iter()
                .filter(|key| **key == source.output)
                .count(),
        }
    }

    /// The current output of `source`: absent, or made from it (decoded once per ETag and
    /// version: a case looks at the same output more than once), or not.
    fn output_state(&self, source: &Source) -> OutputState {
        let Some(head) = self.moto.head(source.bucket, &source.output) else {
            return OutputState::Absent;
        };
        let seen = (
            source.bucket.to_owned(),
            source.output.clone(),
            head.etag.clone(),
            head.version_id.clone(),
        );
        if let Some(problem) = self.decoded.borrow().get(&seen) {
            return problem
                .clone()
                .map_or(OutputState::Made, OutputState::Wrong);
        }
        let problem =
            match self
                .moto
                .get_version(source.bucket, &source.output, head.version_id.as_deref())
            {
                None => Some("gone between its HEAD and its GET".to_owned()),
                Some(bytes) => output_problem(source, &bytes, &head.metadata),
            };
        self.decoded.borrow_mut().insert(seen, problem.clone());
        problem.map_or(OutputState::Made, OutputState::Wrong)
    }

    /// Removes every version of `keys` and aborts every open upload of the bucket (as its
    /// lifecycle rule would), once a case has been judged: moto's listings slow down with every
    /// object a bucket holds (a ListObjectVersions takes half a CPU second once twenty 12 MiB
    /// objects are in it).
    fn purge(&self, bucket: &str, keys: &[&str]) {
        let client = self.moto.client();
        self.moto.block_on(async {
            for key in keys {
                let listed = client
                    .list_object_versions()
                    .bucket(bucket)
                    .prefix(*key)
                    .send()
                    .await
                    .expect("ListObjectVersions");
                let mut ids: Vec<Option<String>> = listed
                    .versions()
                    .iter()
                    .filter(|version| version.key() == Some(key))
                    .map(|version| version.version_id().map(str::to_owned))
                    .collect();
                ids.extend(
                    listed
                        .delete_markers()
                        .iter()
                        .filter(|marker| marker.key() == Some(key))
                        .map(|marker| marker.version_id().map(str::to_owned)),
                );
                for id in ids {
                    let id = id.filter(|id| id != "null");
                    client
                        .delete_object()
                        .bucket(bucket)
                        .key(*key)
                        .set_version_id(id)
                        .send()
                        .await
                        .expect("DeleteObject");
                }
            }
        });
        self.abort_open_uploads(bucket);
    }

    /// Aborts what killed runs left open, as the bucket's lifecycle rule would; how many.
    fn abort_open_uploads(&self, bucket: &str) -> usize {
        let client = self.moto.client();
        self.moto.block_on(async {
            let listed = client
                .list_multipart_uploads()
                .bucket(bucket)
                .send()
                .await
                .expect("ListMultipartUploads");
            for upload in listed.uploads() {
                client
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(upload.key().unwrap_or_default())
                    .upload_id(upload.upload_id().unwrap_or_default())
                    .send()
                    .await
                    .expect("AbortMultipartUpload");
            }
            listed.uploads().len()
        })
    }
}

struct Bucket {
    name: &'static str,
    versioned: bool,
    other_output: String,
    other_etag: String,
    other_versions: usize,
}

impl Bucket {
    fn kind(&self) -> &'static str {
        if self.versioned {
            "versioned"
        } else {
            "plain"
        }
    }
}

/// An uploaded file and what it must become.
struct Source {
    bucket: &'static str,
    versioned: bool,
    key: String,
    output: String,
    /// Moved unchanged rather than compressed: the output is the source's bytes.
    moved: bool,
    content: Vec<u8>,
    stored: Stored,
}

/// Why `bytes`, an output with `metadata`, is not exactly `source` compressed, if it is not.
fn output_problem(
    source: &Source,
    bytes: &[u8],
    metadata: &HashMap<String, String>,
) -> Option<String> {
    let name = source.key.rsplit('/').next().unwrap_or_default();
    let unzipped = if source.moved {
        (bytes != source.content).then(|| {
            format!(
                "is {} bytes that are not the source's {}",
                bytes.len(),
                source.content.len()
            )
        })
    } else {
        zip_problem(name, bytes, &source.content)
    };
    if unzipped.is_some() {
        return unzipped;
    }
    let expected = source_metadata(&source.key, &source.stored, source.content.len());
    let recorded: HashMap<&str, &str> = metadata
        .iter()
        .filter(|(name, _)| name.starts_with("source-"))
        .map(|(name, value)| (name.as_str(), value.as_str()))
        .collect();
    let expected: HashMap<&str, &str> = expected
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .collect();
    (recorded != expected).then(|| format!("metadata {recorded:?}, expected {expected:?}"))
}

/// Why `bytes` is not a zip of one entry `name` holding `content`, if it is not.
fn zip_problem(name: &str, bytes: &[u8], content: &[u8]) -> Option<String> {
    match unzip(bytes) {
        Err(error) => Some(format!("does not unzip: {error}")),
        Ok((names, _)) if names != [name] => Some(format!("holds {names:?}")),
        Ok((_, decoded)) if decoded != content => Some(format!(
            "unzips to {} bytes that are not the source's {}",
            decoded.len(),
            content.len()
        )),
        Ok(_) => None,
    }
}

/// The metadata an output made from this upload carries.
fn source_metadata(key: &str, stored: &Stored, len: usize) -> Vec<(&'static str, String)> {
    let mut expected = vec![
        ("source-key", key.to_owned()),
        ("source-etag", stored.etag.clone()),
        ("source-size", len.to_string()),
    ];
    if let Some(version) = &stored.version_id {
        expected.push(("source-version-id", version.clone()));
    }
    expected
}

#[derive(Debug)]
enum SourceState {
    Intact,
    Gone,
    /// Another object (this ETag) where the upload was: never acceptable, except for a newer
    /// upload of the same key.
    Replaced(String),
}

#[derive(Debug)]
enum OutputState {
    /// Unzips to exactly the source, one entry named as it, with its identity recorded.
    Made,
    Absent,
    Wrong(String),
}

/// A source and its output as a user of the bucket sees them.
#[derive(Debug)]
struct Look {
    source: SourceState,
    output: OutputState,
    /// The uploaded version can still be read by its id (always true unversioned).
    version_kept: bool,
    latest_is_marker: bool,
    delete_markers: usize,
    versioned: bool,
    open_uploads: usize,
}

impl Look {
    /// The promise: the file is somewhere, whole.
    fn kept(&self) -> bool {
        self.version_kept
            && matches!(
                (&self.source, &self.output),
                (SourceState::Intact, OutputState::Made | OutputState::Absent)
                    | (SourceState::Gone, OutputState::Made)
            )
    }

    /// The job done: output verified, source deleted (recoverably if versioned).
    fn done(&self) -> bool {
        matches!(
            (&self.source, &self.output),
            (SourceState::Gone, OutputState::Made)
        ) && self.version_kept
            && (!self.versioned || self.latest_is_marker)
    }

    fn label(&self) -> String {
        let mut label = match (&self.source, &self.output) {
            (_, OutputState::Wrong(why)) => format!("BAD OUTPUT ({why})"),
            (SourceState::Replaced(etag), _) => format!("SOURCE REPLACED (ETag {etag})"),
            (SourceState::Gone, OutputState::Absent) => "LOST".to_owned(),
            (SourceState::Gone, OutputState::Made) => "done".to_owned(),
            (SourceState::Intact, OutputState::Absent) => "source kept".to_owned(),
            (SourceState::Intact, OutputState::Made) => "output+source".to_owned(),
        };
        if !self.version_kept {
            label.push_str(", VERSION LOST");
        }
        if self.versioned && matches!(self.source, SourceState::Gone) && !self.latest_is_marker {
            label.push_str(", no delete marker");
        }
        if self.delete_markers > 1 {
            label.push_str(&format!(", {} markers", self.delete_markers));
        }
        if self.open_uploads > 0 {
            label.push_str(&format!(", {} upload(s) open", self.open_uploads));
        }
        label
    }
}

/// `incoming/a/x.bin` → `processed/a/x.zip`: the default rule.
fn output_key(key: &str) -> String {
    let rest = key
        .strip_prefix("incoming/")
        .expect("a key under incoming/");
    let (folder, name) = rest
        .rsplit_once('/')
        .map_or(("", rest), |(folder, name)| (folder, name));
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    if folder.is_empty() {
        format!("processed/{stem}.zip")
    } else {
        format!("processed/{folder}/{stem}.zip")
    }
}

/// The entry names and the content of a zip, read by the `zip` crate (no code shared with
/// the worker's writer).
fn unzip(bytes: &[u8]) -> Result<(Vec<String>, Vec<u8>), String> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    let mut content = Vec::new();
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).map_err(|e| e.to_string())?;
        names.push(entry.name().map_err(|e| e.to_string())?.into_owned());
        entry.read_to_end(&mut content).map_err(|e| e.to_string())?;
    }
    Ok((names, content))
}

/// CSV-like text: the kind of object the worker is mostly given.
fn text(len: usize, seed: u64) -> Vec<u8> {
    s3_compressor_tests::csv_text(len, seed)
}

/// FNV-1a: a seed per case, from its key.
fn seed_of(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// xorshift64: the kill moments, replayable from a printed seed.
fn xorshift(state: &mut u64) -> u64 {
    let mut x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    x
}

/// The exit code, or how the process ended otherwise.
fn exit(finished: &Finished) -> String {
    finished
        .status
        .code()
        .map_or_else(|| finished.status.to_string(), |code| code.to_string())
}

/// The outcome `compress` printed, in a word or two.
fn outcome(finished: &Finished) -> String {
    let line = finished.stdout.lines().next().unwrap_or_default();
    let said = line.split_once(": ").map_or(line, |(_, said)| said);
    let kind = [
        ("compressed to", "compressed"),
        ("moved", "moved"),
        ("already compressed", "already compressed"),
        ("failed (transient", "failed transient"),
        ("failed (trying again will not help)", "failed permanent"),
        ("superseded", "superseded"),
        ("skipped", "skipped"),
        ("not found", "not found"),
    ]
    .into_iter()
    .find_map(|(prefix, kind)| said.starts_with(prefix).then_some(kind))
    .unwrap_or("?");
    let fate = if said.contains("source kept: a newer upload") {
        "; kept (newer)"
    } else if said.contains("source already deleted") {
        "; already gone"
    } else {
        ""
    };
    format!("{kind}{fate}")
}

/// Problems with what `compress` printed: one line, about this object.
fn printed_problem(finished: &Finished, source: &Source) -> Option<String> {
    let prefix = format!("s3://{}/{}: ", source.bucket, source.key);
    let lines: Vec<&str> = finished.stdout.lines().collect();
    (lines.len() != 1 || !lines[0].starts_with(&prefix)).then(|| {
        format!(
            "printed {} line(s), not one about {prefix:?}: {:?}",
            lines.len(),
            finished.stdout
        )
    })
}

/// The last lines of stderr, for a problem's description.
fn tail(finished: &Finished) -> String {
    let lines: Vec<&str> = finished.stderr.lines().collect();
    let start = lines.len().saturating_sub(4);
    format!(
        "stdout: {:?}; stderr ends: {}",
        finished.stdout.trim_end(),
        lines[start..].join(" | ")
    )
}

/// Left-aligned columns, for the tables on stderr.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|cell| (*cell).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Prints `rows` under `title`, then fails with every problem found, if any.
fn report(title: &str, header: &[&str], rows: &[Vec<String>], problems: &[String]) {
    eprintln!("\n{title}\n{}", table(header, rows));
    assert!(
        problems.is_empty(),
        "{title}: {} problem(s):\n- {}",
        problems.len(),
        problems.join("\n- ")
    );
}

// ---------------------------------------------------------------------------------------------
// The fault matrix

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Size {
    /// A few KiB of text: the output is one PutObject.
    Small,
    /// [`MULTIPART_SIZE`] of random bytes: the output is a multipart upload of two parts.
    Multipart,
    /// 20 KB of random bytes, moved with one CopyObject (a bench that moves).
    Moved,
    /// [`MOVED_IN_PARTS_SIZE`] of random bytes, moved in two parts (UploadPartCopy).
    MovedInParts,
}

/// Over the 5 MiB a moving bench copies whole: two parts, of 5 MiB and 1 MiB.
const MOVED_IN_PARTS_SIZE: usize = 6 * MIB;

impl Size {
    fn moves(self) -> bool {
        matches!(self, Self::Moved | Self::MovedInParts)
    }
}

/// The faults of the matrix for `op`; a request is cut on its way only if it has a body.
fn faults_for(op: Op) -> Vec<(&'static str, Fault)> {
    let mut faults = vec![
        ("InternalError", Fault::InternalError),
        ("SlowDown", Fault::SlowDown),
    ];
    if matches!(
        op,
        Op::PutObject | Op::UploadPart | Op::CompleteMultipartUpload
    ) {
        faults.push(("CutRequest", Fault::CutRequest));
    }
    faults.extend([
        ("CutResponse", Fault::CutResponse),
        ("DropResponse", Fault::DropResponse),
        ("Latency 300ms", Fault::Latency(Duration::from_millis(300))),
    ]);
    faults
}

const MATRIX_HEADER: [&str; 9] = [
    "op",
    "fault",
    "times",
    "bucket",
    "run",
    "printed",
    "after the run",
    "redelivery",
    "final",
];

/// One cell: `fault` on `op` (`times`) while `compress` runs on a fresh object of `size`,
/// then a redelivery without faults. Returns the table row and the problems found.
fn fault_case(
    bench: &Bench,
    bucket: &Bucket,
    op: Op,
    (fault_name, fault): (&str, Fault),
    times: Times,
    size: Size,
    env: &[(&str, &str)],
) -> (Vec<String>, Vec<String>) {
    let times_name = if times == Times::Always {
        "always"
    } else {
        "once"
    };
    let slug = fault_name.replace(' ', "-").to_ascii_lowercase();
    let extension = match size {
        Size::Small => "csv",
        Size::Multipart | Size::Moved | Size::MovedInParts => "bin",
    };
    let key = format!("incoming/{op:?}/{slug}-{times_name}.{extension}");
    let content = match size {
        Size::Small => text(20_000, seed_of(&key) % 1000),
        Size::Multipart => random(MULTIPART_SIZE, seed_of(&key)),
        Size::Moved => random(20_000, seed_of(&key)),
        Size::MovedInParts => random(MOVED_IN_PARTS_SIZE, seed_of(&key)),
    };
    let source = bench.put_source(bucket, &key, content);
    let case = format!(
        "{op:?} × {fault_name} × {times_name} ({} bucket, {key})",
        bucket.kind()
    );
    let mut problems = Vec::new();

    bench.proxy.clear();
    let fired_before = bench.proxy.faults_applied();
    bench.proxy.inject(op, fault, times);
    let mut command = bench.command(bucket.name, &key);
    command.envs(env.iter().copied());
    let first = run(&mut command);
    bench.proxy.clear();
    let fired = bench.proxy.faults_applied() - fired_before;
    let after = bench.look(&source);

    if fired == 0 {
        problems.push(format!(
            "{case}: no fault fired: {op:?} never happened for this object, so this case \
             proves nothing"
        ));
    }
    if !after.kept() {
        problems.push(format!(
            "{case}: after the faulted run the file is not kept whole: {} ({after:?})",
            after.label()
        ));
    }
    if after.open_uploads > 0 {
        problems.push(format!(
            "{case}: {} multipart upload(s) left open after the faulted run",
            after.open_uploads
        ));
    }
    problems.extend(printed_problem(&first, &source).map(|why| format!("{case}: {why}")));
    // A write whose answer is lost every time did happen: the run finds the output made from
    // its source (HEAD after the failed write), proves it by decoding it against the source,
    // and finishes.
    let write_landed = matches!(
        op,
        Op::PutObject | Op::CompleteMultipartUpload | Op::CopyObject
    ) && matches!(fault, Fault::CutResponse | Fault::DropResponse);
    let expect_success =
        times != Times::Always || matches!(fault, Fault::Latency(_)) || write_landed;
    if expect_success {
        if !first.success() {
            problems.push(format!(
                "{case}: expected the SDK's retries, or finding its own write landed, to absorb the \
                 fault (exit 0), got exit {}: {}",
                exit(&first),
                tail(&first)
            ));
        }
        if !after.done() {
            problems.push(format!(
                "{case}: expected the object done after the run, found: {}",
                after.label()
            ));
        }
    } else {
        if first.status.code() != Some(1) {
            problems.push(format!(
                "{case}: expected the run to fail (exit 1), got exit {}: {}",
                exit(&first),
                tail(&first)
            ));
        }
        if !first.stdout.contains(": failed (transient") {
            problems.push(format!(
                "{case}: a fault of the network or of S3 must be reported as transient (so \
                 that it is retried): {}",
                tail(&first)
            ));
        }
    }
    problems.extend(
        bench
            .other_problem(bucket)
            .map(|why| format!("{case}: {why}")),
    );

    let second = bench.compress(bucket.name, &key);
    let last = bench.look(&source);
    if !second.success() {
        problems.push(format!(
            "{case}: the redelivery failed (exit {}): {}",
            exit(&second),
            tail(&second)
        ));
    }
    problems
        .extend(printed_problem(&second, &source).map(|why| format!("{case}: redelivery: {why}")));
    if !last.done() || last.open_uploads > 0 {
        problems.push(format!(
            "{case}: after the redelivery expected the output verified, the source deleted \
             (recoverably if versioned) and no upload open, found: {} ({last:?})",
            last.label()
        ));
    }
    problems.extend(
        bench
            .other_problem(bucket)
            .map(|why| format!("{case}: after the redelivery: {why}")),
    );

    // moto's ListObjectVersions takes time in proportion to what the bucket holds: the next
    // case starts from the other output alone.
    bench.purge(bucket.name, &[&key, &source.output]);

    let row = vec![
        format!("{op:?}"),
        fault_name.to_owned(),
        times_name.to_owned(),
        bucket.kind().to_owned(),
        format!("exit {}", exit(&first)),
        outcome(&first),
        format!("{} ({fired} fault(s))", after.label()),
        format!("exit {} {}", exit(&second), outcome(&second)),
        last.label(),
    ];
    (row, problems)
}

/// Every fault of the matrix on `op`, once and always, in each of `buckets` (versioned or
/// not); prints the table and fails with every problem found.
fn fault_matrix(op: Op, size: Size, buckets: &[(&'static str, bool)]) {
    let bench = if size.moves() {
        Bench::start_moving()
    } else {
        Bench::start()
    };
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for &(name, versioned) in buckets {
        let bucket = bench.bucket(name, versioned);
        for fault in faults_for(op) {
            for times in [Times::First(1), Times::Always] {
                let (row, found) = fault_case(&bench, &bucket, op, fault, times, size, &[]);
                rows.push(row);
                problems.extend(found);
            }
        }
    }
    report(
        &format!("fault matrix: {op:?}"),
        &MATRIX_HEADER,
        &rows,
        &problems,
    );
}

/// Both kinds of bucket: for the operations whose outcome depends on versioning (conditional
/// writes and deletes, an output told by version id or by ETag, the version a verification
/// reads).
const BOTH: [(&str, bool); 2] = [("versioned", true), ("plain", false)];

/// A versioned bucket only, for the operations that go the same way in both kinds (the upload
/// of parts): each multipart case costs a CPU second or so.
const VERSIONED: [(&str, bool); 1] = [("versioned", true)];

#[test]
fn faults_on_get_object_never_lose_the_file() {
    fault_matrix(Op::GetObject, Size::Small, &BOTH);
}

#[test]
fn faults_on_head_object_never_lose_the_file() {
    fault_matrix(Op::HeadObject, Size::Small, &BOTH);
}

#[test]
fn faults_on_put_object_never_lose_the_file() {
    fault_matrix(Op::PutObject, Size::Small, &BOTH);
}

#[test]
fn faults_on_create_multipart_upload_never_lose_the_file() {
    fault_matrix(Op::CreateMultipartUpload, Size::Multipart, &VERSIONED);
}

#[test]
fn faults_on_upload_part_never_lose_the_file() {
    fault_matrix(Op::UploadPart, Size::Multipart, &VERSIONED);
}

#[test]
fn faults_on_complete_multipart_upload_never_lose_the_file() {
    fault_matrix(Op::CompleteMultipartUpload, Size::Multipart, &BOTH);
}

#[test]
fn faults_on_delete_object_never_lose_the_file() {
    fault_matrix(Op::DeleteObject, Size::Small, &BOTH);
}

#[test]
fn faults_on_copy_object_never_lose_a_moved_file() {
    fault_matrix(Op::CopyObject, Size::Moved, &BOTH);
}

#[test]
fn faults_on_upload_part_copy_never_lose_a_moved_file() {
    fault_matrix(Op::UploadPartCopy, Size::MovedInParts, &VERSIONED);
}

/// A server that takes the request and never answers: the worker gives up on the attempt
/// after `S3_COMPRESSOR_STALL_SECS` and tries again. Separate from the other faults so that it
/// can be run alone.
#[test]
fn stalls_on_every_operation_never_lose_the_file() {
    stall_matrix(
        &Bench::start(),
        &[
            (Op::GetObject, Size::Small),
            (Op::HeadObject, Size::Small),
            (Op::PutObject, Size::Small),
            (Op::CreateMultipartUpload, Size::Multipart),
            (Op::UploadPart, Size::Multipart),
            (Op::CompleteMultipartUpload, Size::Multipart),
            (Op::DeleteObject, Size::Small),
        ],
    );
}

/// Stalls on the copies of a move, whole and in parts.
#[test]
fn stalls_on_copies_never_lose_a_moved_file() {
    stall_matrix(
        &Bench::start_moving(),
        &[
            (Op::CopyObject, Size::Moved),
            (Op::UploadPartCopy, Size::MovedInParts),
        ],
    );
}

/// A stall on each of `cases`, once and always, in a versioned bucket; prints the table and
/// fails with every problem found.
fn stall_matrix(bench: &Bench, cases: &[(Op, Size)]) {
    let bucket = bench.bucket("stalls", true);
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for &(op, size) in cases {
        for times in [Times::First(1), Times::Always] {
            let (row, found) = fault_case(
                bench,
                &bucket,
                op,
                ("Stall", Fault::Stall),
                times,
                size,
                &[("S3_COMPRESSOR_STALL_SECS", STALL_SECS)],
            );
            rows.push(row);
            problems.extend(found);
        }
    }
    report(
        "fault matrix: Stall (S3_COMPRESSOR_STALL_SECS=2)",
        &MATRIX_HEADER,
        &rows,
        &problems,
    );
}

// ---------------------------------------------------------------------------------------------
// SIGKILL at any moment

/// How many runs are killed, at moments spread over the length of one run.
const KILLS: usize = 50;

/// The seed of the kill moments, unless `FAULTS_KILL_SEED` says otherwise (to replay a
/// failure: the test prints the seed it used).
const KILL_SEED: u64 = 0x5EED_F00D_C0DE_2024;

/// Latency on every object operation while a run may be killed, so that each stage of it (the
/// reads, the parts, the completion, the verification, the delete) lasts long enough to be hit.
const KILL_LATENCY: Duration = Duration::from_millis(100);

/// Time for a request the killed process left in the proxy (waiting out [`KILL_LATENCY`]) to
/// reach moto before the state is read, so that the redelivery is judged on its own.
const SETTLE: Duration = Duration::from_millis(500);

const PIPELINE: [(Op, &str); 9] = [
    (Op::HeadObject, "HEAD"),
    (Op::GetObject, "GET"),
    (Op::CreateMultipartUpload, "create"),
    (Op::UploadPart, "part"),
    (Op::CopyObject, "copy"),
    (Op::UploadPartCopy, "part-copy"),
    (Op::CompleteMultipartUpload, "complete"),
    (Op::AbortMultipartUpload, "abort"),
    (Op::DeleteObject, "delete"),
];

fn op_counts(proxy: &FaultProxy) -> Vec<usize> {
    PIPELINE.iter().map(|(op, _)| proxy.count(*op)).collect()
}

/// The requests a run had sent when it was killed, in the order of the pipeline
/// (`HEAD GET create part×2 complete HEAD delete`, roughly).
fn requests_since(proxy: &FaultProxy, before: &[usize]) -> String {
    let sent: Vec<String> = PIPELINE
        .iter()
        .zip(before)
        .filter_map(|((op, name), before)| {
            let n = proxy.count(*op) - before;
            match n {
                0 => None,
                1 => Some((*name).to_owned()),
                n => Some(format!("{name}×{n}")),
            }
        })
        .collect();
    if sent.is_empty() {
        "none".to_owned()
    } else {
        sent.join(" ")
    }
}

fn slow_down(proxy: &FaultProxy) {
    for (op, _) in PIPELINE {
        proxy.inject(op, Fault::Latency(KILL_LATENCY), Times::Always);
    }
}

#[test]
fn a_run_killed_at_any_moment_loses_nothing_and_a_redelivery_finishes_it() {
    kill_runs(&Bench::start(), kill_seed(), KILLS, MULTIPART_SIZE);
}

/// A move in parts (UploadPartCopy) killed at moments spread over its length: the source stays
/// until the copy is proven, and a redelivery finishes the move. Fewer moments than the
/// compression's: the stages after the copy are the same code.
#[test]
fn a_move_killed_at_any_moment_loses_nothing_and_a_redelivery_finishes_it() {
    kill_runs(
        &Bench::start_moving(),
        kill_seed(),
        MOVE_KILLS,
        MOVED_IN_PARTS_SIZE,
    );
}

/// How many runs of a move are killed.
const MOVE_KILLS: usize = 12;

/// The seed of the kill moments: [`KILL_SEED`], or `FAULTS_KILL_SEED`.
fn kill_seed() -> u64 {
    let seed = std::env::var("FAULTS_KILL_SEED")
        .ok()
        .map(|seed| {
            let seed = seed.trim();
            seed.strip_prefix("0x")
                .map_or_else(|| seed.parse(), |hex| u64::from_str_radix(hex, 16))
                .unwrap_or_else(|error| panic!("FAULTS_KILL_SEED={seed:?}: {error}"))
        })
        .unwrap_or(KILL_SEED)
        .max(1);
    eprintln!("kill moments from seed {seed:#x} (FAULTS_KILL_SEED={seed:#x} replays them)");
    seed
}

/// Kills `kills` runs of `bench` (each of a fresh object of `size` random bytes, in a
/// versioned and a plain bucket by turns) at moments spread over the length of one run, each
/// followed by a redelivery; fails with every file not kept whole, or not finished by its
/// redelivery.
fn kill_runs(bench: &Bench, seed: u64, kills: usize, size: usize) {
    let buckets = [
        bench.bucket("kill-versioned", true),
        bench.bucket("kill-plain", false),
    ];

    // One run unkilled, as slow as the killed ones: the moments are spread over its length.
    slow_down(&bench.proxy);
    let measured = bench.put_source(&buckets[0], "incoming/kill/measure.bin", random(size, seed));
    let started = Instant::now();
    let finished = bench.compress(measured.bucket, &measured.key);
    let span = started.elapsed();
    bench.proxy.clear();
    assert!(finished.success(), "{}", finished.describe());
    assert!(bench.look(&measured).done(), "{:?}", bench.look(&measured));
    eprintln!("one run through the slowed proxy took {span:?}");

    let mut state = seed;
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    let mut killed = 0;
    let mut left_open = 0;
    let mut index = 0;
    // A run may end before its moment (the last slices are close to its end, and runs vary):
    // more moments, in the first nine tenths of a run, until `kills` runs were really killed.
    while killed < kills && index < kills + 30 {
        // Stratified: one moment in each of `kills` equal slices of the run, at a random place
        // in its slice.
        let place = (xorshift(&mut state) % 1000) as f64 / 1000.0;
        let fraction = if index < kills {
            (index as f64 + place) / kills as f64
        } else {
            place * 0.9
        };
        let delay = span.mul_f64(fraction);
        let bucket = &buckets[index % 2];
        let key = format!("incoming/kill/{index:02}.bin");
        let source = bench.put_source(bucket, &key, random(size, seed ^ index as u64));
        let case = format!(
            "kill {index} after {delay:?} ({} bucket, {key})",
            bucket.kind()
        );

        slow_down(&bench.proxy);
        let before = op_counts(&bench.proxy);
        let mut running = Running::spawn(&mut bench.command(bucket.name, &key));
        std::thread::sleep(delay);
        let sent = requests_since(&bench.proxy, &before);
        let fate = match running.try_finish() {
            Some(finished) => format!("finished first (exit {})", exit(&finished)),
            None => {
                // Child::kill: SIGKILL, then reaped.
                drop(running);
                killed += 1;
                "killed".to_owned()
            }
        };
        std::thread::sleep(SETTLE);
        bench.proxy.clear();
        let after = bench.look(&source);
        if !after.kept() {
            problems.push(format!(
                "{case}: after the kill the file is not kept whole: {} ({after:?})",
                after.label()
            ));
        }
        problems.extend(
            bench
                .other_problem(bucket)
                .map(|why| format!("{case}: {why}")),
        );

        let second = bench.compress(bucket.name, &key);
        let last = bench.look(&source);
        if !second.success() {
            problems.push(format!(
                "{case}: the redelivery failed (exit {}): {}",
                exit(&second),
                tail(&second)
            ));
        }
        if !last.done() {
            problems.push(format!(
                "{case}: after the redelivery expected the output verified and the source \
                 deleted (recoverably if versioned), found: {} ({last:?})",
                last.label()
            ));
        }
        if last.open_uploads > after.open_uploads {
            problems.push(format!(
                "{case}: the redelivery left an upload of its own open ({} before it, {} after)",
                after.open_uploads, last.open_uploads
            ));
        }
        problems.extend(
            bench
                .other_problem(bucket)
                .map(|why| format!("{case}: after the redelivery: {why}")),
        );
        rows.push(vec![
            index.to_string(),
            bucket.kind().to_owned(),
            format!("{} ms", delay.as_millis()),
            sent,
            fate,
            after.label(),
            format!("exit {} {}", exit(&second), outcome(&second)),
            last.label(),
        ]);
        // The lifecycle rule's work, and room in moto for the next run.
        left_open += after.open_uploads;
        bench.purge(bucket.name, &[&key, &source.output]);
        index += 1;
    }
    eprintln!(
        "{killed} of {index} runs killed; {left_open} multipart upload(s) left open by killed \
         runs (the bucket's lifecycle rule aborts them)"
    );
    report(
        &format!("SIGKILL: {killed} runs killed of {index} (seed {seed:#x}, run length {span:?})"),
        &[
            "#",
            "bucket",
            "kill at",
            "requests sent by then",
            "process",
            "after the kill",
            "redelivery",
            "final",
        ],
        &rows,
        &problems,
    );
    assert!(
        killed >= kills,
        "only {killed} of {index} runs were still running when killed (seed {seed:#x})"
    );
}

// ---------------------------------------------------------------------------------------------
// Ordering and races

#[test]
fn five_concurrent_deliveries_of_one_object_make_one_output() {
    let bench = Bench::start();
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for (name, versioned) in [("race-versioned", true), ("race-plain", false)] {
        let bucket = bench.bucket(name, versioned);
        for (key, content) in [
            ("incoming/race/big.bin", random(MULTIPART_SIZE, 5)),
            ("incoming/race/small.csv", text(40_000, 5)),
        ] {
            let source = bench.put_source(&bucket, key, content);
            let case = format!("{} bucket, {key}", bucket.kind());
            // Every delivery looks for the output before any has written it, so all five
            // compress and race to write it.
            bench.proxy.inject(
                Op::HeadObject,
                Fault::Latency(Duration::from_millis(300)),
                Times::Always,
            );
            let running: Vec<Running> = (0..5)
                .map(|_| Running::spawn(&mut bench.command(name, key)))
                .collect();
            let finished: Vec<Finished> = running
                .into_iter()
                .map(|running| running.finish(HANG_LIMIT))
                .collect();
            bench.proxy.clear();
            let look = bench.look(&source);
            for (index, finished) in finished.iter().enumerate() {
                let said = outcome(finished);
                if !finished.success()
                    || !(said.starts_with("compressed") || said.starts_with("already compressed"))
                {
                    problems.push(format!(
                        "{case}: delivery {index}: expected exit 0, compressed or already \
                         compressed; got exit {}: {}",
                        exit(finished),
                        tail(finished)
                    ));
                }
                if said.contains("kept (newer)") {
                    problems.push(format!(
                        "{case}: delivery {index} says a newer upload replaced the source, but \
                         there was none: {}",
                        finished.stdout.trim_end()
                    ));
                }
            }
            if !look.done() || look.open_uploads > 0 {
                problems.push(format!(
                    "{case}: expected one output of the source, the source deleted and no \
                     upload open, found: {} ({look:?})",
                    look.label()
                ));
            }
            // Every version of the output (moto checks a conditional write and writes in two
            // steps, so racing writes can both land) is made from this source.
            let versions = bench.moto.versions(name, &source.output);
            for version in &versions {
                let id = versioned.then_some(version.version_id.as_str());
                let problem = match (
                    bench.moto.head_version(name, &source.output, id),
                    bench.moto.get_version(name, &source.output, id),
                ) {
                    (Some(head), Some(bytes)) => output_problem(&source, &bytes, &head.metadata),
                    _ => Some("cannot be read".to_owned()),
                };
                if let Some(problem) = problem {
                    problems.push(format!(
                        "{case}: output version {} is not the source compressed: {problem}",
                        version.version_id
                    ));
                }
            }
            problems.extend(
                bench
                    .other_problem(&bucket)
                    .map(|why| format!("{case}: {why}")),
            );
            let mut outcomes: Vec<String> = finished.iter().map(outcome).collect();
            outcomes.sort();
            rows.push(vec![
                bucket.kind().to_owned(),
                key.to_owned(),
                finished.iter().map(exit).collect::<Vec<_>>().join(" "),
                outcomes.join(", "),
                format!("{} output version(s)", versions.len()),
                look.label(),
            ]);
        }
    }
    report(
        "five concurrent deliveries",
        &["bucket", "key", "exits", "outcomes", "output", "final"],
        &rows,
        &problems,
    );
}

/// Waits until `op` has reached the proxy more than `before` times, or `running` ended.
fn wait_for_request(proxy: &FaultProxy, op: Op, before: usize, running: &mut Running) -> bool {
    let deadline = Instant::now() + HANG_LIMIT;
    while Instant::now() < deadline {
        if proxy.count(op) > before {
            return true;
        }
        if let Some(finished) = running.try_finish() {
            panic!(
                "the run ended before its {op:?} reached the proxy: {}",
                finished.describe()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn a_newer_upload_landing_mid_compression_is_never_lost() {
    let bench = Bench::start();
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for (name, versioned) in [("newer-versioned", true), ("newer-plain", false)] {
        let bucket = bench.bucket(name, versioned);
        // The newer upload lands while the output's parts, its single PUT, or the source's
        // delete wait in the proxy: after the worker read the older one.
        for (op, key, older, newer) in [
            (
                Op::UploadPart,
                "incoming/newer/big.bin",
                random(MULTIPART_SIZE, 1),
                random(MULTIPART_SIZE - 1000, 2),
            ),
            (
                Op::PutObject,
                "incoming/newer/put.csv",
                text(30_000, 1),
                text(31_000, 2),
            ),
            (
                Op::DeleteObject,
                "incoming/newer/delete.csv",
                text(30_000, 3),
                text(29_000, 4),
            ),
        ] {
            let case = format!(
                "{} bucket, newer upload during {op:?} ({key})",
                bucket.kind()
            );
            let first = bench.put_source(&bucket, key, older);
            bench.proxy.inject(
                op,
                Fault::Latency(Duration::from_millis(1500)),
                Times::Always,
            );
            let before = bench.proxy.count(op);
            let mut running = Running::spawn(&mut bench.command(name, key));
            assert!(
                wait_for_request(&bench.proxy, op, before, &mut running),
                "{case}: no {op:?} within {HANG_LIMIT:?}"
            );
            let second = bench.put_source(&bucket, key, newer);
            let finished = running.finish(HANG_LIMIT);
            bench.proxy.clear();

            // The output is one of the two; the newer upload is current and untouched unless
            // it is the one compressed; the older is in the output or kept as a version.
            let output = bench.moto.head(name, &first.output).and_then(|head| {
                let bytes =
                    bench
                        .moto
                        .get_version(name, &first.output, head.version_id.as_deref())?;
                Some((head, bytes))
            });
            let decoded = output
                .as_ref()
                .and_then(|(_, bytes)| unzip(bytes).ok())
                .map(|(_, decoded)| decoded);
            let which = match &decoded {
                Some(decoded) if *decoded == first.content => "the older",
                Some(decoded) if *decoded == second.content => "the newer",
                Some(_) => "NEITHER",
                None => "no output",
            };
            let current = bench.moto.try_get(name, key);
            let newer_current = current.as_deref() == Some(second.content.as_slice());
            let older_kept = which == "the older"
                || (versioned
                    && bench
                        .moto
                        .get_version(name, key, first.stored.version_id.as_deref())
                        .as_deref()
                        == Some(first.content.as_slice()));
            let made_from = match (which, &output) {
                ("the older", Some((head, bytes))) => output_problem(&first, bytes, &head.metadata),
                ("the newer", Some((head, bytes))) => {
                    output_problem(&second, bytes, &head.metadata)
                }
                _ => Some(format!("the output is {which}")),
            };
            if let Some(why) = &made_from {
                problems.push(format!(
                    "{case}: the output is not one of the two whole: {why}"
                ));
            }
            if which == "the older" && !newer_current {
                problems.push(format!(
                    "{case}: the newer upload is not the current object, untouched (current: \
                     {:?} bytes)",
                    current.map(|bytes| bytes.len())
                ));
            }
            if which == "the newer" && !(newer_current || bench.look(&second).done()) {
                problems.push(format!(
                    "{case}: the newer upload was compressed but is neither kept nor deleted \
                     recoverably: {:?}",
                    bench.look(&second)
                ));
            }
            if !older_kept {
                problems.push(format!(
                    "{case}: the older upload is lost: not in the output and no version of it"
                ));
            }
            if !finished.success() {
                problems.push(format!(
                    "{case}: expected exit 0, got {}: {}",
                    exit(&finished),
                    tail(&finished)
                ));
            }

            // The newer upload's own delivery then compresses it.
            let again = bench.compress(name, key);
            let last = bench.look(&second);
            let settled = last.done() && last.open_uploads == 0;
            problems.extend(
                bench.after_the_newer_delivery(&case, &bucket, &first, &again, &last, settled),
            );
            rows.push(vec![
                bucket.kind().to_owned(),
                format!("{op:?}"),
                format!("exit {} {}", exit(&finished), outcome(&finished)),
                which.to_owned(),
                if newer_current {
                    "current, untouched".to_owned()
                } else {
                    "not current".to_owned()
                },
                format!("exit {} {}", exit(&again), outcome(&again)),
                last.label(),
            ]);
        }
    }
    report(
        "a newer upload mid-compression",
        &[
            "bucket",
            "upload lands during",
            "run",
            "output holds",
            "newer upload",
            "its delivery",
            "final",
        ],
        &rows,
        &problems,
    );
}

/// A newer upload landing while a move's copy, or its source's delete, waits in the proxy is
/// never lost: it stays current and untouched unless it is what was moved (moto copies the
/// current object whatever the copy source's If-Match says: the copy then fails its proof and
/// is removed), and its own delivery moves it. The older upload is in the output or kept as a
/// version; in a plain bucket, one replaced before its copy is gone by the upload itself, as
/// S3 makes it.
#[test]
fn a_newer_upload_landing_mid_move_is_never_lost() {
    let bench = Bench::start_moving();
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for (name, versioned) in [("newer-versioned", true), ("newer-plain", false)] {
        let bucket = bench.bucket(name, versioned);
        for op in [Op::CopyObject, Op::DeleteObject] {
            let key = format!("incoming/newer/{op:?}.bin");
            let case = format!(
                "{} bucket, newer upload during {op:?} ({key})",
                bucket.kind()
            );
            let first = bench.put_source(&bucket, &key, random(20_000, 1));
            bench.proxy.inject(
                op,
                Fault::Latency(Duration::from_millis(1500)),
                Times::Always,
            );
            let before = bench.proxy.count(op);
            let mut running = Running::spawn(&mut bench.command(name, &key));
            assert!(
                wait_for_request(&bench.proxy, op, before, &mut running),
                "{case}: no {op:?} within {HANG_LIMIT:?}"
            );
            let second = bench.put_source(&bucket, &key, random(21_000, 2));
            let finished = running.finish(HANG_LIMIT);
            bench.proxy.clear();

            let output = bench.moto.try_get(name, &first.output);
            let which = match &output {
                Some(bytes) if *bytes == first.content => "the older",
                Some(bytes) if *bytes == second.content => "the newer",
                Some(_) => "NEITHER",
                None => "no output",
            };
            let current = bench.moto.try_get(name, &key);
            let newer_current = current.as_deref() == Some(second.content.as_slice());
            let older_version_kept = bench
                .moto
                .get_version(name, &key, first.stored.version_id.as_deref())
                .as_deref()
                == Some(first.content.as_slice());
            if which == "NEITHER" {
                problems.push(format!("{case}: the output is neither upload"));
            }
            let newer_moved = which == "the newer" && bench.look(&second).done();
            if !(newer_current || newer_moved) {
                problems.push(format!(
                    "{case}: the newer upload is neither current and untouched nor moved: {:?}",
                    bench.look(&second)
                ));
            }
            let older_replaced_before_its_copy = !versioned && op == Op::CopyObject;
            if which != "the older"
                && !(versioned && older_version_kept)
                && !older_replaced_before_its_copy
            {
                problems.push(format!(
                    "{case}: the older upload is lost: not in the output and no version of it"
                ));
            }

            let again = bench.compress(name, &key);
            let last = bench.look(&second);
            let settled = last.done() && last.open_uploads == 0;
            if !again.success() || !settled {
                problems.push(format!(
                    "{case}: the newer upload's delivery: exit {}, {} ({last:?}): {}",
                    exit(&again),
                    last.label(),
                    tail(&again)
                ));
            }
            problems.extend(
                bench
                    .other_problem(&bucket)
                    .map(|why| format!("{case}: {why}")),
            );
            rows.push(vec![
                bucket.kind().to_owned(),
                format!("{op:?}"),
                format!("exit {} {}", exit(&finished), outcome(&finished)),
                which.to_owned(),
                if newer_current {
                    "current, untouched".to_owned()
                } else {
                    "not current".to_owned()
                },
                format!("exit {} {}", exit(&again), outcome(&again)),
                last.label(),
            ]);
            bench.purge(name, &[&key, &first.output]);
        }
    }
    report(
        "a newer upload mid-move",
        &[
            "bucket",
            "upload lands during",
            "run",
            "output holds",
            "newer upload",
            "its delivery",
            "final",
        ],
        &rows,
        &problems,
    );
}

/// A config as the built-in default, deleting sources even where If-Match is ignored.
const DELETE_WITHOUT_IF_MATCH: &str = "[[rule]]\nprefix = \"incoming/\"\n\
    output_prefix = \"processed/\"\ndelete_without_if_match = true\n";

/// One race on a store that ignores If-Match on DeleteObject: `older` is compressed from `key`
/// while `newer` is uploaded over it (during the output's PutObject, held in the proxy), with
/// `config` if given. Returns the run and both uploads.
fn race_on_a_weak_store(
    bench: &Bench,
    bucket: &Bucket,
    key: &str,
    config: Option<&std::path::Path>,
) -> (Finished, Source, Source) {
    let with_config = |mut command: Command| {
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        command
    };
    // Rows of text numbered from a point of the key's own.
    let seed = seed_of(key) % 1_000_000;
    let first = bench.put_source(bucket, key, text(30_000, seed));
    let output = output_key(key);
    bench.proxy.inject_for_key(
        Op::PutObject,
        &output,
        Fault::Latency(Duration::from_millis(1500)),
        Times::Always,
    );
    let before = bench.proxy.count(Op::PutObject);
    let mut running = Running::spawn(&mut with_config(bench.command(bucket.name, key)));
    assert!(
        wait_for_request(&bench.proxy, Op::PutObject, before, &mut running),
        "{key}: no PutObject within {HANG_LIMIT:?}"
    );
    let second = bench.put_source(bucket, key, text(31_000, seed + 1));
    let finished = running.finish(HANG_LIMIT);
    bench.proxy.clear();
    (finished, first, second)
}

/// The delivery of `source`'s own event (its version, where it has one), with `config`.
fn deliver(bench: &Bench, source: &Source, config: Option<&std::path::Path>) -> Finished {
    let mut command = bench.command(source.bucket, &source.key);
    if let Some(version) = &source.stored.version_id {
        command.arg("--version-id").arg(version);
    }
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    run(&mut command)
}

/// A store that ignores If-Match on DeleteObject (the proxy drops it, as several S3-compatible
/// stores do) would delete a newer upload landing during compression with the older one's
/// delete. The worker finds that out and keeps the sources: the newer upload stays current,
/// and its own event compresses it. The same on the weakest store, which also keeps and
/// returns no checksums (the proxy strips them both ways), where the proofs fall back to
/// reading the output back.
#[test]
fn on_a_store_ignoring_if_match_a_newer_upload_is_never_lost() {
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for (store, without_checksums) in [("ignores If-Match", false), ("and no checksums", true)] {
        let bench = Bench::start();
        bench.proxy.ignore_delete_conditions(true);
        if without_checksums {
            bench.proxy.strip_checksums();
        }
        // What the output's proof rests on: the store's checksum, else reading it back.
        let proof = if without_checksums {
            "read-back"
        } else {
            "stored-checksum"
        };
        race_on_a_store_ignoring_if_match(&bench, store, proof, &mut rows, &mut problems);
    }
    report(
        "a newer upload mid-compression, on a store ignoring If-Match on DeleteObject",
        &[
            "store",
            "bucket",
            "run",
            "newer upload",
            "its delivery",
            "final",
        ],
        &rows,
        &problems,
    );
}

/// The race of [`on_a_store_ignoring_if_match_a_newer_upload_is_never_lost`] in a versioned
/// and a plain bucket of `bench`, whose proxy plays the weaker store; the newer upload's
/// output is proven by `proof`.
fn race_on_a_store_ignoring_if_match(
    bench: &Bench,
    store: &str,
    proof: &str,
    rows: &mut Vec<Vec<String>>,
    problems: &mut Vec<String>,
) {
    for (name, versioned) in [("weak-versioned", true), ("weak-plain", false)] {
        let bucket = bench.bucket(name, versioned);
        let case = format!("store that {store}, {} bucket", bucket.kind());
        let (finished, first, second) =
            race_on_a_weak_store(bench, &bucket, "incoming/weak/race.csv", None);
        let newer_current =
            bench.moto.try_get(name, &second.key).as_deref() == Some(second.content.as_slice());
        if !newer_current {
            problems.push(format!("{case}: the newer upload is no longer current"));
        }
        if !finished.success() || !finished.stdout.contains("delete_without_if_match") {
            problems.push(format!(
                "{case}: expected exit 0 saying the source is kept and what to set, got {}: {}",
                exit(&finished),
                tail(&finished)
            ));
        }
        let after_race = bench.output_state(&first);
        if !matches!(after_race, OutputState::Made) {
            problems.push(format!(
                "{case}: the older upload's output is {after_race:?}"
            ));
        }
        // Its own delivery compresses the newer upload, which stays (sources are kept here).
        let again = deliver(bench, &second, None);
        if !again.stderr.contains(proof) {
            problems.push(format!(
                "{case}: the newer upload's output was not proven by {proof}: {}",
                tail(&again)
            ));
        }
        let last = bench.look(&second);
        let settled = matches!(last.output, OutputState::Made) && last.kept();
        problems
            .extend(bench.after_the_newer_delivery(&case, &bucket, &first, &again, &last, settled));
        rows.push(vec![
            store.to_owned(),
            bucket.kind().to_owned(),
            format!("exit {} {}", exit(&finished), outcome(&finished)),
            if newer_current {
                "current, untouched".to_owned()
            } else {
                "NOT CURRENT".to_owned()
            },
            format!("exit {} {}", exit(&again), outcome(&again)),
            last.label(),
        ]);
    }
}

/// `delete_without_if_match = true` deletes sources on such a store all the same: a plain
/// compression ends done. In a versioned bucket, a newer upload that the older one's delete
/// hid behind a delete marker is still compressed by its own event (the marker supersedes
/// nothing), and every version stays.
#[test]
fn with_delete_without_if_match_sources_are_deleted_on_a_store_ignoring_it() {
    let bench = Bench::start();
    bench.proxy.ignore_delete_conditions(true);
    let config = bench
        .moto
        .write_file("delete-anyway.toml", DELETE_WITHOUT_IF_MATCH.as_bytes());
    let bucket = bench.bucket("weak-anyway", true);

    let source = bench.put_source(&bucket, "incoming/anyway/plain.csv", text(20_000, 77));
    let finished = deliver(&bench, &source, Some(&config));
    let look = bench.look(&source);
    assert!(
        finished.success() && look.done(),
        "deleted as configured: {} ({look:?}): {}",
        look.label(),
        finished.describe()
    );

    let (raced, first, second) =
        race_on_a_weak_store(&bench, &bucket, "incoming/anyway/race.csv", Some(&config));
    assert!(raced.success(), "{}", raced.describe());
    let again = deliver(&bench, &second, Some(&config));
    let last = bench.look(&second);
    assert!(
        again.success() && matches!(last.output, OutputState::Made) && last.version_kept,
        "the hidden newer upload's delivery compresses it: exit {}, {} ({last:?}): {}",
        exit(&again),
        last.label(),
        again.describe()
    );
    assert!(bench.look(&first).version_kept, "the older version stays");
    if let Some(why) = bench.other_problem(&bucket) {
        panic!("{why}");
    }
}

/// S3 answers 409 ConditionalRequestConflict to a conditional delete while another operation
/// on the key is in progress. Should that operation fail, the object read is still current:
/// the run fails transiently, so that the object is delivered again, rather than taking the
/// 409 for a newer upload and ending with the source beside its output for good. The
/// redelivery then deletes it.
#[test]
fn a_409_on_the_source_delete_fails_transiently_and_the_redelivery_finishes() {
    let bench = Bench::start();
    for (name, versioned) in BOTH {
        let bucket = bench.bucket(name, versioned);
        let source = bench.put_source(&bucket, "incoming/conflict/report.csv", text(20_000, 409));
        let conflicts_before = bench.proxy.faults_applied_to(Op::DeleteObject);
        bench
            .proxy
            .inject_for_key(Op::DeleteObject, &source.key, Fault::Conflict, 1);
        let first = bench.compress(bucket.name, &source.key);
        assert_eq!(
            bench.proxy.faults_applied_to(Op::DeleteObject),
            conflicts_before + 1,
            "the source's delete met the 409"
        );
        let after = bench.look(&source);
        assert!(
            first.status.code() == Some(1) && first.stdout.contains(": failed (transient"),
            "{name}: expected a transient failure (exit 1), got exit {}: {}",
            exit(&first),
            first.describe()
        );
        assert!(
            after.kept() && matches!(after.output, OutputState::Made),
            "{name}: expected the source kept beside its proven output, found {} ({after:?})",
            after.label()
        );
        bench.proxy.clear();
        let second = bench.compress(bucket.name, &source.key);
        let last = bench.look(&source);
        assert!(
            second.success() && last.done(),
            "{name}: the redelivery deletes the source: exit {}, {} ({last:?}): {}",
            exit(&second),
            last.label(),
            second.describe()
        );
        if let Some(why) = bench.other_problem(&bucket) {
            panic!("{name}: {why}");
        }
        bench.purge(bucket.name, &[&source.key, &source.output]);
    }
}

/// How long the second source's write is held in the proxy while the first is compressed.
const HOLD: Duration = Duration::from_secs(5);

#[test]
fn two_sources_mapping_to_one_output_the_second_fails_and_keeps_its_source() {
    let bench = Bench::start();
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for (name, versioned) in [("clash-versioned", true), ("clash-plain", false)] {
        let bucket = bench.bucket(name, versioned);
        // In turn; and with the second's write held in the proxy until the first is done,
        // so that only its conditional write can tell.
        for (variant, folder) in [("in turn", "turn"), ("second written last", "late")] {
            let case = format!("{} bucket, {variant}", bucket.kind());
            let csv = bench.put_source(
                &bucket,
                &format!("incoming/{folder}/r.csv"),
                text(40_000, 1),
            );
            let txt = bench.put_source(
                &bucket,
                &format!("incoming/{folder}/r.txt"),
                text(30_000, 2),
            );
            assert_eq!(csv.output, txt.output);
            let (first, second_finished) = if variant == "in turn" {
                let first = bench.compress(name, &csv.key);
                let second = bench.compress(name, &txt.key);
                (first, second)
            } else {
                bench
                    .proxy
                    .inject_for_key(Op::PutObject, "r.zip", Fault::Latency(HOLD), 1);
                let before = bench.proxy.count(Op::PutObject);
                let mut late = Running::spawn(&mut bench.command(name, &txt.key));
                assert!(
                    wait_for_request(&bench.proxy, Op::PutObject, before, &mut late),
                    "{case}: no PutObject"
                );
                let held = Instant::now();
                let first = bench.compress(name, &csv.key);
                // What this variant is about: r.txt's write reaches moto only after r.csv's
                // run is over. Not a limit on the worker: a machine too slow to finish a small
                // run in HOLD cannot set the case up.
                assert!(
                    held.elapsed() < HOLD,
                    "{case}: r.csv's run took {:?}, longer than r.txt's write was held ({HOLD:?}): \
                     the case did not happen as meant",
                    held.elapsed()
                );
                (first, late.finish(HANG_LIMIT))
            };
            bench.proxy.clear();
            let output_head = bench.moto.head(name, &csv.output);
            let csv_look = bench.look(&csv);
            let txt_look = bench.look(&txt);
            if !first.success() || !csv_look.done() {
                problems.push(format!(
                    "{case}: r.csv: exit {}, {}: {}",
                    exit(&first),
                    csv_look.label(),
                    tail(&first)
                ));
            }
            if second_finished.status.code() != Some(1)
                || !second_finished
                    .stdout
                    .contains(": failed (trying again will not help)")
            {
                problems.push(format!(
                    "{case}: r.txt must fail permanently (exit 1): {}",
                    tail(&second_finished)
                ));
            }
            if !matches!(txt_look.source, SourceState::Intact) || !txt_look.version_kept {
                problems.push(format!(
                    "{case}: r.txt must stay intact: {} ({txt_look:?})",
                    txt_look.label()
                ));
            }
            let output_versions = bench.moto.versions(name, &csv.output).len();
            if output_versions != 1 {
                problems.push(format!(
                    "{case}: the output has {output_versions} versions: r.txt wrote over it"
                ));
            }
            if csv_look.open_uploads > 0 {
                problems.push(format!("{case}: {} upload(s) open", csv_look.open_uploads));
            }
            // Once more, now that the output is there: still refused, the output unchanged.
            let again = bench.compress(name, &txt.key);
            if again.status.code() != Some(1)
                || bench.moto.head(name, &csv.output) != output_head
                || !matches!(bench.look(&txt).source, SourceState::Intact)
            {
                problems.push(format!(
                    "{case}: r.txt delivered again must fail and change nothing: {}",
                    tail(&again)
                ));
            }
            problems.extend(
                bench
                    .other_problem(&bucket)
                    .map(|why| format!("{case}: {why}")),
            );
            rows.push(vec![
                bucket.kind().to_owned(),
                variant.to_owned(),
                format!("exit {} {}", exit(&first), outcome(&first)),
                csv_look.label(),
                format!(
                    "exit {} {}",
                    exit(&second_finished),
                    outcome(&second_finished)
                ),
                match txt_look.source {
                    SourceState::Intact if txt_look.version_kept => "intact".to_owned(),
                    _ => format!("NOT INTACT: {}", txt_look.label()),
                },
                format!("exit {} {}", exit(&again), outcome(&again)),
            ]);
        }
    }
    report(
        "two sources, one output",
        &[
            "bucket",
            "order",
            "r.csv",
            "r.csv after",
            "r.txt",
            "r.txt after",
            "r.txt again",
        ],
        &rows,
        &problems,
    );
}
