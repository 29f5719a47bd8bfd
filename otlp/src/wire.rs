//! The protobuf wire format, read in place: the fields of one message as borrowed slices,
//! so that the hot path (spans) is converted to Arrow straight from the request bytes
//! without building prost structs first. It follows prost's decoding rules: a field of a
//! known number with the wrong wire type is an error, unknown fields are skipped, strings
//! must be UTF-8.

use std::fmt;

/// Why the bytes are not a well-formed protobuf message of the expected shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for WireError {}

fn malformed(what: &str) -> WireError {
    WireError(what.to_string())
}

/// One field's value as it is on the wire.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Value<'a> {
    /// The bytes of a length-delimited field (`what` names it in the error).
    pub fn bytes(self, what: &str) -> Result<&'a [u8], WireError> {
        match self {
            Value::Bytes(b) => Ok(b),
            _ => Err(WireError(format!("{what}: invalid wire type"))),
        }
    }

    /// A string field, which must be UTF-8.
    pub fn str(self, what: &str) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.bytes(what)?).map_err(|_| {
            WireError(format!(
                "{what}: invalid string value: data is not UTF-8 encoded"
            ))
        })
    }

    pub fn varint(self, what: &str) -> Result<u64, WireError> {
        match self {
            Value::Varint(v) => Ok(v),
            _ => Err(WireError(format!("{what}: invalid wire type"))),
        }
    }

    pub fn fixed64(self, what: &str) -> Result<u64, WireError> {
        match self {
            Value::Fixed64(v) => Ok(v),
            _ => Err(WireError(format!("{what}: invalid wire type"))),
        }
    }

    pub fn fixed32(self, what: &str) -> Result<u32, WireError> {
        match self {
            Value::Fixed32(v) => Ok(v),
            _ => Err(WireError(format!("{what}: invalid wire type"))),
        }
    }
}

/// The fields of one message, in wire order.
pub(crate) struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Fields { bytes, at: 0 }
    }

    fn varint(&mut self) -> Result<u64, WireError> {
        let mut value = 0u64;
        for shift in 0..10 {
            let Some(&b) = self.bytes.get(self.at) else {
                return Err(malformed("truncated varint"));
            };
            self.at += 1;
            value |= u64::from(b & 0x7f) << (7 * shift);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed("varint longer than 10 bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or_else(|| {
                malformed("buffer underflow: a field runs past the end of its message")
            })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    /// Skips a group (wire type 3) up to its matching end tag.
    fn skip_group(&mut self, number: u64, depth: u32) -> Result<(), WireError> {
        if depth > 100 {
            return Err(malformed("recursion limit reached"));
        }
        loop {
            let key = self.varint()?;
            let (n, wire) = (key >> 3, key & 7);
            match wire {
                0 => {
                    self.varint()?;
                }
                1 => {
                    self.take(8)?;
                }
                2 => {
                    let len = self.varint()?;
                    self.take(usize::try_from(len).map_err(|_| malformed("length too large"))?)?;
                }
                3 => self.skip_group(n, depth + 1)?,
                4 if n == number => return Ok(()),
                5 => {
                    self.take(4)?;
                }
                _ => return Err(malformed("unexpected end group tag")),
            }
        }
    }

    /// The next field: its number and value; `None` at the end of the message. Groups
    /// (a wire type no OTLP field has) are skipped.
    pub fn next_field(&mut self) -> Result<Option<(u32, Value<'a>)>, WireError> {
        loop {
            if self.at >= self.bytes.len() {
                return Ok(None);
            }
            let key = self.varint()?;
            let number = key >> 3;
            if number == 0 || number > u64::from(u32::MAX >> 3) {
                return Err(WireError(format!("invalid field number {number}")));
            }
            let value =
                match key & 7 {
                    0 => Value::Varint(self.varint()?),
                    1 => {
                        let b = self.take(8)?;
                        Value::Fixed64(u64::from_le_bytes(
                            b.try_into().map_err(|_| malformed("fixed64"))?,
                        ))
                    }
                    2 => {
                        let len = self.varint()?;
                        Value::Bytes(self.take(
                            usize::try_from(len).map_err(|_| malformed("length too large"))?,
                        )?)
                    }
                    3 => {
                        self.skip_group(number, 0)?;
                        continue;
                    }
                    5 => {
                        let b = self.take(4)?;
                        Value::Fixed32(u32::from_le_bytes(
                            b.try_into().map_err(|_| malformed("fixed32"))?,
                        ))
                    }
                    w => return Err(WireError(format!("invalid wire type {w}"))),
                };
            return Ok(Some((number as u32, value)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::KeyValue;
    use prost::Message;

    #[test]
    fn fields_are_read_in_place() {
        let kv = KeyValue {
            key: "k".into(),
            value: None,
            key_strindex: 7,
        };
        let bytes = kv.encode_to_vec();
        let mut f = Fields::new(&bytes);
        let (n, v) = f.next_field().unwrap().unwrap();
        assert_eq!((n, v.str("key").unwrap()), (1, "k"));
        let (n, v) = f.next_field().unwrap().unwrap();
        assert_eq!((n, v.varint("key_strindex").unwrap()), (3, 7));
        assert!(f.next_field().unwrap().is_none());
    }

    #[test]
    fn truncated_and_invalid_input_is_an_error() {
        assert!(Fields::new(&[0x0a, 5, b'a']).next_field().is_err());
        assert!(Fields::new(&[0x80]).next_field().is_err());
        assert!(Fields::new(&[0x0f]).next_field().is_err(), "wire type 7");
        assert!(
            Fields::new(&[0x0a, 1, 0xff])
                .next_field()
                .unwrap()
                .unwrap()
                .1
                .str("s")
                .is_err()
        );
    }
}
