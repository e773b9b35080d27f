//! An S3-compatible endpoint served in-process from a directory.
//!
//! `s3-compressor serve` uses it so anyone can try the product without an AWS account: point
//! the AWS CLI or an SDK at [`EmbeddedS3::endpoint_url`] (path-style addressing), upload under
//! `incoming/`, and the worker hears of every completed upload through the [`Upload`] channel
//! that [`EmbeddedS3::start`] returns, the way it would hear of an S3 event notification.
//!
//! The storage is `s3s-fs` (objects are plain files under `DATA_DIR/BUCKET/`), served by `s3s`
//! with SigV4 authentication. This crate adds what the worker relies on and `s3s-fs` lacks:
//! conditional deletes (`If-Match`), conditional reads, atomic create-only writes
//! (`If-None-Match: *`) and the upload notices. See `store.rs` for the full list.

mod auth;
mod body;
mod completed;
mod conditions;
mod error;
mod keys;
mod layout;
mod listing;
mod locks;
mod server;
mod store;
mod upload;

pub use error::ServeError;
pub use server::{EmbeddedS3, ServeOptions, UPLOAD_QUEUE};
pub use upload::{Removal, Upload};
