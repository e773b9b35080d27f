#!/usr/bin/env bash
# ceph's S3 conformance suite (https://github.com/ceph/s3-tests) against `s3-compressor serve`
# and against moto, on its object, listing, multipart and copy tests: what a client of an S3
# endpoint relies on. Prints each store's summary and the tests that fail on serve but pass on
# moto. docs/development.md ("S3 conformance") has the last results and why each failure stays.
#
#   git clone https://github.com/ceph/s3-tests /tmp/s3-tests
#   serve/s3-tests/run.sh /tmp/s3-tests [S3_COMPRESSOR_BINARY]
#
# Needs python3 (for a virtualenv of the suite's own, made in the checkout) and moto_server.
# The suite's harness empties its buckets through ListObjectVersions, which serve does not
# have; a shim (harness-shim.py) makes it list the objects instead, on every store alike.
set -euo pipefail

suite=$(cd "${1:?the path of an s3-tests checkout}" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
binary=${2:-$here/../../target/release/s3-compressor}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

[ -x "$suite/.venv/bin/pytest" ] || {
    python3 -m venv "$suite/.venv"
    "$suite/.venv/bin/pip" install --quiet -r "$suite/requirements.txt"
}
python3 "$here/harness-shim.py" "$suite/s3tests/functional/__init__.py"

# The tests selected: objects, listings, multipart uploads and copies, without the features
# serve does not offer and S3-compatible clients do not need for them (ACLs, policies,
# versioning, encryption, object lock, IAM, tagging, lifecycle, logging, website).
keywords="test_bucket_list or test_bucket_listv2 or test_multipart or test_object_copy or \
test_object_write or test_object_read or test_object_head or test_object_put or \
test_abort_multipart or test_list_multipart or test_upload_part"
markers="not (fails_on_aws or encryption or bucket_policy or versioning or lifecycle or \
tagging or object_lock or sse_s3 or checksum or iam_account or iam_tenant or iam_user or \
s3website or appendobject or bucket_logging or storage_class or fails_with_subdomain or \
auth_aws2 or fails_on_rgw or user_policy or session_policy or group or role_policy or \
abac_test or cloud_transition or cloud_restore or s3select or sns)"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { until (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do sleep 0.2; done; }

# NAME PORT ACCESS SECRET ALT_ACCESS ALT_SECRET: the suite's config for a store.
config() {
    sed -e "s/@PORT@/$2/" -e "s/@ACCESS@/$3/" -e "s/@SECRET@/$4/" \
        -e "s/@ALT_ACCESS@/$5/" -e "s/@ALT_SECRET@/$6/" "$here/s3tests.conf.in" >"$work/$1.conf"
}

# NAME: runs the selection against the store configured as NAME, failures into NAME.failed.
run_suite() {
    (
        cd "$suite"
        S3TEST_CONF="$work/$1.conf" .venv/bin/pytest s3tests/functional/test_s3.py \
            -k "$keywords" -m "$markers" -q -p no:cacheprovider -rfE >"$work/$1.log" 2>&1 || true
    )
    grep -E '^(FAILED|ERROR) ' "$work/$1.log" | sed 's/ - .*//' | sort >"$work/$1.failed" || true
    printf '%-6s %s\n' "$1:" "$(tail -1 "$work/$1.log")"
}

port=$(free_port)
moto_server -H 127.0.0.1 -p "$port" >"$work/moto.out" 2>&1 &
wait_for "$port"
config moto "$port" testing testing alt alt-secret
run_suite moto
kill %1

# serve has one key pair, so the suite's other users are the same one.
port=$(free_port)
"$binary" serve --addr "127.0.0.1:$port" --data "$work/data" >"$work/serve.out" 2>&1 &
wait_for "$port"
config serve "$port" s3-compressor s3-compressor-secret s3-compressor s3-compressor-secret
run_suite serve
kill -INT %2

echo "fail on serve, pass on moto:"
comm -23 "$work/serve.failed" "$work/moto.failed" | sed 's/.*:://'
