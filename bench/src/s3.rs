//! The S3 side: the embedded endpoint the end-to-end runs talk to, and a client for it (and for
//! `s3-compressor serve`).

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use s3_compressor_serve::{EmbeddedS3, ServeOptions};
use tokio::runtime::Handle;

pub const BUCKET: &str = "bench";
const ACCESS_KEY: &str = "bench";
const SECRET_KEY: &str = "bench-secret";

/// Parts of the bench's own multipart uploads.
pub const PART_SIZE: usize = 64 << 20;

/// How long a graceful shutdown of the endpoint may take.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(30);

/// Environment variables that could point a child elsewhere than the bench means.
const FOREIGN_ENV: [&str; 11] = [
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL_S3",
    "AWS_DEFAULT_REGION",
    "AWS_LAMBDA_LOG_FORMAT",
    "AWS_LAMBDA_LOG_LEVEL",
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_FUNCTION_NAME",
    "S3_COMPRESSOR_CONFIG",
    "RUST_LOG",
    "AWS_CA_BUNDLE",
];

/// Points `command` at `endpoint` with the given identity, and at nothing else: no profile,
/// no config files, no instance metadata.
pub fn point_at(command: &mut Command, endpoint: &str, access_key: &str, secret_key: &str) {
    for name in FOREIGN_ENV {
        command.env_remove(name);
    }
    command
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", access_key)
        .env("AWS_SECRET_ACCESS_KEY", secret_key)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        // Plain log lines in the log files.
        .env("NO_COLOR", "1");
}

/// The embedded S3 endpoint of `s3-compressor-serve`, served from this process's runtime.
///
/// Its CPU time is part of every end-to-end measurement: the worker's GETs and PUTs are served
/// by this process while the measured one runs.
#[derive(Debug)]
pub struct Endpoint {
    server: Option<EmbeddedS3>,
    handle: Handle,
    url: String,
    pub s3: S3,
}

impl Endpoint {
    pub fn start(handle: &Handle, data_dir: &Path) -> anyhow::Result<Self> {
        let options = ServeOptions {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            data_dir: data_dir.to_owned(),
            bucket: BUCKET.to_owned(),
            access_key: ACCESS_KEY.to_owned(),
            secret_key: SECRET_KEY.to_owned(),
            announce_prefixes: Vec::new(),
        };
        let (server, uploads) = handle
            .block_on(EmbeddedS3::start(options))
            .context("cannot start the embedded S3 endpoint")?;
        // Nobody here compresses on upload: the measured `compress` process does. Dropping the
        // receiver is allowed; the endpoint then just does not deliver the notices.
        drop(uploads);
        let url = server.endpoint_url();
        let s3 = S3::new(handle, &url, ACCESS_KEY, SECRET_KEY);
        Ok(Self {
            server: Some(server),
            handle: handle.clone(),
            url,
            s3,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Points a child process at this endpoint.
    pub fn point_at(&self, command: &mut Command) {
        point_at(command, &self.url, ACCESS_KEY, SECRET_KEY);
    }

    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            // A client that never finishes its request must not hold up the bench's exit.
            let _ = self
                .handle
                .block_on(async { tokio::time::timeout(SHUTDOWN_LIMIT, server.shutdown()).await });
        }
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An S3 client driven from synchronous code through a runtime handle.
#[derive(Debug, Clone)]
pub struct S3 {
    client: Client,
    handle: Handle,
}

/// An object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
}

impl S3 {
    pub fn new(handle: &Handle, endpoint: &str, access_key: &str, secret_key: &str) -> Self {
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http_client())
            .region(Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(Credentials::new(
                access_key, secret_key, None, None, "bench",
            ))
            .force_path_style(true)
            .build();
        Self {
            client: Client::from_conf(config),
            handle: handle.clone(),
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Uploads everything `reader` gives as `key`: one PutObject if it fits in a part, else a
    /// multipart upload of [`PART_SIZE`] parts, one at a time (one part in memory). Returns the
    /// bytes uploaded.
    pub fn upload(&self, bucket: &str, key: &str, reader: &mut dyn Read) -> anyhow::Result<u64> {
        let first = read_part(reader)?;
        if first.len() < PART_SIZE {
            let size = first.len() as u64;
            self.handle
                .block_on(
                    self.client
                        .put_object()
                        .bucket(bucket)
                        .key(key)
                        .body(ByteStream::from(first))
                        .send(),
                )
                .with_context(|| format!("PutObject {key}"))?;
            return Ok(size);
        }
        let created = self
            .handle
            .block_on(
                self.client
                    .create_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .send(),
            )
            .with_context(|| format!("CreateMultipartUpload {key}"))?;
        let upload_id = created
            .upload_id()
            .context("CreateMultipartUpload answered without an upload id")?
            .to_owned();
        let result = self.upload_parts(bucket, key, &upload_id, first, reader);
        if result.is_err() {
            // Best effort: the error that stopped the upload is the one to report.
            let _ = self.handle.block_on(
                self.client
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(&upload_id)
                    .send(),
            );
        }
        result
    }

    fn upload_parts(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        first: Vec<u8>,
        reader: &mut dyn Read,
    ) -> anyhow::Result<u64> {
        let mut parts = Vec::new();
        let mut total = 0u64;
        let mut part = first;
        let mut number = 1i32;
        while !part.is_empty() {
            total += part.len() as u64;
            let uploaded = self
                .handle
                .block_on(
                    self.client
                        .upload_part()
                        .bucket(bucket)
                        .key(key)
                        .upload_id(upload_id)
                        .part_number(number)
                        .body(ByteStream::from(part))
                        .send(),
                )
                .with_context(|| format!("UploadPart {number} of {key}"))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(uploaded.e_tag().map(str::to_owned))
                    .build(),
            );
            number += 1;
            part = read_part(reader)?;
        }
        self.handle
            .block_on(
                self.client
                    .complete_multipart_upload()
                    .bucket(bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts))
                            .build(),
                    )
                    .send(),
            )
            .with_context(|| format!("CompleteMultipartUpload {key}"))?;
        Ok(total)
    }

    /// Every object under `prefix`.
    pub fn list(&self, bucket: &str, prefix: &str) -> anyhow::Result<Vec<Listed>> {
        self.handle.block_on(list(&self.client, bucket, prefix))
    }

    /// The object's size, as HEAD reports it.
    pub fn head_size(&self, bucket: &str, key: &str) -> anyhow::Result<u64> {
        let head = self
            .handle
            .block_on(self.client.head_object().bucket(bucket).key(key).send())
            .with_context(|| format!("HeadObject {key}"))?;
        let length = head.content_length().context("HEAD gave no size")?;
        u64::try_from(length).with_context(|| format!("HEAD gave a negative size: {length}"))
    }

    pub fn delete(&self, bucket: &str, key: &str) -> anyhow::Result<()> {
        self.handle
            .block_on(self.client.delete_object().bucket(bucket).key(key).send())
            .with_context(|| format!("DeleteObject {key}"))?;
        Ok(())
    }

    /// Deletes every object under `prefix`.
    pub fn delete_prefix(&self, bucket: &str, prefix: &str) -> anyhow::Result<()> {
        for object in self.list(bucket, prefix)? {
            self.delete(bucket, &object.key)?;
        }
        Ok(())
    }
}

/// ListObjectsV2 through every page.
pub async fn list(client: &Client, bucket: &str, prefix: &str) -> anyhow::Result<Vec<Listed>> {
    let mut objects = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token.take())
            .send()
            .await
            .with_context(|| format!("ListObjectsV2 {prefix}"))?;
        for object in page.contents() {
            if let Some(key) = object.key() {
                objects.push(Listed {
                    key: key.to_owned(),
                    size: object
                        .size()
                        .and_then(|size| u64::try_from(size).ok())
                        .unwrap_or(0),
                });
            }
        }
        match page.next_continuation_token() {
            Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_owned()),
            _ => return Ok(objects),
        }
    }
}

/// Up to [`PART_SIZE`] bytes; fewer only at the end of `reader`.
fn read_part(reader: &mut dyn Read) -> anyhow::Result<Vec<u8>> {
    let mut part = Vec::with_capacity(PART_SIZE);
    reader
        .take(PART_SIZE as u64)
        .read_to_end(&mut part)
        .context("cannot read the input")?;
    Ok(part)
}

/// rustls over ring, as the worker's client (the SDK has no default client in this workspace).
fn http_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}
