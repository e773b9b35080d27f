use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnectionBuilder;
use hyper_util::server::graceful::GracefulShutdown;
use s3s::service::{S3Service, S3ServiceBuilder};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::auth::SingleKey;
use crate::disk::Disk;
use crate::store::Store;
use crate::{Removal, ServeError, Upload};

/// How many completed uploads may wait for the receiver before uploads themselves wait.
///
/// A notice is never dropped: when the queue is full, the client's PutObject or
/// CompleteMultipartUpload is answered only once its notice fits. This bounds memory, and a
/// consumer that falls behind slows uploaders down instead of losing work.
pub const UPLOAD_QUEUE: usize = 256;

/// After a failed `accept` (out of file descriptors, typically), wait this long before the next
/// one rather than spinning on the same error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Where and how to serve.
#[derive(Clone)]
pub struct ServeOptions {
    /// The address to listen on; port 0 picks a free port (see [`EmbeddedS3::local_addr`]).
    /// Only this address is bound: `127.0.0.1` keeps the endpoint private to the machine.
    pub addr: SocketAddr,
    /// Holds one folder per bucket, and the objects in it under names of their own (see the
    /// layout in `disk.rs`). Created if missing; a folder written by the previous storage,
    /// `s3s-fs`, is migrated on start.
    pub data_dir: PathBuf,
    /// Created (as the folder `data_dir/bucket`) if missing. Clients may create more buckets.
    pub bucket: String,
    /// The one identity accepted; every request must be signed with it (SigV4).
    pub access_key: String,
    pub secret_key: String,
    /// Only uploads whose key starts with one of these are announced; none announces every
    /// upload. Like the prefix filter of an S3 event notification, it keeps a consumer's own
    /// writes elsewhere from being announced to it: a consumer that waits for its writes while
    /// not draining the queue would otherwise deadlock once the queue filled.
    pub announce_prefixes: Vec<String>,
}

/// The secret stays out of logs.
impl fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeOptions")
            .field("addr", &self.addr)
            .field("data_dir", &self.data_dir)
            .field("bucket", &self.bucket)
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("announce_prefixes", &self.announce_prefixes)
            .finish()
    }
}

/// An S3-compatible endpoint serving a directory from inside this process.
///
/// Dropping it without [`shutdown`](Self::shutdown) also stops accepting connections; the
/// requests in flight then finish in the background.
#[derive(Debug)]
pub struct EmbeddedS3 {
    local_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    serving: JoinHandle<()>,
}

impl EmbeddedS3 {
    /// Creates `data_dir` and the bucket (a folder) if missing, binds, and starts serving in a
    /// spawned task.
    ///
    /// The receiver gets one [`Upload`] per successful PutObject or CompleteMultipartUpload. Keep
    /// draining it (or drop it): while its queue is full, uploads wait (see [`UPLOAD_QUEUE`]).
    /// It ends (`recv` gives `None`) once the server has shut down and every notice was taken.
    pub async fn start(
        options: ServeOptions,
    ) -> Result<(EmbeddedS3, mpsc::Receiver<Upload>), ServeError> {
        let (server, uploads, _removals) = Self::start_with_removals(options).await?;
        Ok((server, uploads))
    }

    /// [`start`](Self::start), and a second receiver that gets one [`Removal`] per key that
    /// DeleteObject or DeleteObjects removed, under the same prefixes as the uploads. Its queue
    /// is as long as the uploads' and a full one holds up deletes the same way, so drain it
    /// without waiting on anything else, and drop it once it is no longer drained.
    pub async fn start_with_removals(
        options: ServeOptions,
    ) -> Result<(EmbeddedS3, mpsc::Receiver<Upload>, mpsc::Receiver<Removal>), ServeError> {
        let ServeOptions {
            addr,
            data_dir,
            bucket,
            access_key,
            secret_key,
            announce_prefixes,
        } = options;
        if !s3s::path::check_bucket_name(&bucket) {
            return Err(ServeError::InvalidBucketName { bucket });
        }
        if access_key.is_empty() {
            return Err(ServeError::EmptyCredential { which: "access" });
        }
        if secret_key.is_empty() {
            return Err(ServeError::EmptyCredential { which: "secret" });
        }

        let root = prepare_dir(&data_dir).await?;
        let disk = Disk::open(root.clone())
            .await
            .map_err(|source| ServeError::OpenStore {
                path: root.clone(),
                source,
            })?;
        disk.create_bucket(&bucket)
            .await
            .map_err(|source| ServeError::CreateBucket {
                bucket: bucket.clone(),
                path: root.join(&bucket),
                source,
            })?;
        let (uploads, received) = mpsc::channel(UPLOAD_QUEUE);
        let (removals, removed) = mpsc::channel(UPLOAD_QUEUE);
        let store = Store::new(disk, uploads, removals, announce_prefixes);
        let service = {
            let mut builder = S3ServiceBuilder::new(store);
            builder.set_auth(SingleKey::new(access_key, secret_key));
            builder.build()
        };

        let listener = TcpListener::bind(addr).await.map_err(|source| {
            if source.kind() == io::ErrorKind::AddrInUse {
                ServeError::AddrInUse { addr }
            } else {
                ServeError::Bind { addr, source }
            }
        })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| ServeError::Bind { addr, source })?;

        let (stop, stopped) = oneshot::channel();
        let serving = tokio::spawn(serve(listener, service, stopped));
        let server = EmbeddedS3 {
            local_addr,
            stop,
            serving,
        };
        tracing::info!(
            endpoint = %server.endpoint_url(),
            %bucket,
            data_dir = %root.display(),
            "embedded S3 endpoint is serving"
        );
        Ok((server, received, removed))
    }

    /// The address actually bound (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL a client is given, `http://127.0.0.1:PORT`. When listening on every interface
    /// (`0.0.0.0`, `::`), it names the loopback address, which a local client can connect to.
    pub fn endpoint_url(&self) -> String {
        let ip = match self.local_addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.local_addr.port()))
    }

    /// Stops accepting connections and waits for in-flight requests to finish (graceful), then
    /// returns.
    ///
    /// Idle keep-alive connections are closed at once. A client that never finishes its request
    /// keeps this waiting; wrap it in `tokio::time::timeout` to bound the wait.
    pub async fn shutdown(self) {
        // An error means the serving task has already ended: nothing left to stop.
        let _ = self.stop.send(());
        if let Err(error) = self.serving.await {
            tracing::error!(%error, "the embedded S3 server task failed");
        }
    }
}

/// Creates the data directory; returns its canonical path, the one its storage is known by
/// in this process.
async fn prepare_dir(data_dir: &Path) -> Result<PathBuf, ServeError> {
    let data_dir_error = |source| ServeError::CreateDataDir {
        path: data_dir.to_owned(),
        source,
    };
    tokio::fs::create_dir_all(data_dir)
        .await
        .map_err(data_dir_error)?;
    tokio::fs::canonicalize(data_dir)
        .await
        .map_err(data_dir_error)
}

/// Accepts connections until `stop` fires (or its sender is dropped), then waits for the
/// connections to finish their requests.
async fn serve(listener: TcpListener, service: S3Service, mut stop: oneshot::Receiver<()>) {
    let connections = ConnectionBuilder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    // Responses go out as several small writes (head, then body): with Nagle's
                    // algorithm on, the second waits for the client's delayed ACK, 40 ms.
                    if let Err(error) = socket.set_nodelay(true) {
                        tracing::debug!(%peer, %error, "could not disable Nagle's algorithm");
                    }
                    let connection = connections.serve_connection(TokioIo::new(socket), service.clone());
                    let connection = graceful.watch(connection.into_owned());
                    tokio::spawn(async move {
                        if let Err(error) = connection.await {
                            tracing::debug!(%peer, %error, "connection closed with an error");
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "could not accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    // Closing the listener refuses new connections; dropping our handle on the service lets the
    // upload channel close once the last connection is done with it.
    drop(listener);
    drop(service);
    tracing::info!(
        connections = graceful.count(),
        "embedded S3 endpoint stopped accepting; finishing requests in flight"
    );
    graceful.shutdown().await;
    tracing::info!("embedded S3 endpoint stopped");
}
