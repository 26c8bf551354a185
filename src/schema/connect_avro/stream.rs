//! Writing a Connect payload as Avro binary while it is serialized, with no JSON value in
//! between: the payload's `Serialize` implementation (tidemark's JSON envelope, key and
//! fixed records) drives a [`serde::Serializer`] that follows the translated schema's plan.
//!
//! The JSON output writes each object's fields in the order its Connect schema declares
//! them, which is also the Avro record's field order, so a field is written as it arrives.
//! A field the payload leaves out is null (as [`super::write_value`] reads a missing field),
//! written when a later field arrives or the object ends. Anything the plan cannot follow
//! as it streams — a field out of the schema's order or unknown to it, a value of another
//! type than its field's, an array whose announced length was wrong — is not an error
//! here: the caller starts the record again through the JSON value
//! ([`super::ConnectAvro::write`]), which either writes it or names the error. A column
//! holding an array of arrays where its type is a one-dimensional array is written as null
//! with a warning, as there.

use base64::Engine;
use serde::Serialize;
use serde::ser::{self, Impossible, SerializeMap, SerializeSeq, SerializeStruct};

use super::{Node, Plan, Union};
use crate::schema::avro_write::{note_multidimensional, write_bytes, write_long};

/// Why the streaming writer gave up on a record (the caller writes it through the JSON
/// value instead).
#[derive(Debug)]
pub(super) enum Unfit {
    /// The payload does not follow the plan the way the streaming writer needs.
    Shape(String),
    /// An array arrived where the plan has a scalar: an array of arrays in a column of a
    /// one-dimensional array type.
    Nested,
}

impl std::fmt::Display for Unfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unfit::Shape(detail) => write!(f, "{detail}"),
            Unfit::Nested => write!(f, "an array where the schema has a scalar"),
        }
    }
}

impl std::error::Error for Unfit {}

impl ser::Error for Unfit {
    fn custom<T: std::fmt::Display>(message: T) -> Self {
        Unfit::Shape(message.to_string())
    }
}

fn unfit<T>(what: &str) -> Result<T, Unfit> {
    Err(Unfit::Shape(what.to_owned()))
}

/// Writes `value` by `plan` into `out`; on `Err`, `out` holds a partial record the caller
/// must cut off.
pub(super) fn write<T: Serialize + ?Sized>(
    plan: &Plan,
    value: &T,
    out: &mut Vec<u8>,
) -> Result<(), Unfit> {
    value.serialize(ValueWriter { plan, out })
}

/// The branch index of a present value in the plan's union, if it is one.
fn present(plan: &Plan, out: &mut Vec<u8>) {
    match plan.union {
        Union::None => {}
        Union::NullFirst => write_long(out, 1),
        Union::NullLast => write_long(out, 0),
    }
}

/// A null by the plan: the union's null branch.
fn null(plan: &Plan, out: &mut Vec<u8>) -> Result<(), Unfit> {
    match plan.union {
        Union::None => unfit("null in a required field"),
        Union::NullFirst => {
            write_long(out, 0);
            Ok(())
        }
        Union::NullLast => {
            write_long(out, 1);
            Ok(())
        }
    }
}

/// Whether a field of `plan` holding an array of arrays is written as null: an optional
/// array of scalars ([`super::is_multidimensional`]'s case).
fn nulls_nested(plan: &Plan) -> bool {
    plan.union != Union::None
        && matches!(&plan.node, Node::Array(items) if !matches!(items.node, Node::Array(_)))
}

/// One value written by its plan.
struct ValueWriter<'a> {
    plan: &'a Plan,
    out: &'a mut Vec<u8>,
}

impl ValueWriter<'_> {
    fn float(self, value: f64) -> Result<(), Unfit> {
        // A JSON value holds no non-finite number: serde_json makes it null.
        if !value.is_finite() {
            return null(self.plan, self.out);
        }
        match self.plan.node {
            Node::Float => {
                present(self.plan, self.out);
                self.out.extend_from_slice(&(value as f32).to_le_bytes());
            }
            Node::Double => {
                present(self.plan, self.out);
                self.out.extend_from_slice(&value.to_le_bytes());
            }
            _ => return unfit("a float for another type"),
        }
        Ok(())
    }
}

/// `Serializer` methods of [`ValueWriter`] for integers narrower than `i64`, written as one.
macro_rules! widened_to_i64 {
    ($($method:ident($int:ty)),* $(,)?) => {
        $(fn $method(self, v: $int) -> Result<(), Unfit> {
            self.serialize_i64(v.into())
        })*
    };
}

impl<'a> ser::Serializer for ValueWriter<'a> {
    type Ok = ();
    type Error = Unfit;
    type SerializeSeq = SeqWriter<'a>;
    type SerializeTuple = Impossible<(), Unfit>;
    type SerializeTupleStruct = Impossible<(), Unfit>;
    type SerializeTupleVariant = Impossible<(), Unfit>;
    type SerializeMap = MapWriter<'a>;
    type SerializeStruct = MapWriter<'a>;
    type SerializeStructVariant = Impossible<(), Unfit>;

    fn serialize_bool(self, v: bool) -> Result<(), Unfit> {
        if !matches!(self.plan.node, Node::Boolean) {
            return unfit("a boolean for another type");
        }
        present(self.plan, self.out);
        self.out.push(u8::from(v));
        Ok(())
    }

    widened_to_i64!(
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
    );

    fn serialize_i64(self, v: i64) -> Result<(), Unfit> {
        match self.plan.node {
            Node::Int if i32::try_from(v).is_ok() => {
                present(self.plan, self.out);
                write_long(self.out, v);
                Ok(())
            }
            Node::Long => {
                present(self.plan, self.out);
                write_long(self.out, v);
                Ok(())
            }
            Node::Float | Node::Double => self.float(v as f64),
            _ => unfit("an integer for another type"),
        }
    }

    fn serialize_u64(self, v: u64) -> Result<(), Unfit> {
        match (i64::try_from(v), &self.plan.node) {
            (Ok(v), _) => self.serialize_i64(v),
            (Err(_), Node::Float | Node::Double) => self.float(v as f64),
            _ => unfit("an integer beyond i64"),
        }
    }

    fn serialize_f32(self, v: f32) -> Result<(), Unfit> {
        self.float(v.into())
    }

    fn serialize_f64(self, v: f64) -> Result<(), Unfit> {
        self.float(v)
    }

    fn serialize_char(self, v: char) -> Result<(), Unfit> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }

    fn serialize_str(self, v: &str) -> Result<(), Unfit> {
        match self.plan.node {
            Node::String => {
                present(self.plan, self.out);
                write_bytes(self.out, v.as_bytes());
            }
            Node::Bytes => {
                let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(v) else {
                    return unfit("bytes that are not base64");
                };
                present(self.plan, self.out);
                write_bytes(self.out, &bytes);
            }
            Node::Float | Node::Double => {
                let value = match v {
                    "NaN" => f64::NAN,
                    "Infinity" => f64::INFINITY,
                    "-Infinity" => f64::NEG_INFINITY,
                    _ => return unfit("text for a float"),
                };
                present(self.plan, self.out);
                match self.plan.node {
                    Node::Float => self.out.extend_from_slice(&(value as f32).to_le_bytes()),
                    _ => self.out.extend_from_slice(&value.to_le_bytes()),
                }
            }
            _ => return unfit("a string for another type"),
        }
        Ok(())
    }

    fn serialize_bytes(self, _: &[u8]) -> Result<(), Unfit> {
        unfit("raw bytes")
    }

    fn serialize_none(self) -> Result<(), Unfit> {
        null(self.plan, self.out)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Unfit> {
        value.serialize(self)
    }

    fn serialize_unit(self) -> Result<(), Unfit> {
        null(self.plan, self.out)
    }

    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Unfit> {
        null(self.plan, self.out)
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Unfit> {
        self.serialize_str(variant)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<(), Unfit> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), Unfit> {
        unfit("an enum variant with data")
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<SeqWriter<'a>, Unfit> {
        let Node::Array(items) = &self.plan.node else {
            return Err(Unfit::Nested);
        };
        present(self.plan, self.out);
        Ok(SeqWriter::new(items, len, self.out))
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Unfit> {
        unfit("a tuple")
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Unfit> {
        unfit("a tuple struct")
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Unfit> {
        unfit("a tuple variant")
    }

    fn serialize_map(self, len: Option<usize>) -> Result<MapWriter<'a>, Unfit> {
        match &self.plan.node {
            Node::Record(fields) => {
                present(self.plan, self.out);
                Ok(MapWriter::Record(RecordWriter {
                    fields,
                    next: 0,
                    field: None,
                    out: self.out,
                }))
            }
            Node::Map(values) => {
                present(self.plan, self.out);
                Ok(MapWriter::Map(SeqWriter::new(values, len, self.out)))
            }
            _ => unfit("an object for another type"),
        }
    }

    fn serialize_struct(self, _: &'static str, len: usize) -> Result<MapWriter<'a>, Unfit> {
        self.serialize_map(Some(len))
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Unfit> {
        unfit("a struct variant")
    }
}

/// An Avro array or map being written: its items' plan, the count announced in the block
/// header (a length serde gave) or, without one, the items kept aside until the end.
struct SeqWriter<'a> {
    items: &'a Plan,
    out: &'a mut Vec<u8>,
    /// The length serde announced, written as the block's count up front.
    announced: Option<usize>,
    /// The items so far.
    count: usize,
    /// Without an announced length: the items' bytes, written after their count.
    aside: Option<Vec<u8>>,
}

impl<'a> SeqWriter<'a> {
    fn new(items: &'a Plan, len: Option<usize>, out: &'a mut Vec<u8>) -> Self {
        if let Some(len) = len.filter(|&len| len > 0) {
            write_long(out, len as i64);
        }
        SeqWriter {
            items,
            out,
            announced: len,
            count: 0,
            aside: len.is_none().then(Vec::new),
        }
    }

    /// Where the next item goes.
    fn target(&mut self) -> &mut Vec<u8> {
        match &mut self.aside {
            Some(aside) => aside,
            None => self.out,
        }
    }

    fn item<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unfit> {
        self.count += 1;
        if self.announced.is_some_and(|len| self.count > len) {
            return unfit("more items than announced");
        }
        let items = self.items;
        value.serialize(ValueWriter {
            plan: items,
            out: self.target(),
        })
    }

    fn finish(self) -> Result<(), Unfit> {
        match (self.announced, self.aside) {
            (Some(len), _) if len != self.count => unfit("fewer items than announced"),
            (Some(_), _) => {
                write_long(self.out, 0);
                Ok(())
            }
            (None, aside) => {
                if self.count > 0 {
                    write_long(self.out, self.count as i64);
                    self.out.extend_from_slice(&aside.unwrap_or_default());
                }
                write_long(self.out, 0);
                Ok(())
            }
        }
    }
}

impl SerializeSeq for SeqWriter<'_> {
    type Ok = ();
    type Error = Unfit;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unfit> {
        self.item(value)
    }

    fn end(self) -> Result<(), Unfit> {
        self.finish()
    }
}

/// A Connect struct (an Avro record) or map being written.
enum MapWriter<'a> {
    Record(RecordWriter<'a>),
    Map(SeqWriter<'a>),
}

/// A record's fields, written in the plan's order as they arrive.
struct RecordWriter<'a> {
    fields: &'a [(String, Plan)],
    /// The index of the next field to write.
    next: usize,
    /// The field whose key arrived last (its value comes next).
    field: Option<usize>,
    out: &'a mut Vec<u8>,
}

impl RecordWriter<'_> {
    /// Finds `name` among the fields not written yet.
    fn find(&self, name: &str) -> Result<usize, Unfit> {
        match self.fields[self.next..].iter().position(|(f, _)| f == name) {
            Some(offset) => Ok(self.next + offset),
            None => unfit("a field out of the schema's order, or unknown to it"),
        }
    }

    /// Writes null for the fields before `index` the payload left out.
    fn skip_to(&mut self, index: usize) -> Result<(), Unfit> {
        for (_, plan) in &self.fields[self.next..index] {
            null(plan, self.out)?;
        }
        self.next = index;
        Ok(())
    }

    fn value<T: Serialize + ?Sized>(&mut self, index: usize, value: &T) -> Result<(), Unfit> {
        self.skip_to(index)?;
        let (name, plan) = &self.fields[index];
        let mark = self.out.len();
        match value.serialize(ValueWriter {
            plan,
            out: self.out,
        }) {
            Ok(()) => {}
            // PostgreSQL's array types carry no dimension count, so the schema is
            // one-dimensional: null with a warning, never a halt.
            Err(Unfit::Nested) if nulls_nested(plan) => {
                self.out.truncate(mark);
                note_multidimensional(name);
                null(plan, self.out)?;
            }
            Err(error) => return Err(error),
        }
        self.next = index + 1;
        Ok(())
    }

    fn finish(mut self) -> Result<(), Unfit> {
        self.skip_to(self.fields.len())
    }
}

impl SerializeMap for MapWriter<'_> {
    type Ok = ();
    type Error = Unfit;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Unfit> {
        match self {
            MapWriter::Record(record) => {
                let index = key.serialize(FieldName(record))?;
                record.field = Some(index);
                Ok(())
            }
            MapWriter::Map(map) => {
                map.count += 1;
                if map.announced.is_some_and(|len| map.count > len) {
                    return unfit("more entries than announced");
                }
                key.serialize(ValueWriter {
                    plan: &STRING,
                    out: map.target(),
                })
            }
        }
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unfit> {
        match self {
            MapWriter::Record(record) => match record.field.take() {
                Some(index) => record.value(index, value),
                None => unfit("a value before its key"),
            },
            MapWriter::Map(map) => {
                let values = map.items;
                value.serialize(ValueWriter {
                    plan: values,
                    out: map.target(),
                })
            }
        }
    }

    fn end(self) -> Result<(), Unfit> {
        match self {
            MapWriter::Record(record) => record.finish(),
            MapWriter::Map(map) => map.finish(),
        }
    }
}

impl SerializeStruct for MapWriter<'_> {
    type Ok = ();
    type Error = Unfit;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Unfit> {
        SerializeMap::serialize_entry(self, key, value)
    }

    fn end(self) -> Result<(), Unfit> {
        SerializeMap::end(self)
    }
}

/// A map's key: a required Avro string.
static STRING: Plan = Plan {
    node: Node::String,
    union: Union::None,
};

/// Reads a record's field name and finds its index.
struct FieldName<'r, 'a>(&'r RecordWriter<'a>);

/// `Serializer` methods of [`FieldName`] for what is not a string: a field name is one.
macro_rules! not_a_name {
    ($($method:ident($($arg:ty),*)),* $(,)?) => {
        $(fn $method(self, $(_: $arg),*) -> Result<usize, Unfit> {
            unfit("a key that is not a string")
        })*
    };
}

impl ser::Serializer for FieldName<'_, '_> {
    type Ok = usize;
    type Error = Unfit;
    type SerializeSeq = Impossible<usize, Unfit>;
    type SerializeTuple = Impossible<usize, Unfit>;
    type SerializeTupleStruct = Impossible<usize, Unfit>;
    type SerializeTupleVariant = Impossible<usize, Unfit>;
    type SerializeMap = Impossible<usize, Unfit>;
    type SerializeStruct = Impossible<usize, Unfit>;
    type SerializeStructVariant = Impossible<usize, Unfit>;

    fn serialize_str(self, v: &str) -> Result<usize, Unfit> {
        self.0.find(v)
    }

    fn serialize_char(self, v: char) -> Result<usize, Unfit> {
        self.0.find(v.encode_utf8(&mut [0; 4]))
    }

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<usize, Unfit> {
        self.0.find(variant)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<usize, Unfit> {
        value.serialize(self)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<usize, Unfit> {
        value.serialize(self)
    }

    not_a_name!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_bytes(&[u8]),
        serialize_none(),
        serialize_unit(),
        serialize_unit_struct(&'static str),
    );

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<usize, Unfit> {
        unfit("a key that is not a string")
    }

    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Unfit> {
        unfit("a key that is not a string")
    }

    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Unfit> {
        unfit("a key that is not a string")
    }

    fn serialize_tuple_struct(
        self,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleStruct, Unfit> {
        unfit("a key that is not a string")
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Unfit> {
        unfit("a key that is not a string")
    }

    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Unfit> {
        unfit("a key that is not a string")
    }

    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Unfit> {
        unfit("a key that is not a string")
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Unfit> {
        unfit("a key that is not a string")
    }
}
