//! The one key pair a server accepts.
//!
//! `s3s`'s `SimpleAuth` answers an unknown access key with `NotSignedUp: Your account is not
//! signed up`, which sends a user looking for an account that does not exist. S3 answers
//! `InvalidAccessKeyId`; we do too, and name the settings that must agree.

use s3s::auth::{S3Auth, SecretKey};
use s3s::{s3_error, S3Result};

pub(crate) struct SingleKey {
    access_key: String,
    secret_key: SecretKey,
}

impl SingleKey {
    pub(crate) fn new(access_key: String, secret_key: String) -> Self {
        Self {
            access_key,
            secret_key: secret_key.into(),
        }
    }
}

#[async_trait::async_trait]
impl S3Auth for SingleKey {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<SecretKey> {
        if access_key == self.access_key {
            return Ok(self.secret_key.clone());
        }
        Err(s3_error!(
            InvalidAccessKeyId,
            "The access key ID {access_key:?} is not this server's. Set the client's access key \
             (AWS_ACCESS_KEY_ID) to the server's: `s3-compressor serve --access-key`, or \
             S3_COMPRESSOR_ACCESS_KEY, default \"s3-compressor\". A wrong secret key instead \
             gets SignatureDoesNotMatch: the client's AWS_SECRET_ACCESS_KEY must be the \
             server's --secret-key (S3_COMPRESSOR_SECRET_KEY)."
        ))
    }
}
