//! The message as template values, lazily: a JSON object or array becomes a
//! minijinja object that looks its children up in the message only when a
//! template asks, so the parts of a large message no template reads (a
//! bodhi update's builds, a long diff) are never converted.

use std::sync::Arc;

use minijinja::value::{Enumerator, Object, ObjectRepr};
use serde_json::Value;

/// One step from the root of the message to a nested value.
#[derive(Debug, Clone)]
enum Step {
    Key(Arc<str>),
    Index(usize),
}

/// A JSON object or array of the message: the shared message and the path
/// to the node.
#[derive(Debug)]
struct Node {
    root: Arc<Value>,
    path: Vec<Step>,
}

impl Node {
    fn get(&self) -> &Value {
        let mut value = &*self.root;
        for step in &self.path {
            value = match (step, value) {
                (Step::Key(key), Value::Object(map)) => map.get(&**key).unwrap_or(&Value::Null),
                (Step::Index(i), Value::Array(items)) => items.get(*i).unwrap_or(&Value::Null),
                _ => &Value::Null,
            };
        }
        value
    }

    fn child(&self, step: Step, value: &Value) -> minijinja::Value {
        match value {
            Value::Array(_) | Value::Object(_) => {
                let mut path = self.path.clone();
                path.push(step);
                minijinja::Value::from_object(Node {
                    root: Arc::clone(&self.root),
                    path,
                })
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
                let key = key.as_str()?;
                let (key, value) = map.get_key_value(key)?;
                Some(self.child(Step::Key(Arc::from(key.as_str())), value))
            }
            Value::Array(items) => {
                let index = usize::try_from(key.as_i64()?).ok()?;
                let value = items.get(index)?;
                Some(self.child(Step::Index(index), value))
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
        Value::Array(_) | Value::Object(_) => minijinja::Value::from_object(Node {
            root: Arc::clone(&root),
            path: Vec::new(),
        }),
        scalar => scalar_value(scalar),
    }
}
