# Shared by deploy.sh and cleanup.sh (sourced, not run): names, messages, option parsing and
# the CloudFormation helpers.
# shellcheck shell=bash disable=SC2034 # the names are used by the scripts that source this

# The names the stacks, the repository and the function have everywhere (docs/deploy.md, outputs).
readonly INFRA_STACK=file-compression-infra
readonly LAMBDA_STACK=file-compression-lambda
readonly REPOSITORY=file-compression-lambda-repo
readonly FUNCTION="$LAMBDA_STACK-file-compression"
readonly ALIAS=live
readonly MUSL_TARGET=x86_64-unknown-linux-musl

CLOUDFORMATION_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$CLOUDFORMATION_DIR/.." && pwd)
readonly CLOUDFORMATION_DIR ROOT

# --region, else the AWS CLI's usual environment variables, else us-east-1.
REGION=${AWS_REGION:-${AWS_DEFAULT_REGION:-us-east-1}}
YES=false

log() { printf '\n==> %s\n' "$*" >&2; }
note() { printf '    %s\n' "$*" >&2; }
die() {
    printf '\nerror: %s\n' "$1" >&2
    shift
    local line
    for line in "$@"; do printf '       %s\n' "$line" >&2; done
    exit 1
}

# `need TOOL HOW-TO-GET-IT`: stops with the install hint when TOOL is not on PATH.
need() {
    command -v "$1" >/dev/null 2>&1 || die "$1 is not installed (or not on PATH)." "$2"
}

awsr() { aws --region "$REGION" "$@"; }

# The caller's account; also proves the credentials work before anything is changed.
caller_account() {
    local out
    if ! out=$(awsr sts get-caller-identity --query Account --output text 2>&1); then
        die "the AWS CLI has no working credentials: $out" \
            "Run 'aws configure' (or 'aws sso login', or set AWS_PROFILE) and try again."
    fi
    printf '%s\n' "$out"
}

# The stack's status, or NONE when there is no such stack.
stack_status() {
    local out
    if out=$(awsr cloudformation describe-stacks --stack-name "$1" \
        --query 'Stacks[0].StackStatus' --output text 2>&1); then
        printf '%s\n' "$out"
    elif [[ $out == *"does not exist"* ]]; then
        echo NONE
    else
        die "cannot read stack $1: $out"
    fi
}

# `stack_output STACK KEY`: the output's value, or nothing when the stack or output is absent.
stack_output() {
    local value
    value=$(awsr cloudformation describe-stacks --stack-name "$1" \
        --query "Stacks[0].Outputs[?OutputKey=='$2'].OutputValue | [0]" --output text 2>/dev/null) || true
    [[ $value == None ]] && value=
    printf '%s\n' "$value"
}

# The reasons CloudFormation gave for what failed, newest first: what to read when a stack
# operation did not succeed.
stack_failures() {
    awsr cloudformation describe-stack-events --stack-name "$1" --max-items 40 \
        --query "StackEvents[?contains(ResourceStatus, 'FAILED')].[LogicalResourceId, ResourceStatus, ResourceStatusReason]" \
        --output text 2>/dev/null | head -n 15 >&2 || true
}

# `json_string VALUE`: VALUE as a JSON string literal.
json_string() {
    local value=$1
    value=${value//\\/\\\\}
    value=${value//\"/\\\"}
    printf '"%s"' "$value"
}
