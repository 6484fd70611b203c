//! The optional link shortener (`irc_shortener_url`).
//!
//! fedmsg called da.gd by default, synchronously in the consumer thread (up
//! to 3 s per link). Ours is off unless configured (no external service is
//! contacted by default), runs only on a connection's send thread (so
//! `consume` never waits for it), and any failure keeps the full link.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

/// How long one shortening may take.
pub const TIMEOUT: Duration = Duration::from_secs(3);

/// The longest answer taken as a short link.
const MAX_ANSWER: u64 = 2048;

/// Why a link was not shortened.
#[derive(Debug, thiserror::Error)]
pub enum ShortenError {
    /// No TLS client could be made.
    #[error("cannot make a TLS client: {0}")]
    Tls(String),
    /// The request failed (connect, timeout, TLS).
    #[error("request failed: {0}")]
    Request(String),
    /// The service answered with another status than 200.
    #[error("HTTP status {0}")]
    Status(u16),
    /// The answer was not a link.
    #[error("the answer is not an http(s) link")]
    NotALink,
}

/// A shortener service: `template` with `{url}` replaced by the
/// percent-encoded link; the answer's body (trimmed) is the short link.
#[derive(Debug, Clone)]
pub struct Shortener {
    template: String,
    agent: ureq::Agent,
}

impl Shortener {
    /// A client for `template` (checked by the settings: http(s), `{url}`).
    ///
    /// # Errors
    ///
    /// The system's TLS library cannot make a client.
    pub fn new(template: &str) -> Result<Shortener, ShortenError> {
        let tls = native_tls::TlsConnector::new().map_err(|e| ShortenError::Tls(e.to_string()))?;
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(TIMEOUT)
            .timeout(TIMEOUT)
            .tls_connector(Arc::new(tls))
            .build();
        Ok(Shortener {
            template: template.to_owned(),
            agent,
        })
    }

    /// The short form of `link`.
    ///
    /// # Errors
    ///
    /// The service failed, answered another status than 200, or answered
    /// something that is not a link.
    pub fn shorten(&self, link: &str) -> Result<String, ShortenError> {
        let encoded = utf8_percent_encode(link, NON_ALPHANUMERIC).to_string();
        let url = self.template.replace("{url}", &encoded);
        let response = match self.agent.get(&url).call() {
            Ok(response) => response,
            Err(ureq::Error::Status(status, _)) => return Err(ShortenError::Status(status)),
            Err(ureq::Error::Transport(e)) => return Err(ShortenError::Request(e.to_string())),
        };
        // Upstream used a non-200 body as the link; only 200 counts here.
        if response.status() != 200 {
            return Err(ShortenError::Status(response.status()));
        }
        let mut answer = String::new();
        response
            .into_reader()
            .take(MAX_ANSWER + 1)
            .read_to_string(&mut answer)
            .map_err(|e| ShortenError::Request(e.to_string()))?;
        let short = answer.trim();
        let is_link = (short.starts_with("http://") || short.starts_with("https://"))
            && short.len() as u64 <= MAX_ANSWER
            && !short.chars().any(|c| c.is_whitespace() || c.is_control());
        if is_link {
            Ok(short.to_owned())
        } else {
            Err(ShortenError::NotALink)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// A one-shot HTTP server answering `status` and `body`; returns its
    /// URL template and a handle yielding the request line.
    fn serve(
        status: &'static str,
        body: &'static str,
    ) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut request = String::new();
            reader.read_line(&mut request).expect("request line");
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            request
        });
        (format!("http://127.0.0.1:{port}/s?url={{url}}"), handle)
    }

    #[test]
    fn shortens_and_encodes_the_link() {
        let (template, server) = serve("200 OK", "https://da.gd/abc\n");
        let short = Shortener::new(&template)
            .unwrap()
            .shorten("https://x.org/a b?c=1&d")
            .unwrap();
        assert_eq!(short, "https://da.gd/abc");
        let request = server.join().unwrap();
        assert!(
            request.starts_with("GET /s?url=https%3A%2F%2Fx%2Eorg%2Fa%20b%3Fc%3D1%26d "),
            "{request}"
        );
    }

    #[test]
    fn failures_keep_the_long_link() {
        let (template, server) = serve("500 Oops", "https://da.gd/abc");
        let err = Shortener::new(&template)
            .unwrap()
            .shorten("https://x.org")
            .unwrap_err();
        assert!(matches!(err, ShortenError::Status(500)), "{err}");
        server.join().unwrap();

        let (template, server) = serve("200 OK", "<html>rate limited</html>");
        let err = Shortener::new(&template)
            .unwrap()
            .shorten("https://x.org")
            .unwrap_err();
        assert!(matches!(err, ShortenError::NotALink), "{err}");
        server.join().unwrap();

        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = Shortener::new(&format!("http://127.0.0.1:{port}/?u={{url}}"))
            .unwrap()
            .shorten("https://x.org")
            .unwrap_err();
        assert!(matches!(err, ShortenError::Request(_)), "{err}");
    }
}
