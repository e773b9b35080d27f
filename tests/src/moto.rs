//! moto_server, a real S3 API on 127.0.0.1, one per test process.

use std::collections::HashMap;
use std::fs::File;
use std::future::Future;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    BucketVersioningStatus, ChecksumMode, CompletedMultipartUpload, CompletedPart,
    VersioningConfiguration,
};
use aws_sdk_s3::Client;

use crate::process::{free_port, wait_for_port, KillOnDrop};
use crate::{MOTO_ACCESS_KEY, MOTO_SECRET_KEY};

/// moto_server usually answers within two seconds; a loaded CI machine gets much longer.
const STARTUP_LIMIT: Duration = Duration::from_secs(60);

/// A moto_server on a free port of 127.0.0.1, with an S3 client for it. Stopped on drop.
#[derive(Debug)]
pub struct Moto {
    server: KillOnDrop,
    endpoint: String,
    dir: tempfile::TempDir,
    runtime: tokio::runtime::Runtime,
    client: Client,
}

/// What a write reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Without quotes.
    pub etag: String,
    /// `None` in a bucket without versioning.
    pub version_id: Option<String>,
}

/// What HEAD says about an object, as a user of the bucket sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub size: u64,
    pub content_type: Option<String>,
    /// User metadata, without the `x-amz-meta-` prefix.
    pub metadata: HashMap<String, String>,
    pub etag: String,
    pub version_id: Option<String>,
    pub crc64nvme: Option<String>,
    /// `FULL_OBJECT` or `COMPOSITE`, when the object has a checksum.
    pub checksum_type: Option<String>,
}

/// One entry of ListObjectVersions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub key: String,
    pub version_id: String,
    pub is_latest: bool,
    pub delete_marker: bool,
}

fn version_of(id: Option<&str>) -> Option<String> {
    id.filter(|id| !id.is_empty() && *id != "null")
        .map(str::to_owned)
}

fn status_of<E>(error: &SdkError<E, HttpResponse>) -> Option<u16> {
    error
        .raw_response()
        .map(|response| response.status().as_u16())
}

fn unquoted(etag: Option<&str>) -> String {
    etag.unwrap_or_default().trim_matches('"').to_owned()
}

/// Uploads what `source` yields to `bucket`/`key` as a multipart upload of `part_size`-byte
/// parts, holding one part in memory at a time.
pub async fn put_in_parts(
    client: &Client,
    bucket: &str,
    key: &str,
    source: &mut dyn Read,
    part_size: usize,
) -> Stored {
    let what = format!("s3://{bucket}/{key}");
    let created = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap_or_else(|error| panic!("CreateMultipartUpload {what}: {error:?}"));
    let upload_id = created.upload_id().expect("an upload id").to_owned();
    let mut parts = Vec::new();
    for number in 1.. {
        let mut part = Vec::with_capacity(part_size);
        source
            .take(part_size as u64)
            .read_to_end(&mut part)
            .unwrap_or_else(|error| panic!("reading the source of {what}: {error}"));
        if part.is_empty() && number > 1 {
            break;
        }
        let last = part.len() < part_size;
        let uploaded = client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .part_number(number)
            .body(ByteStream::from(part))
            .send()
            .await
            .unwrap_or_else(|error| panic!("UploadPart {number} of {what}: {error:?}"));
        parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(uploaded.e_tag().map(str::to_owned))
                .set_checksum_crc32(uploaded.checksum_crc32().map(str::to_owned))
                .build(),
        );
        if last {
            break;
        }
    }
    let completed = client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(parts))
                .build(),
        )
        .send()
        .await
        .unwrap_or_else(|error| panic!("CompleteMultipartUpload {what}: {error:?}"));
    Stored {
        etag: unquoted(completed.e_tag()),
        version_id: version_of(completed.version_id()),
    }
}

/// Every key in `bucket`, sorted, a page of ListObjectsV2 at a time.
pub async fn list_keys(client: &Client, bucket: &str) -> Vec<String> {
    list_keys_encoded(client, bucket, false).await
}

/// [`list_keys`], asking for the keys URL-encoded when `url_encoded` (and decoding them): a key
/// may hold characters XML 1.0 cannot carry (NUL, ESC), which the SDK's XML reader refuses.
/// moto honours the encoding; `serve` does not, so its listings are plain.
async fn list_keys_encoded(client: &Client, bucket: &str, url_encoded: bool) -> Vec<String> {
    let mut keys = Vec::new();
    let mut pages = client
        .list_objects_v2()
        .bucket(bucket)
        .set_encoding_type(url_encoded.then_some(aws_sdk_s3::types::EncodingType::Url))
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.unwrap_or_else(|error| panic!("ListObjectsV2 {bucket}: {error:?}"));
        keys.extend(page.contents().iter().filter_map(|object| {
            let key = object.key()?;
            Some(if url_encoded {
                crate::events::percent_decode(key)
            } else {
                key.to_owned()
            })
        }));
    }
    keys.sort();
    keys
}

impl Moto {
    /// Starts moto_server and waits until it accepts connections.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temp dir for moto_server's log");
        let log_path = dir.path().join("moto.log");
        let log = File::create(&log_path).expect("moto_server's log file");
        let port = free_port();
        let spawned = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file handle"))
            .stderr(log)
            .spawn();
        let mut server = match spawned {
            Ok(child) => KillOnDrop(child),
            Err(error) => panic!(
                "cannot start moto_server ({error}); the end-to-end tests need it on PATH: {}",
                crate::PYTHON_TOOLS
            ),
        };
        if let Err(problem) = wait_for_port(port, &mut server, STARTUP_LIMIT) {
            panic!(
                "moto_server did not start: {problem}. Its log:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        let endpoint = format!("http://127.0.0.1:{port}");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the S3 client");
        let client = crate::s3_client(&endpoint, MOTO_ACCESS_KEY, MOTO_SECRET_KEY);
        Self {
            server,
            endpoint,
            dir,
            runtime,
            client,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A folder that lives as long as this server, for configs, events and downloads.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Stops the server now (to see how the worker copes with an S3 that does not answer).
    pub fn stop(&mut self) {
        self.server.stop();
    }

    /// The environment that points the AWS SDK (the worker's, the AWS CLI's) at this server
    /// and nowhere else.
    pub fn s3_env(&self) -> Vec<(&'static str, String)> {
        let nowhere = self.dir.path().join("no-aws-config").display().to_string();
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", MOTO_ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", MOTO_SECRET_KEY.to_owned()),
            ("AWS_DEFAULT_REGION", "us-east-1".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            // A developer's ~/.aws must not change what the tests do.
            ("AWS_CONFIG_FILE", nowhere.clone()),
            ("AWS_SHARED_CREDENTIALS_FILE", nowhere),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
    }

    /// Applies [`Moto::s3_env`] to `command`, and clears what would override it.
    pub fn point_at(&self, command: &mut Command) {
        for name in [
            "AWS_PROFILE",
            "AWS_SESSION_TOKEN",
            "AWS_ENDPOINT_URL_S3",
            "AWS_LAMBDA_LOG_FORMAT",
            "AWS_LAMBDA_LOG_LEVEL",
            "AWS_LAMBDA_RUNTIME_API",
            "RUST_LOG",
        ] {
            command.env_remove(name);
        }
        command.envs(self.s3_env());
    }

    /// The `s3-compressor` binary, talking to this server.
    pub fn s3_compressor(&self) -> Command {
        let mut command = crate::s3_compressor();
        self.point_at(&mut command);
        command
    }

    /// Writes `text` into this server's folder and returns the path.
    pub fn write_file(&self, name: &str, text: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap_or_else(|error| panic!("write {name}: {error}"));
        path
    }

    pub fn create_bucket(&self, bucket: &str) {
        self.block_on(self.client.create_bucket().bucket(bucket).send())
            .unwrap_or_else(|error| panic!("CreateBucket {bucket}: {error:?}"));
    }

    pub fn create_versioned_bucket(&self, bucket: &str) {
        self.create_bucket(bucket);
        let enabled = VersioningConfiguration::builder()
            .status(BucketVersioningStatus::Enabled)
            .build();
        self.block_on(
            self.client
                .put_bucket_versioning()
                .bucket(bucket)
                .versioning_configuration(enabled)
                .send(),
        )
        .unwrap_or_else(|error| panic!("PutBucketVersioning {bucket}: {error:?}"));
    }

    pub fn put(&self, bucket: &str, key: &str, body: impl Into<Vec<u8>>) -> Stored {
        let body: Vec<u8> = body.into();
        let output = self
            .block_on(
                self.client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(ByteStream::from(body))
                    .send(),
            )
            .unwrap_or_else(|error| panic!("PutObject s3://{bucket}/{key}: {error:?}"));
        Stored {
            etag: unquoted(output.e_tag()),
            version_id: version_of(output.version_id()),
        }
    }

    /// Uploads what `source` yields as a multipart upload of `part_size`-byte parts, holding
    /// one part in memory at a time.
    pub fn put_in_parts(
        &self,
        bucket: &str,
        key: &str,
        source: &mut dyn Read,
        part_size: usize,
    ) -> Stored {
        self.block_on(put_in_parts(&self.client, bucket, key, source, part_size))
    }

    /// The object's bytes; fails the test if it is not there.
    pub fn get(&self, bucket: &str, key: &str) -> Vec<u8> {
        self.try_get(bucket, key)
            .unwrap_or_else(|| panic!("s3://{bucket}/{key} does not exist"))
    }

    /// The object's bytes, or `None` if there is no such object.
    pub fn try_get(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        self.get_version(bucket, key, None)
    }

    /// One version's bytes, or `None` if there is no such object or version.
    pub fn get_version(&self, bucket: &str, key: &str, version: Option<&str>) -> Option<Vec<u8>> {
        self.block_on(async {
            let result = self
                .client
                .get_object()
                .bucket(bucket)
                .key(key)
                .set_version_id(version.map(str::to_owned))
                .send()
                .await;
            match result {
                Ok(output) => Some(
                    output
                        .body
                        .collect()
                        .await
                        .unwrap_or_else(|error| panic!("reading s3://{bucket}/{key}: {error}"))
                        .to_vec(),
                ),
                Err(error) if status_of(&error) == Some(404) => None,
                Err(error) => panic!("GetObject s3://{bucket}/{key} {version:?}: {error:?}"),
            }
        })
    }

    /// Streams the object into a file, for objects too large to hold in memory.
    pub fn download(&self, bucket: &str, key: &str, path: &Path) {
        self.block_on(async {
            let mut output = self
                .client
                .get_object()
                .bucket(bucket)
                .key(key)
                .send()
                .await
                .unwrap_or_else(|error| panic!("GetObject s3://{bucket}/{key}: {error:?}"));
            let mut file = std::io::BufWriter::new(
                File::create(path).unwrap_or_else(|error| panic!("{}: {error}", path.display())),
            );
            while let Some(chunk) = output
                .body
                .try_next()
                .await
                .unwrap_or_else(|error| panic!("reading s3://{bucket}/{key}: {error}"))
            {
                file.write_all(&chunk).expect("write the download");
            }
            file.flush().expect("flush the download");
        });
    }

    /// HEAD of the current object, with its checksum; `None` if there is none.
    pub fn head(&self, bucket: &str, key: &str) -> Option<Head> {
        self.head_version(bucket, key, None)
    }

    /// HEAD of one version (the current one with `None`); `None` if there is no such version.
    pub fn head_version(&self, bucket: &str, key: &str, version: Option<&str>) -> Option<Head> {
        self.block_on(async {
            let result = self
                .client
                .head_object()
                .bucket(bucket)
                .key(key)
                .set_version_id(version.map(str::to_owned))
                .checksum_mode(ChecksumMode::Enabled)
                .send()
                .await;
            match result {
                Ok(output) => Some(Head {
                    size: output
                        .content_length()
                        .and_then(|n| u64::try_from(n).ok())
                        .unwrap_or_default(),
                    content_type: output.content_type().map(str::to_owned),
                    metadata: output.metadata().cloned().unwrap_or_default(),
                    etag: unquoted(output.e_tag()),
                    version_id: version_of(output.version_id()),
                    crc64nvme: output.checksum_crc64_nvme().map(str::to_owned),
                    checksum_type: output.checksum_type().map(|kind| kind.as_str().to_owned()),
                }),
                Err(error) if status_of(&error) == Some(404) => None,
                Err(error) => panic!("HeadObject s3://{bucket}/{key} {version:?}: {error:?}"),
            }
        })
    }

    /// Every key in the bucket, sorted; listed URL-encoded (see [`list_keys_encoded`]).
    pub fn keys(&self, bucket: &str) -> Vec<String> {
        self.block_on(list_keys_encoded(&self.client, bucket, true))
    }

    /// Every version and delete marker of the keys under `prefix`.
    pub fn versions(&self, bucket: &str, prefix: &str) -> Vec<Version> {
        self.block_on(async {
            let output = self
                .client
                .list_object_versions()
                .bucket(bucket)
                .prefix(prefix)
                .send()
                .await
                .unwrap_or_else(|error| panic!("ListObjectVersions {bucket}: {error:?}"));
            let mut versions: Vec<Version> = output
                .versions()
                .iter()
                .map(|version| Version {
                    key: version.key().unwrap_or_default().to_owned(),
                    version_id: version.version_id().unwrap_or_default().to_owned(),
                    is_latest: version.is_latest().unwrap_or_default(),
                    delete_marker: false,
                })
                .collect();
            versions.extend(output.delete_markers().iter().map(|marker| Version {
                key: marker.key().unwrap_or_default().to_owned(),
                version_id: marker.version_id().unwrap_or_default().to_owned(),
                is_latest: marker.is_latest().unwrap_or_default(),
                delete_marker: true,
            }));
            versions
        })
    }

    /// Multipart uploads started and neither completed nor aborted.
    pub fn open_uploads(&self, bucket: &str) -> Vec<String> {
        self.block_on(async {
            let output = self
                .client
                .list_multipart_uploads()
                .bucket(bucket)
                .send()
                .await
                .unwrap_or_else(|error| panic!("ListMultipartUploads {bucket}: {error:?}"));
            output
                .uploads()
                .iter()
                .map(|upload| upload.key().unwrap_or_default().to_owned())
                .collect()
        })
    }
}
