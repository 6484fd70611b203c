//! Deserializes the merged tree into the typed [`Config`](super::Config),
//! with errors that name the key and the origin of the bad value.
//!
//! A small deserializer of our own rather than the `config` crate's: that
//! one converts silently where a configuration error should stop the start
//! (a float is rounded into an integer key, `true` becomes 1, `"yes"`
//! becomes 1), and its messages are not in the operator's terms.
//!
//! Conversions that are accepted, because fedmsg accepts them or because
//! environment and `--set` values are read as TOML when they parse:
//! an integer where a float is expected; `"true"`/`"false"` (any case)
//! where a boolean is expected (fedmsg's newer loader does the same); a
//! number or boolean where a string is expected (so `FEDMSG_NAME=12` is the
//! name `12`).

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::tree::{Kind, Node};

/// A deserialization error and, once known, where it is.
#[derive(Debug)]
pub(crate) struct DeError {
    /// What went wrong.
    pub problem: Problem,
    /// The dotted key (array items as `key[n]`).
    pub key: Option<String>,
    /// The origin of the offending value.
    pub origin: Option<String>,
}

/// What went wrong.
#[derive(Debug)]
pub(crate) enum Problem {
    /// A value of the wrong type (or out of range).
    Type { expected: String, found: String },
    /// Anything else a visitor reports.
    Message(String),
}

impl DeError {
    fn new(problem: Problem) -> Self {
        DeError {
            problem,
            key: None,
            origin: None,
        }
    }

    /// Records where the error is, unless a deeper level already did.
    fn at(mut self, key: &str, node: &Node) -> Self {
        if self.key.is_none() {
            self.key = Some(key.to_owned());
            self.origin = Some(node.origin.to_string());
        }
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            Problem::Type { expected, found } => write!(f, "expected {expected}, found {found}"),
            Problem::Message(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError::new(Problem::Message(msg.to_string()))
    }

    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        DeError::new(Problem::Type {
            expected: exp.to_string(),
            found: describe_unexpected(&unexp),
        })
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        Self::invalid_type(unexp, exp)
    }
}

/// A value in the operator's (TOML's) terms: `string "lots"`, `integer -5`,
/// `an array`, `a table`.
fn describe(node: &Node) -> String {
    match &node.kind {
        Kind::Bool(b) => format!("boolean {b}"),
        Kind::Int(i) => format!("integer {i}"),
        Kind::Float(x) => format!("float {x}"),
        Kind::Str(s) => format!("string {s:?}"),
        Kind::Array(_) => "an array".into(),
        Kind::Table(_) => "a table".into(),
    }
}

fn describe_unexpected(unexp: &de::Unexpected<'_>) -> String {
    match unexp {
        de::Unexpected::Bool(b) => format!("boolean {b}"),
        de::Unexpected::Signed(i) => format!("integer {i}"),
        de::Unexpected::Unsigned(u) => format!("integer {u}"),
        de::Unexpected::Float(x) => format!("float {x}"),
        de::Unexpected::Str(s) => format!("string {s:?}"),
        de::Unexpected::Seq => "an array".into(),
        de::Unexpected::Map => "a table".into(),
        other => other.to_string(),
    }
}

/// Deserializes one node; `key` is its dotted path, for errors.
pub(crate) struct NodeDeserializer<'a> {
    node: &'a Node,
    key: String,
}

impl<'a> NodeDeserializer<'a> {
    /// A deserializer of the whole tree rooted at `node`.
    pub fn new(node: &'a Node) -> Self {
        NodeDeserializer {
            node,
            key: String::new(),
        }
    }

    fn mismatch(&self, expected: &str) -> DeError {
        DeError::new(Problem::Type {
            expected: expected.to_owned(),
            found: describe(self.node),
        })
        .at(&self.key, self.node)
    }

    fn unsigned(&self, max: u64, expected: &str) -> Result<u64, DeError> {
        match self.node.kind {
            Kind::Int(i) => u64::try_from(i)
                .ok()
                .filter(|u| *u <= max)
                .ok_or_else(|| self.mismatch(expected)),
            _ => Err(self.mismatch(expected)),
        }
    }
}

macro_rules! unsigned {
    ($method:ident, $visit:ident, $ty:ty, $expected:expr) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            let value = self.unsigned(u64::from(<$ty>::MAX), $expected)?;
            let value = <$ty>::try_from(value).map_err(|_| self.mismatch($expected))?;
            visitor.$visit(value)
        }
    };
}

impl<'de> de::Deserializer<'de> for NodeDeserializer<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let (key, node) = (self.key.clone(), self.node);
        let result = match &self.node.kind {
            Kind::Bool(b) => visitor.visit_bool(*b),
            Kind::Int(i) => visitor.visit_i64(*i),
            Kind::Float(x) => visitor.visit_f64(*x),
            Kind::Str(s) => visitor.visit_str(s),
            Kind::Array(items) => visitor.visit_seq(SeqAccess::new(items, self.key)),
            Kind::Table(table) => visitor.visit_map(MapAccess::new(table, self.key)),
        };
        result.map_err(|e: DeError| e.at(&key, node))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Bool(b) => visitor.visit_bool(*b),
            Kind::Str(s) if s.eq_ignore_ascii_case("true") => visitor.visit_bool(true),
            Kind::Str(s) if s.eq_ignore_ascii_case("false") => visitor.visit_bool(false),
            _ => Err(self.mismatch("a boolean")),
        }
    }

    unsigned!(
        deserialize_u8,
        visit_u8,
        u8,
        "an unsigned integer up to 255"
    );
    unsigned!(
        deserialize_u16,
        visit_u16,
        u16,
        "an unsigned integer up to 65535"
    );
    unsigned!(
        deserialize_u32,
        visit_u32,
        u32,
        "an unsigned integer up to 4294967295"
    );
    unsigned!(deserialize_u64, visit_u64, u64, "an unsigned integer");

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        // The visitor checks the range of narrower types.
        let (key, node) = (self.key.clone(), self.node);
        match self.node.kind {
            Kind::Int(i) => visitor.visit_i64(i).map_err(|e: DeError| e.at(&key, node)),
            _ => Err(self.mismatch("an integer")),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.node.kind {
            Kind::Float(x) => visitor.visit_f64(x),
            // Integers are exact in f64 up to 2^53, far beyond any seconds
            // value; `shutdown_timeout = 10` must be accepted.
            Kind::Int(i) => visitor.visit_f64(i as f64),
            _ => Err(self.mismatch("a number")),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let (key, node) = (self.key.clone(), self.node);
        let result = match &self.node.kind {
            Kind::Str(s) => visitor.visit_str(s),
            Kind::Int(i) => visitor.visit_string(i.to_string()),
            Kind::Float(x) => visitor.visit_string(x.to_string()),
            Kind::Bool(b) => visitor.visit_string(b.to_string()),
            _ => return Err(self.mismatch("a string")),
        };
        result.map_err(|e: DeError| e.at(&key, node))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        // TOML has no null: a present key is always `Some`.
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Array(items) => visitor.visit_seq(SeqAccess::new(items, self.key)),
            _ => Err(self.mismatch("an array")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.kind {
            Kind::Table(table) => visitor.visit_map(MapAccess::new(table, self.key)),
            _ => Err(self.mismatch("a table")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_map(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i128 u128 bytes byte_buf unit unit_struct tuple_struct enum identifier
    }
}

/// The items of an array.
struct SeqAccess<'a> {
    items: std::iter::Enumerate<std::slice::Iter<'a, Node>>,
    key: String,
}

impl<'a> SeqAccess<'a> {
    fn new(items: &'a [Node], key: String) -> Self {
        SeqAccess {
            items: items.iter().enumerate(),
            key,
        }
    }
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some((index, node)) = self.items.next() else {
            return Ok(None);
        };
        let key = format!("{}[{index}]", self.key);
        seed.deserialize(NodeDeserializer {
            node,
            key: key.clone(),
        })
        .map(Some)
        .map_err(|e: DeError| e.at(&key, node))
    }
}

/// The entries of a table.
struct MapAccess<'a> {
    entries: std::collections::btree_map::Iter<'a, String, Node>,
    key: String,
    pending: Option<(String, &'a Node)>,
}

impl<'a> MapAccess<'a> {
    fn new(table: &'a super::tree::Table, key: String) -> Self {
        MapAccess {
            entries: table.iter(),
            key,
            pending: None,
        }
    }
}

impl<'de> de::MapAccess<'de> for MapAccess<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some((name, node)) = self.entries.next() else {
            return Ok(None);
        };
        let key = if self.key.is_empty() {
            name.clone()
        } else {
            format!("{}.{name}", self.key)
        };
        let deserializer: de::value::StrDeserializer<'_, DeError> =
            name.as_str().into_deserializer();
        let result = seed
            .deserialize(deserializer)
            .map(Some)
            .map_err(|e: DeError| e.at(&key, node));
        self.pending = Some((key, node));
        result
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((key, node)) = self.pending.take() else {
            return Err(de::Error::custom("a table value was read before its key"));
        };
        seed.deserialize(NodeDeserializer {
            node,
            key: key.clone(),
        })
        .map_err(|e: DeError| e.at(&key, node))
    }
}
