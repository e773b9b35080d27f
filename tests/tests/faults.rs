//! The fault-injecting proxy, seen by the AWS SDK's S3 client and by raw HTTP/1.1, against a
//! real moto_server: everything passes through unchanged when no rule says otherwise, and each
//! fault reaches the client as the fault suite expects it to.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use s3_compressor_tests::faults::{key_of, Fault, Op, Times};
use s3_compressor_tests::{have, random, FaultProxy, Moto, PYTHON_TOOLS};

const BUCKET: &str = "faults";
const MIB: usize = 1024 * 1024;

/// moto_server with a bucket, and a proxy in front of it; `None` (skipped) where moto_server
/// is not installed and this is not CI.
fn moto_and_proxy() -> Option<(Moto, FaultProxy)> {
    if !have(&["moto_server"], PYTHON_TOOLS) {
        return None;
    }
    let moto = Moto::start();
    moto.create_bucket(BUCKET);
    let proxy = FaultProxy::start(moto.endpoint());
    Some((moto, proxy))
}

/// An S3 client through the proxy that tries each request once, so that what a fault does is
/// what the test sees (the SDK's retries would hide it), and gives up on an attempt after
/// `attempt_timeout`, if any.
fn client(proxy: &FaultProxy, attempt_timeout: Option<Duration>) -> Client {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut timeouts = TimeoutConfig::builder();
    timeouts.set_operation_attempt_timeout(attempt_timeout);
    let timeouts = timeouts.build();
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .http_client(http_client)
        .region(Region::new("us-east-1"))
        .endpoint_url(proxy.endpoint())
        .credentials_provider(Credentials::new("test", "test", None, None, "tests"))
        .force_path_style(true)
        .retry_config(RetryConfig::standard().with_max_attempts(1))
        .timeout_config(timeouts)
        .build();
    Client::from_conf(config)
}

fn put(moto: &Moto, client: &Client, key: &str, body: &[u8]) -> Result<(), String> {
    moto.block_on(
        client
            .put_object()
            .bucket(BUCKET)
            .key(key)
            .body(ByteStream::from(body.to_vec()))
            .send(),
    )
    .map(drop)
    .map_err(|error| describe(&error))
}

fn get(moto: &Moto, client: &Client, key: &str) -> Result<Vec<u8>, String> {
    moto.block_on(async {
        let output = client
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .map_err(|error| describe(&error))?;
        let body = output
            .body
            .collect()
            .await
            .map_err(|error| format!("reading the body: {error}"))?;
        Ok(body.to_vec())
    })
}

fn head(moto: &Moto, client: &Client, key: &str) -> Result<i64, String> {
    moto.block_on(client.head_object().bucket(BUCKET).key(key).send())
        .map(|output| output.content_length().unwrap_or(-1))
        .map_err(|error| describe(&error))
}

/// The error code, the HTTP status and the error, for assertions.
fn describe<E>(error: &SdkError<E, HttpResponse>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = error
        .raw_response()
        .map(|response| response.status().as_u16().to_string())
        .unwrap_or_else(|| "-".to_owned());
    format!(
        "code={} status={status} {}",
        error.code().unwrap_or("-"),
        aws_sdk_s3::error::DisplayErrorContext(error)
    )
}

/// Sends `request` on a new connection to `endpoint` (the proxy's, or moto's) and returns
/// everything it answers until it closes the connection (the requests say `Connection: close`,
/// or a fault closes it).
fn raw(endpoint: &str, request: &[u8]) -> Vec<u8> {
    let address = endpoint.strip_prefix("http://").expect("an http endpoint");
    let mut stream = TcpStream::connect(address).expect("connect to the proxy");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("a read timeout");
    stream.write_all(request).expect("send the request");
    let mut answer = Vec::new();
    // A reset after the bytes that came is what some faults do; the bytes are the point.
    let _ = stream.read_to_end(&mut answer);
    answer
}

/// A request head as the tests write it by hand. With an Authorization header: moto takes a
/// request without one as anonymous, which a private bucket refuses (403); it checks no
/// signature.
fn request_head(request_line: &str, headers: &[&str]) -> String {
    let mut head = format!(
        "{request_line}\r\nHost: 127.0.0.1\r\nAuthorization: AWS4-HMAC-SHA256 \
         Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\n"
    );
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head
}

/// An answer's head (up to the blank line) and body.
fn split_answer(answer: &[u8]) -> (String, &[u8]) {
    let end = answer
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete head in {:?}", String::from_utf8_lossy(answer)));
    (
        String::from_utf8_lossy(&answer[..end]).to_ascii_lowercase(),
        &answer[end + 4..],
    )
}

#[test]
fn classifies_s3_operations_from_method_path_and_query() {
    let cases = [
        ("GET", "/b/k", "", false, Op::GetObject),
        ("GET", "/b/k", "x-id=GetObject", false, Op::GetObject),
        (
            "GET",
            "/b/a/b/c.txt",
            "versionId=3&partNumber=1",
            false,
            Op::GetObject,
        ),
        (
            "GET",
            "/b/k",
            "response-content-type=text%2Fplain",
            false,
            Op::GetObject,
        ),
        ("GET", "/b/k", "tagging", false, Op::Other),
        ("GET", "/b/k", "uploadId=u", false, Op::Other),
        ("GET", "/b/k", "attributes", false, Op::Other),
        ("GET", "/b", "list-type=2", false, Op::Other),
        ("GET", "/b/", "versions", false, Op::Other),
        ("GET", "/", "", false, Op::Other),
        ("HEAD", "/b/k", "", false, Op::HeadObject),
        ("HEAD", "/b", "", false, Op::Other),
        ("PUT", "/b/k", "x-id=PutObject", false, Op::PutObject),
        ("PUT", "/b/k", "", true, Op::CopyObject),
        ("PUT", "/b/k", "x-id=CopyObject", true, Op::CopyObject),
        ("PUT", "/b/k", "tagging", false, Op::Other),
        ("PUT", "/b", "", false, Op::Other),
        (
            "PUT",
            "/b/k",
            "x-id=UploadPart&partNumber=2&uploadId=u",
            false,
            Op::UploadPart,
        ),
        (
            "PUT",
            "/b/k",
            "x-id=UploadPartCopy&partNumber=2&uploadId=u",
            true,
            Op::UploadPartCopy,
        ),
        ("POST", "/b/k", "uploads", false, Op::CreateMultipartUpload),
        (
            "POST",
            "/b/k",
            "uploads=&x-id=CreateMultipartUpload",
            false,
            Op::CreateMultipartUpload,
        ),
        (
            "POST",
            "/b/k",
            "uploadId=u",
            false,
            Op::CompleteMultipartUpload,
        ),
        ("POST", "/b", "delete", false, Op::Other),
        (
            "DELETE",
            "/b/k",
            "x-id=AbortMultipartUpload&uploadId=u",
            false,
            Op::AbortMultipartUpload,
        ),
        (
            "DELETE",
            "/b/k",
            "x-id=DeleteObject",
            false,
            Op::DeleteObject,
        ),
        ("DELETE", "/b/k", "versionId=3", false, Op::DeleteObject),
        ("DELETE", "/b/k", "tagging", false, Op::Other),
        ("DELETE", "/b", "", false, Op::Other),
    ];
    for (method, path, query, copy_source, expected) in cases {
        assert_eq!(
            Op::classify(method, path, query, copy_source),
            expected,
            "{method} {path}?{query} (copy source: {copy_source})"
        );
    }
    assert_eq!(key_of("/b/dir/a%20b.txt").as_deref(), Some("dir/a b.txt"));
    assert_eq!(key_of("/b/"), None);
    assert_eq!(key_of("/b"), None);
}

#[test]
fn passes_put_get_head_and_delete_through_unchanged() {
    let Some((moto, proxy)) = moto_and_proxy() else {
        return;
    };
    let client = client(&proxy, None);
    let body = random(3 * MIB + 17, 1);
    put(&moto, &client, "dir/one object.bin", &body).expect("PutObject through the proxy");
    assert!(
        moto.get(BUCKET, "dir/one object.bin") == body,
        "moto holds what was put"
    );
    assert!(
        get(&moto, &client, "dir/one object.bin").expect("GetObject") == body,
        "GetObject through the proxy gives the bytes back"
    );
    assert_eq!(
        head(&moto, &client, "dir/one object.bin").expect("HeadObject"),
        i64::try_from(body.len()).expect("a length")
    );
    moto.block_on(
        client
            .delete_object()
            .bucket(BUCKET)
            .key("dir/one object.bin")
            .send(),
    )
    .expect("DeleteObject through the proxy");
    assert_eq!(moto.try_get(BUCKET, "dir/one object.bin"), None);
    let missing = head(&moto, &client, "dir/one object.bin").expect_err("HEAD of a deleted key");
    assert!(missing.contains("NotFound"), "{missing}");
    // A file-backed body streams, in the SDK's aws-chunked encoding when it adds a checksum.
    let streamed = random(24 * MIB, 2);
    let path = moto.write_file("streamed.bin", &streamed);
    moto.block_on(async {
        client
            .put_object()
            .bucket(BUCKET)
            .key("streamed.bin")
            .body(ByteStream::from_path(&path).await.expect("a file body"))
            .send()
            .await
    })
    .expect("a streamed PutObject through the proxy");
    assert!(moto.get(BUCKET, "streamed.bin") == streamed);
    assert!(
        get(&moto, &client, "streamed.bin").expect("a large GetObject through the proxy")
            == streamed
    );

    assert_eq!(proxy.count(Op::PutObject), 2);
    assert_eq!(proxy.count(Op::GetObject), 2);
    assert_eq!(proxy.count(Op::HeadObject), 2);
    assert_eq!(proxy.count(Op::DeleteObject), 1);
    assert_eq!(proxy.faults_applied(), 0);
}

#[test]
fn passes_a_multipart_upload_and_an_abort_through() {
    let Some((moto, proxy)) = moto_and_proxy() else {
        return;
    };
    let client = client(&proxy, None);
    let key = "multi/part.bin";
    let parts: Vec<Vec<u8>> = (0..3).map(|n| random(5 * MIB, 10 + n)).collect();
    moto.block_on(async {
        let created = client
            .create_multipart_upload()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .expect("CreateMultipartUpload");
        let upload_id = created.upload_id().expect("an upload id");
        let mut completed = Vec::new();
        for (number, part) in (1..).zip(&parts) {
            let uploaded = client
                .upload_part()
                .bucket(BUCKET)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(ByteStream::from(part.clone()))
                .send()
                .await
                .unwrap_or_else(|error| panic!("UploadPart {number}: {}", describe(&error)));
            completed.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(uploaded.e_tag().map(str::to_owned))
                    .set_checksum_crc32(uploaded.checksum_crc32().map(str::to_owned))
                    .build(),
            );
        }
        client
            .complete_multipart_upload()
            .bucket(BUCKET)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .expect("CompleteMultipartUpload");

        let abandoned = client
            .create_multipart_upload()
            .bucket(BUCKET)
            .key("multi/abandoned.bin")
            .send()
            .await
            .expect("a second CreateMultipartUpload");
        client
            .abort_multipart_upload()
            .bucket(BUCKET)
            .key("multi/abandoned.bin")
            .upload_id(abandoned.upload_id().expect("an upload id"))
            .send()
            .await
            .expect("AbortMultipartUpload");
    });
    assert!(
        moto.get(BUCKET, key) == parts.concat(),
        "the three parts, in order"
    );
    assert_eq!(moto.open_uploads(BUCKET), Vec::<String>::new());
    assert_eq!(proxy.count(Op::CreateMultipartUpload), 2);
    assert_eq!(proxy.count(Op::UploadPart), 3);
    assert_eq!(proxy.count(Op::CompleteMultipartUpload), 1);
    assert_eq!(proxy.count(Op::AbortMultipartUpload), 1);
    assert_eq!(proxy.faults_applied(), 0);
}

#[test]
fn counts_copies_apart_and_listings_and_bucket_calls_as_other() {
    let Some((moto, proxy)) = moto_and_proxy() else {
        return;
    };
    let client = client(&proxy, None);
    moto.put(BUCKET, "source", b"copied".to_vec());
    // Faults on the object operations must not touch the others.
    proxy.inject(Op::PutObject, Fault::InternalError, Times::Always);
    proxy.inject(Op::GetObject, Fault::InternalError, Times::Always);
    moto.block_on(async {
        client
            .copy_object()
            .bucket(BUCKET)
            .key("copy")
            .copy_source(format!("{BUCKET}/source"))
            .send()
            .await
            .expect("CopyObject");
        client
            .list_objects_v2()
            .bucket(BUCKET)
            .send()
            .await
            .expect("ListObjectsV2");
        client
            .get_object_tagging()
            .bucket(BUCKET)
            .key("copy")
            .send()
            .await
            .expect("GetObjectTagging");
        client
            .head_bucket()
            .bucket(BUCKET)
            .send()
            .await
            .expect("HeadBucket");
    });
    assert_eq!(moto.get(BUCKET, "copy"), b"copied");
    assert_eq!(proxy.count(Op::CopyObject), 1);
    assert_eq!(proxy.count(Op::Other), 3);
    assert_eq!(proxy.count(Op::PutObject), 0);
    assert_eq!(proxy.count(Op::GetObject), 0);
    assert_eq!(proxy.faults_applied(), 0);
}

#[test]
fn internal_error_answers_500_with_its_code_and_moto_never_sees_the_put() {
    let Some((moto, proxy)) = moto_and_proxy() else {
        return;
    };
    let client = client(&proxy, None);
    proxy.inject(Op::PutObject, Fault::InternalError, 1);
    let error = put(&moto, &client, "spoiled", &random(MIB, 3)).expect_err("a 500");
    assert!(error.contains("code=InternalError"), "{error}");
    assert!(error.contains("status=500"), "{error}");
    assert_eq!(moto.try_get(BUCKET, "spoiled"), None);
    assert_eq!(proxy.faults_applied(), 1);
    // The rule was for one request: the next passes.
    put(&moto, &client, "spoiled", b"second try").expect("the next PutObject passes");
    assert_eq!(moto.get(BUCKET, "spoiled"), b"second try");
    assert_eq!(proxy.count(Op::PutObject), 2);
    assert_eq!(proxy.faults_applied(), 1);
}

#[test]
fn slow_down_answers_503_with_its_code() {
    let Some((moto, proxy)) = moto_and_proxy() else {
        return;
    };
    let client = client(&proxy, None);
    moto.put(BUCKET, "busy", b"content".to_vec());
    proxy.inject(Op::GetObject, Fault::SlowDown, 1);
    let error = get(&moto, &client, "busy").expect_err("a 503");
    assert!(error.contains("code=SlowDown"), "{error}");
    assert!(error.contains("status=503"), "{error}");
    assert_eq!(proxy.faults_applied(), 1);
    assert_eq!(
        get(&moto, &client, "busy").expect("the next GetObject"),
        b"content"
    );
}

#[test]
fn drop_response_loses_the_answer_but_moto_performed_the_put() {
    let Some((moto, proxy)) = moto_and_proxy() else {
        return;
    };
    let client = client(&proxy, None);
    let body = random(2 * MIB, 4);
    proxy.inject(Op::PutObject, Fault::DropResponse, 1);
    let error = put(&moto, &client, "done-but-unanswered", &body).expect_err("no answer");
    assert_eq!(proxy.faults_applied(), 1);
    assert!(
        moto.get(BUCKET, "done-but-unanswered") == body,
        "the object is on moto although the client got: {error}"
    );
}

#[test]
fn cut_response_fails_the_body_read_of_a_get() {
    let Some((moto, proxy)) = moto_and_proxy() else {
        return;
    };
    let client = client(&proxy, None);
    moto.put(BUCKET, "half", random(MIB, 5));
    proxy.inject(Op::GetObject, Fault::CutResponse, 1);
    let outcome = moto.block_on(async {
        let output = client
            .get_object()
            .bucket(BUCKET)
            .key("half")
            .send()
            .await
            .map_err(|error| describe(&error))
            .expect("the head of the answer arrives");
        output
            .body
            .collect()
            .await
            .map(|body| body.into_bytes().len())
    });
    assert!(outcome.is_err(), "the body read must fail, got {outcome:?}");
    assert_eq!(proxy.faults_applied(), 1);
}

#[test]
fn cut_response_sends_half_the_body_or_only_the_status_line() {
    let Some((moto, proxy)) = moto_and_proxy() else {
        return;
    };
    moto.put(BUCKET, "raw", random(1000, 6));
    proxy.inject(Op::GetObject, Fault::CutResponse, 1);
    let answer = raw(
        proxy.endpoint(),
        request_head("GET /faults/raw HTTP/1.1", &["Connection: close"]).as_bytes(),
    );
    let (head, body) = split_answer(&answer);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-length: 1000"), "{head}");
    assert_eq!(body, &random(1000, 6)[..500], "the first half of the body");

    proxy.inject(Op::HeadObject, Fault::CutResponse, 1);
    let answer = raw(
        proxy.endpoint(),
        request_head("HEAD /faults/raw HTTP/1.1", &["Connection: close"]).as_bytes(),
    );
    assert_eq!(String::from_utf8_lossy(&answer), "HTTP/1.1 200 OK\r\n");

    // PutObject's answer has no body: the client gets its status line, moto has the object.
    let client = client(&proxy, None);
    proxy.inject(Op::PutObject, Fault::CutResponse, 1);
    let error = put(&moto, &client, "cut-answer", b"stored").expect_err("a cut answer");
    assert_eq!(
        moto.get(BUCKET, "cut-answer"),
        b"stored",
        "moto performed the PutObject whose answer was cut: {error}"
    );
    assert_eq!(proxy.faults_applied(), 3);
}

#[test]
fn cut_request_never_reaches_moto() {
    let Some((moto, proxy)) = moto_and_proxy() else {
        return;
    };
    let client = client(&proxy, None);
    proxy.inject(Op::PutObject, Fault::CutRequest, 1);
    let error = put(&moto, &client, "never-arrived", &random(4 * MIB, 7)).expect_err("a cut");
    assert_eq!(
        moto.try_get(BUCKET, "never-arrived"),
        None,
        "a cut request must not reach moto (the client got: {error})"
    );
    assert_eq!(proxy.faults_applied(), 1);
    assert_eq!(proxy.count(Op::PutObject), 1);

    // An upload part cut halfway: the upload has no part 1.
    proxy.inject(Op::UploadPart, Fault::CutRequest, 1);
    let upload_id = moto.block_on(async {
        let created = client
            .create_multipart_upload()
            .bucket(BUCKET)
            .key("parts")
            .send()
            .await
            .expect("CreateMultipartUpload");
        let upload_id = created.upload_id().expect("an upload id");
        client
            .upload_part()
            .bucket(BUCKET)
            .key("parts")
            .upload_id(upload_id)
            .part_number(1)
            .body(ByteStream::from(random(5 * MIB, 8)))
            .send()
            .await
            .expect_err("a cut part");
        upload_id.to_owned()
    });
    // Asked of moto directly, and read as text: the SDK cannot parse moto's ListParts answer
    // (its root is ListPartsResponse).
    let parts = raw(
        moto.endpoint(),
        request_head(
            &format!("GET /{BUCKET}/parts?uploadId={upload_id} HTTP/1.1"),
            &["Connection: close"],
        )
        .as_bytes(),
    );
    let parts = String::from_utf8_lossy(&parts);
    assert!(parts.contains("<ListPartsResponse"), "{parts}");
    assert!(!parts.contains("<Part>"), "no part reached moto: {parts}");
    assert_eq!(proxy.faults_applied(), 2);
}

#[test]
fn stall_makes_the_client_time_out_and_drop_still_stops_the_proxy() {
    let Some((moto, proxy)) = moto_and_proxy() else {
        return;
    };
    moto.put(BUCKET, "silent", b"content".to_vec());
    let timeout = Duration::from_secs(1);
    let client = client(&proxy, Some(timeout));
    proxy.inject(Op::GetObject, Fault::Stall, 1);
    let started = Instant::now();
    let error = moto
        .block_on(client.get_object().bucket(BUCKET).key("silent").send())
        .expect_err("no answer ever");
    assert!(
        matches!(error, SdkError::TimeoutError(_)),
        "a timeout, got {}",
        describe(&error)
    );
    assert!(started.elapsed() >= timeout);
    assert_eq!(proxy.faults_applied(), 1);

    // A stalled connection the client still holds open must not keep the proxy alive.
    proxy.inject(Op::GetObject, Fault::Stall, 1);
    let address = proxy
        .endpoint()
        .strip_prefix("http://")
        .expect("an http endpoint")
        .to_owned();
    let mut held = TcpStream::connect(&address).expect("connect to the proxy");
    held.write_all(request_head("GET /faults/silent HTTP/1.1", &[]).as_bytes())
        .expect("send a request");
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.faults_applied() < 2 {
        assert!(Instant::now() < deadline, "the second stall never fired");
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(proxy);
    let mut rest = Vec::new();
    held.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("a read timeout");
    let _ = held.read_to_end(&mut rest);
    assert!(rest.is_empty(), "a stalled request gets no answer");
    assert!(
        TcpStream::connect(&address).is_err(),
        "the proxy's port is closed once it is dropped"
    );
}

#[test]
fn latency_delays_the_request_and_then_forwards_it() {
    let Some((moto, proxy)) = moto_and_proxy() else {
        return;
    };
    let client = client(&proxy, None);
    moto.put(BUCKET, "slow", b"content".to_vec());
    let delay = Duration::from_millis(400);
    proxy.inject(Op::HeadObject, Fault::Latency(delay), 1);
    let started = Instant::now();
    assert_eq!(head(&moto, &client, "slow").expect("a late HeadObject"), 7);
    assert!(started.elapsed() >= delay, "{:?}", started.elapsed());
    assert_eq!(proxy.faults_applied(), 1);
}

#[test]
fn times_spoils_only_the_first_matching_requests() {
    let Some((moto, proxy)) = moto_and_proxy() else {
        return;
    };
    let client = client(&proxy, None);
    proxy.inject(Op::PutObject, Fault::InternalError, 1);
    assert!(
        put(&moto, &client, "a", b"1").is_err(),
        "the first PutObject is spoiled"
    );
    put(&moto, &client, "a", b"2").expect("the second passes");
    put(&moto, &client, "a", b"3").expect("the third passes");
    assert_eq!(proxy.faults_applied(), 1);

    proxy.inject(Op::HeadObject, Fault::SlowDown, 2);
    assert!(head(&moto, &client, "a").is_err());
    assert!(head(&moto, &client, "a").is_err());
    assert_eq!(head(&moto, &client, "a").expect("the third HEAD passes"), 1);
    assert_eq!(proxy.faults_applied(), 3);

    // Always, until cleared; and only for the keys it names.
    proxy.inject_for_key(
        Op::GetObject,
        "spoiled/",
        Fault::InternalError,
        Times::Always,
    );
    moto.put(BUCKET, "spoiled/b", b"b".to_vec());
    for _ in 0..3 {
        assert!(get(&moto, &client, "spoiled/b").is_err());
        assert_eq!(get(&moto, &client, "a").expect("another key passes"), b"3");
    }
    assert_eq!(proxy.faults_applied(), 6);
    proxy.clear();
    assert_eq!(get(&moto, &client, "spoiled/b").expect("cleared"), b"b");
    assert_eq!(proxy.faults_applied(), 6);
    assert_eq!(proxy.faults_applied_to(Op::GetObject), 3);
    assert_eq!(proxy.count(Op::GetObject), 7);
}

#[test]
fn forwards_chunked_bodies_and_answers_expect_100_continue() {
    let Some((moto, proxy)) = moto_and_proxy() else {
        return;
    };
    let answer = raw(
        proxy.endpoint(),
        format!(
            "{}5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\n",
            request_head(
                "PUT /faults/chunked HTTP/1.1",
                &["Transfer-Encoding: chunked", "Connection: close"]
            )
        )
        .as_bytes(),
    );
    let (head, _) = split_answer(&answer);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(moto.get(BUCKET, "chunked"), b"hello, world");

    let address = proxy
        .endpoint()
        .strip_prefix("http://")
        .expect("an http endpoint");
    let mut stream = TcpStream::connect(address).expect("connect to the proxy");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("a read timeout");
    stream
        .write_all(
            request_head(
                "PUT /faults/expected HTTP/1.1",
                &[
                    "Content-Length: 5",
                    "Expect: 100-continue",
                    "Connection: close",
                ],
            )
            .as_bytes(),
        )
        .expect("send the head");
    let mut interim = [0; 25];
    stream.read_exact(&mut interim).expect("an interim answer");
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"later").expect("send the body");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let (head, _) = split_answer(&answer);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(moto.get(BUCKET, "expected"), b"later");
    assert_eq!(proxy.count(Op::PutObject), 2);
}

/// The bytes at which `a` and `b`, of one length, differ.
fn differences(a: &[u8], b: &[u8]) -> Vec<usize> {
    assert_eq!(a.len(), b.len());
    (0..a.len()).filter(|&at| a[at] != b[at]).collect()
}

#[test]
fn strip_checksums_hides_them_both_ways_and_damage_body_changes_one_byte() {
    let Some((moto, proxy)) = moto_and_proxy() else {
        return;
    };
    let client = client(&proxy, None);
    let stored_crc32 = |key: &str| {
        moto.block_on(
            client
                .head_object()
                .bucket(BUCKET)
                .key(key)
                .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
                .send(),
        )
        .map(|output| output.checksum_crc32().map(str::to_owned))
        .map_err(|error| describe(&error))
        .expect("HeadObject")
    };
    let body = random(MIB, 9);
    put(&moto, &client, "checked", &body).expect("PutObject");
    assert!(
        stored_crc32("checked").is_some(),
        "moto keeps the SDK's checksum"
    );

    proxy.strip_checksums();
    assert_eq!(stored_crc32("checked"), None, "answers carry none");
    put(&moto, &client, "unchecked", &body).expect("PutObject");
    proxy.clear();
    assert_eq!(
        moto.head(BUCKET, "unchecked")
            .and_then(|head| head.checksum_type),
        None,
        "the request carried none to moto"
    );

    // On a store that checks nothing, a damaged body is kept as it arrived.
    proxy.inject(Op::PutObject, Fault::DamageBody, 1);
    put(&moto, &client, "damaged", &body).expect("PutObject");
    assert_eq!(differences(&moto.get(BUCKET, "damaged"), &body), [MIB / 2]);
    proxy.inject(Op::GetObject, Fault::DamageBody, 1);
    let read = get(&moto, &client, "unchecked").expect("GetObject");
    assert_eq!(differences(&read, &body), [MIB / 2]);
    assert_eq!(proxy.faults_applied(), 2);
}

#[test]
fn ignoring_delete_conditions_makes_a_delete_with_a_wrong_if_match_delete() {
    let Some((moto, proxy)) = moto_and_proxy() else {
        return;
    };
    let client = client(&proxy, None);
    let delete = |key: &'static str| {
        moto.block_on(
            client
                .delete_object()
                .bucket(BUCKET)
                .key(key)
                .if_match("\"not-its-etag\"")
                .send(),
        )
        .map(drop)
        .map_err(|error| describe(&error))
    };
    put(&moto, &client, "weak/honoured.csv", b"kept").expect("PutObject");
    let refused = delete("weak/honoured.csv").expect_err("a wrong If-Match through the proxy");
    assert!(refused.contains("status=412"), "{refused}");
    assert_eq!(
        moto.try_get(BUCKET, "weak/honoured.csv").as_deref(),
        Some(&b"kept"[..])
    );

    proxy.ignore_delete_conditions(true);
    put(&moto, &client, "weak/ignored.csv", b"gone").expect("PutObject");
    delete("weak/ignored.csv").expect("the condition never reaches moto");
    assert_eq!(moto.try_get(BUCKET, "weak/ignored.csv"), None);
    // Only DeleteObject loses its conditions.
    let conditional_put = moto.block_on(
        client
            .put_object()
            .bucket(BUCKET)
            .key("weak/honoured.csv")
            .if_none_match("*")
            .body(ByteStream::from_static(b"over"))
            .send(),
    );
    assert!(
        conditional_put.is_err(),
        "If-None-Match on PutObject still holds"
    );

    proxy.ignore_delete_conditions(false);
    let refused = delete("weak/honoured.csv").expect_err("conditions pass again");
    assert!(refused.contains("status=412"), "{refused}");
    assert_eq!(proxy.faults_applied(), 0);
}
