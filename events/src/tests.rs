//! What `parse` says about payloads as a whole: the shapes it refuses, and that no input makes
//! it panic. Each format's own cases are tested beside its module.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use crate::{parse, EventError, Invocation, Notice};

fn error(payload: &Value) -> EventError {
    parse(payload).expect_err("the payload is invalid")
}

/// The notices of a payload that must parse as a direct invocation; shared by the format
/// modules' tests.
pub(crate) fn direct(payload: &Value) -> Vec<Notice> {
    match parse(payload) {
        Ok(Invocation::Direct(notices)) => notices,
        other => panic!("expected a direct invocation, got {other:?}"),
    }
}

/// The message of a payload that must be refused.
pub(crate) fn error_message(payload: &Value) -> String {
    error(payload).to_string()
}

#[test]
fn an_unknown_event_lists_its_keys() {
    assert_eq!(
        error(&fixture!("unknown.json")).to_string(),
        "payload is not an S3 notification, S3 test event, SQS batch, S3 EventBridge event or \
         S3 Batch Operations invocation; its keys are \"body\", \"headers\", \"httpMethod\", \"isBase64Encoded\", \
         \"multiValueHeaders\", \"path\", \"pathParameters\", \"queryStringParameters\", \
         \"requestContext\", \"resource\", \"stageVariables\""
    );
}

#[test]
fn payloads_that_are_not_objects_say_what_they_are() {
    for (payload, message) in [
        (json!(null), "payload: expected an object, received null"),
        (json!(true), "payload: expected an object, received true"),
        (
            json!(42),
            "payload: expected an object, received the number 42",
        ),
        (
            json!("incoming/report.csv"),
            "payload: expected an object, received the string \"incoming/report.csv\"",
        ),
        (
            json!([{"Records": []}]),
            "payload: expected an object, received an array of 1 item",
        ),
        (
            json!({}),
            "payload is not an S3 notification, S3 test event, SQS batch, S3 EventBridge \
             event or S3 Batch Operations invocation; its keys are (none: the object is empty)",
        ),
    ] {
        assert_eq!(error(&payload).to_string(), message);
    }
}

#[test]
fn records_must_be_a_non_empty_array_of_known_sources() {
    for (payload, message) in [
        (json!({"Records": []}), "payload.Records is empty"),
        (
            json!({"Records": {"eventSource": "aws:s3"}}),
            "payload.Records: expected an array, received an object with keys \"eventSource\"",
        ),
        (json!({"Records": null}), "payload.Records is missing"),
        (
            json!({"Records": ["aws:s3"]}),
            "payload.Records[0]: expected an object, received the string \"aws:s3\"",
        ),
        (
            json!({"Records": [{"eventName": "ObjectCreated:Put"}]}),
            "payload.Records[0].eventSource is missing",
        ),
        (
            json!({"Records": [{"eventSource": 3}]}),
            "payload.Records[0].eventSource: expected a string, received the number 3",
        ),
        (
            json!({"Records": [{"eventSource": "aws:dynamodb", "eventName": "INSERT"}]}),
            "payload.Records[0].eventSource is \"aws:dynamodb\"; expected \"aws:s3\" \
             (an S3 notification) or \"aws:sqs\" (an SQS batch)",
        ),
        // SNS invoking the function directly spells it EventSource.
        (
            json!({"Records": [{"EventSource": "aws:sns", "Sns": {"Message": "{}"}}]}),
            "payload.Records[0].eventSource is \"aws:sns\"; expected \"aws:s3\" \
             (an S3 notification) or \"aws:sqs\" (an SQS batch)",
        ),
        (
            json!({"Records": [
                {"eventSource": "aws:s3", "eventName": "ObjectRemoved:Delete", "s3": {}},
                {"eventSource": "aws:s3", "eventName": "ObjectRemoved:Delete", "s3": {}},
                {"eventSource": "aws:sqs", "messageId": "m", "body": "{}"},
            ]}),
            "payload.Records[2].eventSource is \"aws:sqs\"; expected \"aws:s3\", \
             as in payload.Records[0]",
        ),
    ] {
        assert_eq!(error(&payload).to_string(), message);
    }
}

#[test]
fn errors_carry_where_they_are() {
    let payload = json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                                      "s3": {"bucket": {"name": "files"}, "object": {"key": 1}}}]});
    assert_eq!(error(&payload).at(), "payload.Records[0].s3.object.key");
}

/// Field names the parser looks for, so generated objects often get past the first check.
const NAMES: &[&str] = &[
    "Records",
    "eventSource",
    "EventSource",
    "eventName",
    "s3",
    "bucket",
    "name",
    "object",
    "key",
    "size",
    "eTag",
    "etag",
    "versionId",
    "version-id",
    "sequencer",
    "messageId",
    "body",
    "Service",
    "Event",
    "Bucket",
    "detail-type",
    "source",
    "detail",
    "Type",
    "Message",
];

/// String values the parser compares against, and keys worth decoding.
const WORDS: &[&str] = &[
    "aws:s3",
    "aws:sqs",
    "aws:sns",
    "aws.s3",
    "ObjectCreated:Put",
    "ObjectRemoved:Delete",
    "s3:TestEvent",
    "Object Created",
    "Object Deleted",
    "Notification",
    "null",
    "",
    "\"\"",
    "incoming/a+b%2Bc%25.csv",
    "incoming/%E6%97%A5",
    "incoming/%",
    "%FF",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(WORDS).prop_map(str::to_owned),
        1 => any::<String>(),
        1 => "[a-z%+0-9A-F/ ]{0,12}",
    ]
}

fn member_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(NAMES).prop_map(str::to_owned),
        1 => any::<String>(),
    ]
}

/// Any JSON value, with names and strings biased towards the ones events use, and strings that
/// hold JSON documents themselves, as SQS bodies and SNS messages do.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((member_name(), inner.clone()), 0..6)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
            inner.prop_map(|document| Value::String(document.to_string())),
        ]
    })
}

/// An object whose members are each absent, plausible or arbitrary, plausible most often so
/// that whole events get through often enough to check what is made of them.
fn object_of(members: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
    let members: Vec<_> = members
        .into_iter()
        .map(|(name, plausible)| {
            prop_oneof![
                1 => Just(None),
                12 => plausible.prop_map(Some),
                1 => any_json().prop_map(Some),
            ]
            .prop_map(move |value| value.map(|value| (name.to_owned(), value)))
        })
        .collect();
    members
        .prop_map(|members| Value::Object(members.into_iter().flatten().collect::<Map<_, _>>()))
        .boxed()
}

fn one_of(words: &'static [&'static str]) -> BoxedStrategy<Value> {
    prop::sample::select(words).prop_map(Value::from).boxed()
}

fn matching(pattern: &'static str) -> BoxedStrategy<Value> {
    prop::string::string_regex(pattern)
        .expect("a valid pattern")
        .prop_map(Value::String)
        .boxed()
}

fn size() -> BoxedStrategy<Value> {
    any::<u64>().prop_map(Value::from).boxed()
}

fn s3_notification() -> BoxedStrategy<Value> {
    let object = object_of(vec![
        ("key", matching("incoming/[a-z+%0-9A-F]{0,12}")),
        ("size", size()),
        ("eTag", matching("\"?[0-9a-f]{0,8}\"?")),
        ("versionId", matching("null|[0-9A-Za-z.]{0,8}")),
        ("sequencer", matching("[0-9A-F]{0,18}")),
    ]);
    let s3 = object_of(vec![
        ("bucket", object_of(vec![("name", matching("[a-z]{0,8}"))])),
        ("object", object),
    ]);
    let record = object_of(vec![
        ("eventSource", one_of(&["aws:s3"])),
        (
            "eventName",
            one_of(&[
                "ObjectCreated:Put",
                "ObjectCreated:Copy",
                "ObjectRemoved:Delete",
            ]),
        ),
        ("s3", s3),
    ]);
    prop::collection::vec(record, 0..4)
        .prop_map(|records| json!({ "Records": records }))
        .boxed()
}

fn eventbridge() -> BoxedStrategy<Value> {
    let object = object_of(vec![
        ("key", matching("incoming/[a-z+% ]{0,12}")),
        ("size", size()),
        ("etag", matching("[0-9a-f]{0,8}")),
        ("version-id", matching("null|[0-9A-Za-z.]{0,8}")),
    ]);
    let detail = object_of(vec![
        ("bucket", object_of(vec![("name", matching("[a-z]{0,8}"))])),
        ("object", object),
    ]);
    object_of(vec![
        ("source", one_of(&["aws.s3", "aws.s3", "aws.ec2"])),
        ("detail-type", one_of(&["Object Created", "Object Deleted"])),
        ("detail", detail),
    ])
}

fn test_event() -> BoxedStrategy<Value> {
    object_of(vec![
        ("Event", one_of(&["s3:TestEvent"])),
        ("Bucket", matching("[a-z]{0,8}")),
    ])
}

fn sqs_batch() -> BoxedStrategy<Value> {
    let document = prop_oneof![s3_notification(), eventbridge(), test_event()];
    let in_sns = |inner: Value| json!({"Type": "Notification", "Message": inner.to_string()});
    let body = prop_oneof![
        3 => document.clone(),
        1 => document.prop_map(in_sns),
        1 => any_json(),
    ]
    .prop_map(|document| Value::String(document.to_string()))
    .boxed();
    let record = object_of(vec![
        ("eventSource", one_of(&["aws:sqs"])),
        ("messageId", matching("[0-9a-f-]{0,8}")),
        ("body", body),
    ]);
    prop::collection::vec(record, 0..4)
        .prop_map(|records| json!({ "Records": records }))
        .boxed()
}

fn batch_job() -> BoxedStrategy<Value> {
    let task = object_of(vec![
        ("taskId", matching("[A-Za-z0-9]{0,8}")),
        ("s3Key", matching("incoming/[a-z+%0-9A-F ]{0,12}")),
        ("s3VersionId", matching("null|[0-9A-Za-z.]{0,8}")),
        (
            "s3BucketArn",
            matching("arn:aws:s3:::[a-z]{0,8}|arn:[a-z:]{0,12}"),
        ),
        ("s3Bucket", matching("[a-z]{0,8}")),
    ]);
    object_of(vec![
        ("invocationSchemaVersion", one_of(&["1.0", "2.0", "3.0"])),
        ("invocationId", matching("[A-Za-z0-9]{0,8}")),
        ("job", object_of(vec![("id", matching("[a-z0-9-]{0,8}"))])),
        (
            "tasks",
            prop::collection::vec(task, 0..3)
                .prop_map(Value::Array)
                .boxed(),
        ),
    ])
}

/// What holds for every answer, whatever the input.
fn check(payload: &Value) -> Result<(), TestCaseError> {
    let created_names_an_object = |notice: &Notice| match notice {
        Notice::Created(object) => !object.bucket.is_empty() && !object.key.is_empty(),
        Notice::Ignored { .. } => true,
    };
    match parse(payload) {
        Ok(Invocation::Direct(notices)) => {
            prop_assert!(notices.iter().all(created_names_an_object));
        }
        Ok(Invocation::TestEvent { bucket }) => prop_assert!(!bucket.is_empty()),
        Ok(Invocation::Sqs(messages)) => {
            for message in messages {
                prop_assert!(!message.message_id.is_empty());
                match message.notices {
                    Ok(notices) => prop_assert!(notices.iter().all(created_names_an_object)),
                    Err(error) => check_error(&error)?,
                }
            }
        }
        Ok(Invocation::BatchJob(job)) => {
            prop_assert!(!job.invocation_id.is_empty() && !job.tasks.is_empty());
            for task in job.tasks {
                prop_assert!(!task.task_id.is_empty());
                match task.object {
                    Ok(object) => prop_assert!(!object.bucket.is_empty() && !object.key.is_empty()),
                    Err(error) => check_error(&error)?,
                }
            }
        }
        Err(error) => check_error(&error)?,
    }
    Ok(())
}

/// Errors say where they are, and stay short enough for one log line whatever was received.
fn check_error(error: &EventError) -> Result<(), TestCaseError> {
    let message = error.to_string();
    prop_assert!(message.starts_with(error.at()), "{message}");
    let length = message.chars().count();
    prop_assert!(length < 2_000, "{length} characters: {message}");
    prop_assert!(!message.contains('\n'), "{message}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn parse_never_panics_on_any_json(payload in any_json()) {
        check(&payload)?;
    }

    #[test]
    fn parse_never_panics_on_near_miss_events(
        payload in prop_oneof![
            s3_notification(), eventbridge(), test_event(), sqs_batch(), batch_job()
        ]
    ) {
        check(&payload)?;
    }
}
