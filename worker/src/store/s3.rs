//! [`ObjectStore`] over `aws-sdk-s3`: AWS itself, or any S3-compatible endpoint.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::SharedHttpClient;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart,
    MetadataDirective, ObjectAttributes, ServerSideEncryption, TaggingDirective,
};
use aws_sdk_s3::Client;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::{tls, Builder as HttpClientBuilder, ConnectorBuilder};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::{
    ContentHeaders, Copied, CopySource, DeleteCondition, Deleted, Download, ErrorClass, Listed,
    Location, Multipart, ObjectInfo, ObjectStore, OutputSpec, Part, StoreError, WriteCondition,
    Written,
};

#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    /// How long a request may wait for an answer, or a download for more data.
    stall: Duration,
}

/// Times a stalled download is resumed before the failure is reported.
const MAX_RESUMES: u32 = 5;

/// The slowest upload a request's timeout allows for, on top of the stall limit: a part of
/// 8 MiB may take 8 s more than the stall limit before it counts as stalled.
const SLOWEST_UPLOAD_BYTES_PER_SEC: u64 = 1024 * 1024;

impl S3Store {
    fn new(client: Client, stall: Duration) -> Self {
        Self { client, stall }
    }

    /// Connecting, and the first byte of every answer, within `stall`: without this a server
    /// that stops answering holds a request until the Lambda deadline, and the whole object
    /// starts over.
    fn timeouts(stall: Duration) -> TimeoutConfig {
        TimeoutConfig::builder()
            .connect_timeout(stall)
            .read_timeout(stall)
            .build()
    }

    /// A request that sends `bytes` first: its answer comes only after they are sent, so the
    /// first-byte limit grows with them.
    fn sending(&self, bytes: usize) -> aws_sdk_s3::config::Builder {
        let sending = Duration::from_secs(bytes as u64 / SLOWEST_UPLOAD_BYTES_PER_SEC);
        aws_sdk_s3::config::Builder::default().timeout_config(
            TimeoutConfig::builder()
                .read_timeout(self.stall + sending)
                .build(),
        )
    }

    /// A client configured the way the AWS CLI would be: environment, profile, or the Lambda
    /// role. With a custom endpoint (`AWS_ENDPOINT_URL`), requests are path-style, because
    /// local S3 servers rarely resolve bucket subdomains.
    pub async fn from_environment(stall: Duration) -> Self {
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(https_client())
            .timeout_config(Self::timeouts(stall))
            .load()
            .await;
        let path_style = shared.endpoint_url().is_some();
        let config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(path_style)
            .build();
        Self::new(Client::from_conf(config), stall)
    }

    /// Lists each prefix in turn into `found`, an object at a time, so that what is held is a
    /// page whatever the bucket holds; stops at the first error (sent on) or when the receiver
    /// goes away.
    pub async fn list_into(
        &self,
        bucket: &str,
        prefixes: &[String],
        found: tokio::sync::mpsc::Sender<Result<Listed, StoreError>>,
    ) {
        for prefix in prefixes {
            let mut continuation = None;
            loop {
                let (objects, next) = match self.list_page(bucket, prefix, continuation).await {
                    Ok(page) => page,
                    Err(error) => {
                        let _ = found.send(Err(error)).await;
                        return;
                    }
                };
                for object in objects {
                    if found.send(Ok(object)).await.is_err() {
                        return;
                    }
                }
                match next {
                    Some(token) => continuation = Some(token),
                    None => break,
                }
            }
        }
    }

    /// One page (up to 1,000) of the objects under `prefix`, and where the next page starts.
    async fn list_page(
        &self,
        bucket: &str,
        prefix: &str,
        continuation: Option<String>,
    ) -> Result<(Vec<Listed>, Option<String>), StoreError> {
        let location = Location {
            bucket: bucket.to_owned(),
            key: prefix.to_owned(),
        };
        let output = self
            .client
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(continuation)
            .send()
            .await
            .map_err(|error| classify(&error, "ListObjectsV2", &location))?;
        let keys = output
            .contents()
            .iter()
            .filter_map(|object| {
                Some(Listed {
                    key: object.key()?.to_owned(),
                    size: object.size().and_then(|size| u64::try_from(size).ok()),
                    storage_class: object
                        .storage_class()
                        .map(|class| class.as_str().to_owned()),
                })
            })
            .collect();
        let next = output
            .is_truncated()
            .unwrap_or(false)
            .then(|| output.next_continuation_token().map(str::to_owned))
            .flatten();
        Ok((keys, next))
    }

    /// `len` bytes of `bucket`/`key` from byte `start` (fewer where the object ends first),
    /// with one ranged GET: what an estimate samples of an object it does not read whole.
    pub async fn get_range(
        &self,
        bucket: &str,
        key: &str,
        start: u64,
        len: u64,
    ) -> Result<Bytes, StoreError> {
        let location = Location {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        };
        let last = start + len.max(1) - 1;
        let output = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .range(format!("bytes={start}-{last}"))
            .send()
            .await
            .map_err(|error| classify(&error, "GetObject (a range)", &location))?;
        let body = output.body.collect().await.map_err(|error| StoreError {
            class: ErrorClass::Transient,
            operation: "GetObject (reading a range)",
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            message: error_chain(&error),
        })?;
        Ok(body.into_bytes())
    }

    /// A client for one endpoint with fixed credentials, such as `serve`'s own.
    pub fn for_endpoint(
        endpoint: &str,
        access_key: &str,
        secret_key: &str,
        stall: Duration,
    ) -> Self {
        let credentials = aws_sdk_s3::config::Credentials::new(
            access_key,
            secret_key,
            None,
            None,
            "s3-compressor",
        );
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .http_client(https_client())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(credentials)
            .force_path_style(true)
            .timeout_config(Self::timeouts(stall))
            .build();
        Self::new(Client::from_conf(config), stall)
    }
}

/// A download that survives a broken or stalled connection: it asks again for the same
/// version (or, unversioned, the same ETag) from the byte where it stopped, instead of failing
/// the object and compressing it again from the start.
///
/// A resumed answer must say it holds the bytes asked for (its Content-Range), because for a
/// source with no stored checksum nothing else checks them: a store that answers another range
/// fails the read. One that ignores Range and sends the whole object again is read past what
/// was already read.
struct Resumable {
    client: Client,
    location: Location,
    version_id: Option<String>,
    etag: Option<String>,
    /// The object's size, as the first answer gave it.
    size: u64,
    body: ByteStream,
    offset: u64,
    /// Bytes at the start of `body` read before: a store that ignored the resume's Range.
    skip: u64,
    resumes: u32,
    stall: Duration,
}

impl Resumable {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, StoreError>> {
        loop {
            let problem = match tokio::time::timeout(self.stall, self.body.next()).await {
                Ok(Some(Ok(mut chunk))) => {
                    if self.skip > 0 {
                        let skipped = self.skip.min(chunk.len() as u64);
                        self.skip -= skipped;
                        chunk = chunk.slice(usize::try_from(skipped).unwrap_or(usize::MAX)..);
                        if chunk.is_empty() {
                            continue;
                        }
                    }
                    self.offset += chunk.len() as u64;
                    return Some(Ok(chunk));
                }
                Ok(None) => return None,
                Ok(Some(Err(error))) => error_chain(&error),
                Err(_) => format!("no data for {} s", self.stall.as_secs()),
            };
            if self.resumes == MAX_RESUMES {
                return Some(Err(self.transient(
                    "GetObject (reading the body)",
                    format!("{problem} (after {MAX_RESUMES} resumed downloads)"),
                )));
            }
            self.resumes += 1;
            tracing::warn!(
                key = %self.location.key,
                offset = self.offset,
                problem,
                "the download broke; resuming where it stopped"
            );
            let resumed = self
                .client
                .get_object()
                .bucket(&self.location.bucket)
                .key(&self.location.key)
                .set_version_id(self.version_id.clone())
                .set_if_match(self.etag.as_deref().map(quoted))
                .range(format!("bytes={}-", self.offset))
                .send()
                .await;
            match resumed {
                Ok(output) => {
                    let range = output.content_range();
                    match resumed_at(range, output.content_length(), self.offset, self.size) {
                        Ok(skip) => {
                            self.skip = skip;
                            self.body = output.body;
                        }
                        Err(answered) => {
                            return Some(Err(self.transient(
                                "GetObject (resuming the download)",
                                format!(
                                    "asked for bytes {}- of {} bytes, the store answered \
                                     {answered}",
                                    self.offset, self.size
                                ),
                            )));
                        }
                    }
                }
                Err(error) => {
                    // Whatever stopped the resume (the object replaced or deleted meanwhile, a
                    // server still down), the next attempt reads the object afresh.
                    let mut error =
                        classify(&error, "GetObject (resuming the download)", &self.location);
                    error.class = ErrorClass::Transient;
                    return Some(Err(error));
                }
            }
        }
    }

    /// A failure of this download that the next attempt, reading afresh, may not meet.
    fn transient(&self, operation: &'static str, message: String) -> StoreError {
        StoreError {
            class: ErrorClass::Transient,
            operation,
            bucket: self.location.bucket.clone(),
            key: self.location.key.clone(),
            message,
        }
    }
}

/// How many bytes of a resumed answer to pass over before the byte at `offset` of an object
/// of `size` bytes: none for the range asked for, `offset` for the whole object (a store that
/// ignores Range). Anything else is the answer's description, for the error.
fn resumed_at(
    content_range: Option<&str>,
    content_length: Option<i64>,
    offset: u64,
    size: u64,
) -> Result<u64, String> {
    let Some(range) = content_range else {
        return match content_length {
            Some(length) if u64::try_from(length) == Ok(size) => Ok(offset),
            Some(length) => Err(format!("{length} bytes without a Content-Range")),
            None => Err("without a Content-Range or a length".to_owned()),
        };
    };
    let parsed = range.strip_prefix("bytes ").and_then(|rest| {
        let (span, total) = rest.split_once('/')?;
        let (first, _) = span.split_once('-')?;
        let total = match total {
            "*" => None,
            total => Some(total.parse::<u64>().ok()?),
        };
        Some((first.parse::<u64>().ok()?, total))
    });
    match parsed {
        Some((first, total)) if first == offset && total.is_none_or(|total| total == size) => Ok(0),
        _ => Err(format!("Content-Range {range:?}")),
    }
}

/// The SDK's default HTTPS client (hyper, rustls, proxies from `HTTPS_PROXY` and the like), on
/// ring instead of aws-lc (see the workspace's Cargo.toml). It mirrors the SDK's own
/// `default_https_client`, which is the one place that builds a client this way.
pub(crate) fn https_client() -> SharedHttpClient {
    HttpClientBuilder::new().build_with_connector_fn(|settings, components| {
        let mut connector = ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}

/// GetObject's and HeadObject's outputs are different types with the same getters.
macro_rules! object_info {
    ($output:expr) => {{
        let kind = $output.checksum_type();
        let parts = $output
            .e_tag()
            .and_then(|etag| parts_of(&unquoted(etag)))
            .or_else(|| {
                [
                    $output.checksum_crc32(),
                    $output.checksum_crc32_c(),
                    $output.checksum_sha1(),
                    $output.checksum_sha256(),
                ]
                .into_iter()
                .flatten()
                .find_map(parts_of)
            });
        let multipart = parts.is_some();
        ObjectInfo {
            size: $output
                .content_length()
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            etag: $output.e_tag().map(unquoted),
            version_id: version($output.version_id()),
            last_modified: $output
                .last_modified()
                .and_then(|time| std::time::SystemTime::try_from(*time).ok()),
            metadata: $output.metadata().cloned().unwrap_or_default(),
            crc64nvme: $output.checksum_crc64_nvme().map(str::to_owned),
            crc32: full_object($output.checksum_crc32(), kind, multipart),
            crc32c: full_object($output.checksum_crc32_c(), kind, multipart),
            sha1: full_object($output.checksum_sha1(), kind, multipart),
            sha256: full_object($output.checksum_sha256(), kind, multipart),
            md5: content_md5(
                $output.e_tag(),
                $output.server_side_encryption(),
                $output.sse_customer_algorithm(),
            ),
            multipart: parts.map(|parts| Multipart {
                parts,
                etag_md5: parts_md5(
                    $output.e_tag(),
                    $output.server_side_encryption(),
                    $output.sse_customer_algorithm(),
                ),
                crc32: composite($output.checksum_crc32(), kind, parts),
                crc32c: composite($output.checksum_crc32_c(), kind, parts),
                sha1: composite($output.checksum_sha1(), kind, parts),
                sha256: composite($output.checksum_sha256(), kind, parts),
                part_sizes: Vec::new(),
            }),
            headers: ContentHeaders {
                content_type: $output.content_type().map(str::to_owned),
                content_encoding: $output.content_encoding().map(str::to_owned),
                content_disposition: $output.content_disposition().map(str::to_owned),
                content_language: $output.content_language().map(str::to_owned),
                cache_control: $output.cache_control().map(str::to_owned),
            },
        }
    }};
}

/// Sets an output's headers on any request that takes them (PutObject, CopyObject,
/// CreateMultipartUpload share the setters).
macro_rules! with_headers {
    ($request:expr, $headers:expr) => {{
        let headers: &ContentHeaders = $headers;
        $request
            .set_content_type(headers.content_type.clone())
            .set_content_encoding(headers.content_encoding.clone())
            .set_content_disposition(headers.content_disposition.clone())
            .set_content_language(headers.content_language.clone())
            .set_cache_control(headers.cache_control.clone())
    }};
}

/// The `N` of a multipart upload's `...-N` ETag or composite checksum.
fn parts_of(value: &str) -> Option<u32> {
    let (_, parts) = value.rsplit_once('-')?;
    parts.parse().ok().filter(|&parts| parts > 0)
}

/// A stored checksum of the whole content. Not the composite checksum of a multipart upload
/// (a checksum of its parts' checksums, `...-N`), and not one whose kind is unknown: a
/// multipart upload's checksum without its type stated and without `-N` may be either (moto
/// writes composite ones so), and holding the bytes against the wrong kind would call a good
/// read bad.
fn full_object(
    checksum: Option<&str>,
    kind: Option<&ChecksumType>,
    multipart: bool,
) -> Option<String> {
    let checksum = checksum?;
    let full = match kind {
        Some(ChecksumType::FullObject) => true,
        Some(ChecksumType::Composite) => false,
        _ => !multipart && !checksum.contains('-'),
    };
    full.then(|| checksum.to_owned())
}

/// A multipart upload's composite checksum, without its `-N`: one that says it is (by its
/// type, or by a `-N` that agrees with the part count).
fn composite(checksum: Option<&str>, kind: Option<&ChecksumType>, parts: u32) -> Option<String> {
    let checksum = checksum?;
    if kind == Some(&ChecksumType::FullObject) {
        return None;
    }
    match checksum.rsplit_once('-') {
        Some((value, count)) => (count.parse() == Ok(parts)).then(|| value.to_owned()),
        None => (kind == Some(&ChecksumType::Composite)).then(|| checksum.to_owned()),
    }
}

/// Whether S3 makes the ETag from the content's MD5 under this encryption: unencrypted or
/// SSE-S3, not SSE-KMS or SSE-C (another value of the same shape).
fn etag_is_md5(encryption: Option<&ServerSideEncryption>, customer_key: Option<&str>) -> bool {
    matches!(encryption, None | Some(ServerSideEncryption::Aes256)) && customer_key.is_none()
}

fn is_md5_hex(value: &str) -> bool {
    value.len() == 32 && value.bytes().all(|byte| byte.is_ascii_hexdigit())
}

/// The MD5 of the content, when the ETag is one: S3 makes the ETag of a single-part upload
/// stored unencrypted or with SSE-S3 the hex MD5 of its bytes. Not under SSE-KMS or SSE-C,
/// and not for a multipart upload (`...-N`).
fn content_md5(
    etag: Option<&str>,
    encryption: Option<&ServerSideEncryption>,
    customer_key: Option<&str>,
) -> Option<String> {
    let etag = etag.map(unquoted)?;
    (etag_is_md5(encryption, customer_key) && is_md5_hex(&etag)).then(|| etag.to_ascii_lowercase())
}

/// The MD5 of a multipart upload's parts' MD5s, when its ETag is one (`MD5-N`), on the same
/// terms of encryption as [`content_md5`].
fn parts_md5(
    etag: Option<&str>,
    encryption: Option<&ServerSideEncryption>,
    customer_key: Option<&str>,
) -> Option<String> {
    let etag = etag.map(unquoted)?;
    let (md5, _) = etag.rsplit_once('-')?;
    (etag_is_md5(encryption, customer_key) && is_md5_hex(md5)).then(|| md5.to_ascii_lowercase())
}

/// What `x-amz-copy-source` names: the bucket and the URL-encoded key, and the version.
fn copy_source(source: &CopySource) -> String {
    /// Everything but what S3 keys and paths keep as they are.
    const KEY_UNSAFE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    let key = percent_encoding::utf8_percent_encode(&source.location.key, KEY_UNSAFE);
    match &source.version_id {
        Some(version_id) => format!(
            "{}/{key}?versionId={}",
            source.location.bucket,
            percent_encoding::utf8_percent_encode(version_id, KEY_UNSAFE)
        ),
        None => format!("{}/{key}", source.location.bucket),
    }
}

/// `If-Match` and `If-None-Match` take HTTP entity tags, which are quoted.
fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
}

fn unquoted(etag: &str) -> String {
    etag.trim_matches('"').to_owned()
}

/// S3 reports "no version" as an absent id or the string "null".
fn version(id: Option<&str>) -> Option<String> {
    id.filter(|id| !id.is_empty() && *id != "null")
        .map(str::to_owned)
}

fn classify<E>(
    error: &SdkError<E, HttpResponse>,
    operation: &'static str,
    location: &Location,
) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let (class, message) = match error {
        SdkError::ServiceError(service) => {
            let status = service_status(error);
            let code = service.err().code().unwrap_or("");
            let class = match (status, code) {
                // A missing bucket is a deployment mistake, not an object that went away.
                (_, "NoSuchBucket") => ErrorClass::Permanent,
                (_, "NoSuchKey" | "NoSuchVersion" | "NotFound") | (Some(404), _) => {
                    ErrorClass::NotFound
                }
                // 409 ConditionalRequestConflict: another conditional write to the key won.
                (Some(412), _)
                | (_, "PreconditionFailed" | "ConditionalRequestConflict" | "OperationAborted") => {
                    ErrorClass::PreconditionFailed
                }
                (_, "RequestTimeout" | "SlowDown" | "Throttling" | "ThrottlingException")
                | (Some(408 | 409 | 429), _) => ErrorClass::Transient,
                (Some(status), _) if status >= 500 => ErrorClass::Transient,
                _ => ErrorClass::Permanent,
            };
            let mut message = match (service.err().code(), service.err().message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_owned(),
                // HEAD answers have no body, so S3's reason is not there to quote.
                _ => match status {
                    Some(403) => "HTTP 403 Forbidden".to_owned(),
                    Some(404) => "HTTP 404 Not Found".to_owned(),
                    Some(status) => format!("HTTP {status}: {}", error_chain(error)),
                    None => error_chain(error),
                },
            };
            if code == "InvalidObjectState" {
                message.push_str(ARCHIVED_HINT);
            } else if status == Some(403) {
                message.push_str(CREDENTIALS_HINT);
            }
            (class, message)
        }
        SdkError::ConstructionFailure(_) => (ErrorClass::Permanent, error_chain(error)),
        // Timeouts, connection failures and unreadable responses: the network, not the request.
        _ => (ErrorClass::Transient, error_chain(error)),
    };
    StoreError {
        class,
        operation,
        bucket: location.bucket.clone(),
        key: location.key.clone(),
        message,
    }
}

/// S3 answers a GET of an object in Glacier Flexible Retrieval, Deep Archive or an
/// Intelligent-Tiering archive tier with 403 InvalidObjectState until it is restored: not the
/// credentials' fault, and no retry helps.
const ARCHIVED_HINT: &str = "; the object is in an archived storage class: restore it \
    (aws s3api restore-object), then compress it again (s3-compressor compress or backfill)";

/// What a person can do about a 403: it is the credentials or the permissions, never the object.
const CREDENTIALS_HINT: &str = "; the credentials were refused or may not do this (check \
    AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or AWS_PROFILE, and the role's permissions)";

fn service_status<E>(error: &SdkError<E, HttpResponse>) -> Option<u16> {
    error
        .raw_response()
        .map(|response| response.status().as_u16())
}

/// The SDK's top-level messages ("dispatch failure") say little; the causes say what happened.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    async fn get(
        &self,
        location: &Location,
        version_id: Option<&str>,
    ) -> Result<Download, StoreError> {
        let output = self
            .client
            .get_object()
            .bucket(&location.bucket)
            .key(&location.key)
            .set_version_id(version_id.map(str::to_owned))
            // The stored checksums, for the proof to hold the bytes read against.
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
            .map_err(|error| classify(&error, "GetObject", location))?;
        let info = object_info!(output);
        let resumable = Resumable {
            client: self.client.clone(),
            location: location.clone(),
            version_id: info.version_id.clone(),
            etag: info.etag.clone(),
            size: info.size,
            body: output.body,
            offset: 0,
            skip: 0,
            resumes: 0,
            stall: self.stall,
        };
        let body = futures::stream::unfold(resumable, |mut resumable| async move {
            resumable.next_chunk().await.map(|chunk| (chunk, resumable))
        })
        .boxed();
        Ok(Download { info, body })
    }

    async fn head(
        &self,
        location: &Location,
        version_id: Option<&str>,
    ) -> Result<Option<ObjectInfo>, StoreError> {
        let result = self
            .client
            .head_object()
            .bucket(&location.bucket)
            .key(&location.key)
            .set_version_id(version_id.map(str::to_owned))
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await;
        let output = match result {
            Ok(output) => output,
            Err(error) => {
                let error = classify(&error, "HeadObject", location);
                return if error.is(ErrorClass::NotFound) {
                    Ok(None)
                } else {
                    Err(error)
                };
            }
        };
        Ok(Some(object_info!(output)))
    }

    async fn put(
        &self,
        spec: &OutputSpec,
        body: Bytes,
        crc64nvme: &str,
    ) -> Result<Written, StoreError> {
        let location = &spec.location;
        let size = body.len();
        let request = with_headers!(self.client.put_object(), &spec.headers)
            .bucket(&location.bucket)
            .key(&location.key)
            .set_metadata(Some(spec.metadata.clone()))
            .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
            .checksum_crc64_nvme(crc64nvme)
            .body(ByteStream::from(body));
        let request = match &spec.condition {
            WriteCondition::Absent => request.if_none_match("*"),
            WriteCondition::Matches(etag) => request.if_match(quoted(etag)),
        };
        // The CRC-64/NVME guards the bytes; a SHA-256 of the payload for the signature too
        // would cost a core-second per 200 MB for nothing more.
        let output = request
            .customize()
            .config_override(self.sending(size))
            .disable_payload_signing()
            .send()
            .await
            .map_err(|error| classify(&error, "PutObject", location))?;
        Ok(Written {
            etag: output.e_tag().map(unquoted),
            version_id: version(output.version_id()),
        })
    }

    async fn create_multipart(&self, spec: &OutputSpec) -> Result<String, StoreError> {
        let location = &spec.location;
        let output = with_headers!(self.client.create_multipart_upload(), &spec.headers)
            .bucket(&location.bucket)
            .key(&location.key)
            .set_metadata(Some(spec.metadata.clone()))
            .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
            .checksum_type(ChecksumType::FullObject)
            .send()
            .await
            .map_err(|error| classify(&error, "CreateMultipartUpload", location))?;
        output
            .upload_id()
            .map(str::to_owned)
            .ok_or_else(|| StoreError {
                class: ErrorClass::Transient,
                operation: "CreateMultipartUpload",
                bucket: location.bucket.clone(),
                key: location.key.clone(),
                message: "the response carried no upload id".to_owned(),
            })
    }

    async fn upload_part(
        &self,
        location: &Location,
        upload_id: &str,
        number: i32,
        body: Bytes,
    ) -> Result<Part, StoreError> {
        let size = body.len();
        let output = self
            .client
            .upload_part()
            .bucket(&location.bucket)
            .key(&location.key)
            .upload_id(upload_id)
            .part_number(number)
            .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
            .body(ByteStream::from(body))
            .customize()
            .config_override(self.sending(size))
            .disable_payload_signing()
            .send()
            .await
            .map_err(|error| classify(&error, "UploadPart", location))?;
        Ok(Part {
            number,
            etag: output.e_tag().map(unquoted).unwrap_or_default(),
            crc64nvme: output.checksum_crc64_nvme().map(str::to_owned),
        })
    }

    async fn complete_multipart(
        &self,
        spec: &OutputSpec,
        upload_id: &str,
        parts: Vec<Part>,
        crc64nvme: &str,
    ) -> Result<Written, StoreError> {
        let location = &spec.location;
        let parts = parts
            .into_iter()
            .map(|part| {
                CompletedPart::builder()
                    .part_number(part.number)
                    .e_tag(quoted(&part.etag))
                    .set_checksum_crc64_nvme(part.crc64nvme)
                    .build()
            })
            .collect();
        let request = self
            .client
            .complete_multipart_upload()
            .bucket(&location.bucket)
            .key(&location.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .checksum_type(ChecksumType::FullObject)
            .checksum_crc64_nvme(crc64nvme);
        let request = match &spec.condition {
            WriteCondition::Absent => request.if_none_match("*"),
            WriteCondition::Matches(etag) => request.if_match(quoted(etag)),
        };
        let output = request
            .send()
            .await
            .map_err(|error| classify(&error, "CompleteMultipartUpload", location))?;
        Ok(Written {
            etag: output.e_tag().map(unquoted),
            version_id: version(output.version_id()),
        })
    }

    async fn abort_multipart(
        &self,
        location: &Location,
        upload_id: &str,
    ) -> Result<(), StoreError> {
        self.client
            .abort_multipart_upload()
            .bucket(&location.bucket)
            .key(&location.key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|error| classify(&error, "AbortMultipartUpload", location))?;
        Ok(())
    }

    async fn open_uploads(&self, location: &Location) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        let (mut key_marker, mut id_marker) = (None, None);
        loop {
            let output = self
                .client
                .list_multipart_uploads()
                .bucket(&location.bucket)
                .prefix(&location.key)
                .set_key_marker(key_marker)
                .set_upload_id_marker(id_marker)
                .send()
                .await
                .map_err(|error| classify(&error, "ListMultipartUploads", location))?;
            ids.extend(
                output
                    .uploads()
                    .iter()
                    .filter(|upload| upload.key() == Some(location.key.as_str()))
                    .filter_map(|upload| upload.upload_id().map(str::to_owned)),
            );
            if !output.is_truncated().unwrap_or(false) {
                return Ok(ids);
            }
            key_marker = output.next_key_marker().map(str::to_owned);
            id_marker = output.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && id_marker.is_none() {
                return Ok(ids);
            }
        }
    }

    async fn newest_content_version(
        &self,
        location: &Location,
    ) -> Result<Option<String>, StoreError> {
        // The key sorts first among those it prefixes, and its versions come newest first:
        // the first version of exactly this key is the answer; a later key ends the search.
        let (mut key_marker, mut id_marker) = (None, None);
        loop {
            let output = self
                .client
                .list_object_versions()
                .bucket(&location.bucket)
                .prefix(&location.key)
                .set_key_marker(key_marker)
                .set_version_id_marker(id_marker)
                .send()
                .await
                .map_err(|error| classify(&error, "ListObjectVersions", location))?;
            for version in output.versions() {
                match version.key() {
                    Some(key) if key == location.key => {
                        return Ok(Some(version.version_id().unwrap_or("null").to_owned()))
                    }
                    Some(_) => return Ok(None),
                    None => {}
                }
            }
            if !output.is_truncated().unwrap_or(false) {
                return Ok(None);
            }
            key_marker = output.next_key_marker().map(str::to_owned);
            id_marker = output.next_version_id_marker().map(str::to_owned);
            if key_marker.as_deref() != Some(location.key.as_str()) {
                return Ok(None);
            }
        }
    }

    /// One request at most: none for one part; for two, HEAD of part 1 (its size is the
    /// first boundary, which any store that serves parts answers with `s3:GetObject` alone);
    /// for more, GetObjectAttributes, which S3 answers with the parts' sizes for an upload
    /// made with a checksum.
    async fn part_sizes(
        &self,
        location: &Location,
        source: &ObjectInfo,
    ) -> Result<Vec<u64>, String> {
        let parts = source
            .multipart
            .as_ref()
            .map_or(0, |multipart| multipart.parts);
        // A changed ETag means another object took the key since it was read.
        let changed = |etag: Option<&str>| {
            etag.map(unquoted).is_some_and(|etag| {
                parts_of(&etag).is_some() && Some(&etag) != source.etag.as_ref()
            })
        };
        match parts {
            0 => Err("not a multipart upload".to_owned()),
            1 => Ok(vec![source.size]),
            2 => {
                let head = self
                    .client
                    .head_object()
                    .bucket(&location.bucket)
                    .key(&location.key)
                    .set_version_id(source.version_id.clone())
                    .part_number(1)
                    .send()
                    .await
                    .map_err(|error| {
                        classify(&error, "HeadObject (part 1)", location).to_string()
                    })?;
                // S3 answers with the object's ETag; moto with the part's, which says nothing.
                if changed(head.e_tag()) {
                    return Err("the object changed since it was read".to_owned());
                }
                // A store that ignores partNumber answers for the whole object, without a count.
                if head.parts_count() != Some(2) {
                    return Err(format!(
                        "HEAD of part 1 gave no parts count of 2 ({:?}): the store does not serve parts",
                        head.parts_count()
                    ));
                }
                let first = head
                    .content_length()
                    .and_then(|size| u64::try_from(size).ok())
                    .ok_or("HEAD of part 1 gave no size")?;
                Ok(vec![first, source.size.saturating_sub(first)])
            }
            _ => {
                let attributes = self
                    .client
                    .get_object_attributes()
                    .bucket(&location.bucket)
                    .key(&location.key)
                    .set_version_id(source.version_id.clone())
                    .object_attributes(ObjectAttributes::Etag)
                    .object_attributes(ObjectAttributes::ObjectParts)
                    .max_parts(10_000)
                    .send()
                    .await
                    .map_err(|error| {
                        classify(&error, "GetObjectAttributes", location).to_string()
                    })?;
                if changed(attributes.e_tag()) {
                    return Err("the object changed since it was read".to_owned());
                }
                let listed = attributes
                    .object_parts()
                    .ok_or("GetObjectAttributes listed no parts")?;
                if listed.is_truncated() == Some(true) {
                    return Err("GetObjectAttributes listed only some of the parts".to_owned());
                }
                // S3 lists the parts of an upload made with a checksum only.
                let sizes = listed
                    .parts()
                    .iter()
                    .map(|part| part.size().and_then(|size| u64::try_from(size).ok()))
                    .collect::<Option<Vec<u64>>>()
                    .filter(|sizes| !sizes.is_empty())
                    .ok_or("GetObjectAttributes listed no part sizes")?;
                Ok(sizes)
            }
        }
    }

    async fn copy(&self, source: &CopySource, spec: &OutputSpec) -> Result<Copied, StoreError> {
        let location = &spec.location;
        let request = with_headers!(self.client.copy_object(), &spec.headers)
            .bucket(&location.bucket)
            .key(&location.key)
            .copy_source(copy_source(source))
            .set_copy_source_if_match(source.etag.as_deref().map(quoted))
            .metadata_directive(MetadataDirective::Replace)
            .set_metadata(Some(spec.metadata.clone()))
            // No tags, as on every output: copying the source's would need s3:GetObjectTagging
            // on the sources and s3:PutObjectTagging on the outputs, which the role lacks.
            .tagging_directive(TaggingDirective::Replace)
            .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme);
        let request = match &spec.condition {
            WriteCondition::Absent => request.if_none_match("*"),
            WriteCondition::Matches(etag) => request.if_match(quoted(etag)),
        };
        let output = request
            .send()
            .await
            .map_err(|error| classify(&error, "CopyObject", location))?;
        Ok(Copied {
            written: Written {
                etag: output
                    .copy_object_result()
                    .and_then(|result| result.e_tag())
                    .map(unquoted),
                version_id: version(output.version_id()),
            },
            source_version_id: version(output.copy_source_version_id()),
        })
    }

    async fn copy_part(
        &self,
        source: &CopySource,
        location: &Location,
        upload_id: &str,
        number: i32,
        range: std::ops::Range<u64>,
    ) -> Result<Part, StoreError> {
        let output = self
            .client
            .upload_part_copy()
            .bucket(&location.bucket)
            .key(&location.key)
            .upload_id(upload_id)
            .part_number(number)
            .copy_source(copy_source(source))
            .set_copy_source_if_match(source.etag.as_deref().map(quoted))
            // HTTP ranges end inclusive.
            .copy_source_range(format!(
                "bytes={}-{}",
                range.start,
                range.end.saturating_sub(1)
            ))
            .send()
            .await
            .map_err(|error| classify(&error, "UploadPartCopy", location))?;
        let result = output.copy_part_result();
        Ok(Part {
            number,
            etag: result
                .and_then(|result| result.e_tag())
                .map(unquoted)
                .unwrap_or_default(),
            crc64nvme: result
                .and_then(|result| result.checksum_crc64_nvme())
                .map(str::to_owned),
        })
    }

    async fn delete(
        &self,
        location: &Location,
        condition: &DeleteCondition,
    ) -> Result<Deleted, StoreError> {
        let request = self
            .client
            .delete_object()
            .bucket(&location.bucket)
            .key(&location.key);
        let request = match condition {
            DeleteCondition::Version(id) => request.version_id(id),
            DeleteCondition::Matches(etag) => request.if_match(quoted(etag)),
        };
        match request.send().await {
            Ok(output) => Ok(Deleted::Now {
                marker: output
                    .delete_marker()
                    .unwrap_or(false)
                    .then(|| version(output.version_id()))
                    .flatten(),
            }),
            Err(error) => {
                let error = classify(&error, "DeleteObject", location);
                if error.is(ErrorClass::NotFound) {
                    Ok(Deleted::AlreadyGone)
                } else {
                    Err(error)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resumed_answer_must_hold_the_bytes_asked_for_or_the_whole_object() {
        let asked = |range: Option<&str>, length: Option<i64>| resumed_at(range, length, 100, 1000);
        assert_eq!(asked(Some("bytes 100-999/1000"), Some(900)), Ok(0));
        assert_eq!(asked(Some("bytes 100-999/*"), Some(900)), Ok(0));
        // A store that ignores Range: the 100 bytes read already are passed over.
        assert_eq!(asked(None, Some(1000)), Ok(100));
        for (range, length) in [
            (Some("bytes 99-998/1000"), Some(900)),
            (Some("bytes 0-899/1000"), Some(900)),
            (Some("bytes 100-999/2000"), Some(900)),
            (Some("items 100-999/1000"), Some(900)),
            (Some("bytes 100-999"), Some(900)),
            (None, Some(900)),
            (None, None),
        ] {
            assert!(asked(range, length).is_err(), "{range:?} {length:?}");
        }
    }

    #[test]
    fn an_etag_is_an_md5_only_for_a_single_part_upload_unencrypted_or_under_sse_s3() {
        let md5 = "\"25F9E794323B453885F5181F1B624D0B\"";
        let lower = Some("25f9e794323b453885f5181f1b624d0b".to_owned());
        assert_eq!(content_md5(Some(md5), None, None), lower);
        assert_eq!(
            content_md5(Some(md5), Some(&ServerSideEncryption::Aes256), None),
            lower
        );
        for (etag, encryption, customer_key) in [
            (md5, Some(ServerSideEncryption::AwsKms), None),
            (md5, Some(ServerSideEncryption::AwsKmsDsse), None),
            (md5, None, Some("AES256")),
            ("\"25f9e794323b453885f5181f1b624d0b-2\"", None, None),
            ("\"etag-1\"", None, None),
        ] {
            assert_eq!(
                content_md5(Some(etag), encryption.as_ref(), customer_key),
                None,
                "{etag} {encryption:?} {customer_key:?}"
            );
        }
    }

    #[test]
    fn a_composite_checksum_is_not_a_full_object_one() {
        let full = Some("yZRlqg==".to_owned());
        let (composite, untyped) = (Some(&ChecksumType::Composite), None);
        assert_eq!(
            full_object(Some("yZRlqg=="), Some(&ChecksumType::FullObject), true),
            full
        );
        assert_eq!(full_object(Some("yZRlqg=="), untyped, false), full);
        assert_eq!(full_object(Some("yZRlqg==-3"), untyped, true), None);
        assert_eq!(full_object(Some("yZRlqg=="), composite, true), None);
        // Of a multipart upload, without its kind: either, so neither.
        assert_eq!(full_object(Some("yZRlqg=="), untyped, true), None);
        assert_eq!(composite_of("yZRlqg==", untyped, 2), None);

        assert_eq!(composite_of("yZRlqg==-3", untyped, 3), full);
        assert_eq!(composite_of("yZRlqg==", composite, 3), full);
        assert_eq!(composite_of("yZRlqg==-2", untyped, 3), None);
        assert_eq!(
            composite_of("yZRlqg==", Some(&ChecksumType::FullObject), 3),
            None
        );
    }

    fn composite_of(checksum: &str, kind: Option<&ChecksumType>, parts: u32) -> Option<String> {
        composite(Some(checksum), kind, parts)
    }

    #[test]
    fn a_multipart_etag_is_the_md5_of_part_md5s_on_the_same_terms() {
        let etag = "\"C1164D84EEDC32884C994196A265ABAA-2\"";
        assert_eq!(parts_of(&unquoted(etag)), Some(2));
        assert_eq!(
            parts_md5(Some(etag), None, None),
            Some("c1164d84eedc32884c994196a265abaa".to_owned())
        );
        assert_eq!(
            parts_md5(Some(etag), Some(&ServerSideEncryption::AwsKms), None),
            None
        );
        assert_eq!(parts_md5(Some(etag), None, Some("AES256")), None);
        assert_eq!(
            parts_md5(Some("\"25f9e794323b453885f5181f1b624d0b\""), None, None),
            None
        );
        assert_eq!(parts_of("25f9e794323b453885f5181f1b624d0b"), None);
        assert_eq!(parts_of("x-0"), None);
    }
}
