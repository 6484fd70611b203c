//! One IRC server connection as a byte stream: plain TCP or TLS (OpenSSL,
//! certificate and host name verified unless configured otherwise), shared
//! between the connection thread (which reads and answers PINGs) and the
//! send thread (which writes message lines).
//!
//! A TLS stream cannot be split into a reading and a writing half, so the
//! stream sits behind one lock, and nobody holds the lock while waiting:
//! the reader waits for bytes with `peek` on a clone of the socket (no
//! lock), then takes the lock and reads, non-blocking, whatever is there.
//! Writers hold the lock only for one line (bounded by the write timeout).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use openssl::ssl::{HandshakeError, SslConnector, SslMethod, SslStream, SslVerifyMode};

use crate::settings::BotSettings;

/// How long a write may block before the connection is given up (a server
/// that stopped reading).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes read from the socket at once.
const CHUNK: usize = 4096;

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The host name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The host.
        host: String,
        /// The resolver's error.
        source: io::Error,
    },
    /// No address accepted a TCP connection in time.
    #[error("cannot connect to {host}:{port}: {reason}")]
    Connect {
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// The last address's error.
        reason: String,
    },
    /// The TLS handshake failed (certificate not trusted, wrong host name,
    /// protocol error).
    #[error("TLS with {host} failed: {reason}")]
    Tls {
        /// The host.
        host: String,
        /// What OpenSSL said, with the certificate verdict.
        reason: String,
    },
}

/// Builds the TLS client of a bot once, at start, so that a bad `ssl_ca`
/// stops the start instead of every connection.
///
/// # Errors
///
/// OpenSSL could not be set up or the CA file could not be read.
pub fn tls_connector(
    bot: &BotSettings,
) -> Result<Option<SslConnector>, openssl::error::ErrorStack> {
    if !bot.ssl {
        return Ok(None);
    }
    let mut builder = SslConnector::builder(SslMethod::tls_client())?;
    if let Some(ca) = &bot.ssl_ca {
        builder.set_ca_file(ca)?;
    }
    if !bot.ssl_verify {
        builder.set_verify(SslVerifyMode::NONE);
    }
    Ok(Some(builder.build()))
}

/// The stream under the lock.
enum Stream {
    Plain(TcpStream),
    Tls(Box<SslStream<TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buf),
            Stream::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write(buf),
            Stream::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(tcp) => tcp.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

/// What [`Connection::read_available`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many bytes were appended (possibly 0: TLS records without data).
    Data(usize),
    /// The server closed the connection.
    Closed,
}

/// A connected (and, with TLS, handshaken) server connection.
pub struct Connection {
    stream: Mutex<Stream>,
    /// A second handle on the socket: waiting for bytes and shutting down
    /// need no lock.
    watcher: TcpStream,
    tls: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.watcher.peer_addr().ok())
            .field("tls", &self.tls)
            .finish()
    }
}

impl Connection {
    /// Resolves, connects (each address in turn, `bot.timeout` each) and,
    /// with TLS, handshakes (within the same timeout).
    ///
    /// # Errors
    ///
    /// Resolution, connection or TLS failed.
    pub fn open(bot: &BotSettings, tls: Option<&SslConnector>) -> Result<Connection, ConnectError> {
        let host = bot.network.as_str();
        let addrs: Vec<_> = (host, bot.port)
            .to_socket_addrs()
            .map_err(|source| ConnectError::Resolve {
                host: host.to_owned(),
                source,
            })?
            .collect();
        let mut last = "no address".to_owned();
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, bot.timeout) {
                Ok(stream) => {
                    tcp = Some(stream);
                    break;
                }
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        let tcp = tcp.ok_or_else(|| ConnectError::Connect {
            host: host.to_owned(),
            port: bot.port,
            reason: last,
        })?;
        let io_failure = |e: io::Error| ConnectError::Connect {
            host: host.to_owned(),
            port: bot.port,
            reason: e.to_string(),
        };
        // Lines are small and latency matters more than packet count.
        tcp.set_nodelay(true).map_err(io_failure)?;
        let watcher = tcp.try_clone().map_err(io_failure)?;
        let stream = match tls {
            None => Stream::Plain(tcp),
            Some(connector) => {
                // The handshake blocks: bound it by the connect timeout.
                tcp.set_read_timeout(Some(bot.timeout))
                    .map_err(io_failure)?;
                tcp.set_write_timeout(Some(bot.timeout))
                    .map_err(io_failure)?;
                let tls_failure = |reason: String| ConnectError::Tls {
                    host: host.to_owned(),
                    reason,
                };
                let config = connector
                    .configure()
                    .map_err(|e| tls_failure(e.to_string()))?
                    .verify_hostname(bot.ssl_verify);
                match config.connect(host, tcp) {
                    Ok(tls) => Stream::Tls(Box::new(tls)),
                    Err(HandshakeError::Failure(mid)) => {
                        let verdict = mid.ssl().verify_result();
                        let reason = if verdict == openssl::x509::X509VerifyResult::OK {
                            mid.error().to_string()
                        } else {
                            format!("certificate not accepted: {verdict}")
                        };
                        return Err(tls_failure(reason));
                    }
                    Err(HandshakeError::SetupFailure(e)) => return Err(tls_failure(e.to_string())),
                    Err(HandshakeError::WouldBlock(_)) => {
                        return Err(tls_failure("handshake timed out".into()))
                    }
                }
            }
        };
        stream
            .tcp()
            .set_write_timeout(Some(WRITE_TIMEOUT))
            .map_err(io_failure)?;
        stream.tcp().set_read_timeout(None).map_err(io_failure)?;
        Ok(Connection {
            stream: Mutex::new(stream),
            watcher,
            tls: tls.is_some(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Stream> {
        // A panic while writing leaves at worst half a line on the wire,
        // which the server rejects; the stream itself stays usable.
        self.stream.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes one whole line (already CRLF-terminated).
    ///
    /// # Errors
    ///
    /// The write failed or timed out: the connection is unusable.
    pub fn send(&self, line: &str) -> io::Result<()> {
        let mut stream = self.lock();
        stream.write_all(line.as_bytes())?;
        stream.flush()
    }

    /// Like [`send`](Self::send), but gives up at once if a writer holds
    /// the lock (a QUIT at shutdown must not wait behind a stuck write).
    pub fn try_send(&self, line: &str) -> io::Result<()> {
        match self.stream.try_lock() {
            Ok(mut stream) => {
                stream.write_all(line.as_bytes())?;
                stream.flush()
            }
            Err(_) => Err(io::Error::new(io::ErrorKind::WouldBlock, "busy")),
        }
    }

    /// Waits up to `timeout` for bytes from the server; true when some
    /// (or the end of the stream) are there.
    ///
    /// # Errors
    ///
    /// The socket failed.
    pub fn wait_readable(&self, timeout: Duration) -> io::Result<bool> {
        self.watcher
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let mut probe = [0u8; 1];
        match self.watcher.peek(&mut probe) {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Reads everything available now (without waiting) into `buf`, up to
    /// `limit` bytes in `buf`.
    ///
    /// # Errors
    ///
    /// The socket or TLS failed.
    pub fn read_available(&self, buf: &mut Vec<u8>, limit: usize) -> io::Result<ReadOutcome> {
        let mut stream = self.lock();
        // Non-blocking only while the lock is held, so writers (who also
        // hold it) always see a blocking socket with its write timeout.
        stream.tcp().set_nonblocking(true)?;
        let result = read_now(&mut stream, buf, limit);
        let restored = stream.tcp().set_nonblocking(false);
        let outcome = result?;
        restored?;
        Ok(outcome)
    }

    /// Closes the socket in both directions: the reader sees the end of
    /// the stream, a blocked writer an error.
    pub fn shutdown(&self) {
        let _ = self.watcher.shutdown(Shutdown::Both);
    }
}

fn read_now(stream: &mut Stream, buf: &mut Vec<u8>, limit: usize) -> io::Result<ReadOutcome> {
    let mut total = 0;
    let mut chunk = [0u8; CHUNK];
    while buf.len() < limit {
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(ReadOutcome::Closed),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                total += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(ReadOutcome::Data(total))
}
