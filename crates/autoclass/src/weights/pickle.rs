//! A symbolic pickle machine for PyTorch state dicts that interprets opcodes and calls nothing.
//!
//! It understands pickle protocols 0–5 and accepts exactly what `torch.load(weights_only=True)`
//! accepts for a state dict: plain Python data (ints, floats, strings, bytes, tuples, lists,
//! dicts, sets), `collections.OrderedDict`, `torch.Size`, the typed storage classes
//! (`torch.FloatStorage`, …) as persistent ids, and the tensor rebuild functions
//! `torch._utils._rebuild_tensor_v2` and `torch._utils._rebuild_parameter`. Every other global
//! (`os.system`, `builtins.eval`, `functools.partial`, `torch.jit…`) and every other object
//! construction (`INST`, `OBJ`, `NEWOBJ`, `NEWOBJ_EX`, `BUILD` on anything but a dict or a tensor,
//! `EXT*`, text persistent ids, out-of-band buffers) is refused with an error naming it.
//!
//! Values live in an arena and refer to each other by index, so memo sharing costs nothing,
//! mutation through the memo behaves as in Python, and cyclic or deeply nested input cannot
//! overflow the stack or leak memory. Opcodes, stack depth and memo size are bounded, and every
//! length read from the input is checked against the remaining input before anything is allocated.

use std::collections::HashMap;
use std::fmt;

/// At most this many opcodes are interpreted per pickle.
pub const MAX_OPCODES: usize = 1_000_000;
/// At most this many values may be on the stack (marks included).
pub const MAX_STACK: usize = 10_000;
/// At most this many memo entries.
pub const MAX_MEMO: usize = 100_000;
/// At most this many nested containers when turning the result into a [`Value`].
const MAX_DEPTH: usize = 100;

/// Why a pickle was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PickleError {
    /// The pickle names or builds something outside the allow-list; the string names it
    /// (`os.system`, `INST builtins.eval`, …).
    Unsafe(String),
    /// The pickle is malformed, truncated, or exceeds a limit.
    Invalid(String),
}

impl fmt::Display for PickleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PickleError::Unsafe(what) => write!(
                f,
                "Weights only load failed: unsupported global or object `{what}` is not allowed in a PyTorch state dict"
            ),
            PickleError::Invalid(reason) => write!(f, "{reason}"),
        }
    }
}

impl std::error::Error for PickleError {}

type PResult<T> = std::result::Result<T, PickleError>;

fn invalid<T>(reason: impl Into<String>) -> PResult<T> {
    Err(PickleError::Invalid(reason.into()))
}

/// The element type of a PyTorch typed storage (`torch.FloatStorage` → `F32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StorageDType {
    /// `torch.DoubleStorage` (float64).
    F64,
    /// `torch.FloatStorage` (float32).
    F32,
    /// `torch.HalfStorage` (float16).
    F16,
    /// `torch.BFloat16Storage` (bfloat16).
    BF16,
    /// `torch.LongStorage` (int64).
    I64,
    /// `torch.IntStorage` (int32).
    I32,
    /// `torch.ShortStorage` (int16).
    I16,
    /// `torch.CharStorage` (int8).
    I8,
    /// `torch.ByteStorage` (uint8).
    U8,
    /// `torch.BoolStorage` (bool, one byte each).
    Bool,
}

impl StorageDType {
    /// The dtype of `torch.<name>`, for the storage class names torch pickles.
    pub fn from_storage_class(name: &str) -> Option<Self> {
        Some(match name {
            "DoubleStorage" => StorageDType::F64,
            "FloatStorage" => StorageDType::F32,
            "HalfStorage" => StorageDType::F16,
            "BFloat16Storage" => StorageDType::BF16,
            "LongStorage" => StorageDType::I64,
            "IntStorage" => StorageDType::I32,
            "ShortStorage" => StorageDType::I16,
            "CharStorage" => StorageDType::I8,
            "ByteStorage" => StorageDType::U8,
            "BoolStorage" => StorageDType::Bool,
            _ => return None,
        })
    }

    /// Bytes per element.
    pub fn size_in_bytes(self) -> usize {
        match self {
            StorageDType::F64 | StorageDType::I64 => 8,
            StorageDType::F32 | StorageDType::I32 => 4,
            StorageDType::F16 | StorageDType::BF16 | StorageDType::I16 => 2,
            StorageDType::I8 | StorageDType::U8 | StorageDType::Bool => 1,
        }
    }

    /// The torch name (`float32`).
    pub fn torch_name(self) -> &'static str {
        match self {
            StorageDType::F64 => "float64",
            StorageDType::F32 => "float32",
            StorageDType::F16 => "float16",
            StorageDType::BF16 => "bfloat16",
            StorageDType::I64 => "int64",
            StorageDType::I32 => "int32",
            StorageDType::I16 => "int16",
            StorageDType::I8 => "int8",
            StorageDType::U8 => "uint8",
            StorageDType::Bool => "bool",
        }
    }
}

/// A storage named by a `BINPERSID` id `('storage', storage_type, key, location, numel)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageRef {
    /// The storage key (`data/<key>` in a zip archive).
    pub key: String,
    /// The element type.
    pub dtype: StorageDType,
    /// Where it was saved from (`cpu`, `cuda:0`); informational.
    pub location: String,
    /// Number of elements the storage holds.
    pub numel: usize,
}

/// A tensor as `torch._utils._rebuild_tensor_v2` would build it: a strided view of a storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorRef {
    /// The storage key.
    pub storage: String,
    /// The storage's (and so the tensor's) element type.
    pub dtype: StorageDType,
    /// The storage's number of elements, as the persistent id states it.
    pub storage_numel: usize,
    /// Offset of the first element, in elements.
    pub offset: usize,
    /// The shape.
    pub shape: Vec<usize>,
    /// The strides, in elements.
    pub stride: Vec<usize>,
}

/// A fully built pickled value (a tree; shared memo references are copied).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True`/`False`.
    Bool(bool),
    /// An integer (up to 128 bits).
    Int(i128),
    /// A float.
    Float(f64),
    /// A `str`.
    Str(String),
    /// A `bytes`/`bytearray`.
    Bytes(Vec<u8>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A list.
    List(Vec<Value>),
    /// A set or frozenset.
    Set(Vec<Value>),
    /// A dict or `OrderedDict`, in insertion order (later duplicates replace earlier values).
    Dict(Vec<(Value, Value)>),
    /// An allowed global that was never called (its dotted name).
    Global(String),
    /// A storage persistent id.
    Storage(StorageRef),
    /// A rebuilt tensor.
    Tensor(TensorRef),
}

/// The globals a state dict may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Allowed {
    RebuildTensorV2,
    RebuildParameter,
    OrderedDict,
    Size,
    Storage(StorageDType),
}

impl Allowed {
    fn lookup(module: &str, name: &str) -> Option<Self> {
        match (module, name) {
            ("torch._utils", "_rebuild_tensor_v2") => Some(Allowed::RebuildTensorV2),
            ("torch._utils", "_rebuild_parameter") => Some(Allowed::RebuildParameter),
            ("collections", "OrderedDict") => Some(Allowed::OrderedDict),
            ("torch", "Size") => Some(Allowed::Size),
            ("torch", storage) => StorageDType::from_storage_class(storage).map(Allowed::Storage),
            _ => None,
        }
    }

    fn name(self) -> String {
        match self {
            Allowed::RebuildTensorV2 => "torch._utils._rebuild_tensor_v2".into(),
            Allowed::RebuildParameter => "torch._utils._rebuild_parameter".into(),
            Allowed::OrderedDict => "collections.OrderedDict".into(),
            Allowed::Size => "torch.Size".into(),
            Allowed::Storage(d) => format!("torch.{}", storage_class_name(d)),
        }
    }
}

fn storage_class_name(d: StorageDType) -> &'static str {
    match d {
        StorageDType::F64 => "DoubleStorage",
        StorageDType::F32 => "FloatStorage",
        StorageDType::F16 => "HalfStorage",
        StorageDType::BF16 => "BFloat16Storage",
        StorageDType::I64 => "LongStorage",
        StorageDType::I32 => "IntStorage",
        StorageDType::I16 => "ShortStorage",
        StorageDType::I8 => "CharStorage",
        StorageDType::U8 => "ByteStorage",
        StorageDType::Bool => "BoolStorage",
    }
}

type Id = usize;

/// An arena node.
#[derive(Debug)]
enum Obj {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Id>),
    List(Vec<Id>),
    Set(Vec<Id>),
    Dict(Vec<(Id, Id)>),
    Global(Allowed),
    Storage(StorageRef),
    Tensor(TensorRef),
}

impl Obj {
    fn kind(&self) -> &'static str {
        match self {
            Obj::None => "None",
            Obj::Bool(_) => "bool",
            Obj::Int(_) => "int",
            Obj::Float(_) => "float",
            Obj::Str(_) => "str",
            Obj::Bytes(_) => "bytes",
            Obj::Tuple(_) => "tuple",
            Obj::List(_) => "list",
            Obj::Set(_) => "set",
            Obj::Dict(_) => "dict",
            Obj::Global(_) => "global",
            Obj::Storage(_) => "storage",
            Obj::Tensor(_) => "tensor",
        }
    }
}

/// The machine: input, position, arena, stack with marks, memo.
struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    arena: Vec<Obj>,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: HashMap<u64, Id>,
}

/// Unpickles one pickle starting at the beginning of `data`; returns the value and the number of
/// bytes consumed (up to and including `STOP`).
pub fn load(data: &[u8]) -> PResult<(Value, usize)> {
    let mut m = Machine {
        data,
        pos: 0,
        arena: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    let top = m.run()?;
    let mut budget = m.arena.len().saturating_mul(4).max(1024);
    let value = m.to_value(top, 0, &mut budget)?;
    Ok((value, m.pos))
}

/// Unpickles a state dict: a dict or `OrderedDict` of names to tensors, in order. Returns the
/// tensors and the number of bytes consumed.
pub fn load_state_dict(data: &[u8]) -> PResult<(Vec<(String, TensorRef)>, usize)> {
    let (value, used) = load(data)?;
    Ok((state_dict(value)?, used))
}

/// The tensors of an unpickled state dict, in order (a later duplicate name replaces the
/// earlier tensor in place, as a Python dict does).
pub fn state_dict(value: Value) -> PResult<Vec<(String, TensorRef)>> {
    let Value::Dict(items) = value else {
        return invalid(format!(
            "the pickle holds a {}, not a state dict (a dict of tensors)",
            value_kind(&value)
        ));
    };
    let mut out: Vec<(String, TensorRef)> = Vec::with_capacity(items.len());
    let mut positions: HashMap<String, usize> = HashMap::new();
    for (k, v) in items {
        let Value::Str(name) = k else {
            return invalid(format!(
                "a state dict key is a {}, not a string",
                value_kind(&k)
            ));
        };
        let Value::Tensor(t) = v else {
            return invalid(format!(
                "state dict entry `{name}` is a {}, not a tensor",
                value_kind(&v)
            ));
        };
        match positions.get(&name) {
            Some(&i) => {
                if let Some(slot) = out.get_mut(i) {
                    slot.1 = t;
                }
            }
            None => {
                positions.insert(name.clone(), out.len());
                out.push((name, t));
            }
        }
    }
    Ok(out)
}

fn value_kind(v: &Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "bool",
        Value::Int(_) => "int",
        Value::Float(_) => "float",
        Value::Str(_) => "str",
        Value::Bytes(_) => "bytes",
        Value::Tuple(_) => "tuple",
        Value::List(_) => "list",
        Value::Set(_) => "set",
        Value::Dict(_) => "dict",
        Value::Global(_) => "global",
        Value::Storage(_) => "storage",
        Value::Tensor(_) => "tensor",
    }
}

impl Machine<'_> {
    // ---- input ----

    fn take(&mut self, n: usize) -> PResult<&[u8]> {
        let remaining = self.data.len() - self.pos.min(self.data.len());
        if n > remaining {
            return invalid(format!(
                "a length of {n} bytes at offset {} exceeds the remaining input ({remaining} bytes): the pickle is truncated or hostile",
                self.pos
            ));
        }
        let start = self.pos;
        self.pos += n;
        self.data
            .get(start..start + n)
            .ok_or_else(|| PickleError::Invalid("the pickle is truncated".into()))
    }

    fn u8(&mut self) -> PResult<u8> {
        Ok(self.take(1)?.first().copied().unwrap_or(0))
    }

    fn arr<const N: usize>(&mut self) -> PResult<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u16(&mut self) -> PResult<usize> {
        Ok(u16::from_le_bytes(self.arr()?) as usize)
    }

    fn u32(&mut self) -> PResult<usize> {
        Ok(u32::from_le_bytes(self.arr()?) as usize)
    }

    fn u64(&mut self) -> PResult<usize> {
        let v = u64::from_le_bytes(self.arr()?);
        usize::try_from(v).or_else(|_| invalid("a length does not fit in memory"))
    }

    /// A `\n`-terminated line (without the newline).
    fn line(&mut self) -> PResult<&[u8]> {
        let rest = self.data.get(self.pos..).unwrap_or(&[]);
        let Some(n) = rest.iter().position(|&b| b == b'\n') else {
            return invalid("the pickle is truncated inside a text line");
        };
        let start = self.pos;
        self.pos += n + 1;
        Ok(self.data.get(start..start + n).unwrap_or(&[]))
    }

    fn line_str(&mut self) -> PResult<String> {
        let line = self.line()?;
        let s = std::str::from_utf8(line)
            .or_else(|_| invalid("a text line of the pickle is not UTF-8"))?;
        Ok(s.trim_end_matches('\r').to_string())
    }

    // ---- arena and stack ----

    fn alloc(&mut self, obj: Obj) -> Id {
        self.arena.push(obj);
        self.arena.len() - 1
    }

    fn push(&mut self, id: Id) -> PResult<()> {
        if self.stack.len() + self.marks.len() >= MAX_STACK {
            return invalid(format!(
                "the pickle's stack grows beyond {MAX_STACK} entries"
            ));
        }
        self.stack.push(id);
        Ok(())
    }

    fn push_new(&mut self, obj: Obj) -> PResult<()> {
        let id = self.alloc(obj);
        self.push(id)
    }

    fn base(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> PResult<Id> {
        if self.stack.len() <= self.base() {
            return invalid("stack underflow in the pickle");
        }
        self.stack
            .pop()
            .ok_or_else(|| PickleError::Invalid("stack underflow in the pickle".into()))
    }

    fn top(&self) -> PResult<Id> {
        if self.stack.len() <= self.base() {
            return invalid("stack underflow in the pickle");
        }
        self.stack
            .last()
            .copied()
            .ok_or_else(|| PickleError::Invalid("stack underflow in the pickle".into()))
    }

    fn pop_mark(&mut self) -> PResult<Vec<Id>> {
        let Some(mark) = self.marks.pop() else {
            return invalid("the pickle uses a MARK that was never set");
        };
        Ok(self.stack.split_off(mark.min(self.stack.len())))
    }

    fn get(&self, id: Id) -> PResult<&Obj> {
        self.arena
            .get(id)
            .ok_or_else(|| PickleError::Invalid("internal: dangling value".into()))
    }

    fn memo_put(&mut self, key: u64, id: Id) -> PResult<()> {
        // Picklers number memo entries 0, 1, 2, …; an index past the limit is never legitimate.
        if key >= MAX_MEMO as u64 {
            return invalid(format!(
                "memo index {key} exceeds the memo limit of {MAX_MEMO} entries"
            ));
        }
        if !self.memo.contains_key(&key) && self.memo.len() >= MAX_MEMO {
            return invalid(format!("the pickle's memo grows beyond {MAX_MEMO} entries"));
        }
        self.memo.insert(key, id);
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> PResult<()> {
        let id = *self
            .memo
            .get(&key)
            .ok_or_else(|| PickleError::Invalid(format!("memo key {key} was never stored")))?;
        self.push(id)
    }

    fn str_of(&self, id: Id) -> Option<&str> {
        match self.arena.get(id) {
            Some(Obj::Str(s)) => Some(s),
            _ => None,
        }
    }

    fn int_of(&self, id: Id) -> Option<i128> {
        match self.arena.get(id) {
            Some(Obj::Int(v)) => Some(*v),
            Some(Obj::Bool(b)) => Some(i128::from(*b)),
            _ => None,
        }
    }

    fn usize_of(&self, id: Id, what: &str) -> PResult<usize> {
        self.int_of(id)
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| PickleError::Invalid(format!("{what} is not a non-negative integer")))
    }

    fn describe(&self, id: Id) -> String {
        match self.arena.get(id) {
            Some(Obj::Global(g)) => g.name(),
            Some(Obj::Str(s)) => format!("str {s:?}"),
            Some(o) => format!("{} value", o.kind()),
            None => "nothing".into(),
        }
    }

    // ---- the interpreter ----

    fn run(&mut self) -> PResult<Id> {
        for _ in 0..MAX_OPCODES {
            if self.pos >= self.data.len() {
                return invalid("the pickle ends without a STOP opcode (truncated)");
            }
            let op = self.u8()?;
            match op {
                b'.' => {
                    // STOP
                    let top = self.pop()?;
                    return Ok(top);
                }
                0x80 => {
                    // PROTO
                    let proto = self.u8()?;
                    if proto > 5 {
                        return invalid(format!("unsupported pickle protocol {proto}"));
                    }
                }
                0x95 => {
                    // FRAME: a length hint only
                    let n = self.u64()?;
                    if n > self.data.len().saturating_sub(self.pos) {
                        return invalid("a pickle frame length exceeds the remaining input");
                    }
                }
                b'(' => {
                    if self.stack.len() + self.marks.len() >= MAX_STACK {
                        return invalid(format!(
                            "the pickle's stack grows beyond {MAX_STACK} entries"
                        ));
                    }
                    self.marks.push(self.stack.len());
                }
                b'0' => {
                    // POP
                    if self.stack.len() > self.base() {
                        self.pop()?;
                    } else {
                        self.pop_mark()?;
                    }
                }
                b'1' => {
                    // POP_MARK
                    self.pop_mark()?;
                }
                b'2' => {
                    // DUP
                    let top = self.top()?;
                    self.push(top)?;
                }
                // ---- constants ----
                b'N' => self.push_new(Obj::None)?,
                0x88 => self.push_new(Obj::Bool(true))?,
                0x89 => self.push_new(Obj::Bool(false))?,
                b'I' => {
                    let s = self.line_str()?;
                    let obj = match s.as_str() {
                        "01" => Obj::Bool(true),
                        "00" => Obj::Bool(false),
                        _ => Obj::Int(parse_int(&s)?),
                    };
                    self.push_new(obj)?;
                }
                b'L' => {
                    let s = self.line_str()?;
                    let v = parse_int(s.trim_end_matches('L'))?;
                    self.push_new(Obj::Int(v))?;
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.arr()?);
                    self.push_new(Obj::Int(i128::from(v)))?;
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push_new(Obj::Int(i128::from(v)))?;
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push_new(Obj::Int(v as i128))?;
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let v = long_from_bytes(self.take(n)?)?;
                    self.push_new(Obj::Int(v))?;
                }
                0x8b => {
                    let n = self.u32()?;
                    let v = long_from_bytes(self.take(n)?)?;
                    self.push_new(Obj::Int(v))?;
                }
                b'F' => {
                    let s = self.line_str()?;
                    let v: f64 = s
                        .trim()
                        .parse()
                        .or_else(|_| invalid(format!("bad float {s:?} in the pickle")))?;
                    self.push_new(Obj::Float(v))?;
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.arr()?);
                    self.push_new(Obj::Float(v))?;
                }
                // ---- strings ----
                b'S' => {
                    let line = self.line()?.to_vec();
                    let s = parse_quoted(&line)?;
                    self.push_new(Obj::Str(s))?;
                }
                b'T' => {
                    let n = self.u32()?;
                    let s = latin1(self.take(n)?);
                    self.push_new(Obj::Str(s))?;
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    let s = latin1(self.take(n)?);
                    self.push_new(Obj::Str(s))?;
                }
                b'V' => {
                    let line = self.line()?.to_vec();
                    let s = raw_unicode_escape(&line)?;
                    self.push_new(Obj::Str(s))?;
                }
                b'X' => {
                    let n = self.u32()?;
                    let s = utf8(self.take(n)?)?;
                    self.push_new(Obj::Str(s))?;
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = utf8(self.take(n)?)?;
                    self.push_new(Obj::Str(s))?;
                }
                0x8d => {
                    let n = self.u64()?;
                    let s = utf8(self.take(n)?)?;
                    self.push_new(Obj::Str(s))?;
                }
                b'B' => {
                    let n = self.u32()?;
                    let b = self.take(n)?.to_vec();
                    self.push_new(Obj::Bytes(b))?;
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.push_new(Obj::Bytes(b))?;
                }
                0x8e | 0x96 => {
                    let n = self.u64()?;
                    let b = self.take(n)?.to_vec();
                    self.push_new(Obj::Bytes(b))?;
                }
                0x97 => {
                    return Err(PickleError::Unsafe(
                        "NEXT_BUFFER (out-of-band buffer)".into(),
                    ))
                }
                0x98 => {
                    // READONLY_BUFFER: no-op on in-band data
                    self.top()?;
                }
                // ---- containers ----
                b')' => self.push_new(Obj::Tuple(Vec::new()))?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push_new(Obj::Tuple(items))?;
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push_new(Obj::Tuple(items))?;
                }
                b']' => self.push_new(Obj::List(Vec::new()))?,
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push_new(Obj::List(items))?;
                }
                b'a' => {
                    let item = self.pop()?;
                    let list = self.top()?;
                    self.extend(list, vec![item])?;
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    let list = self.top()?;
                    self.extend(list, items)?;
                }
                b'}' => self.push_new(Obj::Dict(Vec::new()))?,
                b'd' => {
                    let items = self.pop_mark()?;
                    let pairs = pairs(items)?;
                    self.push_new(Obj::Dict(pairs))?;
                }
                b's' => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    let dict = self.top()?;
                    self.set_items(dict, vec![(key, value)])?;
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    let dict = self.top()?;
                    self.set_items(dict, pairs(items)?)?;
                }
                0x8f => self.push_new(Obj::Set(Vec::new()))?,
                0x90 => {
                    let items = self.pop_mark()?;
                    let set = self.top()?;
                    match self.arena.get_mut(set) {
                        Some(Obj::Set(v)) => v.extend(items),
                        _ => return invalid("ADDITEMS on something that is not a set"),
                    }
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push_new(Obj::Set(items))?;
                }
                // ---- memo ----
                b'g' => {
                    let s = self.line_str()?;
                    let key = parse_memo_key(&s)?;
                    self.memo_get(key)?;
                }
                b'h' => {
                    let key = self.u8()? as u64;
                    self.memo_get(key)?;
                }
                b'j' => {
                    let key = self.u32()? as u64;
                    self.memo_get(key)?;
                }
                b'p' => {
                    let s = self.line_str()?;
                    let key = parse_memo_key(&s)?;
                    let top = self.top()?;
                    self.memo_put(key, top)?;
                }
                b'q' => {
                    let key = self.u8()? as u64;
                    let top = self.top()?;
                    self.memo_put(key, top)?;
                }
                b'r' => {
                    let key = self.u32()? as u64;
                    let top = self.top()?;
                    self.memo_put(key, top)?;
                }
                0x94 => {
                    let key = self.memo.len() as u64;
                    let top = self.top()?;
                    self.memo_put(key, top)?;
                }
                // ---- globals and calls ----
                b'c' => {
                    let module = self.line_str()?;
                    let name = self.line_str()?;
                    self.push_global(&module, &name)?;
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Some(module), Some(name)) = (self.str_of(module), self.str_of(name))
                    else {
                        return invalid("STACK_GLOBAL needs two strings");
                    };
                    let (module, name) = (module.to_string(), name.to_string());
                    self.push_global(&module, &name)?;
                }
                b'i' => {
                    let module = self.line_str()?;
                    let name = self.line_str()?;
                    return Err(PickleError::Unsafe(format!("{module}.{name}")));
                }
                b'o' => {
                    let items = self.pop_mark()?;
                    let what = items
                        .first()
                        .map(|&c| self.describe(c))
                        .unwrap_or_else(|| "nothing".into());
                    return Err(PickleError::Unsafe(format!("OBJ {what}")));
                }
                0x81 => {
                    let _args = self.pop()?;
                    let cls = self.pop()?;
                    match self.get(cls)? {
                        Obj::Global(Allowed::OrderedDict) => {
                            self.push_new(Obj::Dict(Vec::new()))?;
                        }
                        _ => {
                            return Err(PickleError::Unsafe(format!(
                                "NEWOBJ {}",
                                self.describe(cls)
                            )))
                        }
                    }
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let _args = self.pop()?;
                    let cls = self.pop()?;
                    return Err(PickleError::Unsafe(format!(
                        "NEWOBJ_EX {}",
                        self.describe(cls)
                    )));
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let result = self.reduce(func, args)?;
                    self.push(result)?;
                }
                b'b' => {
                    let _state = self.pop()?;
                    let inst = self.top()?;
                    match self.get(inst)? {
                        Obj::Dict(_) | Obj::Tensor(_) => {}
                        _ => {
                            return Err(PickleError::Unsafe(format!(
                                "BUILD on {}",
                                self.describe(inst)
                            )))
                        }
                    }
                }
                b'P' => {
                    let pid = self.line_str()?;
                    return Err(PickleError::Unsafe(format!(
                        "PERSID {pid:?} (text persistent id)"
                    )));
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = self.persistent_load(pid)?;
                    self.push_new(Obj::Storage(storage))?;
                }
                0x82..=0x84 => {
                    return Err(PickleError::Unsafe(format!(
                        "EXT{} (copyreg extension registry)",
                        match op {
                            0x82 => 1,
                            0x83 => 2,
                            _ => 4,
                        }
                    )))
                }
                other => {
                    return invalid(format!(
                        "unknown pickle opcode 0x{other:02x} at offset {}",
                        self.pos - 1
                    ))
                }
            }
        }
        invalid(format!(
            "the pickle exceeds the opcode limit of {MAX_OPCODES} opcodes"
        ))
    }

    fn push_global(&mut self, module: &str, name: &str) -> PResult<()> {
        match Allowed::lookup(module, name) {
            Some(g) => self.push_new(Obj::Global(g)),
            None => Err(PickleError::Unsafe(format!("{module}.{name}"))),
        }
    }

    fn extend(&mut self, list: Id, items: Vec<Id>) -> PResult<()> {
        match self.arena.get_mut(list) {
            Some(Obj::List(v)) => {
                v.extend(items);
                Ok(())
            }
            _ => {
                let what = self.describe(list);
                Err(PickleError::Unsafe(format!("APPEND to {what}")))
            }
        }
    }

    fn set_items(&mut self, dict: Id, items: Vec<(Id, Id)>) -> PResult<()> {
        match self.arena.get_mut(dict) {
            Some(Obj::Dict(v)) => {
                v.extend(items);
                Ok(())
            }
            _ => {
                let what = self.describe(dict);
                Err(PickleError::Unsafe(format!("SETITEM on {what}")))
            }
        }
    }

    fn tuple_items(&self, id: Id, what: &str) -> PResult<Vec<Id>> {
        match self.get(id)? {
            Obj::Tuple(v) | Obj::List(v) => Ok(v.clone()),
            other => invalid(format!("{what} is a {}, not a tuple", other.kind())),
        }
    }

    /// REDUCE: only the allowed callables, and only with the arguments torch gives them.
    fn reduce(&mut self, func: Id, args: Id) -> PResult<Id> {
        let g = match self.get(func)? {
            Obj::Global(g) => *g,
            _ => {
                return Err(PickleError::Unsafe(format!(
                    "REDUCE calling {}",
                    self.describe(func)
                )))
            }
        };
        let args = self.tuple_items(args, &format!("the argument list of {}", g.name()))?;
        match g {
            Allowed::OrderedDict => {
                let mut items = Vec::new();
                if let Some(&init) = args.first() {
                    for pair in self.tuple_items(init, "OrderedDict's argument")? {
                        let kv = self.tuple_items(pair, "an OrderedDict item")?;
                        match kv.as_slice() {
                            [k, v] => items.push((*k, *v)),
                            _ => return invalid("an OrderedDict item is not a pair"),
                        }
                    }
                }
                Ok(self.alloc(Obj::Dict(items)))
            }
            Allowed::Size => {
                let dims = match args.first() {
                    Some(&d) => self.tuple_items(d, "torch.Size's argument")?,
                    None => Vec::new(),
                };
                for &d in &dims {
                    self.usize_of(d, "a torch.Size dimension")?;
                }
                Ok(self.alloc(Obj::Tuple(dims)))
            }
            Allowed::RebuildParameter => {
                let Some(&data) = args.first() else {
                    return invalid("_rebuild_parameter without arguments");
                };
                match self.get(data)? {
                    Obj::Tensor(_) => Ok(data),
                    other => invalid(format!(
                        "_rebuild_parameter of a {}, not a tensor",
                        other.kind()
                    )),
                }
            }
            Allowed::RebuildTensorV2 => {
                if !(4..=7).contains(&args.len()) {
                    return invalid(format!("_rebuild_tensor_v2 with {} arguments", args.len()));
                }
                let storage = match self.get(args[0])? {
                    Obj::Storage(s) => s.clone(),
                    other => {
                        return invalid(format!(
                            "_rebuild_tensor_v2 of a {}, not a storage",
                            other.kind()
                        ))
                    }
                };
                let offset = self.usize_of(args[1], "a tensor's storage offset")?;
                let shape = self
                    .tuple_items(args[2], "a tensor's size")?
                    .into_iter()
                    .map(|d| self.usize_of(d, "a tensor dimension"))
                    .collect::<PResult<Vec<_>>>()?;
                let stride = self
                    .tuple_items(args[3], "a tensor's stride")?
                    .into_iter()
                    .map(|d| self.usize_of(d, "a tensor stride"))
                    .collect::<PResult<Vec<_>>>()?;
                if shape.len() != stride.len() {
                    return invalid(format!("a tensor has size {shape:?} but stride {stride:?}"));
                }
                Ok(self.alloc(Obj::Tensor(TensorRef {
                    storage: storage.key,
                    dtype: storage.dtype,
                    storage_numel: storage.numel,
                    offset,
                    shape,
                    stride,
                })))
            }
            Allowed::Storage(_) => Err(PickleError::Unsafe(format!("REDUCE calling {}", g.name()))),
        }
    }

    /// BINPERSID: `('storage', torch.XStorage, key, location, numel[, None])`.
    fn persistent_load(&self, pid: Id) -> PResult<StorageRef> {
        let items = match self.get(pid)? {
            Obj::Tuple(v) => v.clone(),
            other => {
                return Err(PickleError::Unsafe(format!(
                    "persistent id that is a {}",
                    other.kind()
                )))
            }
        };
        let tag = items.first().and_then(|&t| self.str_of(t));
        if tag != Some("storage") {
            return Err(PickleError::Unsafe(format!(
                "persistent id {:?}",
                tag.unwrap_or("(not a string)")
            )));
        }
        if !(items.len() == 5 || items.len() == 6) {
            return invalid(format!(
                "a storage persistent id has {} fields, not 5",
                items.len()
            ));
        }
        if let Some(&view) = items.get(5) {
            if !matches!(self.get(view)?, Obj::None) {
                return invalid("storage views (legacy view_metadata) are not supported");
            }
        }
        let dtype = match self.get(items[1])? {
            Obj::Global(Allowed::Storage(d)) => *d,
            _ => {
                return Err(PickleError::Unsafe(format!(
                    "persistent storage type {}",
                    self.describe(items[1])
                )))
            }
        };
        let key = match self.get(items[2])? {
            Obj::Str(s) => s.clone(),
            Obj::Int(i) => i.to_string(),
            other => return invalid(format!("a storage key is a {}", other.kind())),
        };
        if key.is_empty()
            || key.contains('/')
            || key.contains('\\')
            || key.contains("..")
            || key.chars().any(char::is_control)
        {
            return invalid(format!("storage key {key:?} is not a plain name"));
        }
        let location = self.str_of(items[3]).unwrap_or("").to_string();
        let numel = self.usize_of(items[4], "a storage's size")?;
        Ok(StorageRef {
            key,
            dtype,
            location,
            numel,
        })
    }

    fn to_value(&self, id: Id, depth: usize, budget: &mut usize) -> PResult<Value> {
        if depth > MAX_DEPTH {
            return invalid(format!(
                "the pickle's nesting depth exceeds {MAX_DEPTH} (or it is cyclic)"
            ));
        }
        if *budget == 0 {
            return invalid(
                "the pickle's memo references expand to too many values (a memo \"billion laughs\")",
            );
        }
        *budget -= 1;
        let list = |ids: &[Id], budget: &mut usize| -> PResult<Vec<Value>> {
            ids.iter()
                .map(|&i| self.to_value(i, depth + 1, budget))
                .collect()
        };
        Ok(match self.get(id)? {
            Obj::None => Value::None,
            Obj::Bool(b) => Value::Bool(*b),
            Obj::Int(i) => Value::Int(*i),
            Obj::Float(f) => Value::Float(*f),
            Obj::Str(s) => Value::Str(s.clone()),
            Obj::Bytes(b) => Value::Bytes(b.clone()),
            Obj::Tuple(v) => Value::Tuple(list(v, budget)?),
            Obj::List(v) => Value::List(list(v, budget)?),
            Obj::Set(v) => Value::Set(list(v, budget)?),
            Obj::Dict(v) => Value::Dict(
                v.iter()
                    .map(|&(k, val)| {
                        Ok((
                            self.to_value(k, depth + 1, budget)?,
                            self.to_value(val, depth + 1, budget)?,
                        ))
                    })
                    .collect::<PResult<Vec<_>>>()?,
            ),
            Obj::Global(g) => Value::Global(g.name()),
            Obj::Storage(s) => Value::Storage(s.clone()),
            Obj::Tensor(t) => Value::Tensor(t.clone()),
        })
    }
}

fn pairs(items: Vec<Id>) -> PResult<Vec<(Id, Id)>> {
    if items.len() % 2 != 0 {
        return invalid("a dict is built from an odd number of items");
    }
    Ok(items.chunks_exact(2).map(|c| (c[0], c[1])).collect())
}

fn parse_int(s: &str) -> PResult<i128> {
    s.trim()
        .parse::<i128>()
        .or_else(|_| invalid(format!("bad or too large integer {s:?} in the pickle")))
}

fn parse_memo_key(s: &str) -> PResult<u64> {
    s.trim()
        .parse::<u64>()
        .or_else(|_| invalid(format!("bad memo key {s:?} in the pickle")))
}

/// A little-endian two's-complement integer of up to 16 bytes (`LONG1`/`LONG4`).
fn long_from_bytes(bytes: &[u8]) -> PResult<i128> {
    if bytes.is_empty() {
        return Ok(0);
    }
    if bytes.len() > 16 {
        return invalid(format!(
            "a {}-byte integer in the pickle is too large",
            bytes.len()
        ));
    }
    let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
    let mut buf = if negative { [0xffu8; 16] } else { [0u8; 16] };
    buf[..bytes.len()].copy_from_slice(bytes);
    Ok(i128::from_le_bytes(buf))
}

fn utf8(bytes: &[u8]) -> PResult<String> {
    String::from_utf8(bytes.to_vec()).or_else(|_| invalid("a pickled string is not valid UTF-8"))
}

fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// Protocol 0 `STRING`: a Python repr, `'abc'` or `"abc"`, with backslash escapes.
fn parse_quoted(line: &[u8]) -> PResult<String> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let inner = match line {
        [q, inner @ .., q2] if (*q == b'\'' || *q == b'"') && q == q2 => inner,
        _ => return invalid("a protocol-0 string is not quoted"),
    };
    let mut out = String::new();
    let mut i = 0;
    while let Some(&b) = inner.get(i) {
        i += 1;
        if b != b'\\' {
            out.push(char::from(b));
            continue;
        }
        let Some(&e) = inner.get(i) else {
            return invalid("a protocol-0 string ends in a backslash");
        };
        i += 1;
        match e {
            b'n' => out.push('\n'),
            b't' => out.push('\t'),
            b'r' => out.push('\r'),
            b'0' => out.push('\0'),
            b'x' => {
                let hex = inner
                    .get(i..i + 2)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| PickleError::Invalid("bad \\x escape".into()))?;
                i += 2;
                out.push(char::from(hex));
            }
            other => out.push(char::from(other)),
        }
    }
    Ok(out)
}

/// Protocol 0 `UNICODE`: raw-unicode-escape (`\uXXXX`, `\UXXXXXXXX`, other bytes latin-1).
fn raw_unicode_escape(line: &[u8]) -> PResult<String> {
    let mut out = String::new();
    let mut i = 0;
    while let Some(&b) = line.get(i) {
        if b == b'\\' {
            let width = match line.get(i + 1) {
                Some(b'u') => Some(4),
                Some(b'U') => Some(8),
                _ => None,
            };
            if let Some(w) = width {
                let c = line
                    .get(i + 2..i + 2 + w)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .and_then(char::from_u32)
                    .ok_or_else(|| PickleError::Invalid("bad \\u escape".into()))?;
                out.push(c);
                i += 2 + w;
                continue;
            }
        }
        out.push(char::from(b));
        i += 1;
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    /// `'a'` as SHORT_BINUNICODE.
    fn s(text: &str) -> Vec<u8> {
        let mut v = vec![0x8c, text.len() as u8];
        v.extend_from_slice(text.as_bytes());
        v
    }

    fn global(module: &str, name: &str) -> Vec<u8> {
        format!("c{module}\n{name}\n").into_bytes()
    }

    /// The protocol-2 pickle torch.save writes for `OrderedDict(w=FloatStorage tensor)`.
    fn state_dict_pickle(shape: &[u8], stride: &[u8], offset: u8) -> Vec<u8> {
        let mut p = vec![0x80, 2];
        p.extend(global("collections", "OrderedDict"));
        p.extend(b"q\x00)Rq\x01(");
        p.extend(s("w"));
        p.extend(global("torch._utils", "_rebuild_tensor_v2"));
        p.extend(b"q\x02((");
        p.extend(s("storage"));
        p.extend(global("torch", "FloatStorage"));
        p.extend(s("0"));
        p.extend(s("cpu"));
        p.extend(b"K\x0ctq\x03QK");
        p.push(offset);
        p.push(b'(');
        for d in shape {
            p.extend([b'K', *d]);
        }
        p.extend(b"t(");
        for d in stride {
            p.extend([b'K', *d]);
        }
        p.extend(b"t\x89h\x00)Rq\x04tq\x05Rq\x06u}q\x07");
        p.extend(s("_metadata"));
        p.extend(b"h\x00)Rsb.");
        p
    }

    #[test]
    fn reads_a_torch_state_dict() {
        let p = state_dict_pickle(&[3, 4], &[4, 1], 0);
        let (tensors, used) = load_state_dict(&p).unwrap();
        assert_eq!(used, p.len());
        assert_eq!(
            tensors,
            vec![(
                "w".to_string(),
                TensorRef {
                    storage: "0".into(),
                    dtype: StorageDType::F32,
                    storage_numel: 12,
                    offset: 0,
                    shape: vec![3, 4],
                    stride: vec![4, 1],
                }
            )]
        );
    }

    #[test]
    fn reads_plain_values_of_every_protocol() {
        // protocol 0: (I1, L12345678901234567890L, F1.5, S'a\'b', V\u00e9) as a list
        let p0 = b"(lp0\nI1\naL12345678901234567890L\naF1.5\naS'a\\'b'\naV\\u00e9\na.";
        let (v, _) = load(p0).unwrap();
        assert_eq!(
            v,
            Value::List(vec![
                Value::Int(1),
                Value::Int(12345678901234567890),
                Value::Float(1.5),
                Value::Str("a'b".into()),
                Value::Str("é".into()),
            ])
        );
        // protocol 4 with FRAME, MEMOIZE, negative LONG1, BINBYTES, sets
        let mut p4 = vec![0x80, 4, 0x95, 18, 0, 0, 0, 0, 0, 0, 0];
        p4.extend([b'}', 0x94, b'(']);
        p4.extend(s("k"));
        p4.extend([0x8a, 1, 0xff]);
        p4.extend(s("b"));
        p4.extend([b'C', 2, 1, 2]);
        p4.extend([b'u', b'.']);
        let (v, _) = load(&p4).unwrap();
        assert_eq!(
            v,
            Value::Dict(vec![
                (Value::Str("k".into()), Value::Int(-1)),
                (Value::Str("b".into()), Value::Bytes(vec![1, 2])),
            ])
        );
        // the legacy magic number (LONG1 of 10 bytes)
        let mut magic = vec![0x80, 2, 0x8a, 10];
        magic.extend(0x1950a86a20f9469cfc6c_i128.to_le_bytes()[..10].iter());
        magic.push(b'.');
        assert_eq!(load(&magic).unwrap().0, Value::Int(0x1950a86a20f9469cfc6c));
    }

    fn refused(p: &[u8]) -> String {
        match load(p) {
            Err(PickleError::Unsafe(what)) => what,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn refuses_every_foreign_global_and_construction() {
        let mut p = global("os", "system");
        p.extend(b"(S'touch /tmp/x'\ntR.");
        assert_eq!(refused(&p), "os.system");
        // STACK_GLOBAL builtins.eval
        let mut p = vec![0x80, 4];
        p.extend(s("builtins"));
        p.extend(s("eval"));
        p.extend([0x93, b'.']);
        assert_eq!(refused(&p), "builtins.eval");
        assert_eq!(refused(b"(ios\nsystem\n."), "os.system");
        let mut p = global("functools", "partial");
        p.push(b'.');
        assert_eq!(refused(&p), "functools.partial");
        let mut p = global("torch.jit", "load");
        p.push(b'.');
        assert_eq!(refused(&p), "torch.jit.load");
        assert!(refused(b"Pabc\n.").contains("PERSID"));
        assert!(refused(b"\x82\x01.").contains("EXT1"));
        // REDUCE of a non-callable, BUILD on a list, NEWOBJ of a storage class
        assert!(refused(b"S'x'\n)R.").contains("REDUCE"));
        assert!(refused(b"]}b.").contains("BUILD"));
        let mut p = global("torch", "FloatStorage");
        p.extend(b")\x81.");
        assert!(refused(&p).contains("NEWOBJ"));
        // OBJ
        let mut p = b"(".to_vec();
        p.extend(global("collections", "OrderedDict"));
        p.extend(b"o.");
        assert!(refused(&p).contains("OBJ"));
        // a persistent id that is not a storage
        assert!(refused(b"(S'module'\ntQ.").contains("module"));
    }

    #[test]
    fn limits_hold() {
        // a string longer than the input
        let p = b"X\xff\xff\xff\x7fabc";
        assert!(matches!(load(p), Err(PickleError::Invalid(_))));
        // BINUNICODE8 claiming an enormous length
        let p = [0x8d, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, b'a'];
        assert!(matches!(load(&p), Err(PickleError::Invalid(_))));
        // stack overflow
        let p = vec![b'N'; MAX_STACK + 10];
        assert!(matches!(load(&p), Err(PickleError::Invalid(m)) if m.contains("stack")));
        // opcode limit: N0 repeated
        let mut p = Vec::new();
        for _ in 0..(MAX_OPCODES / 2 + 1) {
            p.extend(b"N0");
        }
        assert!(matches!(load(&p), Err(PickleError::Invalid(m)) if m.contains("opcodes")));
        // memo limit
        let mut p = b"N".to_vec();
        for i in 0..(MAX_MEMO as u32 + 1) {
            p.push(b'r');
            p.extend(i.to_le_bytes());
        }
        assert!(matches!(load(&p), Err(PickleError::Invalid(m)) if m.contains("memo")));
        // a cycle: l = []; l.append(l)
        let p = b"]q\x00h\x00a.";
        assert!(matches!(load(p), Err(PickleError::Invalid(_))));
        // exponential sharing: t0 = (); t_{i+1} = (t_i, t_i)
        let mut p = b")q\x00".to_vec();
        for _ in 0..60 {
            p.extend(b"h\x00h\x00\x86q\x00");
        }
        p.push(b'.');
        assert!(matches!(load(&p), Err(PickleError::Invalid(_))));
        // truncated, underflow, bad mark
        for p in [&b"\x80\x02"[..], b"a.", b"t.", b"", b"\xff"] {
            assert!(matches!(load(p), Err(PickleError::Invalid(_))), "{p:?}");
        }
    }

    #[test]
    fn rejects_bad_tensors() {
        let p = state_dict_pickle(&[3, 4], &[4], 0);
        assert!(matches!(load_state_dict(&p), Err(PickleError::Invalid(_))));
        // a dict value that is not a tensor
        let mut p = vec![b'}', b'('];
        p.extend(s("w"));
        p.extend(b"K\x01u.");
        assert!(matches!(load_state_dict(&p), Err(PickleError::Invalid(m)) if m.contains("`w`")));
    }
}
