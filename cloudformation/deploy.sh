#!/usr/bin/env bash
# Deploys s3-compressor to AWS: the VPC and bucket (stack file-compression-infra), the image in
# ECR and the function behind its `live` alias (stack file-compression-lambda), and the bucket
# notifications for every source prefix of config/compressor.toml, aimed at the function or at
# an SQS queue in front of it (--trigger); optionally the Fargate task for objects too large for
# one invocation (--large-objects fargate).
#
#   ./cloudformation/deploy.sh [--region REGION] [--image-uri URI] [--trigger direct|queue]
#                              [--large-objects fail|fargate] [--yes]
#
# Safe to run again: what did not change is left alone, and a new function version is
# published (and `live` moved to it) only when the image changed. The config is baked into the
# image, so editing config/compressor.toml and running this again changes the rules, the
# trigger and the permissions together.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

IMAGE_URI=
CONFIG=$ROOT/config/compressor.toml
CONFIG_GIVEN=false
# DEPLOY_WITHOUT_ALIAS=1 is for local AWS stand-ins without AWS::Lambda::Alias (moto_server):
# the function is deployed without `live` and the notifications aim at the function itself.
WITHOUT_ALIAS=${DEPLOY_WITHOUT_ALIAS:-0}
# Template parameters, all passed on every run so that the script says what is deployed (and
# no value is left to UsePreviousValue, which moto_server mishandles).
VPC_CIDR=${VPC_CIDR:-10.0.0.0/16}
PRIVATE_SUBNET1_CIDR=${PRIVATE_SUBNET1_CIDR:-10.0.1.0/24}
PRIVATE_SUBNET2_CIDR=${PRIVATE_SUBNET2_CIDR:-10.0.2.0/24}
NONCURRENT_VERSION_DAYS=${NONCURRENT_VERSION_DAYS:-30}
LOG_RETENTION_DAYS=${LOG_RETENTION_DAYS:-30}
ALARM_EMAIL=${ALARM_EMAIL:-}
# USD per GB-month of the bucket's storage, at which the dashboard values what was saved.
STORAGE_PRICE_PER_GB_MONTH=${STORAGE_PRICE_PER_GB_MONTH:-0.023}
# The customer managed KMS key (ARN) the bucket's objects are encrypted with, if any: the
# function and its task may then decrypt and generate data keys with that key alone.
SOURCE_KMS_KEY_ARN=${SOURCE_KMS_KEY_ARN:-}
# How uploads reach the function: `direct` (S3 invokes it) or `queue` (S3 -> SQS -> batches).
TRIGGER=${TRIGGER:-direct}
QUEUE_BATCH_SIZE=${QUEUE_BATCH_SIZE:-100}
QUEUE_BATCHING_WINDOW=${QUEUE_BATCHING_WINDOW:-5}
QUEUE_MAX_CONCURRENCY=${QUEUE_MAX_CONCURRENCY:-10}
# What the function does with an object it cannot finish in time: `fail` it, or hand it to a
# `fargate` task (which also needs the infra stack's interface endpoints).
LARGE_OBJECTS=${LARGE_OBJECTS:-fail}
TASK_CPU=${TASK_CPU:-2048}
# 6 GiB holds the largest object S3 allows (5 TiB: four output parts of 530 MiB) at any level of
# any built-in format on the task's 2 vCPU (zstd 22: 2.5 GiB of codec state); the worker's
# unit test the_fargate_task_holds_the_largest_object_s3_allows does the arithmetic.
TASK_MEMORY=${TASK_MEMORY:-6144}
# The cargo profile of the binary in the image: `image` (thin LTO) is what ships; the tests
# build a quicker one.
BUILD_PROFILE=${BUILD_PROFILE:-image}

usage() {
    cat <<EOF
Usage: $0 [--region REGION] [--image-uri URI [--config PATH]] [--trigger direct|queue]
          [--large-objects fail|fargate] [--yes]

Builds the s3-compressor image, pushes it to ECR and deploys the stacks $INFRA_STACK and
$LAMBDA_STACK. Running it again changes only what changed.

  --region REGION   AWS region (default: \$AWS_REGION, \$AWS_DEFAULT_REGION, else us-east-1)
  --image-uri URI   deploy this image instead of building one (an ECR image of the same
                    region, single-arch linux/amd64; REGISTRY/REPO:TAG or REGISTRY/REPO@DIGEST).
                    Needs no Docker. The trigger and permissions still come from the local
                    config/compressor.toml, which must be the one in the image.
  --config PATH     with --image-uri: the config baked into that image, if it is not
                    config/compressor.toml (a built image always has config/compressor.toml)
  --trigger direct|queue
                    how uploads reach the function (default: \$TRIGGER, else direct).
                    direct: S3 invokes it, one event per invocation. queue: S3 sends the events
                    to an SQS queue (with a dead-letter queue and an alarm on it) that Lambda
                    polls in batches, at most QUEUE_MAX_CONCURRENCY invocations at once: for
                    bursts. Switching from queue to direct deletes the queues, so it stops
                    while they hold messages.
  --large-objects fail|fargate
                    what the function does with an object it cannot compress before its
                    timeout (default: \$LARGE_OBJECTS, else fail). fail: it fails it at once
                    (permanent error; the source is kept). fargate: it runs the same image as an
                    ECS Fargate task for it (TASK_CPU, TASK_MEMORY), which adds interface
                    endpoints for ECS, ECR and CloudWatch Logs to the VPC: about 58 USD a
                    month in us-east-1 whether tasks run or not (docs/deploy.md).
  --yes             do not ask before deploying (it asks on a terminal only, after showing how
                    the config's routing differs from that of the version live runs)
  -h, --help        this help

Settings from the environment (defaults in brackets): VPC_CIDR [10.0.0.0/16],
PRIVATE_SUBNET1_CIDR [10.0.1.0/24], PRIVATE_SUBNET2_CIDR [10.0.2.0/24],
NONCURRENT_VERSION_DAYS [30] (days S3 keeps overwritten or deleted versions),
LOG_RETENTION_DAYS [30] (days the function's logs are kept), ALARM_EMAIL [none] (where the
failure alarms send mail; the address gets a subscription to confirm),
STORAGE_PRICE_PER_GB_MONTH [0.023] (USD a GB-month of the bucket's storage: the dashboard values
the storage saved at it; the default is S3 Standard in us-east-1), SOURCE_KMS_KEY_ARN
[none] (the ARN of a customer managed KMS key the bucket's objects are encrypted with
(SSE-KMS): the function and its tasks get kms:Decrypt and kms:GenerateDataKey on that key
alone), BUILD_PROFILE [image] (the cargo profile the binary is built with); with --trigger
queue: QUEUE_BATCH_SIZE [100] (S3 events per invocation, 1-10000), QUEUE_BATCHING_WINDOW [5]
(seconds Lambda waits to fill a batch, 1-300), QUEUE_MAX_CONCURRENCY [10] (invocations at
once, 2-1000); with --large-objects fargate: TASK_CPU [2048] (CPU units of a task, 1024 =
1 vCPU), TASK_MEMORY [6144] (MiB, a size Fargate offers with TASK_CPU).

Needs the AWS CLI with credentials; to build the image also Docker (with buildx), Rust
(cargo, rustup target $MUSL_TARGET) and musl-tools, on Linux x86_64.
EOF
}

while (($#)); do
    case $1 in
        --region) REGION=${2:?--region needs a value}; shift 2 ;;
        --region=*) REGION=${1#*=}; shift ;;
        --image-uri) IMAGE_URI=${2:?--image-uri needs a value}; shift 2 ;;
        --image-uri=*) IMAGE_URI=${1#*=}; shift ;;
        --config) CONFIG=${2:?--config needs a value}; CONFIG_GIVEN=true; shift 2 ;;
        --config=*) CONFIG=${1#*=}; CONFIG_GIVEN=true; shift ;;
        --trigger) TRIGGER=${2:?--trigger needs a value}; shift 2 ;;
        --trigger=*) TRIGGER=${1#*=}; shift ;;
        --large-objects) LARGE_OBJECTS=${2:?--large-objects needs a value}; shift 2 ;;
        --large-objects=*) LARGE_OBJECTS=${1#*=}; shift ;;
        --yes | -y) YES=true; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[[ $TRIGGER == direct || $TRIGGER == queue ]] ||
    die "--trigger is 'direct' or 'queue', not '$TRIGGER'."
[[ $LARGE_OBJECTS == fail || $LARGE_OBJECTS == fargate ]] ||
    die "--large-objects is 'fail' or 'fargate', not '$LARGE_OBJECTS'."

# ---------------------------------------------------------------------------------------------
# Prerequisites

check_prerequisites() {
    need aws "Install the AWS CLI: https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html"
    need python3 "Install Python 3 (it reads the config's rules as JSON): sudo apt-get install -y python3"
    [[ -f $CONFIG ]] || die "no config at $CONFIG"
    if [[ -n $IMAGE_URI ]]; then
        return
    fi
    [[ $CONFIG_GIVEN == false ]] ||
        die "--config goes with --image-uri; the image built here bakes in config/compressor.toml."
    [[ $(uname -s) == Linux && $(uname -m) == x86_64 ]] ||
        die "building the image needs Linux on x86_64 (this is $(uname -s) $(uname -m))." \
            "Build it on such a machine (or in CI) and deploy it with --image-uri URI."
    need docker "Install Docker: https://docs.docker.com/get-docker/ (or deploy a prebuilt image with --image-uri)."
    docker buildx version >/dev/null 2>&1 ||
        die "docker buildx is missing; it is what understands --provenance=false." \
            "Install the Docker buildx plugin (Docker Desktop and docker-ce include it)."
    docker info >/dev/null 2>&1 ||
        die "cannot talk to the Docker daemon ('docker info' failed)." \
            "Start Docker, or make sure your user may use it (the docker group)."
    need cargo "Install Rust: https://rustup.rs"
    if command -v rustup >/dev/null 2>&1; then
        rustup target list --installed | grep -qx "$MUSL_TARGET" ||
            die "the Rust target $MUSL_TARGET is not installed." \
                "Run: rustup target add $MUSL_TARGET"
    fi
    need musl-gcc "Install musl-tools (aws-lc-rs compiles C for the musl target): sudo apt-get install -y musl-tools"
}

# ---------------------------------------------------------------------------------------------
# The config: which prefixes the trigger and the role need

# Where cargo puts what it builds here: $CARGO_TARGET_DIR (relative to the checkout, where
# cargo runs) if set, else the checkout's target/.
cargo_target_dir() {
    local dir=${CARGO_TARGET_DIR:-target}
    [[ $dir == /* ]] || dir=$ROOT/$dir
    printf '%s\n' "$dir"
}

# The rules as the binary itself reads $CONFIG: `check-config --json`.
config_json() {
    local bin=${S3_COMPRESSOR_BIN:-}
    if [[ -z $bin ]]; then
        if [[ -z $IMAGE_URI ]]; then
            bin=$ROOT/target/lambda-image/s3-compressor
        else
            command -v cargo >/dev/null 2>&1 ||
                die "reading $CONFIG needs the s3-compressor binary." \
                    "Install Rust (https://rustup.rs), or set S3_COMPRESSOR_BIN to a built binary."
            (cd "$ROOT" && cargo build --quiet --release -p s3-compressor) >&2
            bin=$(cargo_target_dir)/release/s3-compressor
        fi
    fi
    "$bin" check-config "$CONFIG" --json ||
        die "$CONFIG is not valid (see above); fix it before deploying."
}

# Reads `check-config --json` on stdin and prints, one line each, "source|output TAB PREFIX TAB
# PATTERN" for the outermost source and output prefixes (incoming/ covers incoming/logs/: S3
# rejects overlapping notification filters, and a policy on the outer prefix covers the inner
# ones), sorted by code point. PATTERN is the prefix as an IAM resource ends, PREFIX*, with the
# characters IAM would read as wildcards or a variable (*, ?, $) written as its escapes ${*},
# ${?}, ${$}. Stops on a prefix a list here cannot carry: a comma (CloudFormation splits
# CommaDelimitedList values on it) or a control character (these lists are lines).
prefix_lists() {
    # shellcheck disable=SC2016 # Python, not the shell, reads the ${...} in it.
    python3 -c '
import json, sys

rules = json.load(sys.stdin)["rules"]
if not rules:
    sys.exit("the config has no rules")

def outermost(prefixes):
    kept = []
    for prefix in sorted(set(prefixes)):
        if not any(prefix.startswith(outer) for outer in kept):
            kept.append(prefix)
    return kept

for kind, field in (("source", "prefix"), ("output", "output_prefix")):
    for prefix in outermost(rule[field] for rule in rules):
        if "," in prefix:
            sys.exit(f"the prefix {prefix!r} contains a comma, which CloudFormation lists cannot carry; rename it")
        if any(ord(c) < 32 or ord(c) == 127 for c in prefix):
            sys.exit(f"the prefix {prefix!r} contains a control character; rename it")
        pattern = "".join("${" + c + "}" if c in "*?$" else c for c in prefix) + "*"
        print(kind, prefix, pattern, sep="\t")
'
}

read_config() {
    local json lists
    json=$(config_json)
    lists=$(prefix_lists <<<"$json") || die "cannot deploy $CONFIG (above)."
    CONFIG_HASH=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["hash"])' <<<"$json")
    DEPLOYED_CONFIG=$(deployed_config <<<"$json")
    SOURCE_PREFIXES=$(awk -F '\t' '$1 == "source" { print $2 }' <<<"$lists")
    OUTPUT_PREFIXES=$(awk -F '\t' '$1 == "output" { print $2 }' <<<"$lists")
    SOURCE_PATTERNS=$(awk -F '\t' '$1 == "source" { print $3 }' <<<"$lists")
    OUTPUT_PATTERNS=$(awk -F '\t' '$1 == "output" { print $3 }' <<<"$lists")
    note "config hash: $CONFIG_HASH"
    note "source prefixes (trigger, read and delete): $(tr '\n' ' ' <<<"$SOURCE_PREFIXES")"
    note "output prefixes (write and verify):         $(tr '\n' ' ' <<<"$OUTPUT_PREFIXES")"
}

# Reads `check-config --json` on stdin and prints what the function keeps of it in
# S3_COMPRESSOR_DEPLOYED_CONFIG: base64 of {"hash", "rules"} as compact JSON. Lambda allows 4 KB
# of variables in all; a config too large for 3 KB keeps its hash alone ("rules": null).
deployed_config() {
    python3 -c '
import base64, json, sys

config = json.load(sys.stdin)
def encoded(rules):
    text = json.dumps({"hash": config["hash"], "rules": rules}, separators=(",", ":"))
    return base64.b64encode(text.encode()).decode()
value = encoded(config["rules"])
print(value if len(value) <= 3072 else encoded(None))
'
}

# `routing_change LIVE NEW`: how the rules of NEW (what deployed_config prints) route keys
# differently from LIVE's (the same, read from the function; empty when there is none), one line
# for each rule added, removed or changed, by source prefix.
routing_change() {
    python3 - "$1" "$2" <<'PYTHON'
import base64, json, sys

def decoded(value):
    try:
        return json.loads(base64.b64decode(value, validate=True))
    except ValueError:
        return None

live, new = decoded(sys.argv[1]) if sys.argv[1] else None, decoded(sys.argv[2])

def describe(rule):
    level = "" if rule["level"] is None else f", level {rule['level']}"
    threads = "" if rule["threads"] is None else f", {rule['threads']} threads"
    source = "delete the source" if rule["delete_source"] else "keep the source"
    return f"{rule['prefix']!r} -> {rule['output_prefix']!r} ({rule['format']}{level}{threads}, {source})"

if live is None:
    print("the live version records no config (none deployed yet, or by an older deploy.sh):")
    print("\n".join(f"  + {describe(rule)}" for rule in new["rules"]))
    sys.exit()
print(f"config hash: live {live['hash']}, new {new['hash']}")
if live["hash"] == new["hash"]:
    print("  routing unchanged")
    sys.exit()
if live["rules"] is None or new["rules"] is None:
    print("  (a config too large to record: only the hashes can be compared)")
    sys.exit()
old = {rule["prefix"]: rule for rule in live["rules"]}
now = {rule["prefix"]: rule for rule in new["rules"]}
for prefix in sorted(old.keys() | now.keys()):
    before, after = old.get(prefix), now.get(prefix)
    if before is None:
        print(f"  + {describe(after)}")
    elif after is None:
        print(f"  - {describe(before)}")
    elif before != after:
        changes = ", ".join(
            f"{field} {before[field]!r} -> {after[field]!r}"
            for field in ("output_prefix", "format", "level", "threads", "delete_source")
            if before[field] != after[field]
        )
        print(f"  ~ {prefix!r}: {changes}")
PYTHON
}

# The S3_COMPRESSOR_DEPLOYED_CONFIG of the version `live` points at ($LATEST without the alias),
# or nothing when there is no such function, alias or variable.
live_config() {
    local function_name qualifier=()
    function_name=$(stack_output "$LAMBDA_STACK" FunctionName)
    [[ -n $function_name ]] || return 0
    [[ $WITHOUT_ALIAS == 1 ]] || qualifier=(--qualifier "$ALIAS")
    local value
    value=$(awsr lambda get-function-configuration --function-name "$function_name" \
        "${qualifier[@]}" --query 'Environment.Variables.S3_COMPRESSOR_DEPLOYED_CONFIG' \
        --output text 2>/dev/null) || return 0
    [[ $value == None ]] || printf '%s\n' "$value"
}

# `object_arns BUCKET_ARN PATTERNS`: BUCKET_ARN/PATTERN for each line of PATTERNS, joined with
# commas (a CommaDelimitedList value).
object_arns() {
    local bucket_arn=$1 pattern arns='' separator=''
    while IFS= read -r pattern; do
        arns+="$separator$bucket_arn/$pattern"
        separator=,
    done <<<"$2"
    printf '%s\n' "$arns"
}

# ---------------------------------------------------------------------------------------------
# Stacks

# `deploy_stack STACK TEMPLATE KEY=VALUE...`: creates or updates, and waits. A new stack is
# made with create-stack and an existing one updated with `deploy` (a change set, nothing
# done when nothing changed); local stand-ins such as moto_server keep a new stack's outputs
# only with create-stack.
deploy_stack() {
    local stack=$1 template=$2
    shift 2
    local status
    status=$(stack_status "$stack")
    case $status in
        ROLLBACK_COMPLETE)
            note "$stack failed to create earlier; deleting it to create it again"
            awsr cloudformation delete-stack --stack-name "$stack"
            awsr cloudformation wait stack-delete-complete --stack-name "$stack"
            status=NONE
            ;;
        *_IN_PROGRESS)
            die "$stack is busy ($status)." "Wait until it is done (see the CloudFormation console), then run this again."
            ;;
    esac

    if [[ $status == NONE ]]; then
        local parameters='[' separator='' pair
        for pair in "$@"; do
            parameters+="$separator{\"ParameterKey\":$(json_string "${pair%%=*}"),\"ParameterValue\":$(json_string "${pair#*=}")}"
            separator=,
        done
        parameters+=']'
        note "creating stack $stack"
        if ! awsr cloudformation create-stack --stack-name "$stack" \
            --template-body "file://$template" --parameters "$parameters" \
            --capabilities CAPABILITY_IAM --output text >/dev/null ||
            ! awsr cloudformation wait stack-create-complete --stack-name "$stack"; then
            stack_failures "$stack"
            die "creating stack $stack failed (reasons above)." \
                "Fix the cause, then run this again: a stack that failed to create is deleted and made anew."
        fi
    elif stack_is_current "$stack" "$template" "$@"; then
        note "$stack: unchanged (same template and parameters)"
    else
        note "updating stack $stack ($status)"
        local out
        if ! out=$(awsr cloudformation deploy --stack-name "$stack" --template-file "$template" \
            --parameter-overrides "$@" --capabilities CAPABILITY_IAM \
            --no-fail-on-empty-changeset 2>&1); then
            # moto_server refuses an empty change set instead of creating one that AWS marks
            # as "didn't contain changes" (which --no-fail-on-empty-changeset accepts).
            if [[ $out == *"No updates are to be performed"* ]]; then
                note "$stack: unchanged"
                return
            fi
            printf '%s\n' "$out" >&2
            stack_failures "$stack"
            die "updating stack $stack failed (reasons above); CloudFormation rolled it back."
        fi
        printf '%s\n' "$out" >&2
    fi
}

# `stack_is_current STACK TEMPLATE KEY=VALUE...`: whether the stack already has this template
# and these parameter values; then there is nothing to deploy (and no change set to make, which
# some stand-ins, moto_server among them, answer with an error).
stack_is_current() {
    local stack=$1 template=$2
    shift 2
    local deployed
    deployed=$(awsr cloudformation get-template --stack-name "$stack" --query TemplateBody \
        --output text 2>/dev/null) || return 1
    [[ $deployed == "$(<"$template")" ]] || return 1
    local current pair
    current=$(awsr cloudformation describe-stacks --stack-name "$stack" --output text \
        --query 'Stacks[0].Parameters[].[ParameterKey, ParameterValue]') || return 1
    # moto_server lists a CommaDelimitedList value as a Python list, ['a/', 'b/']; AWS as a/,b/.
    current=$(sed -E "/\t\[.*\]\$/{s/\t\[/\t/; s/\]\$//; s/', '/,/g; s/'//g}" <<<"$current")
    for pair in "$@"; do
        local key=${pair%%=*} value=${pair#*=}
        # The text output lists an empty value as nothing (moto_server) or as "None".
        if [[ -z $value ]]; then
            grep -qxF "$key"$'\t' <<<"$current" || grep -qxF "$key"$'\t'None <<<"$current" \
                || return 1
        else
            grep -qxF "$key"$'\t'"$value" <<<"$current" || return 1
        fi
    done
}

lambda_parameters() {
    printf '%s\n' \
        "InfraStackName=$INFRA_STACK" \
        "LambdaImageUri=$1" \
        "SourceObjectArns=$(object_arns "$BUCKET_ARN" "$SOURCE_PATTERNS")" \
        "OutputObjectArns=$(object_arns "$BUCKET_ARN" "$OUTPUT_PATTERNS")" \
        "LogRetentionDays=$LOG_RETENTION_DAYS" \
        "AlarmEmail=$ALARM_EMAIL" \
        "StoragePricePerGbMonth=$STORAGE_PRICE_PER_GB_MONTH" \
        "SourceKmsKeyArn=$SOURCE_KMS_KEY_ARN" \
        "DeployedConfig=$DEPLOYED_CONFIG" \
        "EnableAlias=$([[ $WITHOUT_ALIAS == 1 ]] && echo false || echo true)" \
        "Trigger=$TRIGGER" \
        "QueueBatchSize=$QUEUE_BATCH_SIZE" \
        "QueueBatchingWindowSeconds=$QUEUE_BATCHING_WINDOW" \
        "QueueMaximumConcurrency=$QUEUE_MAX_CONCURRENCY" \
        "LargeObjects=$LARGE_OBJECTS" \
        "TaskCpu=$TASK_CPU" \
        "TaskMemory=$TASK_MEMORY"
}

# The infra stack's interface endpoints are what a Fargate task needs to start and log.
interface_endpoints() {
    if [[ $LARGE_OBJECTS == fargate ]]; then echo fargate; else echo none; fi
}

# The AWS CLI v1 ignores AWS_ENDPOINT_URL for SQS (local stand-ins set it); name it explicitly.
sqs() {
    local endpoint=()
    [[ -z ${AWS_ENDPOINT_URL:-} ]] || endpoint=(--endpoint-url "$AWS_ENDPOINT_URL")
    awsr sqs "${endpoint[@]}" "$@"
}

# Deploying the direct trigger over the queue trigger deletes the buffer queue and its
# dead-letter queue with whatever they hold: stops while either holds a message.
check_queues_drained() {
    [[ $TRIGGER == direct ]] || return 0
    local output queue count
    for output in BufferQueueUrl BufferDeadLetterQueueUrl; do
        queue=$(stack_output "$LAMBDA_STACK" "$output")
        [[ -n $queue ]] || continue
        count=$(sqs get-queue-attributes --queue-url "$queue" --attribute-names \
            ApproximateNumberOfMessages ApproximateNumberOfMessagesNotVisible \
            ApproximateNumberOfMessagesDelayed \
            --query 'sum(map(&to_number(@), values(Attributes)))' --output text) ||
            die "cannot read how many messages $queue holds."
        ((count == 0)) ||
            die "the deployed trigger is 'queue', and $queue holds $count message(s);" \
                "--trigger direct would delete that queue with them." \
                "Deploy with --trigger queue to keep it, or let the function drain the queue (and" \
                "redrive or handle what is on the dead-letter queue) before switching."
    done
}

# Deploying --large-objects fail over fargate deletes the cluster, which ECS refuses while a
# task runs in it (and the task would lose its work): stops while one does.
check_no_tasks_running() {
    [[ $LARGE_OBJECTS == fail ]] || return 0
    local cluster count
    cluster=$(stack_output "$LAMBDA_STACK" LargeObjectsClusterArn)
    [[ -n $cluster ]] || return 0
    count=$(awsr ecs list-tasks --cluster "$cluster" --query 'length(taskArns)' --output text) ||
        die "cannot list the tasks of $cluster."
    ((count == 0)) ||
        die "$count large-object task(s) still run in $cluster;" \
            "--large-objects fail would delete the cluster under them." \
            "Wait until 'aws ecs list-tasks --cluster $cluster' lists none, or keep --large-objects fargate."
}

# ---------------------------------------------------------------------------------------------
# The image

# `image_details REPOSITORY_URI REFERENCE`: "DIGEST MEDIA-TYPE" of an image in ECR (REFERENCE
# is :TAG or @DIGEST), or nothing if there is no such image.
image_details() {
    local host=${1%%/*} repository=${1#*/} reference=$2 id
    local registry=${host%%.*}
    case $reference in
        @*) id="imageDigest=${reference#@}" ;;
        :*) id="imageTag=${reference#:}" ;;
    esac
    awsr ecr describe-images --registry-id "$registry" --repository-name "$repository" \
        --image-ids "$id" --query 'imageDetails[0].[imageDigest, imageManifestMediaType]' \
        --output text 2>/dev/null || true
}

# Stops with advice unless the image is one that Lambda runs: a single image manifest, not an
# index (which BuildKit pushes for multi-platform builds or with provenance attestations).
check_manifest() {
    local uri=$1 media_type=$2
    case $media_type in
        application/vnd.docker.distribution.manifest.v2+json | application/vnd.oci.image.manifest.v1+json)
            note "manifest: $media_type (a single image, as Lambda needs)"
            ;;
        application/vnd.oci.image.index.v1+json | application/vnd.docker.distribution.manifest.list.v2+json)
            die "$uri is an image index ($media_type); Lambda does not support image indexes." \
                "Rebuild it as one linux/amd64 image without attestations and push it again:" \
                "  docker build --platform linux/amd64 --provenance=false --sbom=false -t IMAGE ." \
                "(BuildKit adds a provenance attestation by default, which turns the push into an index;" \
                " 'docker buildx imagetools inspect IMAGE' shows what a tag points to.)"
            ;;
        *)
            die "$uri has the manifest media type '$media_type', which Lambda does not run." \
                "Push a single-arch linux/amd64 image (docker build --platform linux/amd64 --provenance=false)."
            ;;
    esac
}

# Builds the image around the binary main built, and pushes it unless ECR has it already.
# Prints the image's URI by digest.
build_and_push() {
    local repository_uri=$1
    # The binary's TLS client needs CA certificates to reach S3; the image is empty otherwise.
    local bundle=${CA_BUNDLE:-} candidate
    if [[ -z $bundle ]]; then
        for candidate in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/cert.pem; do
            if [[ -s $candidate ]]; then bundle=$candidate; break; fi
        done
    fi
    [[ -n $bundle && -s $bundle ]] ||
        die "found no CA certificate bundle to put in the image." \
            "Install ca-certificates (apt-get install ca-certificates), or set CA_BUNDLE=/path/to/bundle.pem."
    cp "$bundle" "$ROOT/target/lambda-image/ca-certificates.crt"

    # The tag says what went into the image, so an unchanged build is never pushed again and
    # the function is not touched.
    local tag
    tag=$(cat "$ROOT/Dockerfile" "$ROOT/.dockerignore" "$CONFIG" \
        "$ROOT/target/lambda-image/ca-certificates.crt" \
        "$ROOT/target/lambda-image/s3-compressor" | sha256sum | cut -c1-16)

    local details
    details=$(image_details "$repository_uri" ":$tag")
    if [[ -n $details && $details != None* ]]; then
        note "ECR already has $repository_uri:$tag (same binary, config and certificates); not pushing"
    else
        log "building the image $repository_uri:$tag"
        docker build --platform linux/amd64 --provenance=false --sbom=false \
            -t "$repository_uri:$tag" "$ROOT" >&2
        log "pushing it to ECR"
        awsr ecr get-login-password | docker login --username AWS --password-stdin "${repository_uri%%/*}" >&2
        docker push "$repository_uri:$tag" >&2
        details=$(image_details "$repository_uri" ":$tag")
        [[ -n $details && $details != None* ]] || die "ECR does not show $repository_uri:$tag after the push."
    fi
    check_manifest "$repository_uri:$tag" "${details#*[[:space:]]}"
    printf '%s@%s\n' "$repository_uri" "${details%%[[:space:]]*}"
}

# --image-uri: must be in ECR, and a single image; returns it by digest, so that pushing a new
# image under the same tag and deploying again publishes a new version.
resolve_image_uri() {
    local uri=$1
    [[ $uri =~ ^[0-9]{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[^:@]+([:@].+)$ ]] ||
        die "--image-uri $uri is not an Amazon ECR image (ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPO:TAG)." \
            "Lambda runs container images only from ECR: push it there first."
    local reference=${BASH_REMATCH[2]} repository_uri=${uri%"${BASH_REMATCH[2]}"} details
    details=$(image_details "$repository_uri" "$reference")
    [[ -n $details && $details != None* ]] ||
        die "ECR has no image $uri (or this account may not read it)." \
            "Check with: aws ecr describe-images --repository-name ${repository_uri#*/} --region $REGION"
    check_manifest "$uri" "${details#*[[:space:]]}"
    printf '%s@%s\n' "$repository_uri" "${details%%[[:space:]]*}"
}

# ---------------------------------------------------------------------------------------------
# Bucket notifications

# One notification per outermost source prefix, all aimed at `target`: the function or its
# alias when `kind` is lambda, the buffer queue when it is queue. Rewritten only when it differs;
# the whole configuration is replaced (this bucket belongs to this deployment), so a switch of
# trigger leaves nothing aimed at the other target.
configure_notifications() {
    local bucket=$1 kind=$2 target=$3 section field
    case $kind in
        lambda) section=LambdaFunctionConfigurations field=LambdaFunctionArn ;;
        queue) section=QueueConfigurations field=QueueArn ;;
        *) die "configure_notifications: unknown kind $kind" ;;
    esac
    local prefix desired='' configs='' separator=''
    while IFS= read -r prefix; do
        desired+="$kind"$'\t'"s3-compressor $prefix"$'\t'"$target"$'\t'"s3:ObjectCreated:*"$'\t'"$prefix"$'\n'
        configs+="$separator{\"Id\":$(json_string "s3-compressor $prefix"),\"$field\":$(json_string "$target"),\"Events\":[\"s3:ObjectCreated:*\"],\"Filter\":{\"Key\":{\"FilterRules\":[{\"Name\":\"prefix\",\"Value\":$(json_string "$prefix")}]}}}"
        separator=,
    done <<<"$SOURCE_PREFIXES"
    local current
    current=$(awsr s3api get-bucket-notification-configuration --bucket "$bucket" --output text \
        --query "[LambdaFunctionConfigurations[].['lambda', Id, LambdaFunctionArn, join(',', Events), Filter.Key.FilterRules[0].Value], QueueConfigurations[].['queue', Id, QueueArn, join(',', Events), Filter.Key.FilterRules[0].Value]][]")
    if [[ "$(sort <<<"$current")" == "$(sort <<<"${desired%$'\n'}")" ]]; then
        note "bucket notifications unchanged"
        return
    fi
    awsr s3api put-bucket-notification-configuration --bucket "$bucket" \
        --notification-configuration "{\"$section\":[$configs]}"
    note "bucket notifications set: ObjectCreated under $(tr '\n' ' ' <<<"$SOURCE_PREFIXES")-> $target"
}

# ---------------------------------------------------------------------------------------------

main() {
    check_prerequisites
    local account
    account=$(caller_account)
    log "deploying s3-compressor to account $account, region $REGION"
    check_queues_drained
    check_no_tasks_running

    if [[ -z $IMAGE_URI ]]; then
        log "building the static binary (cargo, $MUSL_TARGET, profile $BUILD_PROFILE)"
        (cd "$ROOT" && cargo build --profile "$BUILD_PROFILE" --locked --target "$MUSL_TARGET" \
            -p s3-compressor) >&2
        # What the Dockerfile copies, whatever the profile.
        mkdir -p "$ROOT/target/lambda-image"
        cp "$(cargo_target_dir)/$MUSL_TARGET/$BUILD_PROFILE/s3-compressor" "$ROOT/target/lambda-image/"
    fi
    log "reading $CONFIG"
    read_config
    log "routing: the live version's config against $CONFIG"
    routing_change "$(live_config)" "$DEPLOYED_CONFIG" >&2
    # Asked on a terminal only: without one (CI) it goes ahead, the comparison above in its log.
    if [[ $YES != true && -t 0 ]]; then
        local answer
        read -r -p "Deploy this to account $account, region $REGION? [y/N] " answer
        [[ $answer == [yY]* ]] || die "stopped; nothing was changed."
    fi

    log "stack $INFRA_STACK (VPC, S3 endpoint, bucket)"
    local prefix_list
    prefix_list=$(awsr ec2 describe-managed-prefix-lists \
        --filters "Name=prefix-list-name,Values=com.amazonaws.$REGION.s3" \
        --query 'PrefixLists[0].PrefixListId' --output text 2>/dev/null) || prefix_list=
    [[ $prefix_list == pl-* ]] || {
        note "no S3 prefix list found; the security group allows HTTPS to any address"
        prefix_list=
    }
    deploy_stack "$INFRA_STACK" "$CLOUDFORMATION_DIR/infra-template.yaml" \
        "VpcCIDR=$VPC_CIDR" "PrivateSubnet1CIDR=$PRIVATE_SUBNET1_CIDR" \
        "PrivateSubnet2CIDR=$PRIVATE_SUBNET2_CIDR" \
        "NoncurrentVersionExpirationDays=$NONCURRENT_VERSION_DAYS" "S3PrefixListId=$prefix_list" \
        "InterfaceEndpoints=$(interface_endpoints)"
    local bucket
    bucket=$(stack_output "$INFRA_STACK" S3BucketName)
    [[ -n $bucket ]] || die "stack $INFRA_STACK has no output S3BucketName"
    BUCKET_ARN=$(stack_output "$INFRA_STACK" S3BucketARN)
    [[ -n $BUCKET_ARN ]] || die "stack $INFRA_STACK has no output S3BucketARN"

    log "stack $LAMBDA_STACK (repository, function, alias)"
    local parameters=() image
    if [[ -z $IMAGE_URI ]]; then
        local lambda_status
        lambda_status=$(stack_status "$LAMBDA_STACK")
        if [[ $lambda_status == NONE || $lambda_status == ROLLBACK_COMPLETE ]]; then
            # First run: the function needs the image, the image needs the repository.
            note "first run: creating the ECR repository alone"
            mapfile -t parameters < <(lambda_parameters "")
            deploy_stack "$LAMBDA_STACK" "$CLOUDFORMATION_DIR/lambda-template.yaml" "${parameters[@]}"
        fi
        local repository_uri
        repository_uri=$(stack_output "$LAMBDA_STACK" RepositoryUri)
        [[ -n $repository_uri ]] || die "stack $LAMBDA_STACK has no output RepositoryUri"
        image=$(build_and_push "$repository_uri")
    else
        log "checking the image $IMAGE_URI"
        image=$(resolve_image_uri "$IMAGE_URI")
    fi
    note "image: $image"
    mapfile -t parameters < <(lambda_parameters "$image")
    deploy_stack "$LAMBDA_STACK" "$CLOUDFORMATION_DIR/lambda-template.yaml" "${parameters[@]}"

    local function_name target version
    function_name=$(stack_output "$LAMBDA_STACK" FunctionName)
    if [[ $WITHOUT_ALIAS == 1 ]]; then
        target=$(stack_output "$LAMBDA_STACK" FunctionArn)
        version="no alias: \$LATEST"
    else
        target=$(stack_output "$LAMBDA_STACK" LambdaAliasArn)
        version="alias $ALIAS -> version $(awsr lambda get-alias --function-name "$function_name" \
            --name "$ALIAS" --query FunctionVersion --output text)"
    fi
    [[ -n $function_name && -n $target ]] || die "stack $LAMBDA_STACK is missing its function outputs"

    log "bucket notifications ($TRIGGER)"
    local trigger
    if [[ $TRIGGER == queue ]]; then
        local buffer dead_letter
        buffer=$(stack_output "$LAMBDA_STACK" BufferQueueArn)
        dead_letter=$(stack_output "$LAMBDA_STACK" BufferDeadLetterQueueUrl)
        [[ -n $buffer && -n $dead_letter ]] || die "stack $LAMBDA_STACK is missing its queue outputs"
        configure_notifications "$bucket" queue "$buffer"
        trigger="queue $buffer (batches of up to $QUEUE_BATCH_SIZE, $QUEUE_MAX_CONCURRENCY at once)
  dead letters: $dead_letter"
    else
        configure_notifications "$bucket" lambda "$target"
        trigger="direct, S3 invokes $target"
    fi

    local log_group queue dashboard large_objects
    log_group=$(stack_output "$LAMBDA_STACK" LogGroupName)
    queue=$(stack_output "$LAMBDA_STACK" FailureQueueUrl)
    dashboard=$(stack_output "$LAMBDA_STACK" DashboardName)
    if [[ $LARGE_OBJECTS == fargate ]]; then
        local cluster task_logs
        cluster=$(stack_output "$LAMBDA_STACK" LargeObjectsClusterArn)
        task_logs=$(stack_output "$LAMBDA_STACK" LargeObjectsLogGroupName)
        [[ -n $cluster && -n $task_logs ]] || die "stack $LAMBDA_STACK is missing its large-object outputs"
        large_objects="Fargate tasks in $cluster
  task logs: $task_logs"
    else
        large_objects="failed at once (the source is kept)"
    fi
    cat <<EOF

Deployed s3-compressor in $REGION.
  bucket:    $bucket
  function:  $function_name ($version)
  image:     $image
  trigger:   $trigger
  too large: $large_objects
  logs:      $log_group
  failures:  $queue
  dashboard: https://$REGION.console.aws.amazon.com/cloudwatch/home?region=$REGION#dashboards/dashboard/$dashboard

Try it:
  echo 'hello,world' > report.csv
  aws s3 cp report.csv s3://$bucket/incoming/report.csv --region $REGION
  aws s3 ls s3://$bucket/processed/ --region $REGION        # report.zip, a few seconds later
  aws logs tail $log_group --follow --region $REGION

Roll back to an earlier version:
  aws lambda list-versions-by-function --function-name $function_name --region $REGION \\
      --query 'Versions[].[Version, Description, LastModified]' --output table
  aws lambda update-alias --function-name $function_name --name $ALIAS --function-version N --region $REGION

Remove everything: ./cloudformation/cleanup.sh --region $REGION
EOF
}

main
