#!/usr/bin/env bash
# Removes everything deploy.sh made: the bucket's notifications, every object version and
# delete marker in it, the images in ECR, the stacks file-compression-lambda and
# file-compression-infra (the function, its versions, alias, role, log group, its queues — the
# failure queue and, with the queue trigger, the buffer queue, its dead-letter queue and event
# source mapping, with any messages in them — the large-object tasks' cluster, task definition
# and log group, stopping tasks still running, the repository, the VPC, its endpoints and the
# bucket).
#
#   ./cloudformation/cleanup.sh [--region REGION] [--yes]
#
# Asks first unless --yes. Safe to run again: what is already gone counts as done.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

usage() {
    cat <<EOF
Usage: $0 [--region REGION] [--yes]

Deletes the stacks $LAMBDA_STACK and $INFRA_STACK and everything in them, including every
object (and every version of every object) in the bucket and every image in the repository.
This cannot be undone.

  --region REGION   AWS region (default: \$AWS_REGION, \$AWS_DEFAULT_REGION, else us-east-1)
  --yes             do not ask (needed when not run from a terminal)
  -h, --help        this help
EOF
}

while (($#)); do
    case $1 in
        --region) REGION=${2:?--region needs a value}; shift 2 ;;
        --region=*) REGION=${1#*=}; shift ;;
        --yes | -y) YES=true; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done

# The bucket of the infra stack: its output, else the physical id of its Bucket resource.
infra_bucket() {
    local bucket
    bucket=$(stack_output "$INFRA_STACK" S3BucketName)
    if [[ -z $bucket ]]; then
        bucket=$(awsr cloudformation describe-stack-resource --stack-name "$INFRA_STACK" \
            --logical-resource-id Bucket --query 'StackResourceDetail.PhysicalResourceId' \
            --output text 2>/dev/null) || bucket=
    fi
    [[ $bucket == None ]] && bucket=
    printf '%s\n' "$bucket"
}

bucket_exists() {
    awsr s3api head-bucket --bucket "$1" >/dev/null 2>&1
}

# Deletes every version and delete marker, 1000 at a time (DeleteObjects' limit), and aborts
# unfinished multipart uploads. Lists from the start each round, as what was deleted is gone.
empty_bucket() {
    local bucket=$1 batch count total=0
    batch=$(mktemp)
    # shellcheck disable=SC2064 # expand now: the local is gone when the trap runs
    trap "rm -f '$batch'" RETURN
    while :; do
        # shellcheck disable=SC2016 # backquotes are JMESPath literals
        awsr s3api list-object-versions --bucket "$bucket" --max-items 1000 --output json \
            --query '{Objects: [Versions || `[]`, DeleteMarkers || `[]`][].{Key: Key, VersionId: VersionId}, Quiet: `true`}' \
            >"$batch"
        count=$(grep -c '"Key"' "$batch" || true)
        ((count > 0)) || break
        local errors
        errors=$(awsr s3api delete-objects --bucket "$bucket" --delete "file://$batch" \
            --query 'Errors[].[Key, VersionId, Code, Message]' --output text)
        [[ -z $errors || $errors == None ]] || die "could not delete some objects of $bucket:" "$errors"
        total=$((total + count))
        note "deleted $total object versions and delete markers so far"
    done
    local key upload
    while IFS=$'\t' read -r key upload; do
        [[ -n $key && $key != None ]] || continue
        awsr s3api abort-multipart-upload --bucket "$bucket" --key "$key" --upload-id "$upload"
        note "aborted the unfinished upload of $key"
    done < <(awsr s3api list-multipart-uploads --bucket "$bucket" \
        --query 'Uploads[].[Key, UploadId]' --output text)
}

delete_images() {
    local ids
    while :; do
        ids=$(awsr ecr list-images --repository-name "$REPOSITORY" --max-items 100 \
            --query 'imageIds' --output json 2>/dev/null) || return 0
        [[ $ids == *imageDigest* || $ids == *imageTag* ]] || return 0
        awsr ecr batch-delete-image --repository-name "$REPOSITORY" --image-ids "$ids" \
            --query 'length(imageIds)' --output text | sed 's/^/    deleted images: /' >&2
    done
}

# The large-object tasks still running (LargeObjects 'fargate'): ECS deletes no cluster with
# tasks in it. A stopped task leaves its source in place; only a verified output removes it.
stop_tasks() {
    local cluster task tasks=()
    cluster=$(stack_output "$LAMBDA_STACK" LargeObjectsClusterArn)
    [[ -n $cluster ]] || return 0
    while IFS= read -r task; do
        [[ -n $task && $task != None ]] || continue
        awsr ecs stop-task --cluster "$cluster" --task "$task" \
            --reason "s3-compressor cleanup.sh" >/dev/null
        note "stopping the task $task"
        tasks+=("$task")
    done < <(awsr ecs list-tasks --cluster "$cluster" --query 'taskArns[]' --output text | tr '\t' '\n')
    ((${#tasks[@]} == 0)) || awsr ecs wait tasks-stopped --cluster "$cluster" --tasks "${tasks[@]}"
}

# Deletes a stack and waits; one that does not exist is already deleted.
delete_stack() {
    local stack=$1 status
    status=$(stack_status "$stack")
    if [[ $status == NONE ]]; then
        note "$stack: already gone"
        return
    fi
    note "$stack: deleting ($status)"
    local out
    if ! out=$(awsr cloudformation delete-stack --stack-name "$stack" 2>&1); then
        # moto_server answers DependencyViolation for its VPC yet deletes the stack; AWS reports
        # failures in the stack's status, which the wait below reads.
        [[ $(stack_status "$stack") == NONE ]] || die "deleting $stack failed: $out"
        note "$stack: DeleteStack answered '$out', but the stack is gone"
    fi
    if ! awsr cloudformation wait stack-delete-complete --stack-name "$stack"; then
        stack_failures "$stack"
        die "deleting $stack did not finish (reasons above)." \
            "A VPC function's network interfaces can take up to 45 minutes to be released after" \
            "the function is deleted; the subnets and security group wait for them. Run this again later."
    fi
    note "$stack: deleted"
}

main() {
    need aws "Install the AWS CLI: https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html"
    local account
    account=$(caller_account)
    log "removing s3-compressor from account $account, region $REGION"
    note "stacks $LAMBDA_STACK and $INFRA_STACK, the ECR repository $REPOSITORY with its images,"
    note "and the bucket with EVERY object and object version in it. This cannot be undone."
    if [[ $YES != true ]]; then
        [[ -t 0 ]] || die "not asking without a terminal; pass --yes to delete all of it."
        local answer
        read -r -p "Type 'delete' to go on: " answer
        [[ $answer == delete ]] || die "stopped; nothing was deleted."
    fi

    local bucket
    bucket=$(infra_bucket)
    if [[ -n $bucket ]] && bucket_exists "$bucket"; then
        log "bucket $bucket"
        # First, so that nothing invokes the function (or fills the buffer queue) while it goes
        # away.
        awsr s3api put-bucket-notification-configuration --bucket "$bucket" \
            --notification-configuration '{}'
        note "notifications removed"
        empty_bucket "$bucket"
    else
        note "no bucket to empty"
    fi

    log "images in $REPOSITORY"
    delete_images

    log "large-object tasks"
    stop_tasks

    log "stacks"
    delete_stack "$LAMBDA_STACK"
    # Lambda would recreate the log group on a late invocation only with a role that may; this
    # one may not, but remove a leftover all the same.
    if awsr logs describe-log-groups --log-group-name-prefix "/aws/lambda/$FUNCTION" \
        --query 'logGroups[].logGroupName' --output text 2>/dev/null | grep -qx "/aws/lambda/$FUNCTION"; then
        awsr logs delete-log-group --log-group-name "/aws/lambda/$FUNCTION"
        note "deleted the leftover log group /aws/lambda/$FUNCTION"
    fi
    # Objects written after the first pass (an invocation still running) would keep the bucket.
    if [[ -n $bucket ]] && bucket_exists "$bucket"; then
        empty_bucket "$bucket"
    fi
    delete_stack "$INFRA_STACK"

    if [[ -n $bucket ]] && bucket_exists "$bucket"; then
        die "the bucket $bucket still exists after its stack was deleted." \
            "Empty and delete it by hand: aws s3 rb s3://$bucket --force (versions need the console or this script)."
    fi
    log "done: s3-compressor is gone from $REGION"
}

main
