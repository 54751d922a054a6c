//! A bounded MessagePack parser for the subset Flax writes (`flax.serialization.to_bytes`).
//!
//! Values borrow from the input, so string and binary payloads are never copied. Every length
//! is checked against the bytes that remain before anything is allocated (an array of `n`
//! elements needs at least `n` more bytes), nesting is limited to [`MAX_DEPTH`] and the total
//! number of values to [`MAX_VALUES`], so a hostile file cannot make the parser recurse deeply,
//! allocate much more than its own size, or run for long.

use std::fmt;

/// The deepest nesting of arrays, maps and extension payloads accepted.
pub const MAX_DEPTH: usize = 64;
/// The most values (of any kind) one document may hold (a real checkpoint has a few per tensor;
/// at about 48 bytes per parsed value this caps the parse tree near 50 MB).
pub const MAX_VALUES: usize = 1_000_000;

/// One MessagePack value, borrowing strings and binary payloads from the input.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    /// `nil`.
    Nil,
    /// `true` / `false`.
    Bool(bool),
    /// Any integer (positive or negative fixint, uint 8-64, int 8-64).
    Int(i128),
    /// float 32 or float 64.
    Float(f64),
    /// A UTF-8 string.
    Str(&'a str),
    /// A binary blob.
    Bin(&'a [u8]),
    /// An array.
    Array(Vec<Value<'a>>),
    /// A map, in file order (duplicate keys are kept; callers decide).
    Map(Vec<(Value<'a>, Value<'a>)>),
    /// An extension: type code and payload.
    Ext(i8, &'a [u8]),
}

impl Value<'_> {
    /// A short name of the value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bin(_) => "bin",
            Value::Array(_) => "array",
            Value::Map(_) => "map",
            Value::Ext(..) => "ext",
        }
    }
}

/// Why a document could not be parsed: what was wrong and at which byte offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MsgpackError {
    /// The byte offset where the problem was found.
    pub offset: usize,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for MsgpackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "msgpack: {} (at byte {})", self.reason, self.offset)
    }
}

impl std::error::Error for MsgpackError {}

type PResult<T> = std::result::Result<T, MsgpackError>;

struct Parser<'a> {
    data: &'a [u8],
    pos: usize,
    values: usize,
}

impl<'a> Parser<'a> {
    fn err<T>(&self, reason: impl Into<String>) -> PResult<T> {
        Err(MsgpackError {
            offset: self.pos,
            reason: reason.into(),
        })
    }

    fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    fn take(&mut self, n: usize) -> PResult<&'a [u8]> {
        let end = match self.pos.checked_add(n) {
            Some(end) if end <= self.data.len() => end,
            _ => {
                return self.err(format!(
                    "truncated: {n} bytes needed, {} left",
                    self.remaining()
                ))
            }
        };
        let out = self.data.get(self.pos..end).ok_or_else(|| MsgpackError {
            offset: self.pos,
            reason: "truncated".into(),
        })?;
        self.pos = end;
        Ok(out)
    }

    fn arr<const N: usize>(&mut self) -> PResult<[u8; N]> {
        let bytes = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self) -> PResult<u8> {
        Ok(self.arr::<1>()?[0])
    }

    fn len(&mut self, width: usize) -> PResult<usize> {
        let n = match width {
            1 => u64::from(self.u8()?),
            2 => u64::from(u16::from_be_bytes(self.arr()?)),
            _ => u64::from(u32::from_be_bytes(self.arr()?)),
        };
        usize::try_from(n).or_else(|_| self.err("length does not fit in memory"))
    }

    /// Checks that `count` elements (each at least `min_bytes` long) can still follow.
    fn check_count(&self, count: usize, min_bytes: usize, what: &str) -> PResult<()> {
        match count.checked_mul(min_bytes) {
            Some(need) if need <= self.remaining() => Ok(()),
            _ => self.err(format!(
                "{what} of {count} elements is longer than the {} bytes left",
                self.remaining()
            )),
        }
    }

    fn str(&mut self, n: usize) -> PResult<Value<'a>> {
        let start = self.pos;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes)
            .map(Value::Str)
            .or(Err(MsgpackError {
                offset: start,
                reason: "a string is not valid UTF-8".into(),
            }))
    }

    fn array(&mut self, n: usize, depth: usize) -> PResult<Value<'a>> {
        self.check_count(n, 1, "an array")?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.value(depth + 1)?);
        }
        Ok(Value::Array(items))
    }

    fn map(&mut self, n: usize, depth: usize) -> PResult<Value<'a>> {
        self.check_count(n, 2, "a map")?;
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            let k = self.value(depth + 1)?;
            let v = self.value(depth + 1)?;
            items.push((k, v));
        }
        Ok(Value::Map(items))
    }

    fn ext(&mut self, n: usize) -> PResult<Value<'a>> {
        let code = self.u8()? as i8;
        Ok(Value::Ext(code, self.take(n)?))
    }

    fn value(&mut self, depth: usize) -> PResult<Value<'a>> {
        if depth > MAX_DEPTH {
            return self.err(format!("nesting deeper than {MAX_DEPTH} levels"));
        }
        self.values += 1;
        if self.values > MAX_VALUES {
            return self.err(format!("more than {MAX_VALUES} values"));
        }
        let start = self.pos;
        let tag = self.u8()?;
        Ok(match tag {
            0x00..=0x7f => Value::Int(i128::from(tag)),
            0x80..=0x8f => return self.map(usize::from(tag & 0x0f), depth),
            0x90..=0x9f => return self.array(usize::from(tag & 0x0f), depth),
            0xa0..=0xbf => return self.str(usize::from(tag & 0x1f)),
            0xc0 => Value::Nil,
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4..=0xc6 => {
                let n = self.len(1 << (tag - 0xc4))?;
                Value::Bin(self.take(n)?)
            }
            0xc7..=0xc9 => {
                let n = self.len(1 << (tag - 0xc7))?;
                return self.ext(n);
            }
            0xca => Value::Float(f64::from(f32::from_be_bytes(self.arr()?))),
            0xcb => Value::Float(f64::from_be_bytes(self.arr()?)),
            0xcc => Value::Int(i128::from(self.u8()?)),
            0xcd => Value::Int(i128::from(u16::from_be_bytes(self.arr()?))),
            0xce => Value::Int(i128::from(u32::from_be_bytes(self.arr()?))),
            0xcf => Value::Int(i128::from(u64::from_be_bytes(self.arr()?))),
            0xd0 => Value::Int(i128::from(self.u8()? as i8)),
            0xd1 => Value::Int(i128::from(i16::from_be_bytes(self.arr()?))),
            0xd2 => Value::Int(i128::from(i32::from_be_bytes(self.arr()?))),
            0xd3 => Value::Int(i128::from(i64::from_be_bytes(self.arr()?))),
            0xd4..=0xd8 => return self.ext(1 << (tag - 0xd4)),
            0xd9..=0xdb => {
                let n = self.len(1 << (tag - 0xd9))?;
                return self.str(n);
            }
            0xdc | 0xdd => {
                let n = self.len(if tag == 0xdc { 2 } else { 4 })?;
                return self.array(n, depth);
            }
            0xde | 0xdf => {
                let n = self.len(if tag == 0xde { 2 } else { 4 })?;
                return self.map(n, depth);
            }
            0xe0..=0xff => Value::Int(i128::from(tag as i8)),
            0xc1 => {
                return Err(MsgpackError {
                    offset: start,
                    reason: "byte 0xc1 is never used in MessagePack".into(),
                })
            }
        })
    }
}

/// Parses one complete MessagePack document; bytes after it are an error.
pub fn parse(data: &[u8]) -> PResult<Value<'_>> {
    let mut p = Parser {
        data,
        pos: 0,
        values: 0,
    };
    if data.is_empty() {
        return p.err("the file is empty");
    }
    let v = p.value(0)?;
    if p.pos != data.len() {
        return p.err(format!(
            "{} unexpected bytes after the document",
            data.len() - p.pos
        ));
    }
    Ok(v)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn scalars_and_containers() {
        // {"a": [1, -1, 300, 1.5, nil, true, "hi", b"\x01"]}
        let doc = [
            0x81, 0xa1, b'a', 0x98, 0x01, 0xff, 0xcd, 0x01, 0x2c, 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0,
            0, 0xc0, 0xc3, 0xa2, b'h', b'i', 0xc4, 0x01, 0x01,
        ];
        let v = parse(&doc).unwrap();
        let Value::Map(m) = v else { panic!() };
        assert_eq!(m[0].0, Value::Str("a"));
        assert_eq!(
            m[0].1,
            Value::Array(vec![
                Value::Int(1),
                Value::Int(-1),
                Value::Int(300),
                Value::Float(1.5),
                Value::Nil,
                Value::Bool(true),
                Value::Str("hi"),
                Value::Bin(&[1]),
            ])
        );
    }

    #[test]
    fn lengths_and_depth_are_bounded() {
        // array32 claiming 4 billion elements in 5 bytes
        assert!(parse(&[0xdd, 0xff, 0xff, 0xff, 0xff])
            .unwrap_err()
            .reason
            .contains("longer than"));
        // bin32 longer than the file
        assert!(parse(&[0xc6, 0x00, 0x00, 0x10, 0x00, 1])
            .unwrap_err()
            .reason
            .contains("truncated"));
        let deep = vec![0x91u8; 10_000];
        assert!(parse(&deep).unwrap_err().reason.contains("nesting"));
        assert!(parse(&[0x01, 0x02]).unwrap_err().reason.contains("after"));
        // more values than allowed, each one byte
        let n = MAX_VALUES + 1;
        let mut many = vec![0xdd];
        many.extend_from_slice(&(n as u32).to_be_bytes());
        many.resize(5 + n, 0x00);
        assert!(parse(&many).unwrap_err().reason.contains("more than"));
        assert!(parse(&[0xc1]).is_err());
        assert!(parse(&[]).is_err());
    }
}
