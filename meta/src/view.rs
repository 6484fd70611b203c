//! The message as template values, lazily: a JSON object or array becomes a
//! minijinja object that looks its children up in the message only when a
//! template asks, so the parts of a large message no template reads (a
//! bodhi update's builds, a long diff) are never converted.

use std::sync::Arc;

use minijinja::value::{Enumerator, Object, ObjectRepr};
use serde_json::Value;

/// A JSON object or array of the message: the shared message and the node
/// in it.
#[derive(Debug)]
struct Node {
    /// Keeps the message, and so `node`, alive and unchanged.
    root: Arc<Value>,
    /// The node, inside `root`.
    node: std::ptr::NonNull<Value>,
}

// SAFETY: `node` points into the `Value` that `root` shares; a `Value` is
// `Send + Sync` and nothing mutates it while an `Arc` to it exists, so the
// pointer may be used from any thread, as `&Value` could.
unsafe impl Send for Node {}
// SAFETY: as for `Send`: only shared reads through `node`.
unsafe impl Sync for Node {}

impl Node {
    fn new(root: Arc<Value>, node: &Value) -> Node {
        Node {
            node: std::ptr::NonNull::from(node),
            root,
        }
    }

    fn get(&self) -> &Value {
        // SAFETY: `node` was made from a reference into `*self.root`
        // (`Node::new` is only called with the root itself or a child of a
        // node of the same root), which `self.root` keeps alive; a `Value`
        // behind an `Arc` is never mutated, so the reference is valid for
        // as long as `self` is.
        unsafe { self.node.as_ref() }
    }

    /// Looking a child up walked the path from the root on every access,
    /// and each child copied the path: a tenth of the rendering time.
    fn child(&self, value: &Value) -> minijinja::Value {
        match value {
            Value::Array(_) | Value::Object(_) => {
                minijinja::Value::from_object(Node::new(Arc::clone(&self.root), value))
            }
            scalar => scalar_value(scalar),
        }
    }
}

/// A JSON scalar as a template value. Numbers by hand: the workspace's
/// `serde_json` keeps them as text (`arbitrary_precision`).
fn scalar_value(value: &Value) -> minijinja::Value {
    match value {
        Value::Bool(b) => minijinja::Value::from(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                minijinja::Value::from(i)
            } else if let Some(u) = n.as_u64() {
                minijinja::Value::from(u)
            } else {
                minijinja::Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => minijinja::Value::from(s.as_str()),
        _ => minijinja::Value::from(()),
    }
}

impl Object for Node {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        match self.get() {
            Value::Array(_) => ObjectRepr::Seq,
            _ => ObjectRepr::Map,
        }
    }

    fn get_value(self: &Arc<Self>, key: &minijinja::Value) -> Option<minijinja::Value> {
        match self.get() {
            Value::Object(map) => {
                let value = map.get(key.as_str()?)?;
                Some(self.child(value))
            }
            Value::Array(items) => {
                let index = usize::try_from(key.as_i64()?).ok()?;
                let value = items.get(index)?;
                Some(self.child(value))
            }
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        match self.get() {
            Value::Object(map) => Enumerator::Values(
                map.keys()
                    .map(|k| minijinja::Value::from(k.as_str()))
                    .collect(),
            ),
            Value::Array(items) => Enumerator::Seq(items.len()),
            _ => Enumerator::Empty,
        }
    }
}

/// `value` (the root of a message) as a template value.
pub(crate) fn of(root: Arc<Value>) -> minijinja::Value {
    match &*root {
        Value::Array(_) | Value::Object(_) => {
            minijinja::Value::from_object(Node::new(Arc::clone(&root), &root))
        }
        scalar => scalar_value(scalar),
    }
}
