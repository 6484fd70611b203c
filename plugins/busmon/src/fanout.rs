//! From the hub's worker thread to every live client: each message becomes
//! one shared [`Event`], offered to each client whose filter matches, into
//! that client's bounded queue. Nothing here waits on a client.
//!
//! A client that does not read loses what does not fit its queue; the
//! queue keeps one marker counting the lost messages at the place they were
//! lost, so the client is told "N skipped" when it catches up. Memory per
//! client is therefore bounded by `client_buffer` messages, whatever the
//! client does.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use axum::extract::ws::Utf8Bytes;
use fedmsg_wire::crypto::{Verdict, Verifier};
use fedmsg_wire::topic::TopicFilter;
use serde::Serialize;
use tokio::sync::Notify;

use crate::frame;

/// What fedmsg.meta says of a message, as much as busmon shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MetaLite {
    /// The terse one-line rendering.
    pub repr: String,
    /// The message's link, if any.
    pub link: Option<String>,
    /// Users named in the message.
    pub usernames: Vec<String>,
    /// Packages named in the message.
    pub packages: Vec<String>,
}

/// Renders messages (the hub's fedmsg.meta; a stub in tests).
pub trait Render: Send + Sync {
    /// The rendering of a message, `None` when it cannot be rendered.
    fn render(&self, topic: &str, body: &str) -> Option<MetaLite>;
}

/// The signature badge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Signature {
    /// The hub verified it.
    Valid,
    /// It carries no signature.
    Unsigned,
    /// It is signed and the signature, chain or routing policy failed.
    Invalid,
    /// It is signed, and signatures are not validated in this hub.
    Unchecked,
}

/// One message, shared by every client it is queued for. What only some
/// clients need is computed on first use, once.
#[derive(Debug)]
pub struct Event {
    /// The topic.
    pub topic: String,
    /// The envelope as received.
    pub body: String,
    /// `msg_id`.
    pub msg_id: Option<String>,
    /// `timestamp`, epoch seconds.
    pub timestamp: Option<f64>,
    /// The hub verified it.
    pub validated: bool,
    meta: OnceLock<MetaLite>,
    moksha: OnceLock<Utf8Bytes>,
    page: OnceLock<String>,
    lower_body: OnceLock<String>,
}

impl Event {
    /// A message as the hub handed it over.
    pub fn new(
        topic: &str,
        body: &str,
        msg_id: Option<&str>,
        timestamp: Option<f64>,
        validated: bool,
    ) -> Event {
        Event {
            topic: topic.to_owned(),
            body: body.to_owned(),
            msg_id: msg_id.map(str::to_owned),
            timestamp,
            validated,
            meta: OnceLock::new(),
            moksha: OnceLock::new(),
            page: OnceLock::new(),
            lower_body: OnceLock::new(),
        }
    }

    /// fedmsg.meta's rendering; the topic as the terse line when the
    /// message cannot be rendered (fedmsg.meta's own fallback shows the
    /// topic too).
    pub fn meta(&self, render: &dyn Render) -> &MetaLite {
        self.meta.get_or_init(|| {
            render
                .render(&self.topic, &self.body)
                .unwrap_or_else(|| MetaLite {
                    repr: self.topic.clone(),
                    ..MetaLite::default()
                })
        })
    }

    /// The badge: the hub's verdict when it verified the message, else
    /// `verifier`'s (the same checks, made here because busmon shows what
    /// the hub would have dropped), else unchecked.
    pub fn signature(&self, verifier: Option<&Verifier>) -> Signature {
        if self.validated {
            return Signature::Valid;
        }
        #[derive(serde::Deserialize)]
        struct Head {
            signature: Option<serde::de::IgnoredAny>,
        }
        let signed = serde_json::from_str::<Head>(&self.body)
            .map(|h| h.signature.is_some())
            .unwrap_or(false);
        if !signed {
            return Signature::Unsigned;
        }
        match verifier.map(|v| v.verify_body(self.body.as_bytes())) {
            Some(Verdict::Valid { .. }) => Signature::Valid,
            Some(Verdict::Invalid(_)) => Signature::Invalid,
            None => Signature::Unchecked,
        }
    }

    /// The category (fedmsg's modname: the topic's fourth part).
    pub fn category(&self) -> &str {
        category_of(&self.topic)
    }

    /// moksha's frame for this message (made once, shared by every
    /// WebSocket client without a copy).
    pub fn moksha_frame(&self) -> Utf8Bytes {
        self.moksha
            .get_or_init(|| frame::message_frame(&self.topic, &self.body).into())
            .clone()
    }

    /// What the page gets: the badge, the terse line, the links and the
    /// envelope as received (spliced, not re-encoded).
    pub fn page_json(
        &self,
        render: &dyn Render,
        verifier: Option<&Verifier>,
        raw_url: Option<&str>,
    ) -> &str {
        self.page.get_or_init(|| {
            let meta = self.meta(render);
            let raw_link = match (raw_url, &self.msg_id) {
                (Some(base), Some(id)) => Some(format!(
                    "{base}?{}",
                    form_urlencoded::Serializer::new(String::new())
                        .append_pair("msg_id", id)
                        .finish()
                )),
                _ => None,
            };
            let head = serde_json::json!({
                "topic": self.topic,
                "msg_id": self.msg_id,
                "timestamp": self.timestamp,
                "signature": self.signature(verifier),
                "category": self.category(),
                "repr": meta.repr,
                "link": meta.link,
                "raw_link": raw_link,
            })
            .to_string();
            // `head` ends with '}'; the envelope goes in as `body`.
            let mut out = String::with_capacity(head.len() + self.body.len() + 10);
            out.push_str(&head[..head.len() - 1]);
            out.push_str(",\"body\":");
            out.push_str(&self.body);
            out.push('}');
            out
        })
    }

    fn lower_body(&self) -> &str {
        self.lower_body.get_or_init(|| self.body.to_lowercase())
    }
}

/// fedmsg's modname: `org.fedoraproject.prod.bodhi.update` → `bodhi`; a
/// topic with fewer parts is its own category.
pub fn category_of(topic: &str) -> &str {
    topic.split('.').nth(3).unwrap_or(topic)
}

/// What a client wants to see. Every part given must match.
#[derive(Debug, Default)]
pub struct Filter {
    /// Topic globs (the hub's glob rules); `None` = every topic, an empty
    /// filter = none (a moksha client before its first subscribe).
    pub topics: Option<TopicFilter>,
    /// Case-insensitive text searched in the envelope and the terse line.
    pub text: Option<String>,
    /// A user fedmsg.meta finds in the message.
    pub user: Option<String>,
    /// A package fedmsg.meta finds in the message.
    pub package: Option<String>,
}

impl Filter {
    /// True when `event` passes every part of the filter.
    pub fn matches(&self, event: &Event, render: &dyn Render) -> bool {
        if let Some(topics) = &self.topics {
            if !topics.matches(&event.topic) {
                return false;
            }
        }
        if let Some(text) = &self.text {
            if !event.lower_body().contains(text.as_str())
                && !event
                    .meta(render)
                    .repr
                    .to_lowercase()
                    .contains(text.as_str())
            {
                return false;
            }
        }
        if let Some(user) = &self.user {
            if !event.meta(render).usernames.iter().any(|u| u == user) {
                return false;
            }
        }
        if let Some(package) = &self.package {
            if !event.meta(render).packages.iter().any(|p| p == package) {
                return false;
            }
        }
        true
    }
}

/// What a client's writer takes next.
#[derive(Debug, Clone)]
pub enum Item {
    /// A message.
    Message(Arc<Event>),
    /// This many messages were lost here.
    Skipped(u64),
}

/// One client's bounded queue: at most `capacity` messages, and markers
/// between them (each follows a message or starts the queue, so at most
/// `capacity + 1`).
#[derive(Debug)]
pub struct ClientQueue {
    items: VecDeque<Item>,
    markers: usize,
    capacity: usize,
}

impl ClientQueue {
    /// An empty queue.
    pub fn new(capacity: usize) -> ClientQueue {
        ClientQueue {
            items: VecDeque::new(),
            markers: 0,
            capacity,
        }
    }

    /// Queues `event`, or counts it as skipped when the queue is full.
    /// Returns false when it was skipped.
    pub fn push(&mut self, event: Arc<Event>) -> bool {
        if self.items.len() - self.markers < self.capacity {
            self.items.push_back(Item::Message(event));
            return true;
        }
        match self.items.back_mut() {
            Some(Item::Skipped(n)) => *n += 1,
            _ => {
                self.items.push_back(Item::Skipped(1));
                self.markers += 1;
            }
        }
        false
    }

    /// The next item.
    pub fn pop(&mut self) -> Option<Item> {
        let item = self.items.pop_front();
        if let Some(Item::Skipped(_)) = item {
            self.markers -= 1;
        }
        item
    }

    /// Items waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// How a client sees messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// moksha's frames / the envelope (WebSocket, `curl`).
    Envelope,
    /// The page's JSON (badge, terse line, links, envelope).
    Page,
}

/// One live client.
#[derive(Debug)]
pub struct Client {
    /// Unique within the process.
    pub id: u64,
    /// What it is shown.
    pub view: View,
    /// What it wants.
    pub filter: Mutex<Filter>,
    queue: Mutex<ClientQueue>,
    /// Woken when something is queued.
    pub notify: Notify,
    /// Messages this client lost.
    pub skipped: AtomicU64,
}

impl Client {
    /// Locks the queue (a panic while holding it leaves it consistent).
    pub fn queue(&self) -> MutexGuard<'_, ClientQueue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Locks the filter.
    pub fn filter(&self) -> MutexGuard<'_, Filter> {
        self.filter.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Every live client, and the limit on their number.
#[derive(Debug)]
pub struct Registry {
    clients: Mutex<Vec<Arc<Client>>>,
    next_id: AtomicU64,
    count: AtomicUsize,
    max_clients: usize,
    client_buffer: usize,
    /// Clients refused for `max_clients`.
    pub refused: AtomicU64,
    /// Messages lost by slow clients, all clients together.
    pub skipped: AtomicU64,
}

/// A registered client; unregisters on drop.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<Registry>,
    /// The client.
    pub client: Arc<Client>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut clients = self.registry.lock();
        clients.retain(|c| c.id != self.client.id);
        self.registry.count.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Registry {
    /// An empty registry.
    pub fn new(max_clients: usize, client_buffer: usize) -> Arc<Registry> {
        Arc::new(Registry {
            clients: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            count: AtomicUsize::new(0),
            max_clients,
            client_buffer,
            refused: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Client>>> {
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place for a new client, `None` (counted) when all
    /// `max_clients` places are taken. The client receives nothing until
    /// [`Reservation::activate`].
    pub fn reserve(self: &Arc<Self>) -> Option<Reservation> {
        let taken = self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_clients).then_some(n + 1)
            });
        if taken.is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(Reservation {
            registry: Some(Arc::clone(self)),
        })
    }

    /// Live clients.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// True when no client is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Offers `event` to every client whose filter matches. Never waits on
    /// a client. Returns how many clients queued it.
    pub fn offer(&self, event: &Arc<Event>, render: &dyn Render) -> usize {
        let clients = self.lock().clone();
        let mut queued = 0;
        for client in clients {
            if !client.filter().matches(event, render) {
                continue;
            }
            if client.queue().push(Arc::clone(event)) {
                queued += 1;
            } else {
                client.skipped.fetch_add(1, Ordering::Relaxed);
                self.skipped.fetch_add(1, Ordering::Relaxed);
            }
            client.notify.notify_one();
        }
        queued
    }
}

/// A place taken by [`Registry::reserve`]; given back on drop unless
/// [`activated`](Reservation::activate).
#[derive(Debug)]
pub struct Reservation {
    registry: Option<Arc<Registry>>,
}

impl Reservation {
    /// Makes the client live with `filter`.
    pub fn activate(mut self, view: View, filter: Filter) -> Registration {
        // `reserve` always sets it; `take` leaves `Drop` nothing to undo.
        let registry = match self.registry.take() {
            Some(r) => r,
            None => unreachable!("a reservation is activated once"),
        };
        let client = Arc::new(Client {
            id: registry.next_id.fetch_add(1, Ordering::Relaxed),
            view,
            filter: Mutex::new(filter),
            queue: Mutex::new(ClientQueue::new(registry.client_buffer)),
            notify: Notify::new(),
            skipped: AtomicU64::new(0),
        });
        registry.lock().push(Arc::clone(&client));
        Registration { registry, client }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(registry) = &self.registry {
            registry.count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoMeta;
    impl Render for NoMeta {
        fn render(&self, _: &str, _: &str) -> Option<MetaLite> {
            None
        }
    }

    struct Users;
    impl Render for Users {
        fn render(&self, topic: &str, _: &str) -> Option<MetaLite> {
            Some(MetaLite {
                repr: format!("terse {topic}"),
                usernames: vec!["alice".into()],
                packages: vec!["kernel".into()],
                link: None,
            })
        }
    }

    fn event(topic: &str) -> Arc<Event> {
        Arc::new(Event::new(
            topic,
            r#"{"msg":{"t":"Hello"}}"#,
            Some("id"),
            None,
            false,
        ))
    }

    #[test]
    fn queue_is_bounded_and_marks_the_gap() {
        let mut q = ClientQueue::new(2);
        assert!(q.push(event("a")));
        assert!(q.push(event("b")));
        for _ in 0..1000 {
            assert!(!q.push(event("c")));
        }
        assert_eq!(q.len(), 3);
        assert!(matches!(q.pop(), Some(Item::Message(_))));
        assert!(q.push(event("d")), "room again after one was taken");
        assert!(matches!(q.pop(), Some(Item::Message(_))));
        assert!(matches!(q.pop(), Some(Item::Skipped(1000))));
        assert!(matches!(q.pop(), Some(Item::Message(e)) if e.topic == "d"));
        assert!(q.pop().is_none());
    }

    #[test]
    fn max_clients_and_unregistering() {
        let r = Registry::new(2, 10);
        let a = r.reserve().unwrap();
        let b = r.reserve().unwrap();
        assert!(r.reserve().is_none());
        assert_eq!(r.refused.load(Ordering::Relaxed), 1);
        drop(a);
        let reg = r
            .reserve()
            .unwrap()
            .activate(View::Envelope, Filter::default());
        let _b = b.activate(View::Envelope, Filter::default());
        assert_eq!(r.len(), 2);
        assert_eq!(r.offer(&event("x"), &NoMeta), 2);
        drop(reg);
        assert_eq!(r.len(), 1);
        assert_eq!(r.offer(&event("x"), &NoMeta), 1);
    }

    #[test]
    fn filters() {
        let e = event("org.fedoraproject.prod.bodhi.update");
        let topics = |g: &str| Filter {
            topics: Some(TopicFilter::new(&[g], false)),
            ..Filter::default()
        };
        assert!(topics("org.fedoraproject.prod.bodhi.*").matches(&e, &NoMeta));
        assert!(topics("*.bodhi.*").matches(&e, &NoMeta));
        assert!(!topics("org.fedoraproject.prod.koji.*").matches(&e, &NoMeta));
        let none = Filter {
            topics: Some(TopicFilter::new::<&str>(&[], false)),
            ..Filter::default()
        };
        assert!(
            !none.matches(&e, &NoMeta),
            "a moksha client before subscribing"
        );
        let text = |t: &str| Filter {
            text: Some(t.into()),
            ..Filter::default()
        };
        assert!(text("hello").matches(&e, &NoMeta));
        assert!(text("terse").matches(&e, &Users));
        assert!(!text("bye").matches(&e, &NoMeta));
        let user = Filter {
            user: Some("alice".into()),
            package: Some("kernel".into()),
            ..Filter::default()
        };
        assert!(user.matches(&e, &Users));
        let fresh = event("org.fedoraproject.prod.bodhi.update");
        assert!(!user.matches(&fresh, &NoMeta));
    }

    #[test]
    fn page_json_splices_the_envelope() {
        let e = Event::new(
            "org.fedoraproject.dev.logger.log",
            "{\"msg\": \"<img src=x>\", \"signature\": \"s\"}",
            Some("a&b"),
            Some(1.5),
            false,
        );
        let v: serde_json::Value =
            serde_json::from_str(e.page_json(&NoMeta, None, Some("http://h/raw"))).unwrap();
        assert_eq!(v["body"]["msg"], "<img src=x>");
        assert_eq!(v["signature"], "unchecked");
        assert_eq!(v["category"], "logger");
        assert_eq!(v["repr"], "org.fedoraproject.dev.logger.log");
        assert_eq!(v["raw_link"], "http://h/raw?msg_id=a%26b");
        assert_eq!(event("t").signature(None), Signature::Unsigned);
        let signed = Event::new("t", r#"{"signature":"x"}"#, None, None, false);
        assert_eq!(signed.signature(None), Signature::Unchecked);
    }
}
