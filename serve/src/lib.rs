//! An S3-compatible endpoint served in-process from a directory.
//!
//! `s3-compressor serve` uses it so anyone can try the product without an AWS account: point
//! the AWS CLI or an SDK at [`EmbeddedS3::endpoint_url`] (path-style addressing), upload under
//! `incoming/`, and the worker hears of every completed upload through the [`Upload`] channel
//! that [`EmbeddedS3::start`] returns, the way it would hear of an S3 event notification.
//!
//! `s3s` speaks the protocol, with SigV4 authentication; the storage is this crate's own: a
//! folder per bucket, each object a data file and a small JSON record named after a hash of its
//! key, so that every key S3 allows (up to 1,024 bytes, `a` beside `a/b`, `dir/` with bytes)
//! can be stored, and an index in memory that answers listings in S3's order (see `disk.rs`).
//! Writes are atomic, bodies stream, and the MD5 ETags and the checksums a client asks for are
//! kept and answered. A data directory written by the previous storage, `s3s-fs`, is migrated
//! on start. Besides, what the worker relies on: conditional deletes (`If-Match`), conditional
//! reads, create-only writes (`If-None-Match: *`) and the upload notices. See `store.rs` for
//! the full list.

mod auth;
mod completed;
mod conditions;
mod disk;
mod error;
mod index;
mod listing;
mod locks;
mod migrate;
mod record;
mod server;
mod store;
mod upload;

pub use disk::DiskError;
pub use error::ServeError;
pub use server::{EmbeddedS3, ServeOptions, UPLOAD_QUEUE};
pub use upload::{Removal, Upload};
