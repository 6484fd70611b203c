//! Author-friendly error types.
//!
//! `?` works on the errors a plugin usually meets (`std::io::Error`,
//! `serde_json::Error`, configuration and publish errors, strings); anything
//! else implementing `std::error::Error` is wrapped with `::wrap` or
//! `::context`. The hub receives the whole chain as one line
//! (`outer: inner: innermost`).

use std::error::Error as StdError;
use std::fmt;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Renders an error and its `source()` chain as `outer: inner: …`,
/// skipping a source whose text the outer message already ends with.
pub(crate) fn render_chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        if !text.ends_with(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
}

macro_rules! author_error {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name {
            message: String,
            source: Option<BoxError>,
        }

        impl $name {
            /// An error with just a message.
            pub fn new(message: impl Into<String>) -> Self {
                Self { message: message.into(), source: None }
            }

            /// Wraps any error; its text becomes the message.
            pub fn wrap<E: StdError + Send + Sync + 'static>(error: E) -> Self {
                Self { message: error.to_string(), source: Some(Box::new(error)) }
            }

            /// Wraps any error under a message saying what was being done.
            pub fn context<E: StdError + Send + Sync + 'static>(message: impl Into<String>, error: E) -> Self {
                Self { message: message.into(), source: Some(Box::new(error)) }
            }

            /// The message, without the source chain.
            pub fn message(&self) -> &str {
                &self.message
            }

            /// The message followed by the whole source chain, one line.
            pub fn render(&self) -> String {
                render_chain(self)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.message)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("message", &self.message)
                    .field("source", &self.source)
                    .finish()
            }
        }

        impl StdError for $name {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                // The wrapped error's own text is our message, so the chain
                // continues with *its* source.
                match &self.source {
                    Some(source) if source.to_string() == self.message => source.source(),
                    Some(source) => Some(source.as_ref()),
                    None => None,
                }
            }
        }

        impl From<String> for $name {
            fn from(message: String) -> Self {
                Self::new(message)
            }
        }

        impl From<&str> for $name {
            fn from(message: &str) -> Self {
                Self::new(message)
            }
        }

        impl From<std::io::Error> for $name {
            fn from(error: std::io::Error) -> Self {
                Self::wrap(error)
            }
        }

        impl From<serde_json::Error> for $name {
            fn from(error: serde_json::Error) -> Self {
                Self::wrap(error)
            }
        }

        impl From<crate::ConfigError> for $name {
            fn from(error: crate::ConfigError) -> Self {
                Self::wrap(error)
            }
        }

        impl From<crate::PublishError> for $name {
            fn from(error: crate::PublishError) -> Self {
                Self::wrap(error)
            }
        }

        impl From<crate::MetaError> for $name {
            fn from(error: crate::MetaError) -> Self {
                Self::wrap(error)
            }
        }

        impl From<BoxError> for $name {
            fn from(error: BoxError) -> Self {
                Self { message: error.to_string(), source: Some(error) }
            }
        }
    };
}

author_error! {
    /// Why a plugin could not be described or constructed
    /// (returned by `ConsumerPlugin::new`, `topics`, …).
    PluginError
}

author_error! {
    /// Why `ConsumerPlugin::consume` failed for one message. The hub logs it,
    /// counts it and drops the message (fedmsg's behaviour, reference §4.6).
    ConsumeError
}

impl From<PluginError> for ConsumeError {
    fn from(error: PluginError) -> Self {
        Self {
            message: error.message,
            source: error.source,
        }
    }
}

impl From<ConsumeError> for PluginError {
    fn from(error: ConsumeError) -> Self {
        Self {
            message: error.message,
            source: error.source,
        }
    }
}

/// A configuration value is missing or has the wrong type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config key `{key}`: {reason}")]
pub struct ConfigError {
    /// The full dotted key, e.g. `tally.output`.
    pub key: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Publishing through the hub failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("publish failed: {0}")]
pub struct PublishError(pub String);

/// Rendering a message with the hub's fedmsg.meta failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fedmsg.meta failed: {0}")]
pub struct MetaError(pub String);

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn conversions_and_chains() {
        let e: ConsumeError = "plain".into();
        assert_eq!(e.render(), "plain");
        let e: ConsumeError = String::from("owned").into();
        assert_eq!(e.to_string(), "owned");

        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e: PluginError = io.into();
        assert_eq!(e.render(), "no such file");

        let e = ConsumeError::wrap(Outer(std::io::Error::other("disk full")));
        assert_eq!(e.render(), "outer: disk full");

        let e = PluginError::context("opening /x", std::io::Error::other("denied"));
        assert_eq!(e.render(), "opening /x: denied");

        let json = serde_json::from_str::<serde_json::Value>("{").unwrap_err();
        let e: ConsumeError = json.into();
        assert!(e.render().contains("EOF"), "{}", e.render());

        let cfg = ConfigError {
            key: "tally.output".into(),
            reason: "missing".into(),
        };
        let e: PluginError = cfg.into();
        assert_eq!(e.render(), "config key `tally.output`: missing");

        let e: ConsumeError = PluginError::context("a", Outer(std::io::Error::other("b"))).into();
        assert_eq!(e.render(), "a: outer: b");
    }
}
