//! A small, strict, pure-Rust reader for the subset of HDF5 that h5py writes for Keras weight
//! files (`tf_model.h5`), written from the HDF5 File Format Specification (version 3.0).
//!
//! Understood: superblock versions 0-3 (offsets and lengths of 2, 4 or 8 bytes, user blocks);
//! object headers version 1 and 2 with continuation blocks; groups stored as symbol tables
//! (version 1 B-tree of type 0, symbol table nodes, local heap) and as compact link messages;
//! attributes (message versions 1-3) holding fixed-length strings, variable-length strings (global
//! heap) or numbers; datasets with contiguous or compact layout (data layout messages version
//! 1-3) of little- or big-endian IEEE floats (16, 32 and 64 bits, and bfloat16) and integers.
//! Everything else — chunked and filtered (compressed) datasets, dense (fractal heap) link and
//! attribute storage, soft and external links, other datatype classes — is refused with a clear
//! error. Nothing is ever executed; every offset and length is checked against the file, every
//! size product for overflow, before anything is allocated; object header continuations and
//! B-tree nodes are visited at most once each (cyclic files end with an error), and depths and
//! counts are limited.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::rc::Rc;

/// Why a file could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct H5Error(pub String);

impl fmt::Display for H5Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for H5Error {}

type HResult<T> = std::result::Result<T, H5Error>;

fn fail<T>(reason: impl Into<String>) -> HResult<T> {
    Err(H5Error(reason.into()))
}

/// The HDF5 file signature.
pub const SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";
/// The most object header messages (all blocks together) one object may have.
pub const MAX_MESSAGES: usize = 65_536;
/// The most continuation blocks one object header may have.
pub const MAX_CONTINUATIONS: usize = 1_024;
/// The deepest B-tree accepted.
pub const MAX_BTREE_DEPTH: usize = 64;
/// The most B-tree and symbol table nodes visited while listing one group.
pub const MAX_GROUP_NODES: usize = 1_000_000;
/// The most dimensions a dataspace may have (HDF5's own limit).
pub const MAX_RANK: usize = 32;
/// The most elements an attribute may hold.
pub const MAX_ATTRIBUTE_ELEMENTS: usize = 1 << 20;
/// The most group entries and global heap objects indexed while reading one file (all groups
/// and heaps together), so overlapping structures cannot multiply the work.
pub const MAX_INDEXED_ENTRIES: usize = 10_000_000;

/// A group's children: name → object address (`None` for a soft link, never followed).
type Listing<'a> = Rc<HashMap<&'a [u8], Option<u64>>>;
/// A global heap collection's objects: index → bytes.
type HeapObjects<'a> = Rc<HashMap<u32, &'a [u8]>>;

/// A bounds-checked little-endian reader over part of the file.
#[derive(Clone)]
struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    offset_size: usize,
    length_size: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> HResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                H5Error(format!(
                    "truncated: {n} bytes needed at {}, {} available",
                    self.pos,
                    self.data.len().saturating_sub(self.pos)
                ))
            })?;
        let out = self
            .data
            .get(self.pos..end)
            .ok_or_else(|| H5Error("truncated".into()))?;
        self.pos = end;
        Ok(out)
    }

    fn skip(&mut self, n: usize) -> HResult<()> {
        self.take(n).map(|_| ())
    }

    fn uint(&mut self, n: usize) -> HResult<u64> {
        let bytes = self.take(n)?;
        if n > 8 {
            return fail(format!("a {n}-byte integer is too wide"));
        }
        Ok(bytes
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn u8(&mut self) -> HResult<u8> {
        self.uint(1).map(|v| v as u8)
    }

    fn u16(&mut self) -> HResult<u16> {
        self.uint(2).map(|v| v as u16)
    }

    fn u32(&mut self) -> HResult<u32> {
        self.uint(4).map(|v| v as u32)
    }

    /// An address (`size of offsets` bytes); `None` for the undefined address (all ones).
    fn addr(&mut self) -> HResult<Option<u64>> {
        let n = self.offset_size;
        let v = self.uint(n)?;
        let undefined = if n >= 8 {
            u64::MAX
        } else {
            (1u64 << (8 * n)) - 1
        };
        Ok(if v == undefined { None } else { Some(v) })
    }

    fn length(&mut self) -> HResult<u64> {
        self.uint(self.length_size)
    }

    fn align8(&mut self, base: usize) -> HResult<()> {
        let rel = self.pos.saturating_sub(base);
        let pad = (8 - rel % 8) % 8;
        self.skip(pad)
    }
}

/// How one element of a dataset or attribute is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElemType {
    /// IEEE float (or bfloat16 when `bf16`): size in bytes, byte order.
    Float {
        /// 2, 4 or 8.
        size: usize,
        /// Big-endian storage.
        big_endian: bool,
        /// 16-bit with an 8-bit exponent (bfloat16).
        bf16: bool,
    },
    /// Two's-complement or unsigned integer.
    Int {
        /// 1, 2, 4 or 8.
        size: usize,
        /// Big-endian storage.
        big_endian: bool,
        /// Signed.
        signed: bool,
    },
    /// Fixed-length string of `size` bytes.
    FixedString {
        /// Bytes per string.
        size: usize,
    },
    /// Variable-length string (stored in the global heap).
    VarString,
}

impl ElemType {
    /// Bytes per element as stored.
    pub fn size(&self, offset_size: usize) -> usize {
        match *self {
            ElemType::Float { size, .. }
            | ElemType::Int { size, .. }
            | ElemType::FixedString { size } => size,
            // length (4) + global heap collection address + object index (4)
            ElemType::VarString => 8 + offset_size,
        }
    }
}

/// A dataset's element type, shape and raw bytes (in file byte order).
#[derive(Clone, Debug)]
pub struct Dataset<'a> {
    /// Element encoding.
    pub elem: ElemType,
    /// Dimensions (empty for a scalar).
    pub shape: Vec<usize>,
    /// `shape.product() * elem size` bytes, row-major.
    pub data: &'a [u8],
}

/// What one object header holds that we use.
#[derive(Default)]
struct Header<'a> {
    /// (type, payload) of every message, continuation blocks included.
    messages: Vec<(u16, &'a [u8])>,
}

impl<'a> Header<'a> {
    fn first(&self, kind: u16) -> Option<&'a [u8]> {
        self.messages
            .iter()
            .find(|(t, _)| *t == kind)
            .map(|(_, d)| *d)
    }
}

const MSG_DATASPACE: u16 = 0x0001;
const MSG_LINK_INFO: u16 = 0x0002;
const MSG_DATATYPE: u16 = 0x0003;
const MSG_LINK: u16 = 0x0006;
const MSG_EXTERNAL: u16 = 0x0007;
const MSG_LAYOUT: u16 = 0x0008;
const MSG_FILTERS: u16 = 0x000B;
const MSG_ATTRIBUTE: u16 = 0x000C;
const MSG_CONTINUATION: u16 = 0x0010;
const MSG_SYMBOL_TABLE: u16 = 0x0011;
const MSG_ATTRIBUTE_INFO: u16 = 0x0015;

/// The attributes of one object, by name.
pub struct Attributes<'a> {
    by_name: HashMap<&'a [u8], &'a [u8]>,
    /// Whether more attributes are stored densely (fractal heap), which is not read.
    dense: bool,
}

impl<'a> Attributes<'a> {
    /// Attribute `name` as strings; `None` when absent.
    pub fn strings(&self, file: &File<'a>, name: &str) -> HResult<Option<Vec<String>>> {
        match self.by_name.get(name.as_bytes()) {
            Some(data) => file.decode_strings(data, name).map(Some),
            None if self.dense => fail(format!(
                "attribute {name} may be stored densely (fractal heap), which is not supported"
            )),
            None => Ok(None),
        }
    }
}

/// An opened HDF5 file (all of it in memory).
pub struct File<'a> {
    data: &'a [u8],
    /// Where address 0 is (the superblock's base address).
    base: usize,
    offset_size: usize,
    length_size: usize,
    root: u64,
    /// Group listings, by (kind, B-tree or header address, heap address).
    groups: RefCell<HashMap<(u8, u64, u64), Listing<'a>>>,
    /// Global heap collections: address → object index → bytes.
    heaps: RefCell<HashMap<u64, HeapObjects<'a>>>,
    /// Entries indexed so far (see [`MAX_INDEXED_ENTRIES`]).
    indexed: Cell<usize>,
}

impl<'a> File<'a> {
    /// Finds and reads the superblock.
    pub fn parse(data: &'a [u8]) -> HResult<Self> {
        // The superblock is at 0, 512, 1024, 2048, ... (after a user block).
        let mut at = 0usize;
        loop {
            if data.get(at..at.saturating_add(8)) == Some(&SIGNATURE[..]) {
                break;
            }
            at = if at == 0 { 512 } else { at.saturating_mul(2) };
            if at >= data.len() {
                return fail(
                    "no HDF5 signature (\\x89HDF\\r\\n\\x1a\\n) found: this is not an HDF5 file",
                );
            }
        }
        let mut c = Cursor {
            data,
            pos: at + 8,
            offset_size: 8,
            length_size: 8,
        };
        let version = c.u8()?;
        let (offset_size, length_size, base, root) = match version {
            0 | 1 => {
                c.skip(4)?; // free-space, root symtable, reserved, shared header versions
                let offset_size = usize::from(c.u8()?);
                let length_size = usize::from(c.u8()?);
                check_sizes(offset_size, length_size)?;
                c.offset_size = offset_size;
                c.length_size = length_size;
                c.skip(1 + 2 + 2 + 4)?; // reserved, group K values, consistency flags
                if version == 1 {
                    c.skip(4)?; // indexed storage K, reserved
                }
                let base = c.addr()?.unwrap_or(0);
                c.addr()?; // free space info
                c.addr()?; // end of file
                c.addr()?; // driver info
                           // root group symbol table entry: link name offset, object header address
                c.addr()?;
                let root = c
                    .addr()?
                    .ok_or_else(|| H5Error("the root group has no object header".into()))?;
                (offset_size, length_size, base, root)
            }
            2 | 3 => {
                let offset_size = usize::from(c.u8()?);
                let length_size = usize::from(c.u8()?);
                check_sizes(offset_size, length_size)?;
                c.offset_size = offset_size;
                c.length_size = length_size;
                c.skip(1)?; // flags
                let base = c.addr()?.unwrap_or(0);
                c.addr()?; // superblock extension
                c.addr()?; // end of file
                let root = c
                    .addr()?
                    .ok_or_else(|| H5Error("the root group has no object header".into()))?;
                let end = c.pos;
                let stored = c.u32()?;
                let computed = lookup3(data.get(at..end).unwrap_or_default());
                if stored != computed {
                    return fail("the superblock fails its checksum (corrupted file)");
                }
                (offset_size, length_size, base, root)
            }
            v => return fail(format!("unsupported superblock version {v}")),
        };
        let base = usize::try_from(base)
            .ok()
            .filter(|&b| b <= data.len())
            .ok_or_else(|| H5Error(format!("base address {base} is outside the file")))?;
        Ok(File {
            data,
            base,
            offset_size,
            length_size,
            root,
            groups: RefCell::new(HashMap::new()),
            heaps: RefCell::new(HashMap::new()),
            indexed: Cell::new(0),
        })
    }

    /// The root group's object header address.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// A cursor at file address `addr` (relative to the base address).
    fn at(&self, addr: u64, what: &str) -> HResult<Cursor<'a>> {
        let pos = usize::try_from(addr)
            .ok()
            .and_then(|a| a.checked_add(self.base))
            .filter(|&p| p < self.data.len())
            .ok_or_else(|| {
                H5Error(format!(
                    "{what} at address {addr} is outside the file ({} bytes)",
                    self.data.len()
                ))
            })?;
        Ok(Cursor {
            data: self.data,
            pos,
            offset_size: self.offset_size,
            length_size: self.length_size,
        })
    }

    /// `len` bytes at address `addr`, checked against the file.
    fn bytes(&self, addr: u64, len: u64, what: &str) -> HResult<&'a [u8]> {
        let out = usize::try_from(addr)
            .ok()
            .and_then(|a| a.checked_add(self.base))
            .and_then(|start| {
                let end = start.checked_add(usize::try_from(len).ok()?)?;
                self.data.get(start..end)
            });
        out.ok_or_else(|| {
            H5Error(format!(
                "{what} ({len} bytes at address {addr}) lies outside the file ({} bytes)",
                self.data.len()
            ))
        })
    }

    /// Reads every message of the object header at `addr`.
    fn header(&self, addr: u64) -> HResult<Header<'a>> {
        let mut c = self.at(addr, "an object header")?;
        let mut header = Header::default();
        let mut seen = HashSet::new();
        seen.insert(addr);
        let mut blocks: Vec<(u64, u64)> = Vec::new();
        if c.data.get(c.pos..c.pos.saturating_add(4)) == Some(b"OHDR") {
            c.skip(4)?;
            let version = c.u8()?;
            if version != 2 {
                return fail(format!(
                    "object header at {addr}: unsupported version {version}"
                ));
            }
            let flags = c.u8()?;
            if flags & 0x20 != 0 {
                c.skip(16)?; // times
            }
            if flags & 0x10 != 0 {
                c.skip(4)?; // attribute phase change values
            }
            let size = c.uint(1 << (flags & 0x03))?;
            let body = c.take(usize::try_from(size).unwrap_or(usize::MAX))?;
            let end = c.pos;
            let stored = c.u32()?;
            let whole = c
                .data
                .get(self.header_start(addr)?..end)
                .unwrap_or_default();
            if lookup3(whole) != stored {
                return fail(format!(
                    "object header at {addr} fails its checksum (corrupted file)"
                ));
            }
            self.v2_messages(body, flags, &mut header, &mut blocks)?;
            let mut count = 0usize;
            while let Some((a, len)) = blocks.pop() {
                count += 1;
                if count > MAX_CONTINUATIONS || !seen.insert(a) {
                    return fail(format!(
                        "object header at {addr}: continuation blocks form a cycle or are too many"
                    ));
                }
                let block = self.bytes(a, len, "an object header continuation block")?;
                let (Some(sig), Some(body), Some(sum)) = (
                    block.get(..4),
                    block.get(4..block.len().saturating_sub(4)),
                    block.get(block.len().saturating_sub(4)..),
                ) else {
                    return fail(format!(
                        "object header at {addr}: continuation block too short"
                    ));
                };
                if sig != b"OCHK" || block.len() < 8 {
                    return fail(format!(
                        "object header at {addr}: continuation block at {a} lacks its OCHK signature"
                    ));
                }
                let sum = u32::from_le_bytes([
                    *sum.first().unwrap_or(&0),
                    *sum.get(1).unwrap_or(&0),
                    *sum.get(2).unwrap_or(&0),
                    *sum.get(3).unwrap_or(&0),
                ]);
                if lookup3(block.get(..block.len() - 4).unwrap_or_default()) != sum {
                    return fail(format!(
                        "object header at {addr}: continuation block at {a} fails its checksum"
                    ));
                }
                self.v2_messages(body, flags, &mut header, &mut blocks)?;
            }
        } else {
            let version = c.u8()?;
            if version != 1 {
                return fail(format!(
                    "object header at {addr}: unsupported version {version} (not 1, and no OHDR signature)"
                ));
            }
            c.skip(1)?;
            let declared = usize::from(c.u16()?);
            c.skip(4)?; // reference count
            let size = c.u32()?;
            c.skip(4)?; // padding to 8 bytes
            let body = c.take(size as usize)?;
            self.v1_messages(body, &mut header, &mut blocks)?;
            let mut count = 0usize;
            while let Some((a, len)) = blocks.pop() {
                count += 1;
                if count > MAX_CONTINUATIONS || !seen.insert(a) {
                    return fail(format!(
                        "object header at {addr}: continuation blocks form a cycle or are too many"
                    ));
                }
                let block = self.bytes(a, len, "an object header continuation block")?;
                self.v1_messages(block, &mut header, &mut blocks)?;
            }
            if header.messages.len() > declared.max(1) * 4 + 64 {
                return fail(format!(
                    "object header at {addr} has far more messages than the {declared} it declares"
                ));
            }
        }
        Ok(header)
    }

    fn header_start(&self, addr: u64) -> HResult<usize> {
        usize::try_from(addr)
            .ok()
            .and_then(|a| a.checked_add(self.base))
            .ok_or_else(|| H5Error("address overflow".into()))
    }

    fn v1_messages(
        &self,
        body: &'a [u8],
        header: &mut Header<'a>,
        blocks: &mut Vec<(u64, u64)>,
    ) -> HResult<()> {
        let mut c = Cursor {
            data: body,
            pos: 0,
            offset_size: self.offset_size,
            length_size: self.length_size,
        };
        while c.pos.saturating_add(8) <= body.len() {
            let kind = c.u16()?;
            let size = usize::from(c.u16()?);
            let flags = c.u8()?;
            c.skip(3)?;
            let data = c.take(size)?;
            c.align8(0).or_else(|_| {
                c.pos = body.len();
                Ok::<(), H5Error>(())
            })?;
            self.push_message(kind, flags, data, header, blocks)?;
        }
        Ok(())
    }

    fn v2_messages(
        &self,
        body: &'a [u8],
        oh_flags: u8,
        header: &mut Header<'a>,
        blocks: &mut Vec<(u64, u64)>,
    ) -> HResult<()> {
        let mut c = Cursor {
            data: body,
            pos: 0,
            offset_size: self.offset_size,
            length_size: self.length_size,
        };
        let prefix = if oh_flags & 0x04 != 0 { 6 } else { 4 };
        while c.pos.saturating_add(prefix) <= body.len() {
            let kind = u16::from(c.u8()?);
            let size = usize::from(c.u16()?);
            let flags = c.u8()?;
            if oh_flags & 0x04 != 0 {
                c.skip(2)?;
            }
            let data = c.take(size)?;
            self.push_message(kind, flags, data, header, blocks)?;
        }
        Ok(())
    }

    fn push_message(
        &self,
        kind: u16,
        flags: u8,
        data: &'a [u8],
        header: &mut Header<'a>,
        blocks: &mut Vec<(u64, u64)>,
    ) -> HResult<()> {
        if flags & 0x02 != 0 && kind != 0 {
            return fail(format!(
                "shared object header messages (type {kind}) are not supported"
            ));
        }
        if kind == MSG_CONTINUATION {
            let mut m = self.cursor(data);
            let a = m
                .addr()?
                .ok_or_else(|| H5Error("a continuation message has no address".into()))?;
            let len = m.length()?;
            blocks.push((a, len));
        } else if kind != 0 {
            header.messages.push((kind, data));
        }
        if header.messages.len() > MAX_MESSAGES {
            return fail(format!(
                "an object header has more than {MAX_MESSAGES} messages"
            ));
        }
        Ok(())
    }

    fn cursor(&self, data: &'a [u8]) -> Cursor<'a> {
        Cursor {
            data,
            pos: 0,
            offset_size: self.offset_size,
            length_size: self.length_size,
        }
    }

    /// Counts `n` more indexed entries against [`MAX_INDEXED_ENTRIES`].
    fn count_indexed(&self, n: usize) -> HResult<()> {
        let total = self.indexed.get().saturating_add(n);
        self.indexed.set(total);
        if total > MAX_INDEXED_ENTRIES {
            return fail(format!(
                "the file's groups and heaps hold more than {MAX_INDEXED_ENTRIES} entries"
            ));
        }
        Ok(())
    }

    /// The children of the group at `group`, listed once and cached.
    fn listing(&self, group: u64) -> HResult<Listing<'a>> {
        let header = self.header(group)?;
        let key = match header.first(MSG_SYMBOL_TABLE) {
            Some(st) => {
                let mut c = self.cursor(st);
                let btree = c
                    .addr()?
                    .ok_or_else(|| H5Error("a group's symbol table has no B-tree".into()))?;
                let heap = c
                    .addr()?
                    .ok_or_else(|| H5Error("a group's symbol table has no local heap".into()))?;
                (0u8, btree, heap)
            }
            None => (1u8, group, 0),
        };
        if let Some(l) = self.groups.borrow().get(&key) {
            return Ok(l.clone());
        }
        let mut map: HashMap<&'a [u8], Option<u64>> = HashMap::new();
        if key.0 == 0 {
            let heap = self.local_heap(key.2)?;
            let mut visited = HashSet::new();
            let mut count = 0usize;
            self.walk_group_btree(key.1, heap, 0, &mut visited, &mut |n, addr| {
                count += 1;
                map.entry(n).or_insert(addr);
            })?;
            self.count_indexed(count)?;
        } else {
            if let Some(info) = header.first(MSG_LINK_INFO) {
                let mut c = self.cursor(info);
                c.skip(1)?; // version
                let flags = c.u8()?;
                if flags & 0x01 != 0 {
                    c.skip(8)?;
                }
                if c.addr()?.is_some() {
                    return fail(
                        "this group stores its links densely (fractal heap), which is not supported",
                    );
                }
            }
            let mut count = 0usize;
            for (kind, data) in &header.messages {
                if *kind == MSG_LINK {
                    let (n, addr) = self.link(data)?;
                    count += 1;
                    map.entry(n).or_insert(addr);
                }
            }
            self.count_indexed(count)?;
        }
        let listing = Rc::new(map);
        self.groups.borrow_mut().insert(key, listing.clone());
        Ok(listing)
    }

    /// The object header address of child `name` of the group at `group`, or `None`.
    pub fn child(&self, group: u64, name: &str) -> HResult<Option<u64>> {
        match self.listing(group)?.get(name.as_bytes()) {
            None => Ok(None),
            Some(Some(addr)) => Ok(Some(*addr)),
            Some(None) => fail(format!(
                "link {name:?} is a soft link or an external link (or has no object), which is not followed"
            )),
        }
    }

    /// A link message: (name, object address), the address `None` for soft and external links.
    fn link(&self, data: &'a [u8]) -> HResult<(&'a [u8], Option<u64>)> {
        let mut c = self.cursor(data);
        let version = c.u8()?;
        if version != 1 {
            return fail(format!("unsupported link message version {version}"));
        }
        let flags = c.u8()?;
        let link_type = if flags & 0x08 != 0 { c.u8()? } else { 0 };
        if flags & 0x04 != 0 {
            c.skip(8)?;
        }
        if flags & 0x10 != 0 {
            c.skip(1)?;
        }
        let len = c.uint(1 << (flags & 0x03))?;
        let name = c.take(usize::try_from(len).unwrap_or(usize::MAX))?;
        if link_type != 0 {
            return Ok((name, None));
        }
        Ok((name, c.addr()?))
    }

    /// The data segment of the local heap at `addr`.
    fn local_heap(&self, addr: u64) -> HResult<&'a [u8]> {
        let mut c = self.at(addr, "a local heap")?;
        if c.take(4)? != b"HEAP" {
            return fail(format!("the local heap at {addr} lacks its HEAP signature"));
        }
        let version = c.u8()?;
        if version != 0 {
            return fail(format!("unsupported local heap version {version}"));
        }
        c.skip(3)?;
        let size = c.length()?;
        c.length()?; // free list
        let data = c
            .addr()?
            .ok_or_else(|| H5Error("the local heap has no data segment".into()))?;
        self.bytes(data, size, "a local heap's data segment")
    }

    /// Visits every (name, object address) of a group's B-tree, each node at most once.
    fn walk_group_btree(
        &self,
        addr: u64,
        heap: &'a [u8],
        depth: usize,
        visited: &mut HashSet<u64>,
        f: &mut dyn FnMut(&'a [u8], Option<u64>),
    ) -> HResult<()> {
        if depth > MAX_BTREE_DEPTH {
            return fail(format!(
                "a group B-tree is deeper than {MAX_BTREE_DEPTH} levels"
            ));
        }
        if !visited.insert(addr) || visited.len() > MAX_GROUP_NODES {
            return fail(format!(
                "a group's B-tree revisits node {addr} (cycle) or has too many nodes"
            ));
        }
        let mut c = self.at(addr, "a group B-tree node")?;
        let sig = c.take(4)?;
        if sig == b"SNOD" {
            if depth == 0 {
                return fail(format!("the group B-tree at {addr} is a symbol table node"));
            }
            c.skip(2)?;
            let n = c.u16()?;
            for _ in 0..n {
                let name_off = c.length()?;
                let obj = c.addr()?;
                let cache_type = c.u32()?;
                c.skip(4 + 16)?;
                let name = usize::try_from(name_off)
                    .ok()
                    .and_then(|o| heap.get(o..))
                    .ok_or_else(|| {
                        H5Error(format!(
                            "a link name offset {name_off} is outside the local heap"
                        ))
                    })?;
                let end = name.iter().position(|&b| b == 0).ok_or_else(|| {
                    H5Error("a link name in the local heap is not NUL-terminated".into())
                })?;
                // cache type 2: a soft link (its target is a path in the heap, not an object)
                let obj = if cache_type == 2 { None } else { obj };
                f(name.get(..end).unwrap_or_default(), obj);
            }
            return Ok(());
        }
        if sig != b"TREE" {
            return fail(format!(
                "the group B-tree node at {addr} lacks its TREE/SNOD signature"
            ));
        }
        let node_type = c.u8()?;
        if node_type != 0 {
            return fail(format!(
                "the group B-tree at {addr} has node type {node_type}, not 0 (group)"
            ));
        }
        c.u8()?; // level
        let entries = c.u16()?;
        c.addr()?; // left sibling
        c.addr()?; // right sibling
        for _ in 0..entries {
            c.length()?; // key
            let child = c
                .addr()?
                .ok_or_else(|| H5Error("a group B-tree child has no address".into()))?;
            // children of level-0 nodes are symbol table nodes, of others B-tree nodes
            self.walk_group_btree(child, heap, depth + 1, visited, f)?;
        }
        Ok(())
    }

    /// Follows a `/`-separated path of child names from the root.
    pub fn lookup(&self, path: &str) -> HResult<Option<u64>> {
        let mut at = self.root;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            match self.child(at, part)? {
                Some(a) => at = a,
                None => return Ok(None),
            }
        }
        Ok(Some(at))
    }

    /// The attributes of the object at `addr`, by name (message parsed once).
    pub fn attributes(&self, addr: u64) -> HResult<Attributes<'a>> {
        let header = self.header(addr)?;
        let mut by_name = HashMap::new();
        for (kind, data) in &header.messages {
            if *kind != MSG_ATTRIBUTE {
                continue;
            }
            let mut c = self.cursor(data);
            let version = c.u8()?;
            c.skip(1)?;
            let name_len = usize::from(c.u16()?);
            c.skip(4)?;
            if version == 3 {
                c.skip(1)?;
            } else if version != 1 && version != 2 {
                return fail(format!("unsupported attribute message version {version}"));
            }
            let attr_name = c.take(name_len)?;
            let attr_name = attr_name.strip_suffix(&[0]).unwrap_or(attr_name);
            by_name.entry(attr_name).or_insert(*data);
        }
        let mut dense = false;
        if let Some(info) = header.first(MSG_ATTRIBUTE_INFO) {
            let mut c = self.cursor(info);
            c.skip(1)?;
            let flags = c.u8()?;
            if flags & 0x01 != 0 {
                c.skip(2)?;
            }
            dense = c.addr()?.is_some();
        }
        Ok(Attributes { by_name, dense })
    }

    /// Attribute `name` of the object at `addr` as strings (`None` when absent).
    pub fn string_attribute(&self, addr: u64, name: &str) -> HResult<Option<Vec<String>>> {
        self.attributes(addr)?.strings(self, name)
    }

    /// Decodes one attribute message as a list of strings.
    fn decode_strings(&self, data: &'a [u8], name: &str) -> HResult<Vec<String>> {
        let mut c = self.cursor(data);
        let version = c.u8()?;
        c.skip(1)?;
        let name_len = usize::from(c.u16()?);
        let dt_len = usize::from(c.u16()?);
        let ds_len = usize::from(c.u16()?);
        if version == 3 {
            c.skip(1)?;
        }
        let pad = |n: usize| if version == 1 { n.div_ceil(8) * 8 } else { n };
        c.skip(pad(name_len))?;
        let dt = c.take(dt_len)?;
        c.skip(pad(dt_len) - dt_len)?;
        let ds = c.take(ds_len)?;
        c.skip(pad(ds_len) - ds_len)?;
        let elem = self.datatype(dt)?;
        let shape = self.dataspace(ds)?;
        let count = checked_numel(&shape)?;
        if count > MAX_ATTRIBUTE_ELEMENTS {
            return fail(format!("attribute {name} has {count} elements"));
        }
        let size = elem.size(self.offset_size);
        let total = count
            .checked_mul(size)
            .ok_or_else(|| H5Error(format!("attribute {name}: size overflows")))?;
        let raw = c.take(total).map_err(|_| {
            H5Error(format!(
                "attribute {name} needs {total} bytes of data, its message is shorter"
            ))
        })?;
        let mut out = Vec::with_capacity(count);
        if count == 0 {
            // Keras writes an empty list as an empty float64 array.
            return Ok(out);
        }
        match elem {
            ElemType::FixedString { size } => {
                for s in raw.chunks_exact(size.max(1)) {
                    let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
                    let text =
                        std::str::from_utf8(s.get(..end).unwrap_or_default()).map_err(|_| {
                            H5Error(format!("attribute {name} holds a string that is not UTF-8"))
                        })?;
                    out.push(text.trim_end_matches(' ').to_string());
                }
            }
            ElemType::VarString => {
                let mut r = self.cursor(raw);
                for _ in 0..count {
                    let len = r.u32()?;
                    let collection = r.addr()?;
                    let index = r.u32()?;
                    let bytes = match collection {
                        None if len == 0 => &[][..],
                        None => {
                            return fail(format!(
                                "attribute {name}: a variable-length string has no heap"
                            ))
                        }
                        Some(col) => self.global_heap_object(col, index, len)?,
                    };
                    let text = std::str::from_utf8(bytes).map_err(|_| {
                        H5Error(format!("attribute {name} holds a string that is not UTF-8"))
                    })?;
                    out.push(text.to_string());
                }
            }
            other => return fail(format!("attribute {name} holds {other:?}, not strings")),
        }
        Ok(out)
    }

    /// Object `index` (of `len` bytes) of the global heap collection at `addr`.
    fn global_heap_object(&self, addr: u64, index: u32, len: u32) -> HResult<&'a [u8]> {
        let collection = self.global_heap(addr)?;
        let data = collection
            .get(&index)
            .ok_or_else(|| H5Error(format!("global heap object {index} not found at {addr}")))?;
        data.get(..len as usize).ok_or_else(|| {
            H5Error(format!(
                "a variable-length string of {len} bytes is longer than its heap object"
            ))
        })
    }

    /// The objects of the global heap collection at `addr`, indexed once and cached.
    fn global_heap(&self, addr: u64) -> HResult<HeapObjects<'a>> {
        if let Some(h) = self.heaps.borrow().get(&addr) {
            return Ok(h.clone());
        }
        let mut c = self.at(addr, "a global heap collection")?;
        let start = c.pos;
        if c.take(4)? != b"GCOL" {
            return fail(format!(
                "the global heap at {addr} lacks its GCOL signature"
            ));
        }
        c.skip(4)?; // version, reserved
        let size = c.length()?;
        let end = usize::try_from(size)
            .ok()
            .and_then(|s| start.checked_add(s))
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                H5Error(format!(
                    "the global heap at {addr} reaches past the end of the file"
                ))
            })?;
        let mut c = Cursor {
            data: self.data.get(..end).unwrap_or_default(),
            ..c
        };
        let mut objects = HashMap::new();
        // Each object: id (2), reference count (2), reserved (4), size, data padded to 8 bytes;
        // id 0 is the free space at the end.
        while c.pos.saturating_add(8 + self.length_size) <= end {
            let id = c.u16()?;
            c.skip(6)?;
            let obj_size = c.length()?;
            if id == 0 {
                break;
            }
            let data = c.take(usize::try_from(obj_size).unwrap_or(usize::MAX))?;
            objects.entry(u32::from(id)).or_insert(data);
            if c.align8(start).is_err() {
                break;
            }
        }
        self.count_indexed(objects.len())?;
        let objects = Rc::new(objects);
        self.heaps.borrow_mut().insert(addr, objects.clone());
        Ok(objects)
    }

    /// Parses a datatype message.
    fn datatype(&self, data: &[u8]) -> HResult<ElemType> {
        let mut c = Cursor {
            data,
            pos: 0,
            offset_size: self.offset_size,
            length_size: self.length_size,
        };
        let class_version = c.u8()?;
        let class = class_version & 0x0f;
        let bits0 = c.u8()?;
        c.skip(2)?;
        let size = c.u32()? as usize;
        let big_endian = bits0 & 0x01 != 0;
        match class {
            0 => {
                if !matches!(size, 1 | 2 | 4 | 8) {
                    return fail(format!("integer datatype of {size} bytes is not supported"));
                }
                Ok(ElemType::Int {
                    size,
                    big_endian,
                    signed: bits0 & 0x08 != 0,
                })
            }
            1 => {
                if bits0 & 0x40 != 0 {
                    return fail("VAX-order floats are not supported");
                }
                c.skip(2)?; // bit offset
                let precision = c.u16()?;
                let exp_loc = c.u8()?;
                let exp_size = c.u8()?;
                let man_loc = c.u8()?;
                let man_size = c.u8()?;
                let layout = (size, precision, exp_loc, exp_size, man_loc, man_size);
                let bf16 = match layout {
                    (2, 16, 10, 5, 0, 10) | (4, 32, 23, 8, 0, 23) | (8, 64, 52, 11, 0, 52) => false,
                    (2, 16, 7, 8, 0, 7) => true,
                    _ => {
                        return fail(format!(
                            "floating-point datatype of {size} bytes (precision {precision}, exponent {exp_size} bits, mantissa {man_size} bits) is not an IEEE float16/32/64 or bfloat16"
                        ))
                    }
                };
                Ok(ElemType::Float {
                    size,
                    big_endian,
                    bf16,
                })
            }
            3 => {
                if size == 0 {
                    return fail("a fixed-length string datatype has size 0");
                }
                Ok(ElemType::FixedString { size })
            }
            9 => {
                if bits0 & 0x0f != 1 {
                    return fail(
                        "variable-length sequences (other than strings) are not supported",
                    );
                }
                Ok(ElemType::VarString)
            }
            other => fail(format!(
                "unsupported datatype class {other} (only integers, floats and strings are read)"
            )),
        }
    }

    /// Parses a dataspace message into its dimensions (empty for a scalar).
    fn dataspace(&self, data: &[u8]) -> HResult<Vec<usize>> {
        let mut c = self.cursor_owned(data);
        let version = c.u8()?;
        let rank = usize::from(c.u8()?);
        let flags = c.u8()?;
        match version {
            1 => c.skip(5)?,
            2 => {
                let kind = c.u8()?;
                if kind == 2 {
                    return fail("a null dataspace holds no data");
                }
            }
            v => return fail(format!("unsupported dataspace version {v}")),
        }
        if rank > MAX_RANK {
            return fail(format!(
                "a dataspace has {rank} dimensions (at most {MAX_RANK})"
            ));
        }
        let _ = flags;
        let mut dims = Vec::with_capacity(rank);
        for _ in 0..rank {
            let d = c.length()?;
            dims.push(
                usize::try_from(d).map_err(|_| H5Error(format!("dimension {d} is too large")))?,
            );
        }
        checked_numel(&dims)?;
        Ok(dims)
    }

    fn cursor_owned<'b>(&self, data: &'b [u8]) -> Cursor<'b> {
        Cursor {
            data,
            pos: 0,
            offset_size: self.offset_size,
            length_size: self.length_size,
        }
    }

    /// Reads the dataset whose object header is at `addr`.
    pub fn dataset(&self, addr: u64) -> HResult<Dataset<'a>> {
        let header = self.header(addr)?;
        let dt = header
            .first(MSG_DATATYPE)
            .ok_or_else(|| H5Error(format!("object at {addr} is not a dataset (no datatype)")))?;
        let ds = header
            .first(MSG_DATASPACE)
            .ok_or_else(|| H5Error(format!("dataset at {addr} has no dataspace")))?;
        let layout = header
            .first(MSG_LAYOUT)
            .ok_or_else(|| H5Error(format!("dataset at {addr} has no data layout")))?;
        if header.first(MSG_EXTERNAL).is_some() {
            return fail("datasets stored in external files are not read");
        }
        let elem = self.datatype(dt)?;
        if matches!(elem, ElemType::VarString | ElemType::FixedString { .. }) {
            return fail(format!("dataset at {addr} holds strings, not numbers"));
        }
        let shape = self.dataspace(ds)?;
        let count = checked_numel(&shape)?;
        let size = elem.size(self.offset_size);
        let total = count
            .checked_mul(size)
            .ok_or_else(|| H5Error(format!("dataset at {addr}: its size overflows")))?;
        let mut c = self.cursor(layout);
        let version = c.u8()?;
        let filtered = header.first(MSG_FILTERS).is_some();
        let data = match version {
            3 | 4 => {
                let class = c.u8()?;
                match class {
                    0 => {
                        let n = usize::from(c.u16()?);
                        c.take(n)?
                    }
                    1 => {
                        let a = c.addr()?;
                        let n = c.length()?;
                        if filtered {
                            return fail("filtered (compressed) datasets are not supported");
                        }
                        match a {
                            Some(a) => self.bytes(a, n, "a dataset's data")?,
                            None if total == 0 => &[][..],
                            None => {
                                return fail(format!(
                                    "dataset at {addr} has no data written (unallocated storage)"
                                ))
                            }
                        }
                    }
                    2 => {
                        return fail(if filtered {
                            "chunked, filtered (compressed) datasets are not supported; Keras writes contiguous datasets"
                        } else {
                            "chunked datasets are not supported; Keras writes contiguous datasets"
                        })
                    }
                    3 => return fail("virtual datasets are not supported"),
                    other => return fail(format!("unknown data layout class {other}")),
                }
            }
            1 | 2 => {
                let rank = usize::from(c.u8()?);
                let class = c.u8()?;
                c.skip(5)?;
                match class {
                    0 => {
                        c.skip(rank.saturating_mul(4))?;
                        let n = c.u32()? as usize;
                        c.take(n)?
                    }
                    1 => {
                        if filtered {
                            return fail("filtered (compressed) datasets are not supported");
                        }
                        let a = c.addr()?;
                        c.skip(rank.saturating_mul(4))?;
                        match a {
                            Some(a) => self.bytes(a, total as u64, "a dataset's data")?,
                            None if total == 0 => &[][..],
                            None => {
                                return fail(format!(
                                    "dataset at {addr} has no data written (unallocated storage)"
                                ))
                            }
                        }
                    }
                    2 => {
                        return fail(if filtered {
                            "chunked, filtered (compressed) datasets are not supported; Keras writes contiguous datasets"
                        } else {
                            "chunked datasets are not supported; Keras writes contiguous datasets"
                        })
                    }
                    other => return fail(format!("unknown data layout class {other}")),
                }
            }
            v => return fail(format!("unsupported data layout version {v}")),
        };
        if data.len() != total {
            return fail(format!(
                "dataset at {addr} of shape {shape:?} needs {total} bytes, its storage has {}",
                data.len()
            ));
        }
        Ok(Dataset { elem, shape, data })
    }
}

fn check_sizes(offset_size: usize, length_size: usize) -> HResult<()> {
    if !matches!(offset_size, 2 | 4 | 8) || !matches!(length_size, 2 | 4 | 8) {
        return fail(format!(
            "unsupported sizes of offsets ({offset_size}) and lengths ({length_size})"
        ));
    }
    Ok(())
}

/// The element count of `shape`, or an error on overflow.
pub fn checked_numel(shape: &[usize]) -> HResult<usize> {
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| H5Error(format!("the dimensions {shape:?} overflow")))
}

/// Bob Jenkins' lookup3 `hashlittle` with initial value 0: HDF5's metadata checksum.
pub fn lookup3(key: &[u8]) -> u32 {
    fn rot(x: u32, k: u32) -> u32 {
        x.rotate_left(k)
    }
    let mut a: u32 = 0xdead_beef_u32.wrapping_add(key.len() as u32);
    let mut b = a;
    let mut c = a;
    let word = |s: &[u8]| -> u32 {
        s.iter()
            .enumerate()
            .fold(0u32, |acc, (i, &x)| acc | (u32::from(x) << (8 * i)))
    };
    let mut rest = key;
    while rest.len() > 12 {
        let (block, tail) = rest.split_at(12);
        a = a.wrapping_add(word(block.get(0..4).unwrap_or_default()));
        b = b.wrapping_add(word(block.get(4..8).unwrap_or_default()));
        c = c.wrapping_add(word(block.get(8..12).unwrap_or_default()));
        // mix
        a = a.wrapping_sub(c);
        a ^= rot(c, 4);
        c = c.wrapping_add(b);
        b = b.wrapping_sub(a);
        b ^= rot(a, 6);
        a = a.wrapping_add(c);
        c = c.wrapping_sub(b);
        c ^= rot(b, 8);
        b = b.wrapping_add(a);
        a = a.wrapping_sub(c);
        a ^= rot(c, 16);
        c = c.wrapping_add(b);
        b = b.wrapping_sub(a);
        b ^= rot(a, 19);
        a = a.wrapping_add(c);
        c = c.wrapping_sub(b);
        c ^= rot(b, 4);
        b = b.wrapping_add(a);
        rest = tail;
    }
    if rest.is_empty() {
        return c;
    }
    a = a.wrapping_add(word(rest.get(0..rest.len().min(4)).unwrap_or_default()));
    if rest.len() > 4 {
        b = b.wrapping_add(word(rest.get(4..rest.len().min(8)).unwrap_or_default()));
    }
    if rest.len() > 8 {
        c = c.wrapping_add(word(rest.get(8..).unwrap_or_default()));
    }
    // final
    c ^= b;
    c = c.wrapping_sub(rot(b, 14));
    a ^= c;
    a = a.wrapping_sub(rot(c, 11));
    b ^= a;
    b = b.wrapping_sub(rot(a, 25));
    c ^= b;
    c = c.wrapping_sub(rot(b, 16));
    a ^= c;
    a = a.wrapping_sub(rot(c, 4));
    b ^= a;
    b = b.wrapping_sub(rot(a, 14));
    c ^= b;
    c = c.wrapping_sub(rot(b, 24));
    c
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn lookup3_known_values() {
        // hashlittle("", 0) and hashlittle("Four score and seven years ago", 0)
        assert_eq!(lookup3(b""), 0xdeadbeef);
        assert_eq!(lookup3(b"Four score and seven years ago"), 0x17770551);
    }

    #[test]
    fn not_hdf5() {
        assert!(File::parse(b"hello world")
            .err()
            .unwrap()
            .0
            .contains("no HDF5 signature"));
    }
}
