//! Helpers shared by the hub's unit tests.

use std::sync::Arc;

use fedmsg_wire::delivery::{Delivery, Source};

/// An unvalidated delivery on `org.t` whose `msg_id` is `n`.
pub(crate) fn delivery(n: u64) -> Delivery {
    Delivery {
        topic: "org.t".into(),
        body: "{}".into(),
        msg_id: Some(n.to_string()),
        timestamp: None,
        seq_id: None,
        source: Arc::new(Source {
            name: "s".into(),
            url: "u".into(),
        }),
        validated: false,
        signer: None,
    }
}
