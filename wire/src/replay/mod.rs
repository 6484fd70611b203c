//! `seq_id` replay: a publisher keeps what it sent, subscribers ask for
//! what they missed (fedmsg-reference §4.4).
//!
//! # The protocol
//!
//! A publisher with a persistent store ([`store::ReplayStore`], SQLite)
//! stamps every outgoing envelope with `seq_id`, an integer that increases
//! by exactly one per message **per sender name** (the publisher's endpoint
//! name, e.g. `relay_outbound`), stores the stamped envelope, and serves
//! `replay_endpoints[name]` with a ZeroMQ REP socket
//! ([`server::ReplayServer`]). A request is one frame holding a JSON object
//! whose keys are OR-ed together ([`query::Query`]):
//!
//! | key | value | selects |
//! |---|---|---|
//! | `seq_ids` | list of integers | those seq_ids |
//! | `seq_id` | integer | that seq_id |
//! | `seq_id_range` | `[lo, hi]` | `lo <= seq_id <= hi` |
//! | `msg_ids` | list of strings | those msg_ids |
//! | `msg_id` | string | that msg_id |
//! | `time` | `[t0, t1]` epoch seconds | `t0 <= timestamp <= t1` |
//!
//! The reply is one frame per message, in `seq_id` order, each the canonical
//! JSON of the stored envelope (with its `seq_id`), or a single frame
//! `error: '<text>'` ([`query::QueryError`] has the texts).
//!
//! A subscriber ([`client::GapTracker`]) remembers the last `seq_id` per
//! sender name: the first message of a name is delivered, one at or below
//! the last is a duplicate, the next one is delivered, and anything further
//! is a gap `[last + 1, seq_id - 1]`, which it fetches
//! ([`client::ReplayClient::fetch_range`]) and delivers, in order, before
//! the message that revealed it.
//!
//! In the running hub, `fedmsg-hub`'s `replay` module does this for the
//! plugins that declare a `replay_name`, on a thread of its own.
//!
//! # `seq_id` and signatures
//!
//! `seq_id` is added **after** signing (the store assigns it, and signing
//! happens before a message is handed to the store), so it is not covered by
//! the signature. The verifier (`crate::crypto`, "seq_id rule") therefore
//! accepts a signed envelope whose only field outside the signed text is a
//! top-level `seq_id`: when the signature does not verify over the envelope
//! minus `signature`/`certificate`, it is tried once more without `seq_id`.
//! A relay that re-stamps a message overwrites `seq_id` with its own, which
//! is fine for the same reason. Replayed messages are validated exactly like
//! live ones before delivery.
//!
//! # Upstream bugs not mirrored
//!
//! * Upstream's SQL store queries a misspelled column for `seq_id_range`,
//!   so every range query (the only one its subscriber sends) answers an
//!   error: ours answers it. Its arity error also misspells the field
//!   (`Ill-format "sed_id_range" field`); ours says `seq_id_range`.
//! * Upstream's subscriber asks for `[last, seq_id]` (both already seen) and
//!   its tail path keeps only the first replayed message; ours asks for the
//!   missing range only and delivers all of it, in order.
//! * Upstream's hub path looks for `seq_id` in the moksha wrapper instead of
//!   the envelope, so it never detects a gap; ours reads the envelope.
//! * Upstream signs, then stamps, so its own stored messages fail
//!   validation; we keep that order (it is the wire format) and relax the
//!   verifier instead, as above.
//! * Upstream's REP loop dies on a query that is not JSON and answers every
//!   query in full; ours answers an error frame for any malformed request
//!   and caps the reply size ([`server::ReplayLimits`]).
//! * Upstream stores `timestamp` as a local-time `DATETIME` and the body as
//!   Python's non-canonical `json.dumps`; ours stores epoch seconds and the
//!   canonical JSON that is sent.
//! * Upstream has one sequence per store; ours has one per sender name, so
//!   one store file can serve several names.

pub mod client;
pub mod query;
pub mod server;
pub mod store;
