//! The stable ABI between fedmsg-hub and its consumer plugins.
