# s3-compressor as an AWS Lambda container image: one static x86_64 musl binary on an empty
# base, the CA certificates its TLS client needs for S3, and the deployed config.
#
# The binary is built beforehand, outside Docker (fast, cached, no toolchain image to pull);
# cloudformation/deploy.sh does all of this. By hand, from the repository root:
#
#   rustup target add x86_64-unknown-linux-musl && apt-get install -y musl-tools
#   cargo build --profile image --target x86_64-unknown-linux-musl -p s3-compressor
#   mkdir -p target/lambda-image && cp /etc/ssl/certs/ca-certificates.crt \
#       target/x86_64-unknown-linux-musl/image/s3-compressor target/lambda-image/
#   docker build --platform linux/amd64 --provenance=false -t s3-compressor .
#
# --provenance=false and one --platform make `docker push` upload a single image manifest;
# Lambda rejects an image index (what BuildKit pushes with attestations or several platforms).
FROM scratch

LABEL org.opencontainers.image.title="s3-compressor" \
      org.opencontainers.image.description="Compresses files uploaded to S3 (AWS Lambda function)"

# The trust store: the binary reads SSL_CERT_FILE (and this path is also the one it probes).
COPY target/lambda-image/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# Changing the rules means a new image: deploy.sh derives the S3 trigger and the IAM prefixes
# from the same file, so the function and its permissions never disagree.
COPY config/compressor.toml /etc/s3-compressor/compressor.toml
COPY target/lambda-image/s3-compressor /s3-compressor

ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    S3_COMPRESSOR_CONFIG=/etc/s3-compressor/compressor.toml

# Lambda runs the image as a user of its own; this keeps `docker run` from running as root too.
USER 65534:65534

# `lambda` serves the Runtime API; `docker run --rm IMAGE check-config` shows the baked-in rules.
ENTRYPOINT ["/s3-compressor"]
CMD ["lambda"]
