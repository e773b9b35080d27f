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

use s3_compressor::handler::Totals;
use s3_compressor::telemetry::metrics_line;
use s3_compressor_tests::events::{percent_decode, s3_event, write_event};
use s3_compressor_tests::process::{free_port, run, wait_for_port, Finished, KillOnDrop, Running};
use s3_compressor_tests::{
    csv_text, have, s3_compressor_binary, workspace_root, Moto, PYTHON_TOOLS,
};
use serde_json::{json, Value};

const APT_IMAGE_TOOLS: &str = "apt-get install -y buildah skopeo docker-registry";
const MUSL: &str = "rustup target add x86_64-unknown-linux-musl && apt-get install -y musl-tools";

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
    if !have(&["cfn-lint"], PYTHON_TOOLS) {
        return;
    }
    let finished = run(Command::new("cfn-lint")
        .arg("cloudformation/infra-template.yaml")
        .arg("cloudformation/lambda-template.yaml")
        .current_dir(root()));
    // Exit status 0: no error, no warning, no informational finding.
    must(finished, "cfn-lint");
}

/// CloudFormation takes a template of at most 51,200 bytes in the request (`create-stack
/// --template-body`, `deploy` without `--s3-bucket`), which is how `deploy.sh` sends them; moto's
/// create-stack takes any size.
#[test]
fn each_template_fits_in_a_cloudformation_request() {
    for name in ["infra-template.yaml", "lambda-template.yaml"] {
        let size = std::fs::metadata(root().join("cloudformation").join(name))
            .unwrap()
            .len();
        assert!(size <= 51_200, "{name} is {size} bytes, over 51,200");
    }
}

#[test]
fn checkov_fails_no_check_and_every_skip_says_why() {
    if !have(&["checkov"], PYTHON_TOOLS) {
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
    if !have(&["hadolint"], PYTHON_TOOLS) {
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
                "bench/engines.sh",
                "bench/real.sh",
                "serve/s3-tests/run.sh",
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

/// The alarm on `namespace` `metric` of the resource `dimension` names; it fires on the first
/// one (threshold 0) and tells the topic an operator subscribes to.
fn alarm_on<'a>(
    template: &'a Value,
    namespace: &str,
    metric: &str,
    dimension: &Value,
) -> &'a Value {
    let alarms: Vec<&Value> = resources_of_type(template, "AWS::CloudWatch::Alarm")
        .into_iter()
        .map(|alarm| &alarm["Properties"])
        .collect();
    let alarm = alarms
        .iter()
        .find(|alarm| {
            alarm["Namespace"] == namespace
                && alarm["MetricName"] == metric
                && &alarm["Dimensions"][0]["Value"] == dimension
        })
        .unwrap_or_else(|| panic!("no alarm on {namespace} {metric} of {dimension}: {alarms:?}"));
    assert_eq!(alarm["Threshold"], 0);
    assert_eq!(alarm["ComparisonOperator"], "GreaterThanThreshold");
    assert_eq!(alarm["AlarmActions"], json!([{"Ref": "AlarmTopic"}]));
    alarm
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
    if !have(&["cfn-lint"], PYTHON_TOOLS) {
        return;
    }
    // As deploy.sh deploys it in AWS (with the region's S3 prefix list), without the interface
    // endpoints (see the next test for them).
    let infra = rendered(
        &template("infra-template.yaml"),
        &[("S3PrefixListId", "pl-63a5400a")],
    );
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
    let endpoint_statements = endpoint["PolicyDocument"]["Statement"].as_array().unwrap();
    assert_eq!(endpoint_statements.len(), 1);
    let reachable = &endpoint_statements[0];
    assert_eq!(reachable["Effect"], "Allow");
    assert!(reachable.get("NotResource").is_none() && reachable.get("NotAction").is_none());
    assert_eq!(
        reachable["Resource"],
        json!([{"Fn::GetAtt": ["Bucket", "Arn"]}, {"Fn::Sub": "${Bucket.Arn}/*"}]),
        "the endpoint reaches the bucket and its objects, nothing else"
    );
    // Every S3 action the worker may take passes the endpoint (the function and its task reach
    // S3 only through it), and nothing more does.
    let mut needed: Vec<String> = objects_statements(&template("lambda-template.yaml"))
        .iter()
        .filter(|statement| statement["Effect"] == "Allow")
        .flat_map(|statement| strings(&statement["Action"]))
        .filter(|action| action.starts_with("s3:"))
        .collect();
    needed.sort();
    needed.dedup();
    let mut passing = strings(&reachable["Action"]);
    passing.sort();
    assert_eq!(
        passing, needed,
        "the endpoint passes exactly the worker's S3 actions"
    );

    let group = one(&infra, "AWS::EC2::SecurityGroup");
    assert!(group.get("SecurityGroupIngress").is_none(), "no ingress");
    assert!(resources_of_type(&infra, "AWS::EC2::SecurityGroupIngress").is_empty());
    // One way out: HTTPS to the region's S3 prefix list.
    assert_eq!(
        group["SecurityGroupEgress"],
        json!([{
            "IpProtocol": "tcp", "FromPort": 443, "ToPort": 443,
            "Description": "HTTPS to S3 (the only route out is the S3 Gateway endpoint)",
            "DestinationPrefixListId": {"Ref": "S3PrefixListId"}
        }])
    );

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
    let bucket_policy = &one(&infra, "AWS::S3::BucketPolicy");
    assert_eq!(bucket_policy["Bucket"], json!({"Ref": "Bucket"}));
    let statements = bucket_policy["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap();
    assert_eq!(statements.len(), 1);
    let policy = &statements[0];
    assert_eq!(policy["Effect"], "Deny");
    assert_eq!(
        (&policy["Principal"], &policy["Action"]),
        (&json!("*"), &json!("s3:*")),
        "anyone, any action"
    );
    assert_eq!(
        policy["Resource"],
        json!([{"Fn::GetAtt": ["Bucket", "Arn"]}, {"Fn::Sub": "${Bucket.Arn}/*"}]),
        "the bucket and every object"
    );
    assert_eq!(policy["Condition"]["Bool"]["aws:SecureTransport"], "false");
}

/// InterfaceEndpoints 'fargate': what a Fargate task in the private subnets needs to start (ECR),
/// log (CloudWatch Logs) and be started by the function (ECS), reachable from the function's
/// security group alone; 'none' (the default) leaves the VPC as it was.
#[test]
fn infra_template_adds_interface_endpoints_for_fargate_tasks_only_when_asked() {
    if !have(&["cfn-lint"], PYTHON_TOOLS) {
        return;
    }
    let infra = template("infra-template.yaml");
    assert_choice(&infra, "InterfaceEndpoints", "none", &["none", "fargate"]);
    let prefix_list = ("S3PrefixListId", "pl-63a5400a");
    let gateway_statements = |rendered: &Value| {
        resource(rendered, "S3GatewayEndpoint")["PolicyDocument"]["Statement"]
            .as_array()
            .unwrap()
            .clone()
    };

    let plain = rendered(&infra, &[prefix_list]);
    assert_eq!(resources_of_type(&plain, "AWS::EC2::VPCEndpoint").len(), 1);
    assert_eq!(
        resources_of_type(&plain, "AWS::EC2::SecurityGroup").len(),
        1
    );
    assert!(resources_of_type(&plain, "AWS::EC2::SecurityGroupEgress").is_empty());
    assert_eq!(gateway_statements(&plain).len(), 1);

    let with = rendered(&infra, &[prefix_list, ("InterfaceEndpoints", "fargate")]);
    let interface: Vec<&Value> = resources_of_type(&with, "AWS::EC2::VPCEndpoint")
        .into_iter()
        .map(|endpoint| &endpoint["Properties"])
        .filter(|endpoint| endpoint["VpcEndpointType"] == "Interface")
        .collect();
    let mut services: Vec<String> = interface
        .iter()
        .map(|endpoint| strings(&endpoint["ServiceName"]["Fn::Sub"]).concat())
        .collect();
    services.sort();
    assert_eq!(
        services,
        ["ecr.api", "ecr.dkr", "ecs", "logs"]
            .map(|service| format!("com.amazonaws.${{AWS::Region}}.{service}"))
    );
    for endpoint in &interface {
        assert_eq!(endpoint["PrivateDnsEnabled"], true, "{endpoint}");
        assert_eq!(
            endpoint["SubnetIds"],
            json!([{"Ref": "PrivateSubnet1"}, {"Ref": "PrivateSubnet2"}])
        );
        assert_eq!(
            endpoint["SecurityGroupIds"],
            json!([{"Ref": "EndpointSecurityGroup"}])
        );
    }
    // The endpoints take HTTPS from the function's group (its tasks use it too) and nothing
    // else, and start nothing.
    let endpoints_group = resource(&with, "EndpointSecurityGroup");
    assert_eq!(
        endpoints_group["SecurityGroupIngress"],
        json!([{
            "IpProtocol": "tcp", "FromPort": 443, "ToPort": 443,
            "Description": "HTTPS from the function and its Fargate tasks",
            "SourceSecurityGroupId": {"Ref": "FunctionSecurityGroup"}
        }])
    );
    let endpoints_egress = endpoints_group["SecurityGroupEgress"].as_array().unwrap();
    assert_eq!(endpoints_egress.len(), 1);
    assert_eq!(endpoints_egress[0]["CidrIp"], "255.255.255.255/32");
    // The function's group: still no ingress, and HTTPS out to the endpoints' group besides S3.
    let function_group = resource(&with, "FunctionSecurityGroup");
    assert!(function_group.get("SecurityGroupIngress").is_none());
    assert!(resources_of_type(&with, "AWS::EC2::SecurityGroupIngress").is_empty());
    assert_eq!(
        function_group["SecurityGroupEgress"],
        resource(&plain, "FunctionSecurityGroup")["SecurityGroupEgress"]
    );
    let to_endpoints = one(&with, "AWS::EC2::SecurityGroupEgress");
    assert_eq!(
        to_endpoints["GroupId"],
        json!({"Ref": "FunctionSecurityGroup"})
    );
    assert_eq!(
        (
            &to_endpoints["IpProtocol"],
            &to_endpoints["FromPort"],
            &to_endpoints["ToPort"]
        ),
        (&json!("tcp"), &json!(443), &json!(443))
    );
    assert_eq!(
        to_endpoints["DestinationSecurityGroupId"],
        json!({"Ref": "EndpointSecurityGroup"})
    );
    // Image layers come from ECR's own bucket through the Gateway endpoint: read, that bucket.
    let gateway = gateway_statements(&with);
    assert_eq!(gateway.len(), 2);
    assert_eq!(gateway[0], gateway_statements(&plain)[0]);
    assert_eq!(gateway[1]["Action"], "s3:GetObject");
    assert_eq!(
        gateway[1]["Resource"],
        json!({"Fn::Sub": "arn:${AWS::Partition}:s3:::prod-${AWS::Region}-starport-layer-bucket/*"})
    );
    for kind in [
        "AWS::EC2::NatGateway",
        "AWS::EC2::InternetGateway",
        "AWS::EC2::Route",
    ] {
        assert!(resources_of_type(&with, kind).is_empty(), "{kind}");
    }
}

#[test]
fn lambda_template_makes_a_least_privilege_function_behind_an_alias() {
    if !have(&["cfn-lint"], PYTHON_TOOLS) {
        return;
    }
    let lambda = template("lambda-template.yaml");
    for parameter in [
        "InfraStackName",
        "LambdaImageUri",
        "SourceObjectArns",
        "OutputObjectArns",
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
    assert!(resource(&lambda, "LogGroup")["RetentionInDays"].is_object());

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
        lambda["Resources"]["FailureQueue"]["Properties"]["SqsManagedSseEnabled"],
        true
    );

    // Failures end where a person sees them: an alarm on the objects that failed, and one on
    // the failure queue, both to the topic an operator subscribes to.
    let failures = alarm_on(
        &lambda,
        "s3-compressor",
        "Failures",
        &json!({"Ref": "Function"}),
    );
    assert_eq!(failures["Dimensions"][0]["Name"], "FunctionName");
    alarm_on(
        &lambda,
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        &json!({"Fn::GetAtt": ["FailureQueue", "QueueName"]}),
    );
    // Under a key CloudWatch may use: with the AWS managed alias/aws/sns, whose policy grants
    // it nothing, the alarms could not publish.
    assert_eq!(
        one(&lambda, "AWS::SNS::Topic")["KmsMasterKeyId"],
        json!({"Ref": "AlarmTopicKey"})
    );
    let key = resource(&lambda, "AlarmTopicKey");
    assert_eq!(key["EnableKeyRotation"], true);
    let publishers = key["KeyPolicy"]["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|statement| statement["Sid"] == "AlarmsPublish")
        .unwrap();
    assert_eq!(
        publishers["Principal"]["Service"],
        json!("cloudwatch.amazonaws.com")
    );
    assert_eq!(
        publishers["Action"],
        json!(["kms:Decrypt", "kms:GenerateDataKey*"])
    );

    // The role: S3 only on the prefixes, never s3:* or Resource "*" for S3. The S3 statements
    // are in ObjectsPolicy, attached to the role (and to the large-object task's, if any).
    let role = resource(&lambda, "FunctionRole");
    assert!(role.get("ManagedPolicyArns").is_none());
    let statements = &function_statements(&lambda);
    assert!(
        role_statements(&lambda)
            .iter()
            .all(|statement| !statement.to_string().contains("\"s3:")),
        "no S3 statement in the role's own policy"
    );
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
            if statement["Effect"] == "Allow" {
                s3_actions.extend(actions.clone());
            }
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
            "s3:GetObjectAttributes",
            "s3:GetObjectVersion",
            "s3:GetObjectVersionAttributes",
            "s3:ListBucket",
            "s3:ListBucketMultipartUploads",
            "s3:ListBucketVersions",
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
    assert!(by_sid("ReadAndDeleteSources").contains("SourceObjectArns"));
    assert!(!by_sid("ReadAndDeleteSources").contains("OutputObjectArns"));
    assert!(by_sid("NeverWriteUnderSources").contains("SourceObjectArns"));
    assert!(by_sid("WriteAndVerifyOutputs").contains("OutputObjectArns"));
    // Deletes under the output prefixes remove only an output that failed its proof.
    assert!(by_sid("WriteAndVerifyOutputs").contains("s3:DeleteObject"));
    assert!(!by_sid("WriteAndVerifyOutputs").contains("SourceObjectArns"));
}

/// An image to render the lambda template with (`LambdaImageUri`, which everything but the
/// repository needs).
const IMAGE: (&str, &str) = (
    "LambdaImageUri",
    "123456789012.dkr.ecr.us-east-1.amazonaws.com/r@sha256:0",
);

/// The value of a condition of `template` with `parameters` (the others at their defaults), or
/// `None` for one that needs more than `Fn::Equals` (of what [`evaluated`] can tell), `Fn::And`,
/// `Fn::Or`, `Fn::Not` and `Condition`.
fn condition(template: &Value, parameters: &[(&str, &str)], value: &Value) -> Option<bool> {
    let (function, arguments) = value.as_object()?.iter().next()?;
    let each = || {
        arguments
            .as_array()
            .into_iter()
            .flatten()
            .map(|argument| condition(template, parameters, argument))
            .collect::<Option<Vec<bool>>>()
    };
    match function.as_str() {
        "Condition" => condition(
            template,
            parameters,
            &template["Conditions"][arguments.as_str()?],
        ),
        "Fn::Not" => condition(template, parameters, &arguments[0]).map(|value| !value),
        "Fn::And" => each().map(|values| values.iter().all(|value| *value)),
        "Fn::Or" => each().map(|values| values.iter().any(|value| *value)),
        "Fn::Equals" => Some(
            scalar(template, parameters, &arguments[0])?
                == scalar(template, parameters, &arguments[1])?,
        ),
        _ => None,
    }
}

fn scalar(template: &Value, parameters: &[(&str, &str)], value: &Value) -> Option<String> {
    evaluated(template, parameters, value)?
        .as_str()
        .map(str::to_owned)
}

/// The bucket the infra stack makes, as [`evaluated`] imports its ARN.
const BUCKET_ARN: &str = "arn:aws:s3:::file-compression-infra-123456789012-us-east-1";

/// What `value` (free of `Fn::If` and `AWS::NoValue`: see [`rendered`]) of `template` comes to
/// with `parameters` (the others at their defaults), deployed in us-east-1 of account
/// [`MOTO_ACCOUNT`] next to the infra stack, whose bucket is [`BUCKET_ARN`]: a string, or a list
/// of them. `None` for what only a deployed stack knows (`Fn::GetAtt`, a `Ref` to a resource,
/// the stack's name).
fn evaluated(template: &Value, parameters: &[(&str, &str)], value: &Value) -> Option<Value> {
    let text = |value: &Value| -> Option<String> {
        evaluated(template, parameters, value)?
            .as_str()
            .map(str::to_owned)
    };
    match value {
        Value::String(_) => Some(value.clone()),
        Value::Number(number) => Some(json!(number.to_string())),
        Value::Array(items) => items
            .iter()
            .map(|item| evaluated(template, parameters, item))
            .collect::<Option<Vec<Value>>>()
            .map(Value::Array),
        Value::Object(object) if object.len() == 1 => {
            let (function, arguments) = object.iter().next()?;
            match function.as_str() {
                "Ref" => reference(template, parameters, arguments.as_str()?),
                "Fn::Select" => {
                    let index: usize = text(&arguments[0])?.parse().ok()?;
                    evaluated(template, parameters, &arguments[1])?
                        .get(index)
                        .cloned()
                }
                "Fn::Split" => {
                    let whole = text(&arguments[1])?;
                    Some(json!(whole
                        .split(arguments[0].as_str()?)
                        .collect::<Vec<_>>()))
                }
                "Fn::Join" => {
                    let items = evaluated(template, parameters, &arguments[1])?;
                    let items: Option<Vec<&str>> =
                        items.as_array()?.iter().map(Value::as_str).collect();
                    Some(json!(items?.join(arguments[0].as_str()?)))
                }
                "Fn::ImportValue" => (text(arguments)? == "file-compression-infra-S3BucketARN")
                    .then(|| json!(BUCKET_ARN)),
                "Fn::Sub" => substitute(arguments, |name, given| match given {
                    Some(given) => text(given),
                    None => Some(reference(template, parameters, name)?.as_str()?.to_owned()),
                })
                .map(Value::String),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The string `Fn::Sub` with `arguments` (a pattern, or a pattern and its variables) makes, each
/// `${NAME}` replaced by what `value_of` says of the name and the variable given for it, if any.
fn substitute(
    arguments: &Value,
    mut value_of: impl FnMut(&str, Option<&Value>) -> Option<String>,
) -> Option<String> {
    let (mut rest, variables) = match arguments {
        Value::String(pattern) => (pattern.as_str(), None),
        _ => (arguments[0].as_str()?, arguments[1].as_object()),
    };
    let mut out = String::new();
    while let Some(start) = rest.find("${") {
        let end = start + rest[start..].find('}')?;
        let name = &rest[start + 2..end];
        out.push_str(&rest[..start]);
        out.push_str(&value_of(
            name,
            variables.and_then(|variables| variables.get(name)),
        )?);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// What `Ref` of `name` comes to for [`evaluated`]: a parameter (a list for a
/// `CommaDelimitedList`) or the partition, region or account.
fn reference(template: &Value, parameters: &[(&str, &str)], name: &str) -> Option<Value> {
    match name {
        "AWS::Partition" => return Some(json!("aws")),
        "AWS::Region" => return Some(json!("us-east-1")),
        "AWS::AccountId" => return Some(json!(MOTO_ACCOUNT)),
        _ => {}
    }
    let parameter = template["Parameters"].get(name)?;
    let value = match parameters.iter().find(|(key, _)| *key == name) {
        Some((_, given)) => (*given).to_owned(),
        None => match &parameter["Default"] {
            Value::String(text) => text.clone(),
            Value::Number(number) => number.to_string(),
            _ => return None,
        },
    };
    if parameter["Type"] == "CommaDelimitedList" {
        Some(json!(value.split(',').collect::<Vec<_>>()))
    } else {
        Some(json!(value))
    }
}

/// `value` with each `Fn::If` whose condition can be told replaced by its branch, and
/// `AWS::NoValue` left out (`None` for `value` itself being it).
fn resolved(template: &Value, parameters: &[(&str, &str)], value: &Value) -> Option<Value> {
    match value {
        Value::Object(object) if object.get("Ref") == Some(&json!("AWS::NoValue")) => None,
        Value::Object(object) => {
            if let Some(branches) = object.get("Fn::If") {
                let chosen = json!({"Condition": branches[0]});
                if let Some(holds) = condition(template, parameters, &chosen) {
                    let branch = if holds { &branches[1] } else { &branches[2] };
                    return resolved(template, parameters, branch);
                }
            }
            Some(Value::Object(
                object
                    .iter()
                    .filter_map(|(key, item)| {
                        Some((key.clone(), resolved(template, parameters, item)?))
                    })
                    .collect(),
            ))
        }
        Value::Array(items) => Some(Value::Array(
            items
                .iter()
                .filter_map(|item| resolved(template, parameters, item))
                .collect(),
        )),
        other => Some(other.clone()),
    }
}

/// The template as CloudFormation deploys it with `parameters`: the resources and outputs whose
/// condition is false left out, and what [`resolved`] can resolve resolved.
fn rendered(template: &Value, parameters: &[(&str, &str)]) -> Value {
    let mut out = template.clone();
    for section in ["Resources", "Outputs"] {
        let kept: serde_json::Map<String, Value> = template[section]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, item)| {
                item.get("Condition").is_none_or(|name| {
                    let holds = condition(template, parameters, &json!({"Condition": name}));
                    holds.unwrap_or_else(|| panic!("cannot tell condition {name}"))
                })
            })
            .map(|(name, item)| (name.clone(), resolved(template, parameters, item).unwrap()))
            .collect();
        out[section] = Value::Object(kept);
    }
    out
}

/// The properties of the resource named `logical_id`.
fn resource<'a>(template: &'a Value, logical_id: &str) -> &'a Value {
    let found = &template["Resources"][logical_id]["Properties"];
    assert!(found.is_object(), "no resource {logical_id}");
    found
}

/// Asserts that the parameter `name` is a choice of `allowed`, `default` unless given.
fn assert_choice(template: &Value, name: &str, default: &str, allowed: &[&str]) {
    let parameter = &template["Parameters"][name];
    assert_eq!(parameter["Default"], default, "{name}");
    assert_eq!(parameter["AllowedValues"], json!(allowed), "{name}");
}

/// Asserts that `template` rendered with `parameters` but no image is the ECR repository alone,
/// as the first deployment makes it.
fn assert_repository_alone(template: &Value, parameters: &[(&str, &str)]) {
    let bare = rendered(template, parameters);
    let resources: Vec<&String> = bare["Resources"].as_object().unwrap().keys().collect();
    assert_eq!(resources, ["Repository"], "{parameters:?}");
}

/// The statements of the function's role.
fn role_statements(template: &Value) -> Vec<Value> {
    resource(template, "FunctionRole")["Policies"][0]["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap()
        .clone()
}

/// The statements of ObjectsPolicy: the S3 permissions of the function and of its task.
fn objects_statements(template: &Value) -> Vec<Value> {
    resource(template, "ObjectsPolicy")["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap()
        .clone()
}

/// Everything the function may do: its role's own statements and ObjectsPolicy's.
fn function_statements(template: &Value) -> Vec<Value> {
    let mut statements = role_statements(template);
    statements.extend(objects_statements(template));
    statements
}

/// The statements of every IAM policy of `template`: the roles' own and the managed policies.
fn every_iam_statement(template: &Value) -> Vec<Value> {
    let mut statements = Vec::new();
    for resource in template["Resources"].as_object().unwrap().values() {
        let properties = &resource["Properties"];
        let documents: Vec<&Value> = match resource["Type"].as_str().unwrap() {
            "AWS::IAM::Role" => properties["Policies"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|policy| &policy["PolicyDocument"])
                .collect(),
            "AWS::IAM::ManagedPolicy" | "AWS::IAM::Policy" => vec![&properties["PolicyDocument"]],
            _ => Vec::new(),
        };
        for document in documents {
            statements.extend(document["Statement"].as_array().unwrap().iter().cloned());
        }
    }
    statements
}

/// The ARNs a statement's `Resource` names, with `parameters`.
fn resource_arns(template: &Value, parameters: &[(&str, &str)], statement: &Value) -> Vec<String> {
    let arns = evaluated(template, parameters, &statement["Resource"])
        .unwrap_or_else(|| panic!("cannot tell the resources of {statement}"));
    strings(&arns)
}

/// Whether the statements allow `action` on `arn`: an `Allow` names both, and no `Deny` does
/// (IAM's `*` stands only at the end of these resources).
fn allows(statements: &[(Value, Vec<String>)], action: &str, arn: &str) -> bool {
    let says = |effect: &str| {
        statements.iter().any(|(statement, arns)| {
            statement["Effect"] == effect
                && strings(&statement["Action"]).iter().any(|a| a == action)
                && arns.iter().any(|pattern| match pattern.strip_suffix('*') {
                    Some(prefix) => arn.starts_with(prefix),
                    None => arn == pattern,
                })
        })
    };
    says("Allow") && !says("Deny")
}

/// The function and its Fargate task, with two source and two output prefixes: every S3
/// permission they have is on those prefixes (the two bucket-level list actions aside, on the
/// bucket), they may write under the output prefixes alone, and an explicit Deny keeps them
/// from writing under a source prefix whatever else allows it (the recursion guard, in IAM).
/// No policy of the stack allows `*`, `SERVICE:*`, or S3, logs or KMS on every resource.
#[test]
fn lambda_template_lets_the_worker_write_only_under_output_prefixes() {
    if !have(&["cfn-lint"], PYTHON_TOOLS) {
        return;
    }
    let lambda = template("lambda-template.yaml");
    let (sources, outputs) = (
        under(&["incoming/", "raw/"]),
        under(&["processed/", "done/"]),
    );
    let (source_arns, output_arns) = (sources.join(","), outputs.join(","));
    let parameters = [
        IMAGE,
        ("SourceObjectArns", source_arns.as_str()),
        ("OutputObjectArns", output_arns.as_str()),
        ("LargeObjects", "fargate"),
        ("Trigger", "queue"),
        ("SourceKmsKeyArn", SOURCE_KMS_KEY),
    ];
    let deployed = rendered(&lambda, &parameters);

    for statement in every_iam_statement(&deployed) {
        if statement["Effect"] != "Allow" {
            continue;
        }
        let actions = strings(&statement["Action"]);
        assert!(
            !actions.iter().any(|a| a == "*" || a.ends_with(":*")),
            "a wildcard action: {statement}"
        );
        if actions.iter().any(|a| {
            ["s3:", "logs:", "kms:"]
                .iter()
                .any(|service| a.starts_with(service))
        }) {
            assert!(
                !strings(&statement["Resource"]).iter().any(|r| r == "*"),
                "S3, logs or KMS on every resource: {statement}"
            );
        }
    }

    // The task role takes its S3 permissions from the same policy, and has no other.
    assert_eq!(
        resource(&deployed, "ObjectsPolicy")["Roles"],
        json!([{"Ref": "FunctionRole"}, {"Ref": "TaskRole"}])
    );
    assert!(!resource(&deployed, "TaskRole")
        .to_string()
        .contains("\"s3:"));
    let s3: Vec<(Value, Vec<String>)> = function_statements(&deployed)
        .into_iter()
        .filter(|statement| {
            strings(&statement["Action"])
                .iter()
                .any(|a| a.starts_with("s3:"))
        })
        .map(|statement| {
            let arns = resource_arns(&lambda, &parameters, &statement);
            (statement, arns)
        })
        .collect();
    for (statement, arns) in &s3 {
        let actions = strings(&statement["Action"]);
        if statement["Effect"] == "Deny" {
            continue;
        }
        // Bucket-level: ListObjects, ListMultipartUploads and ListObjectVersions name the
        // bucket, not a key (and the worker needs them: a missing key is a 404 only with
        // s3:ListBucket, a lost CreateMultipartUpload answer is found with
        // ListMultipartUploads, and a delete marker told from a newer version with
        // ListObjectVersions). They list key names, never read contents.
        if actions.iter().any(|a| a.starts_with("s3:ListBucket")) {
            assert_eq!(
                actions,
                [
                    "s3:ListBucket",
                    "s3:ListBucketMultipartUploads",
                    "s3:ListBucketVersions"
                ],
                "{statement}"
            );
            assert_eq!(arns, &[BUCKET_ARN], "{statement}");
            continue;
        }
        assert!(
            arns.iter()
                .all(|arn| sources.contains(arn) || outputs.contains(arn)),
            "S3 outside the source and output prefixes: {statement}"
        );
    }
    let allowed_to_put: Vec<&String> = s3
        .iter()
        .filter(|(statement, _)| {
            statement["Effect"] == "Allow"
                && strings(&statement["Action"])
                    .iter()
                    .any(|a| a == "s3:PutObject")
        })
        .flat_map(|(_, arns)| arns)
        .collect();
    assert_eq!(allowed_to_put, outputs.iter().collect::<Vec<_>>());

    // The Deny: every action that writes an object, on exactly the source prefixes.
    let denied: Vec<&(Value, Vec<String>)> = s3
        .iter()
        .filter(|(statement, _)| statement["Effect"] == "Deny")
        .collect();
    assert_eq!(denied.len(), 1, "{denied:?}");
    let (deny, denied_arns) = denied[0];
    assert_eq!(deny["Sid"], "NeverWriteUnderSources");
    assert!(deny.get("Condition").is_none(), "the Deny holds always");
    assert_eq!(denied_arns, &sources);
    let denied_actions = strings(&deny["Action"]);
    for write in [
        "s3:PutObject",
        "s3:PutObjectAcl",
        "s3:PutObjectVersionAcl",
        "s3:PutObjectTagging",
        "s3:PutObjectVersionTagging",
    ] {
        assert!(
            denied_actions.iter().any(|a| a == write),
            "{write} not denied"
        );
    }
    for (statement, _) in &s3 {
        for action in strings(&statement["Action"]) {
            if action.starts_with("s3:Put") {
                assert!(
                    denied_actions.contains(&action),
                    "{action} is allowed, not denied under sources"
                );
            }
        }
    }

    // What the policy lets the worker do with each key.
    for (key, put, get, delete) in [
        ("incoming/a/report.csv", false, true, true),
        ("raw/x.log", false, true, true),
        ("processed/a/report.zip", true, true, true),
        ("done/x.log.gz", true, true, true),
        ("batch-operations/manifest.csv", false, false, false),
        ("elsewhere/x", false, false, false),
        ("incoming", false, false, false),
    ] {
        let arn = format!("{BUCKET_ARN}/{key}");
        assert_eq!(allows(&s3, "s3:PutObject", &arn), put, "PutObject {key}");
        assert_eq!(allows(&s3, "s3:GetObject", &arn), get, "GetObject {key}");
        assert_eq!(
            allows(&s3, "s3:DeleteObject", &arn),
            delete,
            "DeleteObject {key}"
        );
    }
    // An output prefix around a source prefix: the Deny still wins there.
    let (nested_sources, nested_outputs) = (under(&["data/incoming/"]), under(&["data/"]));
    let nested = [
        parameters[0],
        ("SourceObjectArns", nested_sources[0].as_str()),
        ("OutputObjectArns", nested_outputs[0].as_str()),
    ];
    let s3: Vec<(Value, Vec<String>)> = objects_statements(&rendered(&lambda, &nested))
        .into_iter()
        .map(|statement| {
            let arns = resource_arns(&lambda, &nested, &statement);
            (statement, arns)
        })
        .collect();
    assert!(allows(
        &s3,
        "s3:PutObject",
        &format!("{BUCKET_ARN}/data/a.zip")
    ));
    assert!(!allows(
        &s3,
        "s3:PutObject",
        &format!("{BUCKET_ARN}/data/incoming/a.zip")
    ));
}

/// The object ARNs deploy.sh passes for `prefixes`: BUCKET/PREFIX* each.
fn under(prefixes: &[&str]) -> Vec<String> {
    prefixes
        .iter()
        .map(|prefix| format!("{BUCKET_ARN}/{prefix}*"))
        .collect()
}

/// A customer managed key the bucket's objects are encrypted with (SourceKmsKeyArn).
const SOURCE_KMS_KEY: &str =
    "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/// SourceKmsKeyArn: empty (the default), no KMS permission; a key ARN, exactly kms:Decrypt and
/// kms:GenerateDataKey on that key, in a policy attached to the same roles as ObjectsPolicy (so
/// the Fargate task has them too).
#[test]
fn lambda_template_grants_the_source_kms_key_only_when_given() {
    if !have(&["cfn-lint"], PYTHON_TOOLS) {
        return;
    }
    let lambda = template("lambda-template.yaml");
    assert_eq!(lambda["Parameters"]["SourceKmsKeyArn"]["Default"], "");
    let image = IMAGE;
    let kms_statements = |parameters: &[(&str, &str)]| -> Vec<Value> {
        let deployed = rendered(&lambda, parameters);
        for role in ["FunctionRole", "TaskRole"] {
            assert!(
                !deployed["Resources"][role].to_string().contains("\"kms:"),
                "{role}'s own policies name no KMS action"
            );
        }
        every_iam_statement(&deployed)
            .into_iter()
            .filter(|statement| statement.to_string().contains("kms:"))
            .collect()
    };
    for large_objects in ["fail", "fargate"] {
        let without = [image, ("LargeObjects", large_objects)];
        assert_eq!(kms_statements(&without), Vec::<Value>::new());
        let with = [
            image,
            ("LargeObjects", large_objects),
            ("SourceKmsKeyArn", SOURCE_KMS_KEY),
        ];
        let statements = kms_statements(&with);
        assert_eq!(statements.len(), 1, "{statements:?}");
        let statement = &statements[0];
        assert_eq!(statement["Effect"], "Allow");
        assert_eq!(
            strings(&statement["Action"]),
            ["kms:Decrypt", "kms:GenerateDataKey"]
        );
        assert_eq!(resource_arns(&lambda, &with, statement), [SOURCE_KMS_KEY]);
        assert!(statement.get("Condition").is_none());
        let deployed = rendered(&lambda, &with);
        let policy = resource(&deployed, "SourceKeyPolicy");
        assert_eq!(policy["PolicyDocument"]["Statement"], json!([statement]));
        assert_eq!(
            policy["Roles"],
            resource(&deployed, "ObjectsPolicy")["Roles"],
            "the function's role, and the task's with LargeObjects {large_objects}"
        );
    }
}

/// The role Batch Operations jobs run as: only S3 Batch Operations of this account may assume
/// it, and it may only invoke the function (its `live` alias when there is one) and read
/// manifests and write reports under one prefix, never the sources or outputs.
#[test]
fn lambda_template_gives_batch_operations_a_role_that_only_invokes_the_function() {
    if !have(&["cfn-lint"], PYTHON_TOOLS) {
        return;
    }
    let lambda = template("lambda-template.yaml");
    assert_eq!(
        lambda["Parameters"]["BatchOperationsPrefix"]["Default"],
        "batch-operations/"
    );
    let image = IMAGE;
    for (alias, invoked) in [
        ("true", json!({"Ref": "LiveAlias"})),
        ("false", json!({"Fn::GetAtt": ["Function", "Arn"]})),
    ] {
        let rendered = rendered(&lambda, &[image, ("EnableAlias", alias)]);
        let role = resource(&rendered, "BatchOperationsRole");
        let trust = &role["AssumeRolePolicyDocument"]["Statement"];
        assert_eq!(trust.as_array().map(Vec::len), Some(1), "{trust}");
        assert_eq!(
            trust[0]["Principal"],
            json!({"Service": "batchoperations.s3.amazonaws.com"})
        );
        assert_eq!(
            trust[0]["Condition"]["StringEquals"]["aws:SourceAccount"],
            json!({"Ref": "AWS::AccountId"})
        );
        assert_eq!(role["Policies"].as_array().map(Vec::len), Some(1));
        let statements = role["Policies"][0]["PolicyDocument"]["Statement"]
            .as_array()
            .unwrap();
        let mut actions: Vec<String> = Vec::new();
        for statement in statements {
            assert_eq!(statement["Effect"], "Allow");
            let granted = strings(&statement["Action"]);
            if granted.iter().any(|action| action.starts_with("lambda:")) {
                assert_eq!(granted, ["lambda:InvokeFunction"]);
                assert_eq!(statement["Resource"], invoked, "alias {alias}");
            } else {
                let resource = statement["Resource"].to_string();
                assert!(
                    resource.contains("${BucketArn}/${BatchOperationsPrefix}*")
                        && !resource.contains("SourceObjectArns")
                        && !resource.contains("OutputObjectArns"),
                    "{resource}"
                );
            }
            actions.extend(granted);
        }
        actions.sort();
        assert_eq!(
            actions,
            [
                "lambda:InvokeFunction",
                "s3:GetObject",
                "s3:GetObjectVersion",
                "s3:PutObject"
            ]
        );
        assert_eq!(
            rendered["Outputs"]["BatchOperationsRoleArn"]["Value"],
            json!({"Fn::GetAtt": ["BatchOperationsRole", "Arn"]})
        );
    }
    // The first deployment (the repository alone) has no role to hand out yet.
    let bare = rendered(&lambda, &[]);
    assert!(bare["Resources"].get("BatchOperationsRole").is_none());
    assert!(bare["Outputs"].get("BatchOperationsRoleArn").is_none());
}

/// The Fargate task for objects too large for one invocation, behind LargeObjects: nothing of it
/// with 'fail'; with 'fargate' a task definition of the function's own image, a task role with
/// the function's S3 permissions (the same policy), an execution role that can pull that image
/// and write that log group, the function allowed to run that task in that cluster alone and
/// told where by six variables, the hand-off records (written, read and removed by both) under
/// their prefix alone, and a failed task on the failure queue, named with its object.
#[test]
fn lambda_template_hands_large_objects_to_a_fargate_task_or_fails_them() {
    if !have(&["cfn-lint"], PYTHON_TOOLS) {
        return;
    }
    let lambda = template("lambda-template.yaml");
    assert_choice(&lambda, "LargeObjects", "fail", &["fail", "fargate"]);
    assert_eq!(lambda["Parameters"]["TaskCpu"]["Default"], 2048);
    assert_eq!(lambda["Parameters"]["TaskMemory"]["Default"], 6144);
    let image = (
        "LambdaImageUri",
        "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/s3-compressor@sha256:0",
    );
    let fargate_only = [
        "Cluster",
        "TaskLogGroup",
        "TaskRole",
        "TaskExecutionRole",
        "TaskDefinition",
        "TaskFailureRule",
        "FailureQueuePolicy",
        "HandoffRecordsPolicy",
    ];
    let outputs = [
        "LargeObjectsClusterArn",
        "LargeObjectsTaskDefinitionArn",
        "LargeObjectsLogGroupName",
    ];
    let handoff_actions = |statements: &[Value]| -> Vec<String> {
        statements
            .iter()
            .flat_map(|statement| strings(&statement["Action"]))
            .filter(|action| action.starts_with("ecs:") || action.starts_with("iam:"))
            .collect()
    };

    // fail: none of it, and the function has no variables.
    let failing = rendered(&lambda, &[image]);
    for id in fargate_only {
        assert!(failing["Resources"].get(id).is_none(), "{id}");
    }
    for output in outputs {
        assert!(failing["Outputs"].get(output).is_none(), "{output}");
    }
    assert_eq!(
        resource(&failing, "Function")["Environment"]["Variables"],
        json!({"S3_COMPRESSOR_DEPLOYED_CONFIG": {"Ref": "DeployedConfig"}}),
        "no handoff variables"
    );
    assert!(handoff_actions(&role_statements(&failing)).is_empty());
    assert_eq!(
        resource(&failing, "ObjectsPolicy")["Roles"],
        json!([{"Ref": "FunctionRole"}])
    );
    // Nor without an image (the first deployment's repository alone).
    assert_repository_alone(&lambda, &[("LargeObjects", "fargate")]);

    let fargate = rendered(&lambda, &[image, ("LargeObjects", "fargate")]);
    assert_eq!(
        resource(&fargate, "Cluster")["ClusterSettings"],
        json!([{"Name": "containerInsights", "Value": "enabled"}])
    );
    let task = resource(&fargate, "TaskDefinition");
    assert_eq!(task["RequiresCompatibilities"], json!(["FARGATE"]));
    assert_eq!(task["NetworkMode"], "awsvpc");
    assert_eq!(
        task["RuntimePlatform"],
        json!({"OperatingSystemFamily": "LINUX", "CpuArchitecture": "X86_64"})
    );
    assert_eq!(
        (&task["Cpu"], &task["Memory"]),
        (&json!({"Ref": "TaskCpu"}), &json!({"Ref": "TaskMemory"}))
    );
    assert_eq!(
        task["TaskRoleArn"],
        json!({"Fn::GetAtt": ["TaskRole", "Arn"]})
    );
    assert_eq!(
        task["ExecutionRoleArn"],
        json!({"Fn::GetAtt": ["TaskExecutionRole", "Arn"]})
    );
    let containers = task["ContainerDefinitions"].as_array().unwrap();
    assert_eq!(containers.len(), 1, "{containers:?}");
    let container = &containers[0];
    assert_eq!(container["Name"], "worker");
    assert_eq!(container["Image"], json!({"Fn::Sub": "${LambdaImageUri}"}));
    // The container's share is the task's (moto_server's RunTask needs it stated).
    assert_eq!(container["Cpu"], task["Cpu"]);
    assert_eq!(container["Memory"], task["Memory"]);
    assert_eq!(container["ReadonlyRootFilesystem"], true);
    assert_eq!(container["Privileged"], false);
    for absent in ["Command", "EntryPoint", "PortMappings", "Secrets"] {
        assert!(container.get(absent).is_none(), "{absent}: {container}");
    }
    let logging = &container["LogConfiguration"];
    assert_eq!(logging["LogDriver"], "awslogs");
    assert_eq!(
        logging["Options"]["awslogs-group"],
        json!({"Ref": "TaskLogGroup"})
    );
    assert_eq!(
        resource(&fargate, "TaskLogGroup")["RetentionInDays"],
        json!({"Ref": "LogRetentionDays"})
    );

    // The task role: trusted by ECS tasks, and the function's S3 permissions, the same policy.
    let task_role = resource(&fargate, "TaskRole");
    let trust = &task_role["AssumeRolePolicyDocument"]["Statement"];
    assert_eq!(
        trust[0]["Principal"],
        json!({"Service": "ecs-tasks.amazonaws.com"})
    );
    assert!(task_role.get("Policies").is_none() && task_role.get("ManagedPolicyArns").is_none());
    assert_eq!(
        resource(&fargate, "ObjectsPolicy")["Roles"],
        json!([{"Ref": "FunctionRole"}, {"Ref": "TaskRole"}])
    );
    // The execution role: the registry token (which has no resource), that image's repository,
    // that log group.
    let execution = resource(&fargate, "TaskExecutionRole")["Policies"][0]["PolicyDocument"]
        ["Statement"]
        .as_array()
        .unwrap();
    let granted: Vec<(Vec<String>, String)> = execution
        .iter()
        .map(|statement| {
            (
                strings(&statement["Action"]),
                statement["Resource"].to_string(),
            )
        })
        .collect();
    assert_eq!(
        granted,
        [
            (
                vec!["ecr:GetAuthorizationToken".to_owned()],
                "\"*\"".to_owned()
            ),
            (
                vec![
                    "ecr:BatchCheckLayerAvailability".to_owned(),
                    "ecr:GetDownloadUrlForLayer".to_owned(),
                    "ecr:BatchGetImage".to_owned()
                ],
                execution[1]["Resource"].to_string()
            ),
            (
                vec![
                    "logs:CreateLogStream".to_owned(),
                    "logs:PutLogEvents".to_owned()
                ],
                json!({"Fn::GetAtt": ["TaskLogGroup", "Arn"]}).to_string()
            ),
        ]
    );
    assert_eq!(
        execution[1]["Resource"]["Fn::Sub"][0],
        "arn:${AWS::Partition}:ecr:${Region}:${Account}:repository/${Name}"
    );

    // The function: that task definition in that cluster, those two roles to ECS, no more.
    let statements = role_statements(&fargate);
    assert_eq!(
        handoff_actions(&statements),
        ["ecs:RunTask", "iam:PassRole"]
    );
    let by_sid = |sid: &str| statements.iter().find(|s| s["Sid"] == sid).unwrap();
    assert_eq!(
        by_sid("RunTheLargeObjectTask"),
        &json!({
            "Sid": "RunTheLargeObjectTask", "Effect": "Allow", "Action": "ecs:RunTask",
            "Resource": {"Ref": "TaskDefinition"},
            "Condition": {"ArnEquals": {"ecs:cluster": {"Fn::GetAtt": ["Cluster", "Arn"]}}}
        })
    );
    assert_eq!(
        by_sid("PassTheTaskRoles"),
        &json!({
            "Sid": "PassTheTaskRoles", "Effect": "Allow", "Action": "iam:PassRole",
            "Resource": [
                {"Fn::GetAtt": ["TaskRole", "Arn"]},
                {"Fn::GetAtt": ["TaskExecutionRole", "Arn"]}
            ],
            "Condition": {"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}
        })
    );
    let import =
        |name: &str| json!({"Fn::ImportValue": {"Fn::Sub": format!("${{InfraStackName}}-{name}")}});
    assert_eq!(
        resource(&fargate, "Function")["Environment"]["Variables"],
        json!({
            "S3_COMPRESSOR_DEPLOYED_CONFIG": {"Ref": "DeployedConfig"},
            "S3_COMPRESSOR_HANDOFF_CLUSTER": {"Fn::GetAtt": ["Cluster", "Arn"]},
            "S3_COMPRESSOR_HANDOFF_TASK_DEFINITION": {"Ref": "TaskDefinition"},
            "S3_COMPRESSOR_HANDOFF_CONTAINER": container["Name"],
            "S3_COMPRESSOR_HANDOFF_SUBNETS":
                {"Fn::Join": [",", [import("PrivateSubnet1ID"), import("PrivateSubnet2ID")]]},
            "S3_COMPRESSOR_HANDOFF_SECURITY_GROUPS": import("SecurityGroupID"),
            "S3_COMPRESSOR_HANDOFF_RECORDS": {"Ref": "HandoffRecordsPrefix"}
        })
    );

    // The records: the function and the task may write, read and remove them, under their
    // prefix of the bucket alone.
    assert_eq!(
        lambda["Parameters"]["HandoffRecordsPrefix"]["Default"],
        "s3-compressor/handoffs/"
    );
    let records = resource(&fargate, "HandoffRecordsPolicy");
    assert_eq!(
        records["Roles"],
        json!([{"Ref": "FunctionRole"}, {"Ref": "TaskRole"}])
    );
    let statements = records["PolicyDocument"]["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 1, "{statements:?}");
    assert_eq!(statements[0]["Effect"], "Allow");
    assert_eq!(
        strings(&statements[0]["Action"]),
        [
            "s3:PutObject",
            "s3:GetObject",
            "s3:DeleteObject",
            "s3:DeleteObjectVersion"
        ]
    );
    let records_arns = |parameters: &[(&str, &str)]| {
        let mut all = vec![image, ("LargeObjects", "fargate")];
        all.extend_from_slice(parameters);
        resource_arns(&lambda, &all, &statements[0])
    };
    assert_eq!(
        records_arns(&[]),
        [format!("{BUCKET_ARN}/s3-compressor/handoffs/*")]
    );
    assert_eq!(
        records_arns(&[("HandoffRecordsPrefix", "ops/records/")]),
        [format!("{BUCKET_ARN}/ops/records/*")]
    );

    // A task that stopped with a failing exit code, or never started, reaches the failure queue
    // (and so its alarm) as a message naming the object, the task and why; only that rule may
    // send there through EventBridge.
    let rule = resource(&fargate, "TaskFailureRule");
    let pattern = &rule["EventPattern"];
    assert_eq!(pattern["source"], json!(["aws.ecs"]));
    assert_eq!(pattern["detail-type"], json!(["ECS Task State Change"]));
    assert_eq!(
        pattern["detail"]["clusterArn"],
        json!([{"Fn::GetAtt": ["Cluster", "Arn"]}])
    );
    assert_eq!(pattern["detail"]["lastStatus"], json!(["STOPPED"]));
    assert_eq!(
        pattern["detail"]["$or"],
        json!([
            {"containers": {"exitCode": [{"anything-but": 0}]}},
            {"stopCode": ["TaskFailedToStart"]}
        ])
    );
    let targets = rule["Targets"].as_array().unwrap();
    assert_eq!(targets.len(), 1, "{targets:?}");
    assert_eq!(
        targets[0]["Arn"],
        json!({"Fn::GetAtt": ["FailureQueue", "Arn"]})
    );
    let transformer = &targets[0]["InputTransformer"];
    assert_eq!(
        transformer["InputPathsMap"],
        json!({
            // The command the function gave the task: `compress s3://BUCKET/KEY ...`.
            "object": "$.detail.overrides.containerOverrides[0].command[1]",
            "task": "$.detail.taskArn",
            "stopCode": "$.detail.stopCode",
            "stoppedReason": "$.detail.stoppedReason",
            "exitCode": "$.detail.containers[0].exitCode",
            "stoppedAt": "$.detail.stoppedAt"
        })
    );
    let message = transformer["InputTemplate"].as_str().unwrap();
    for part in [
        "<task> for <object>",
        "exit code <exitCode>): <stoppedReason>",
        "The source is kept",
        "s3-compressor compress <object>",
    ] {
        assert!(message.contains(part), "{part:?} in {message}");
    }
    let queue_policy = resource(&fargate, "FailureQueuePolicy");
    assert_eq!(queue_policy["Queues"], json!([{"Ref": "FailureQueue"}]));
    assert_eq!(
        queue_policy["PolicyDocument"]["Statement"],
        json!([{
            "Sid": "FailedTasksRuleOnly", "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage", "Resource": {"Fn::GetAtt": ["FailureQueue", "Arn"]},
            "Condition": {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["TaskFailureRule", "Arn"]}}}
        }])
    );
    // Nothing else publishes through EventBridge any more: the topic's key is CloudWatch's.
    assert!(fargate["Resources"].get("AlarmTopicPolicy").is_none());
    for output in outputs {
        assert!(fargate["Outputs"][output].is_object(), "{output}");
    }
}

#[test]
fn lambda_template_triggers_the_function_directly_or_through_a_buffer_queue() {
    if !have(&["cfn-lint"], PYTHON_TOOLS) {
        return;
    }
    let lambda = template("lambda-template.yaml");
    let parameter = |name: &str| lambda["Parameters"][name].clone();
    assert_choice(&lambda, "Trigger", "direct", &["direct", "queue"]);
    assert_eq!(parameter("QueueBatchSize")["Default"], 100);
    assert_eq!(parameter("QueueBatchSize")["MaxValue"], 10_000);
    assert_eq!(parameter("QueueMaximumConcurrency")["Default"], 10);
    // Lambda refuses a batch size over 10 without a batching window of at least a second.
    assert!(parameter("QueueBatchingWindowSeconds")["MinValue"].as_u64() >= Some(1));
    let image = IMAGE;
    let buffer_outputs = [
        "BufferQueueArn",
        "BufferQueueUrl",
        "BufferDeadLetterQueueUrl",
    ];

    // Direct: S3 invokes `live`, and there is no buffer queue.
    let direct = rendered(&lambda, &[image]);
    let permission = one(&direct, "AWS::Lambda::Permission");
    assert_eq!(permission["FunctionName"], json!({"Ref": "LiveAlias"}));
    assert_eq!(permission["Principal"], "s3.amazonaws.com");
    for kind in ["AWS::Lambda::EventSourceMapping", "AWS::SQS::QueuePolicy"] {
        assert!(resources_of_type(&direct, kind).is_empty(), "{kind}");
    }
    assert_eq!(
        resources_of_type(&direct, "AWS::SQS::Queue").len(),
        1,
        "the failure queue alone"
    );
    let direct_role = serde_json::to_string(&role_statements(&direct)).unwrap();
    assert!(!direct_role.contains("sqs:ReceiveMessage"), "{direct_role}");
    for output in buffer_outputs {
        assert!(direct["Outputs"].get(output).is_none(), "{output}");
    }
    // Nothing of the queue trigger without an image (the first deployment's repository alone).
    assert_repository_alone(&lambda, &[("Trigger", "queue")]);

    // Queue: S3 -> BufferQueue (dead letters to BufferDeadLetterQueue) -> the mapping -> `live`.
    let queued = rendered(&lambda, &[image, ("Trigger", "queue")]);
    assert!(
        resources_of_type(&queued, "AWS::Lambda::Permission").is_empty(),
        "S3 does not invoke the function"
    );
    assert_eq!(resources_of_type(&queued, "AWS::SQS::Queue").len(), 3);
    let buffer = &queued["Resources"]["BufferQueue"]["Properties"];
    let dead_letter = &queued["Resources"]["BufferDeadLetterQueue"]["Properties"];
    assert_eq!(
        buffer["RedrivePolicy"]["deadLetterTargetArn"],
        json!({"Fn::GetAtt": ["BufferDeadLetterQueue", "Arn"]})
    );
    let receives = buffer["RedrivePolicy"]["maxReceiveCount"].as_u64().unwrap();
    assert!((5..=10).contains(&receives), "{receives}");
    for queue in [buffer, dead_letter] {
        assert_eq!(queue["SqsManagedSseEnabled"], true, "{queue}");
    }
    assert!(
        dead_letter["MessageRetentionPeriod"].as_u64() > buffer["MessageRetentionPeriod"].as_u64(),
        "a message keeps its first enqueue time on the dead-letter queue"
    );
    // AWS's advice: six times the function's timeout, plus the batching window.
    let timeout = one(&queued, "AWS::Lambda::Function")["Timeout"]
        .as_u64()
        .unwrap();
    let longest_window = parameter("QueueBatchingWindowSeconds")["MaxValue"]
        .as_u64()
        .unwrap();
    let visibility = buffer["VisibilityTimeout"].as_u64().unwrap();
    assert!(
        visibility >= 6 * timeout + longest_window,
        "visibility timeout {visibility} s for a {timeout} s function"
    );

    let policy = one(&queued, "AWS::SQS::QueuePolicy");
    assert_eq!(policy["Queues"], json!([{"Ref": "BufferQueue"}]));
    let statements = policy["PolicyDocument"]["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 1, "{statements:?}");
    let send = &statements[0];
    assert_eq!(send["Effect"], "Allow");
    assert_eq!(send["Principal"], json!({"Service": "s3.amazonaws.com"}));
    assert_eq!(send["Action"], "sqs:SendMessage");
    assert_eq!(
        send["Resource"],
        json!({"Fn::GetAtt": ["BufferQueue", "Arn"]})
    );
    assert!(send["Condition"]["ArnEquals"]["aws:SourceArn"]
        .to_string()
        .contains("S3BucketARN"));
    assert_eq!(
        send["Condition"]["StringEquals"]["aws:SourceAccount"],
        json!({"Ref": "AWS::AccountId"})
    );

    let mapping = one(&queued, "AWS::Lambda::EventSourceMapping");
    assert_eq!(
        mapping["EventSourceArn"],
        json!({"Fn::GetAtt": ["BufferQueue", "Arn"]})
    );
    assert_eq!(mapping["FunctionName"], json!({"Ref": "LiveAlias"}));
    assert_eq!(
        mapping["FunctionResponseTypes"],
        json!(["ReportBatchItemFailures"])
    );
    assert_eq!(mapping["BatchSize"], json!({"Ref": "QueueBatchSize"}));
    assert_eq!(
        mapping["MaximumBatchingWindowInSeconds"],
        json!({"Ref": "QueueBatchingWindowSeconds"})
    );
    assert_eq!(
        mapping["ScalingConfig"]["MaximumConcurrency"],
        json!({"Ref": "QueueMaximumConcurrency"})
    );
    // Without the alias (local stand-ins only), the function itself, as the permission does.
    let unaliased = rendered(
        &lambda,
        &[image, ("Trigger", "queue"), ("EnableAlias", "false")],
    );
    assert_eq!(
        one(&unaliased, "AWS::Lambda::EventSourceMapping")["FunctionName"],
        json!({"Ref": "Function"})
    );

    // The role: polling that queue, sending failed invocations to the failure queue, no more.
    let mut sqs: Vec<(Vec<String>, Value)> = role_statements(&queued)
        .iter()
        .filter(|statement| {
            strings(&statement["Action"])
                .iter()
                .any(|action| action.starts_with("sqs:"))
        })
        .map(|statement| (strings(&statement["Action"]), statement["Resource"].clone()))
        .collect();
    sqs.sort_by_key(|(actions, _)| actions.len());
    assert_eq!(
        sqs,
        [
            (
                vec!["sqs:SendMessage".to_owned()],
                json!({"Fn::GetAtt": ["FailureQueue", "Arn"]})
            ),
            (
                vec![
                    "sqs:ReceiveMessage".to_owned(),
                    "sqs:DeleteMessage".to_owned(),
                    "sqs:GetQueueAttributes".to_owned()
                ],
                json!({"Fn::GetAtt": ["BufferQueue", "Arn"]})
            ),
        ]
    );

    // Messages the function keeps failing are on the dead-letter queue, which has an alarm.
    alarm_on(
        &queued,
        "AWS/SQS",
        "ApproximateNumberOfMessagesVisible",
        &json!({"Fn::GetAtt": ["BufferDeadLetterQueue", "QueueName"]}),
    );
    for output in buffer_outputs {
        assert!(queued["Outputs"][output].is_object(), "{output}");
    }
}

/// A string or `Fn::Sub` of the rendered `template` with `parameters` as the stack
/// [`LAMBDA_STACK`] makes it: `${AWS::StackName}`, a function's name (`${Function}`) and a
/// queue's (`${Queue.QueueName}`) as those resources name themselves, the rest as [`evaluated`]
/// tells it.
fn substituted(template: &Value, parameters: &[(&str, &str)], value: &Value) -> String {
    if let Some(text) = value.as_str() {
        return text.to_owned();
    }
    let name_of = |logical_id: &str, property: &str| {
        substituted(
            template,
            parameters,
            &resource(template, logical_id)[property],
        )
    };
    let arguments = &value["Fn::Sub"];
    substitute(arguments, |name, given| {
        Some(match (given, name.split_once('.')) {
            (Some(given), _) => substituted(template, parameters, given),
            (None, Some((queue, "QueueName"))) => name_of(queue, "QueueName"),
            (None, None) if name == "AWS::StackName" => LAMBDA_STACK.to_owned(),
            (None, None) if template["Resources"][name]["Type"] == "AWS::Lambda::Function" => {
                name_of(name, "FunctionName")
            }
            _ => scalar(template, parameters, &json!({"Ref": name}))?,
        })
    })
    .unwrap_or_else(|| panic!("cannot substitute {value}"))
}

/// Each series of a dashboard widget as `NAMESPACE METRIC DIMENSION=VALUE STAT`, or
/// `= EXPRESSION` for metric math.
fn series(widget: &Value) -> Vec<String> {
    let properties = &widget["properties"];
    properties["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let row = row.as_array().unwrap();
            let options = row.last().filter(|last| last.is_object());
            if let Some(expression) = options.and_then(|options| options.get("expression")) {
                return format!("= {}", expression.as_str().unwrap());
            }
            let stat = options
                .and_then(|options| options.get("stat"))
                .unwrap_or(&properties["stat"]);
            let text: Vec<&str> = row.iter().filter_map(Value::as_str).collect();
            let [namespace, metric, dimension, value] = text[..] else {
                panic!("not one metric of one dimension: {row:?}");
            };
            format!(
                "{namespace} {metric} {dimension}={value} {}",
                stat.as_str().unwrap()
            )
        })
        .collect()
}

/// The function's dashboard, for each trigger: the worker's own metrics (the namespace, names and
/// dimension of its EMF line) for objects, bytes and their ratio, Lambda's duration against the
/// function's timeout, throttles and concurrency, and the depth of every queue failures wait on.
#[test]
fn lambda_template_makes_a_dashboard_of_the_functions_metrics() {
    if !have(&["cfn-lint"], PYTHON_TOOLS) {
        return;
    }
    let lambda = template("lambda-template.yaml");
    assert_eq!(lambda["Resources"]["Dashboard"]["Condition"], "HasImage");

    // What the worker emits, from its own EMF line: one namespace, FunctionName its dimension.
    let emf: Value =
        serde_json::from_str(&metrics_line(&Totals::default(), Duration::ZERO, FUNCTION)).unwrap();
    let declared = &emf["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(declared["Dimensions"], json!([["FunctionName"]]));
    assert_eq!(emf["FunctionName"], FUNCTION);
    let namespace = declared["Namespace"].as_str().unwrap();
    let emitted = |metric: &str| {
        assert!(
            declared["Metrics"]
                .as_array()
                .unwrap()
                .iter()
                .any(|declared| declared["Name"] == metric),
            "the worker emits no {metric}: {declared}"
        );
        format!("{namespace} {metric} FunctionName={FUNCTION} Sum")
    };
    let lambda_metric =
        |metric: &str, stat: &str| format!("AWS/Lambda {metric} FunctionName={FUNCTION} {stat}");
    let depth = |queue: &str| {
        format!(
            "AWS/SQS ApproximateNumberOfMessagesVisible QueueName={LAMBDA_STACK}-{queue} Maximum"
        )
    };

    for (trigger, queues) in [
        ("direct", vec![depth("failures")]),
        (
            "queue",
            vec![depth("failures"), depth("uploads-dead-letter")],
        ),
    ] {
        let deployed = rendered(&lambda, &[IMAGE, ("Trigger", trigger)]);
        assert_eq!(
            deployed["Outputs"]["DashboardName"]["Value"],
            json!({"Ref": "Dashboard"})
        );
        let dashboard = one(&deployed, "AWS::CloudWatch::Dashboard");
        assert_eq!(
            substituted(&deployed, &[], &dashboard["DashboardName"]),
            FUNCTION
        );
        let body = substituted(&deployed, &[], &dashboard["DashboardBody"]);
        let body: Value = serde_json::from_str(&body)
            .unwrap_or_else(|error| panic!("the dashboard body is no JSON ({error}): {body}"));
        let widgets = body["widgets"].as_array().unwrap();
        for widget in widgets {
            assert_eq!(widget["type"], "metric", "{widget}");
            assert_eq!(widget["properties"]["region"], "us-east-1", "{widget}");
        }
        let titled = |title: &str| {
            widgets
                .iter()
                .find(|widget| widget["properties"]["title"] == title)
                .unwrap_or_else(|| panic!("no widget {title:?}: {widgets:?}"))
        };

        assert_eq!(
            series(titled("Objects compressed and failed")),
            [emitted("Compressed"), emitted("Failures")]
        );
        assert_eq!(
            series(titled("Bytes in and out")),
            [emitted("BytesIn"), emitted("BytesOut")]
        );
        // The ratio is metric math over the two sums, which it hides.
        let ratio = titled("Compression ratio (bytes in / bytes out)");
        assert_eq!(
            series(ratio),
            [
                "= bytesIn / bytesOut".to_owned(),
                emitted("BytesIn"),
                emitted("BytesOut")
            ]
        );
        for (row, id) in [(1, "bytesIn"), (2, "bytesOut")] {
            let options = &ratio["properties"]["metrics"][row][4];
            assert_eq!(
                (&options["id"], &options["visible"]),
                (&json!(id), &json!(false))
            );
        }

        // Storage saved: a running sum of the worker's BytesSaved in GB, and that at the
        // stack's storage price (the parameter's default here) as dollars a month.
        let saved = titled("Storage saved in the period shown");
        assert_eq!(
            series(saved),
            [
                "= RUNNING_SUM(saved) / 1073741824".to_owned(),
                "= gb * 0.023".to_owned(),
                emitted("BytesSaved")
            ]
        );
        let saved_metrics = &saved["properties"]["metrics"];
        assert_eq!(saved_metrics[0][0]["id"], "gb");
        assert_eq!(saved_metrics[1][0]["yAxis"], "right");
        assert_eq!(
            (&saved_metrics[2][4]["id"], &saved_metrics[2][4]["visible"]),
            (&json!("saved"), &json!(false))
        );

        let duration = titled("Duration against the timeout");
        assert_eq!(
            series(duration),
            [
                lambda_metric("Duration", "p50"),
                lambda_metric("Duration", "p99"),
                lambda_metric("Duration", "Maximum")
            ]
        );
        // Duration is in milliseconds, the function's Timeout in seconds.
        let timeout = one(&deployed, "AWS::Lambda::Function")["Timeout"]
            .as_u64()
            .unwrap();
        let horizontal = duration["properties"]["annotations"]["horizontal"]
            .as_array()
            .unwrap();
        assert_eq!(horizontal.len(), 1);
        assert_eq!(horizontal[0]["value"], timeout * 1000);

        assert_eq!(
            series(titled("Throttles")),
            [lambda_metric("Throttles", "Sum")]
        );
        assert_eq!(
            series(titled("Concurrent executions")),
            [lambda_metric("ConcurrentExecutions", "Maximum")]
        );
        assert_eq!(
            series(titled("Failures waiting on their queue")),
            queues,
            "{trigger}"
        );
        assert_eq!(widgets.len(), 8, "{widgets:?}");
        // Three widgets of 8 to a row of 24, so rows fill with no gap.
        let width: u64 = widgets
            .iter()
            .map(|widget| widget["width"].as_u64().unwrap())
            .sum();
        assert_eq!(width % 24, 0, "{widgets:?}");
    }
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

/// `aws sqs ARGS` against moto: the AWS CLI v1 ignores AWS_ENDPOINT_URL for SQS.
fn sqs(moto: &Moto, args: &[&str]) -> Value {
    let mut full = vec!["sqs", "--endpoint-url", moto.endpoint()];
    full.extend_from_slice(args);
    aws(moto, &full)
}

/// The physical id of a stack's resource, `None` if the stack has no such resource.
fn stack_resource(moto: &Moto, stack: &str, logical_id: &str) -> Option<String> {
    // (moto_server answers DescribeStackResource with a 500 for some resources.)
    let listed = aws(
        moto,
        &[
            "cloudformation",
            "list-stack-resources",
            "--stack-name",
            stack,
        ],
    );
    listed["StackResourceSummaries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|resource| resource["LogicalResourceId"] == logical_id)
        .map(|resource| resource["PhysicalResourceId"].as_str().unwrap().to_owned())
}

/// `aws ARGS --output json` against moto, for the test's own checks: through the preloaded
/// AWS CLI, which pays Python's start-up once per test instead of once per call.
fn try_aws(moto: &Moto, args: &[&str]) -> Finished {
    let mut environment = Command::new("aws");
    moto.point_at(&mut environment);
    let mut args = args.to_vec();
    args.extend(["--output", "json"]);
    s3_compressor_tests::aws_cli::aws(&environment, &args)
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
    // The scripts' `aws` calls go to the preloaded AWS CLI, first on the PATH they are given.
    let path = env.iter().find(|(name, _)| *name == "PATH").map_or_else(
        || std::env::var("PATH").unwrap(),
        |(_, path)| (*path).to_owned(),
    );
    let aws = s3_compressor_tests::aws_cli::bin_dir();
    command.env("PATH", format!("{}:{path}", aws.display()));
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

/// The registry and repository of the images the tests push into moto's ECR.
const CI_IMAGES: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/ci-images";

/// The digest moto's ECR gives the image tagged `tag` in ci-images.
fn image_digest(moto: &Moto, tag: &str) -> String {
    aws(
        moto,
        &[
            "ecr",
            "describe-images",
            "--repository-name",
            "ci-images",
            "--image-ids",
            &format!("imageTag={tag}"),
        ],
    )["imageDetails"][0]["imageDigest"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A moto_server whose ECR has the repository ci-images with one image, tagged v1.
fn moto_with_an_image() -> Moto {
    let moto = Moto::start();
    aws(
        &moto,
        &["ecr", "create-repository", "--repository-name", "ci-images"],
    );
    put_manifest(&moto, "ci-images", "v1", &single_manifest('1'));
    moto
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

/// How uploads reach the function: deploy.sh's `--trigger`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Direct,
    Queue,
}

/// The document of the managed policy attached to the function's role that holds its source
/// and output permissions (ObjectsPolicy), as deployed.
fn deployed_objects_policy(moto: &Moto) -> Value {
    let function = aws(
        moto,
        &["lambda", "get-function", "--function-name", FUNCTION],
    );
    let role_name = function["Configuration"]["Role"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    let attached = aws(
        moto,
        &[
            "iam",
            "list-attached-role-policies",
            "--role-name",
            role_name,
        ],
    );
    // With LargeObjects 'fargate' the hand-off records' policy is attached too.
    let policies: Vec<&Value> = attached["AttachedPolicies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|policy| {
            policy["PolicyName"]
                .as_str()
                .is_some_and(|name| !name.contains("HandoffRecordsPolicy"))
        })
        .collect();
    assert_eq!(policies.len(), 1, "{attached}");
    let policy_arn = policies[0]["PolicyArn"].as_str().unwrap();
    let policy = aws(moto, &["iam", "get-policy", "--policy-arn", policy_arn]);
    let version = policy["Policy"]["DefaultVersionId"].as_str().unwrap();
    aws(
        moto,
        &[
            "iam",
            "get-policy-version",
            "--policy-arn",
            policy_arn,
            "--version-id",
            version,
        ],
    )["PolicyVersion"]["Document"]
        .clone()
}

/// The recursion guard as deployed: the function role's one managed policy denies writes under
/// each source prefix (`prefixes`, sorted). SourceKmsKeyArn is empty, so it names no KMS action.
/// Only after the stack's creation: a moto stack update leaves a managed policy's document as
/// it was.
fn assert_recursion_guard(moto: &Moto, prefixes: &[&str]) {
    let document = deployed_objects_policy(moto);
    let guard = document["Statement"]
        .as_array()
        .and_then(|statements| {
            statements
                .iter()
                .find(|statement| statement["Sid"] == "NeverWriteUnderSources")
        })
        .unwrap_or_else(|| panic!("no recursion guard in {document}"));
    assert_eq!(guard["Effect"], "Deny");
    let mut denied: Vec<&str> = guard["Resource"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    denied.sort_unstable();
    let infra = outputs(moto, INFRA_STACK);
    let bucket_arn = infra["S3BucketARN"].as_str().unwrap();
    let sources: Vec<String> = prefixes
        .iter()
        .map(|prefix| format!("{bucket_arn}/{prefix}*"))
        .collect();
    assert_eq!(denied, sources, "prefixes are given sorted");
    assert!(!document.to_string().contains("kms:"), "{document}");
}

/// What every deployment must leave behind, as far as moto_server shows it.
fn assert_deployed(moto: &Moto, image_uri: &str, prefixes: &[&str], trigger: Trigger) {
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
    // The role a Batch Operations job runs as exists, and trusts Batch Operations alone.
    let batch_role = lambda["BatchOperationsRoleArn"]
        .as_str()
        .unwrap_or_else(|| panic!("{lambda}"));
    let role_name = batch_role.rsplit('/').next().unwrap_or_default();
    let role = aws(moto, &["iam", "get-role", "--role-name", role_name]);
    assert_eq!(
        role["Role"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"],
        "batchoperations.s3.amazonaws.com",
        "{role}"
    );
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
    let (section, field, target, other) = match trigger {
        Trigger::Direct => (
            "LambdaFunctionConfigurations",
            "LambdaFunctionArn",
            &lambda["FunctionArn"],
            "QueueConfigurations",
        ),
        Trigger::Queue => (
            "QueueConfigurations",
            "QueueArn",
            &lambda["BufferQueueArn"],
            "LambdaFunctionConfigurations",
        ),
    };
    assert!(
        notifications[other].as_array().is_none_or(Vec::is_empty),
        "nothing left aimed at the other trigger: {notifications}"
    );
    assert!(target.is_string(), "{lambda}");
    let configs = notifications[section]
        .as_array()
        .unwrap_or_else(|| panic!("no {section}: {notifications}"));
    let mut seen: Vec<&str> = configs
        .iter()
        .map(|c| {
            assert_eq!(&c[field], target);
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
    if trigger == Trigger::Queue {
        assert_buffer(moto, &lambda);
    }
}

/// What `deploy.sh` is given as `STORAGE_PRICE_PER_GB_MONTH`: S3 Standard-IA's price.
const STORAGE_PRICE: &str = "0.0125";

/// The dashboard the stack output `DashboardName` names, its body's metrics on this function and
/// its failure queue in this region, every `${...}` of the template substituted.
fn assert_dashboard(moto: &Moto) {
    let name = outputs(moto, LAMBDA_STACK)["DashboardName"].clone();
    assert_eq!(name, FUNCTION);
    let listed = aws(moto, &["cloudwatch", "list-dashboards"]);
    assert!(
        listed["DashboardEntries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|entry| entry["DashboardName"] == FUNCTION),
        "{listed}"
    );
    let dashboard = aws(
        moto,
        &["cloudwatch", "get-dashboard", "--dashboard-name", FUNCTION],
    );
    let body = dashboard["DashboardBody"].as_str().unwrap();
    assert!(!body.contains("${"), "{body}");
    let body: Value = serde_json::from_str(body).unwrap();
    let widgets = body["widgets"].as_array().unwrap();
    assert_eq!(widgets.len(), 8, "{body}");
    // The savings valued at the price deploy.sh was given.
    assert!(
        body.to_string()
            .contains(&format!("\"gb * {STORAGE_PRICE}\"")),
        "{body}"
    );
    let named = strings(
        &widgets
            .iter()
            .flat_map(|widget| widget["properties"]["metrics"].as_array().unwrap().clone())
            .flat_map(|row| row.as_array().unwrap().clone())
            .collect(),
    );
    for (dimension, value) in [
        ("FunctionName", FUNCTION.to_owned()),
        ("QueueName", format!("{LAMBDA_STACK}-failures")),
    ] {
        assert!(
            named.windows(2).any(|pair| pair == [dimension, &value]),
            "no metric of {dimension} {value}: {body}"
        );
    }
    for widget in widgets {
        assert_eq!(widget["properties"]["region"], "us-east-1", "{widget}");
    }
}

/// The buffer queue, its dead-letter queue and the event source mapping of the queue trigger.
/// (With the direct trigger the template has none of them, but moto cannot show their removal:
/// it answers a stack update that only turns a condition false with "No updates are to be
/// performed", keeping those resources and outputs. The template test shows what each
/// trigger deploys.)
fn assert_buffer(moto: &Moto, lambda: &Value) {
    let parameters = aws(
        moto,
        &[
            "cloudformation",
            "describe-stacks",
            "--stack-name",
            LAMBDA_STACK,
        ],
    )["Stacks"][0]["Parameters"]
        .clone();
    assert!(
        parameters
            .as_array()
            .unwrap()
            .contains(&json!({"ParameterKey": "Trigger", "ParameterValue": "queue"})),
        "{parameters}"
    );
    let queues = strings(&sqs(moto, &["list-queues"])["QueueUrls"]);
    let uuid = stack_resource(moto, LAMBDA_STACK, "BufferQueueMapping")
        .expect("the stack's event source mapping");
    let mapping = aws(
        moto,
        &["lambda", "get-event-source-mapping", "--uuid", &uuid],
    );
    assert_eq!(mapping["EventSourceArn"], lambda["BufferQueueArn"]);
    assert_eq!(
        mapping["FunctionArn"], lambda["FunctionArn"],
        "without the alias (moto), the function itself"
    );
    assert_eq!(
        (
            &mapping["BatchSize"],
            &mapping["MaximumBatchingWindowInSeconds"],
            &mapping["ScalingConfig"]["MaximumConcurrency"]
        ),
        (&json!(100), &json!(5), &json!(10))
    );
    assert_eq!(
        mapping["FunctionResponseTypes"],
        json!(["ReportBatchItemFailures"])
    );
    let url = lambda["BufferQueueUrl"].as_str().unwrap();
    let attributes = &sqs(
        moto,
        &[
            "get-queue-attributes",
            "--queue-url",
            url,
            "--attribute-names",
            "All",
        ],
    )["Attributes"];
    assert_eq!(attributes["VisibilityTimeout"], "2100");
    let redrive: Value =
        serde_json::from_str(attributes["RedrivePolicy"].as_str().unwrap()).unwrap();
    assert_eq!(redrive["maxReceiveCount"], 5);
    assert!(
        redrive["deadLetterTargetArn"]
            .as_str()
            .unwrap()
            .ends_with(":file-compression-lambda-uploads-dead-letter"),
        "{redrive}"
    );
    assert_eq!(queues.len(), 3, "{queues:?}");
}

/// What `--large-objects fargate` leaves behind, as far as moto_server shows it: the interface
/// endpoints in the VPC, the cluster, the task definition of the function's image, the function
/// and task roles sharing ObjectsPolicy, the execution role pulling from the image's repository,
/// the failure rule aimed at the alarm topic, and the function's five variables naming them by
/// their real ids. (moto keeps neither the launch type, the network mode, the roles nor the
/// cluster settings of what CloudFormation makes, nor the topic policy or the egress rule; the
/// template tests check those.)
///
/// `image_uri`: the image the task definition runs, `None` after a stack update, which in moto
/// registers the task definition again with its container settings untranslated (no name, no
/// image; its update path skips the key mapping its create path does) and leaves ObjectsPolicy
/// out of the stack's resources; so those two are checked after the stack's creation only.
fn assert_large_objects(moto: &Moto, image_uri: Option<&str>) {
    let infra = outputs(moto, INFRA_STACK);
    let lambda = outputs(moto, LAMBDA_STACK);
    let id = |outputs: &Value, key: &str| outputs[key].as_str().unwrap().to_owned();
    let subnets = [
        id(&infra, "PrivateSubnet1ID"),
        id(&infra, "PrivateSubnet2ID"),
    ];
    let function_group = id(&infra, "SecurityGroupID");
    let endpoints_group = stack_resource(moto, INFRA_STACK, "EndpointSecurityGroup")
        .expect("the endpoints' security group");
    let endpoints = aws(
        moto,
        &[
            "ec2",
            "describe-vpc-endpoints",
            "--filters",
            &format!("Name=vpc-id,Values={}", id(&infra, "VpcId")),
        ],
    );
    let mut services: Vec<&str> = endpoints["VpcEndpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|endpoint| endpoint["VpcEndpointType"] == "Interface")
        .map(|endpoint| {
            assert_eq!(endpoint["SubnetIds"], json!(subnets), "{endpoint}");
            assert_eq!(endpoint["Groups"][0]["GroupId"], endpoints_group.as_str());
            assert_eq!(endpoint["PrivateDnsEnabled"], true);
            endpoint["ServiceName"].as_str().unwrap()
        })
        .collect();
    services.sort_unstable();
    assert_eq!(
        services,
        ["ecr.api", "ecr.dkr", "ecs", "logs"]
            .map(|service| format!("com.amazonaws.us-east-1.{service}"))
    );
    let ingress = &aws(
        moto,
        &[
            "ec2",
            "describe-security-groups",
            "--group-ids",
            &endpoints_group,
        ],
    )["SecurityGroups"][0]["IpPermissions"];
    assert_eq!(ingress.as_array().map(Vec::len), Some(1), "{ingress}");
    assert_eq!(
        (&ingress[0]["FromPort"], &ingress[0]["ToPort"]),
        (&json!(443), &json!(443))
    );
    assert_eq!(
        ingress[0]["UserIdGroupPairs"][0]["GroupId"],
        function_group.as_str()
    );

    let cluster = id(&lambda, "LargeObjectsClusterArn");
    let task_definition = id(&lambda, "LargeObjectsTaskDefinitionArn");
    let clusters = aws(moto, &["ecs", "describe-clusters", "--clusters", &cluster]);
    assert_eq!(clusters["clusters"][0]["status"], "ACTIVE", "{clusters}");
    if let Some(image_uri) = image_uri {
        let definition = &aws(
            moto,
            &[
                "ecs",
                "describe-task-definition",
                "--task-definition",
                &task_definition,
            ],
        )["taskDefinition"];
        let containers = definition["containerDefinitions"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "{definition}");
        let container = &containers[0];
        assert_eq!(container["name"], "worker", "{definition}");
        assert_eq!(container["image"], image_uri, "the function's image");
        assert_eq!(
            (&container["cpu"], &container["memory"]),
            (&json!(2048), &json!(6144))
        );
        assert_eq!(container["readonlyRootFilesystem"], true);
        assert!(container.get("command").is_none(), "{container}");
        assert_eq!(
            container["logConfiguration"]["options"]["awslogs-group"],
            lambda["LargeObjectsLogGroupName"]
        );
    }

    // After a stack update moto no longer lists ObjectsPolicy among the stack's resources.
    // Both roles share the S3 policies: the prefixes' and the hand-off records'.
    if image_uri.is_some() {
        let policies: Vec<Value> = ["HandoffRecordsPolicy", "ObjectsPolicy"]
            .into_iter()
            .map(|id| {
                let policy = stack_resource(moto, LAMBDA_STACK, id).unwrap();
                json!({"PolicyName": policy.rsplit('/').next(), "PolicyArn": policy})
            })
            .collect();
        for role in ["FunctionRole", "TaskRole"] {
            let name = stack_resource(moto, LAMBDA_STACK, role).unwrap();
            let attached = aws(
                moto,
                &["iam", "list-attached-role-policies", "--role-name", &name],
            );
            assert_eq!(
                attached["AttachedPolicies"],
                json!(policies),
                "{role}: {attached}"
            );
        }
    }
    let execution = stack_resource(moto, LAMBDA_STACK, "TaskExecutionRole").unwrap();
    let document = aws(
        moto,
        &[
            "iam",
            "get-role-policy",
            "--role-name",
            &execution,
            "--policy-name",
            "pull-image-and-log",
        ],
    )["PolicyDocument"]
        .clone();
    // moto hands the document back as Python prints a dict (single quotes), so it is read as
    // text: the pulls name the function image's repository, quoted whole.
    let document = match document {
        Value::String(text) => text,
        other => other.to_string(),
    };
    // The repository of the function's image.
    let function_image = aws(
        moto,
        &["lambda", "get-function", "--function-name", FUNCTION],
    )["Code"]["ImageUri"]
        .as_str()
        .unwrap()
        .to_owned();
    let repository = function_image
        .split_once('/')
        .unwrap()
        .1
        .split('@')
        .next()
        .unwrap();
    let arn = format!("arn:aws:ecr:us-east-1:{MOTO_ACCOUNT}:repository/{repository}");
    assert!(
        document.contains(&format!("'{arn}'")) || document.contains(&format!("\"{arn}\"")),
        "{arn} in {document}"
    );

    let rule = stack_resource(moto, LAMBDA_STACK, "TaskFailureRule").unwrap();
    let targets = aws(moto, &["events", "list-targets-by-rule", "--rule", &rule]);
    let failure_queue = sqs(
        moto,
        &[
            "get-queue-attributes",
            "--queue-url",
            lambda["FailureQueueUrl"].as_str().unwrap(),
            "--attribute-names",
            "QueueArn",
        ],
    );
    assert_eq!(
        targets["Targets"][0]["Arn"],
        failure_queue["Attributes"]["QueueArn"]
    );
    assert!(
        targets["Targets"][0]["InputTransformer"]["InputPathsMap"]["object"].is_string(),
        "{targets}"
    );
    let pattern: Value = serde_json::from_str(
        aws(moto, &["events", "describe-rule", "--name", &rule])["EventPattern"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(pattern["detail"]["clusterArn"], json!([cluster]));

    let function = function_configuration(moto);
    let mut variables = function["Environment"]["Variables"].clone();
    let deployed_config = variables
        .as_object_mut()
        .and_then(|variables| variables.remove("S3_COMPRESSOR_DEPLOYED_CONFIG"));
    assert!(deployed_config.is_some(), "{function}");
    assert_eq!(
        variables,
        json!({
            "S3_COMPRESSOR_HANDOFF_CLUSTER": cluster,
            "S3_COMPRESSOR_HANDOFF_TASK_DEFINITION": task_definition,
            "S3_COMPRESSOR_HANDOFF_CONTAINER": "worker",
            "S3_COMPRESSOR_HANDOFF_SUBNETS": subnets.join(","),
            "S3_COMPRESSOR_HANDOFF_SECURITY_GROUPS": function_group,
            "S3_COMPRESSOR_HANDOFF_RECORDS": "s3-compressor/handoffs/"
        })
    );
}

/// `deploy.sh --yes --image-uri CI_IMAGES:TAG --config CONFIG ARGS...`, which must succeed.
fn deploy_config(
    moto: &Moto,
    env: &[(&str, &str)],
    tag: &str,
    config: &str,
    args: &[&str],
) -> Finished {
    let image = format!("{CI_IMAGES}:{tag}");
    let mut all = vec!["--yes", "--image-uri", &image, "--config", config];
    all.extend_from_slice(args);
    must(
        run_script(moto, "deploy.sh", &all, env),
        &format!("deploy.sh {}", all.join(" ")),
    )
}

/// `aws lambda get-function-configuration` of the function ($LATEST).
fn function_configuration(moto: &Moto) -> Value {
    aws(
        moto,
        &[
            "lambda",
            "get-function-configuration",
            "--function-name",
            FUNCTION,
        ],
    )
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

/// Any number of rules: a config of twelve, with spaces in some prefixes, deployed once with
/// deploy.sh against moto. S3 notifies for each of the twelve source prefixes, and the worker's
/// policy names each source and output prefix in its own statements, and nothing else. The
/// function keeps the config's rules, and deploying a changed config shows how its routing
/// differs from them.
#[test]
fn deploy_a_config_of_twelve_rules_some_with_spaces_against_moto() {
    use base64::Engine as _;
    if !have(&["aws", "moto_server"], PYTHON_TOOLS) {
        return;
    }
    let moto = moto_with_an_image();
    let binary = s3_compressor_binary().display().to_string();
    let env = [("S3_COMPRESSOR_BIN", binary.as_str())];
    let names = [
        "alpha",
        "month end",
        "q1 2024",
        "beta",
        "gamma delta",
        "eps",
        "zeta",
        "eta  theta",
        "iota",
        "kappa",
        "lambda mu",
        "nu",
    ];
    let config: String = names
        .iter()
        .map(|name| {
            format!("[[rule]]\nprefix = \"in {name}/\"\noutput_prefix = \"out {name}/\"\n\n")
        })
        .collect();
    let config_path = moto.write_file("compressor.toml", config.as_bytes());
    let config_arg = config_path.display().to_string();
    let deployed = deploy_config(&moto, &env, "v1", &config_arg, &[]);
    let sorted = |side: &str| -> Vec<String> {
        let mut prefixes: Vec<String> =
            names.iter().map(|name| format!("{side} {name}/")).collect();
        prefixes.sort();
        prefixes
    };
    let (sources, output_prefixes) = (sorted("in"), sorted("out"));
    let source_refs: Vec<&str> = sources.iter().map(String::as_str).collect();
    assert_deployed(
        &moto,
        &format!("{CI_IMAGES}@{}", image_digest(&moto, "v1")),
        &source_refs,
        Trigger::Direct,
    );
    assert_recursion_guard(&moto, &source_refs);
    assert!(
        deployed.stderr.contains(&format!(
            "source prefixes (trigger, read and delete): {} ",
            sources.join(" ")
        )),
        "{}",
        deployed.stderr
    );

    let bucket_arn = outputs(&moto, INFRA_STACK)["S3BucketARN"]
        .as_str()
        .unwrap()
        .to_owned();
    let arns = |prefixes: &[String]| -> Vec<String> {
        prefixes
            .iter()
            .map(|prefix| format!("{bucket_arn}/{prefix}*"))
            .collect()
    };
    let document = deployed_objects_policy(&moto);
    for (sid, expected) in [
        ("ReadAndDeleteSources", arns(&sources)),
        ("NeverWriteUnderSources", arns(&sources)),
        ("WriteAndVerifyOutputs", arns(&output_prefixes)),
    ] {
        let statement = document["Statement"]
            .as_array()
            .and_then(|statements| statements.iter().find(|statement| statement["Sid"] == sid))
            .unwrap_or_else(|| panic!("no {sid} in {document}"));
        let mut named = strings(&statement["Resource"]);
        named.sort();
        assert_eq!(named, expected, "{sid}");
    }

    // The function keeps the config's rules; the next deploy.sh shows what changes against them.
    assert!(
        deployed
            .stderr
            .contains("the live version records no config")
            && deployed.stderr.contains(
                "  + 'in month end/' -> 'out month end/' (zip, level 7, delete the source)"
            ),
        "{}",
        deployed.stderr
    );
    let function = function_configuration(&moto);
    let recorded = function["Environment"]["Variables"]["S3_COMPRESSOR_DEPLOYED_CONFIG"]
        .as_str()
        .unwrap_or_else(|| panic!("{function}"));
    let recorded: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(recorded)
            .expect("base64"),
    )
    .expect("JSON");
    let checked = run(Command::new(&binary).args(["check-config", &config_arg, "--json"]));
    let checked: Value = serde_json::from_str(&checked.stdout).expect("check-config --json");
    assert_eq!(
        recorded,
        json!({"hash": checked["hash"], "rules": checked["rules"]})
    );

    let changed = config
        .replace(
            "prefix = \"in alpha/\"\noutput_prefix = \"out alpha/\"\n",
            "prefix = \"in alpha/\"\noutput_prefix = \"out alpha/\"\nformat = \"gzip\"\n",
        )
        .replace("prefix = \"in nu/\"", "prefix = \"in xi/\"")
        .replace("output_prefix = \"out nu/\"", "output_prefix = \"out xi/\"");
    let changed_path = moto.write_file("changed.toml", changed.as_bytes());
    put_manifest(&moto, "ci-images", "v2", &single_manifest('2'));
    let again = deploy_config(&moto, &env, "v2", &changed_path.display().to_string(), &[]);
    for line in [
        "  ~ 'in alpha/': format 'zip' -> 'gzip'",
        "  - 'in nu/' -> 'out nu/' (zip, level 7, delete the source)",
        "  + 'in xi/' -> 'out xi/' (zip, level 7, delete the source)",
    ] {
        assert!(again.stderr.contains(line), "{line}: {}", again.stderr);
    }
    assert!(!again.stderr.contains("'in beta/'"), "{}", again.stderr);
}

#[test]
fn deploy_with_an_image_uri_twice_then_cleanup_against_moto() {
    if !have(&["aws", "moto_server"], PYTHON_TOOLS) {
        return;
    }
    let started = Instant::now();
    let moto = moto_with_an_image();
    let binary = s3_compressor_binary().display().to_string();
    // A storage price of another class, which the dashboard values the savings at.
    let env = [
        ("S3_COMPRESSOR_BIN", binary.as_str()),
        ("STORAGE_PRICE_PER_GB_MONTH", STORAGE_PRICE),
    ];
    put_manifest(&moto, "ci-images", "multi", &image_index());
    let registry = CI_IMAGES;
    let digest = image_digest(&moto, "v1");

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

    // Objects too large for the function go to a Fargate task. (Created with the stack: moto's
    // stack updates rewrite a task definition without its containers' settings; see
    // assert_large_objects.)
    let first = must(
        run_script(
            &moto,
            "deploy.sh",
            &[
                "--yes",
                "--image-uri",
                &format!("{registry}:v1"),
                "--large-objects",
                "fargate",
            ],
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
    assert!(
        first.stdout.contains(&format!(
            "dashboard: https://us-east-1.console.aws.amazon.com/cloudwatch/home?region=us-east-1#dashboards/dashboard/{FUNCTION}"
        )),
        "{}",
        first.stdout
    );
    let by_digest = format!("{registry}@{digest}");
    assert_deployed(&moto, &by_digest, &["incoming/"], Trigger::Direct);
    assert_recursion_guard(&moto, &["incoming/"]);
    assert_dashboard(&moto);
    assert!(
        first.stdout.contains(
            "too large: Fargate tasks in arn:aws:ecs:us-east-1:123456789012:cluster/file-compression-lambda-large-objects"
        ),
        "{}",
        first.stdout
    );
    assert_large_objects(&moto, Some(&by_digest));
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

    // Again (the setting from the environment this time): nothing changes.
    let fargate_env = [env[0], env[1], ("LARGE_OBJECTS", "fargate")];
    let second = must(
        run_script(
            &moto,
            "deploy.sh",
            &["--yes", "--image-uri", &format!("{registry}:v1")],
            &fargate_env,
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
    assert_deployed(&moto, &by_digest, &["incoming/"], Trigger::Direct);

    // A task as the function starts one, from its variables. Going back to --large-objects
    // fail would delete the cluster under it: refused. (cleanup.sh stops it, below.)
    let bucket = bucket_of(&moto);
    let lambda = outputs(&moto, LAMBDA_STACK);
    let function = function_configuration(&moto);
    let handoff = |name: &str| {
        function["Environment"]["Variables"][format!("S3_COMPRESSOR_HANDOFF_{name}")]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let running = aws(
        &moto,
        &[
            "ecs",
            "run-task",
            "--cluster",
            &handoff("CLUSTER"),
            "--task-definition",
            &handoff("TASK_DEFINITION"),
            "--launch-type",
            "FARGATE",
            "--network-configuration",
            &format!(
                "awsvpcConfiguration={{subnets=[{}],securityGroups=[{}]}}",
                handoff("SUBNETS"),
                handoff("SECURITY_GROUPS")
            ),
            "--overrides",
            &json!({"containerOverrides": [{
                "name": handoff("CONTAINER"),
                "command": ["compress", format!("s3://{bucket}/incoming/big.bin")]
            }]})
            .to_string(),
        ],
    );
    let task = running["tasks"][0]["taskArn"].as_str().unwrap().to_owned();
    assert_eq!(
        running["tasks"][0]["clusterArn"],
        lambda["LargeObjectsClusterArn"]
    );
    // Back to --large-objects fail would delete the cluster under the task: refused.
    let refused = run_script(
        &moto,
        "deploy.sh",
        &[
            "--yes",
            "--image-uri",
            &format!("{registry}:v1"),
            "--large-objects",
            "fail",
        ],
        &env,
    );
    assert!(
        !refused.success()
            && refused
                .stderr
                .contains("1 large-object task(s) still run in")
            && refused.stderr.contains("keep --large-objects fargate"),
        "{}",
        refused.describe()
    );

    // A rule for another folder: the trigger follows the config.
    let config = std::fs::read_to_string(root().join("config/compressor.toml")).unwrap()
        + "\n[[rule]]\nprefix = \"uploads/\"\noutput_prefix = \"compressed/\"\n";
    let config_path = moto.write_file("compressor.toml", config.as_bytes());
    let config_arg = config_path.display().to_string();
    put_manifest(&moto, "ci-images", "v2", &single_manifest('2'));
    let third = deploy_config(
        &moto,
        &env,
        "v2",
        &config_arg,
        &["--large-objects", "fargate"],
    );
    assert!(
        third.stdout.contains(
            "too large: Fargate tasks in arn:aws:ecs:us-east-1:123456789012:cluster/file-compression-lambda-large-objects"
        ),
        "{}",
        third.stdout
    );
    assert!(
        third
            .stderr
            .contains("source prefixes (trigger, read and delete): incoming/ uploads/"),
        "{}",
        third.stderr
    );
    let digest2 = image_digest(&moto, "v2");
    assert_deployed(
        &moto,
        &format!("{registry}@{digest2}"),
        &["incoming/", "uploads/"],
        Trigger::Direct,
    );
    assert_large_objects(&moto, None);
    assert_dashboard(&moto);
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

    // Cleanup: refuses without a terminal or --yes, then removes every trace, twice over,
    // stopping a large-object task still running first (ECS deletes no cluster with tasks).
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
    assert!(
        cleanup
            .stderr
            .contains(&format!("stopping the task {task}")),
        "{}",
        cleanup.stderr
    );
    assert_all_removed(&moto, &bucket);
    assert!(!try_aws(
        &moto,
        &["cloudwatch", "get-dashboard", "--dashboard-name", FUNCTION]
    )
    .success());
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

/// One ReceiveMessage from the queue (up to 10 messages, waiting at most a second), with the
/// attributes Lambda's poller asks for.
fn receive(moto: &Moto, queue_url: &str) -> Vec<Value> {
    sqs(
        moto,
        &[
            "receive-message",
            "--queue-url",
            queue_url,
            "--max-number-of-messages",
            "10",
            "--wait-time-seconds",
            "1",
            "--attribute-names",
            "All",
        ],
    )["Messages"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The event Lambda's SQS event source mapping hands the function for `messages`, as
/// ReceiveMessage returned them from the queue `queue_arn`.
fn lambda_sqs_event(messages: &[Value], queue_arn: &str) -> Value {
    let records: Vec<Value> = messages
        .iter()
        .map(|message| {
            json!({
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": message["Attributes"],
                "messageAttributes": {},
                "md5OfBody": message["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    json!({ "Records": records })
}

/// `s3-compressor invoke --event FILE` against moto: the handler's response.
fn invoke_worker(moto: &Moto, event: &Value) -> Value {
    let path = write_event(moto.dir(), "batch.json", event);
    let finished = must(
        run(moto.s3_compressor().arg("invoke").arg("--event").arg(&path)),
        "s3-compressor invoke",
    );
    serde_json::from_str(&finished.stdout)
        .unwrap_or_else(|error| panic!("invoke printed no JSON ({error}): {}", finished.describe()))
}

/// The one entry of a zip archive: its name and content.
fn unzipped(bytes: Vec<u8>) -> (String, Vec<u8>) {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    assert_eq!(archive.len(), 1);
    let mut entry = archive.by_index(0).unwrap();
    let mut content = Vec::new();
    entry.read_to_end(&mut content).unwrap();
    (entry.name().unwrap().into_owned(), content)
}

#[test]
fn deploy_with_the_queue_trigger_then_uploads_reach_the_worker_in_batches_against_moto() {
    if !have(&["aws", "moto_server"], PYTHON_TOOLS) {
        return;
    }
    let started = Instant::now();
    let moto = moto_with_an_image();
    let binary = s3_compressor_binary().display().to_string();
    let env = [("S3_COMPRESSOR_BIN", binary.as_str())];
    let image = format!("{CI_IMAGES}:v1");
    let by_digest = format!("{CI_IMAGES}@{}", image_digest(&moto, "v1"));
    let deploy = |trigger: &str| {
        run_script(
            &moto,
            "deploy.sh",
            &["--yes", "--image-uri", &image, "--trigger", trigger],
            &env,
        )
    };

    // Deployed as before, then switched to the queue.
    let direct = must(deploy("direct"), "deploy.sh --trigger direct");
    assert_deployed(&moto, &by_digest, &["incoming/"], Trigger::Direct);
    // --large-objects fail, the default: no handoff variables, no interface endpoints.
    assert!(direct.stdout.contains("too large: failed at once"));
    let function = function_configuration(&moto);
    let variables: Vec<&String> = function["Environment"]["Variables"]
        .as_object()
        .into_iter()
        .flat_map(|variables| variables.keys())
        .collect();
    assert_eq!(variables, ["S3_COMPRESSOR_DEPLOYED_CONFIG"], "{function}");
    assert!(stack_resource(&moto, INFRA_STACK, "EcsEndpoint").is_none());
    let first = must(deploy("queue"), "deploy.sh --trigger queue");
    assert!(
        first.stdout.contains(
            "trigger:   queue arn:aws:sqs:us-east-1:123456789012:file-compression-lambda-uploads"
        ),
        "{}",
        first.stdout
    );
    assert_deployed(&moto, &by_digest, &["incoming/"], Trigger::Queue);
    let second = must(deploy("queue"), "deploy.sh --trigger queue again");
    for unchanged in [
        "file-compression-lambda: unchanged",
        "bucket notifications unchanged",
    ] {
        assert!(second.stderr.contains(unchanged), "{}", second.stderr);
    }

    let lambda = outputs(&moto, LAMBDA_STACK);
    let queue_url = lambda["BufferQueueUrl"].as_str().unwrap();
    let queue_arn = lambda["BufferQueueArn"].as_str().unwrap();
    let dead_letter_url = lambda["BufferDeadLetterQueueUrl"].as_str().unwrap();
    let bucket = bucket_of(&moto);
    // An enabled mapping makes moto run the function in Docker for each message sent; here the
    // test is Lambda's poller instead. The s3:TestEvent S3 sends when the notification is
    // configured goes: moto's mapping may have taken it already, failed to start Docker and
    // left it in flight for the visibility timeout. So the queue holds what the test sends.
    let mapping = stack_resource(&moto, LAMBDA_STACK, "BufferQueueMapping").unwrap();
    aws(
        &moto,
        &[
            "lambda",
            "update-event-source-mapping",
            "--uuid",
            &mapping,
            "--no-enabled",
        ],
    );
    sqs(&moto, &["purge-queue", "--queue-url", queue_url]);

    // Uploads under incoming/ (and one elsewhere, which sends nothing), and a message that is
    // no S3 event at all, from a script that posts to the wrong queue.
    let uploads = [
        ("incoming/orders 2024-05-01.csv", csv_text(40_000, 1)),
        ("incoming/a/b/report.csv", csv_text(3_000, 900)),
        ("incoming/empty.csv", Vec::new()),
    ];
    for (key, body) in &uploads {
        moto.put(&bucket, key, body.clone());
    }
    moto.put(&bucket, "notes/readme.txt", b"not a source".to_vec());
    let poison_body = "hello from a script that posts to the wrong queue";
    let poison = sqs(
        &moto,
        &[
            "send-message",
            "--queue-url",
            queue_url,
            "--message-body",
            poison_body,
        ],
    )["MessageId"]
        .clone();

    let mut batch = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while batch.len() < 4 {
        assert!(Instant::now() < deadline, "only {batch:#?}");
        batch.extend(receive(&moto, queue_url));
    }
    assert!(receive(&moto, queue_url).is_empty(), "{batch:#?}");
    let mut announced: Vec<String> = batch
        .iter()
        .filter(|message| message["MessageId"] != poison)
        .map(|message| {
            let event: Value = serde_json::from_str(message["Body"].as_str().unwrap()).unwrap();
            let record = &event["Records"][0];
            assert_eq!(record["eventSource"], "aws:s3", "{event}");
            assert_eq!(record["s3"]["bucket"]["name"], bucket.as_str());
            // Form-encoded, as S3 writes keys (moto encodes the slashes too).
            let key = record["s3"]["object"]["key"].as_str().unwrap();
            percent_decode(&key.replace('+', " "))
        })
        .collect();
    announced.sort();
    let mut uploaded: Vec<&str> = uploads.iter().map(|(key, _)| *key).collect();
    uploaded.sort_unstable();
    assert_eq!(announced, uploaded);

    let done = invoke_worker(&moto, &lambda_sqs_event(&batch, queue_arn));

    let only_poison = json!({ "batchItemFailures": [{ "itemIdentifier": poison }] });
    assert_eq!(done, only_poison);
    assert_eq!(
        moto.keys(&bucket),
        [
            "notes/readme.txt",
            "processed/a/b/report.zip",
            "processed/empty.zip",
            "processed/orders 2024-05-01.zip"
        ]
    );
    for (key, body) in &uploads {
        let name = key.rsplit('/').next().unwrap();
        let output = format!(
            "processed/{}.zip",
            key["incoming/".len()..].trim_end_matches(".csv")
        );
        assert_eq!(
            unzipped(moto.get(&bucket, &output)),
            (name.to_owned(), body.clone()),
            "{output}"
        );
    }

    // As Lambda does: the messages answered as done are deleted; the one returned stays. Each
    // time its visibility timeout runs out it comes back alone and is returned again, until
    // its fifth receive moves it to the dead-letter queue.
    let mut poisoned = None;
    for message in &batch {
        let handle = message["ReceiptHandle"].as_str().unwrap();
        if message["MessageId"] == poison {
            poisoned = Some(handle.to_owned());
        } else {
            sqs(
                &moto,
                &[
                    "delete-message",
                    "--queue-url",
                    queue_url,
                    "--receipt-handle",
                    handle,
                ],
            );
        }
    }
    let mut handle = poisoned.unwrap();
    let mut deliveries = 1;
    loop {
        sqs(
            &moto,
            &[
                "change-message-visibility",
                "--queue-url",
                queue_url,
                "--receipt-handle",
                &handle,
                "--visibility-timeout",
                "0",
            ],
        );
        let again = receive(&moto, queue_url);
        let [message] = &again[..] else {
            assert!(again.is_empty(), "{again:#?}");
            break;
        };
        assert_eq!(message["MessageId"], poison);
        deliveries += 1;
        assert!(deliveries <= 5, "received {deliveries} times");
        assert_eq!(
            invoke_worker(&moto, &lambda_sqs_event(&again, queue_arn)),
            only_poison
        );
        handle = message["ReceiptHandle"].as_str().unwrap().to_owned();
    }
    assert_eq!(deliveries, 5);
    let dead = sqs(
        &moto,
        &[
            "receive-message",
            "--queue-url",
            dead_letter_url,
            "--visibility-timeout",
            "0",
        ],
    );
    assert_eq!(dead["Messages"][0]["Body"], poison_body, "{dead}");

    // Back to the direct trigger: refused while the dead-letter queue holds a message (the
    // stack update would delete it), done once it is empty, and the notifications follow (see
    // assert_buffer for what moto makes of the stack update).
    let refused = deploy("direct");
    assert!(!refused.success(), "{}", refused.describe());
    assert!(
        refused.stderr.contains("holds 1 message(s)")
            && refused.stderr.contains("--trigger queue to keep it"),
        "{}",
        refused.stderr
    );
    assert_eq!(outputs(&moto, LAMBDA_STACK)["BufferQueueUrl"], queue_url);
    sqs(&moto, &["purge-queue", "--queue-url", dead_letter_url]);
    must(deploy("direct"), "deploy.sh --trigger direct after queue");
    assert_deployed(&moto, &by_digest, &["incoming/"], Trigger::Direct);

    must(
        run_script(&moto, "cleanup.sh", &["--yes"], &[]),
        "cleanup.sh --yes",
    );
    assert_all_removed(&moto, &bucket);
    assert_eq!(sqs(&moto, &["list-queues"])["QueueUrls"], Value::Null);
    measured(
        "deploy --trigger queue, a batch through the worker, switches and cleanup against moto",
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
    if !have(&["aws", "moto_server"], PYTHON_TOOLS) || !have_musl() {
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
    assert_deployed(
        &moto,
        &format!("{repository_uri}@{digest}"),
        &["incoming/"],
        Trigger::Direct,
    );
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
    ) || !have(&["moto_server", "cargo-lambda"], PYTHON_TOOLS)
        || !have_musl()
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
        s3_compressor_tests::target_dir()
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
    // The static binary is unoptimised here (about 105 MB, 30 MiB of compressed layers with
    // it); a toolchain or build folder shipped by mistake would be hundreds of MiB.
    assert!(
        compressed < 40 * 1024 * 1024,
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
