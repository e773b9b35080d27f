//! A request body that can still be read after the operation it was handed to gave up on it.
//!
//! When `s3s-fs` stops writing a body half-way (the disk is full), the rest of it is still on
//! its way. Answered at once, the client would still be sending: hyper closes such a
//! connection, and the client sees a reset instead of the S3 error. [`Leftover::drain`] reads
//! and discards the rest first, so the answer arrives whole.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use s3s::dto::StreamingBlob;
use s3s::stream::{ByteStream, RemainingLength};
use s3s::StdError;

/// The body as handed to `s3s-fs`, read through the same lock as its [`Leftover`].
#[derive(Debug)]
struct Shared(Arc<Mutex<StreamingBlob>>);

/// What `s3s-fs` did not read of a body.
#[derive(Debug)]
pub(crate) struct Leftover(Arc<Mutex<StreamingBlob>>);

/// Splits `body` into the body to hand over and a handle on whatever it leaves unread.
pub(crate) fn share(body: StreamingBlob) -> (StreamingBlob, Leftover) {
    let shared = Arc::new(Mutex::new(body));
    (
        StreamingBlob::new(Shared(Arc::clone(&shared))),
        Leftover(shared),
    )
}

fn locked(body: &Mutex<StreamingBlob>) -> MutexGuard<'_, StreamingBlob> {
    // A panic while polling leaves a stream that at worst ends early; nothing to protect.
    body.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Stream for Shared {
    type Item = Result<Bytes, StdError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        locked(&self.0).poll_next_unpin(cx)
    }
}

impl ByteStream for Shared {
    fn remaining_length(&self) -> RemainingLength {
        locked(&self.0).remaining_length()
    }
}

impl Leftover {
    /// Reads the rest of the body (at most its Content-Length: s3s ends the stream there) and
    /// discards it; returns how many bytes that was. A body that breaks off ends the drain.
    pub(crate) async fn drain(self) -> u64 {
        let mut drained = 0u64;
        std::future::poll_fn(|cx| loop {
            match locked(&self.0).poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(bytes))) => drained += bytes.len() as u64,
                Poll::Ready(Some(Err(_)) | None) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        })
        .await;
        drained
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn what_the_consumer_left_is_drained_and_counted() {
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            (0..5).map(|n| Ok(Bytes::from(vec![n; 1000]))).collect();
        let (mut body, leftover) = share(StreamingBlob::wrap(futures::stream::iter(chunks)));
        let first = body.next().await.expect("a chunk").expect("no error");
        assert_eq!(first.len(), 1000);
        drop(body);
        assert_eq!(leftover.drain().await, 4000);
    }
}
