//! A strict reader for the uncompressed zip archives `torch.save` writes.
//!
//! Only what PyTorch's writer produces is accepted: every entry STORED (no compression), the end
//! of central directory record at the very end of the file (no trailing bytes), zip64 records
//! where sizes need them, unique entry names, and every entry's data inside the file and before
//! the central directory. [`crc32`] checks an entry's checksum (the loader checks `data.pkl`'s).

use std::collections::HashMap;
use std::ops::Range;

const EOCD_SIG: u32 = 0x0605_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const LOCAL_SIG: u32 = 0x0403_4b50;

/// One entry: where its bytes are in the file, and its checksum.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Byte range of the (stored) data in the archive.
    pub data: Range<usize>,
    /// The CRC-32 the central directory records.
    pub crc32: u32,
}

/// The entries of an archive, by name, in central-directory order.
#[derive(Debug, Default)]
pub struct ZipIndex {
    /// Entry names in order.
    pub names: Vec<String>,
    /// Name → entry.
    pub entries: HashMap<String, Entry>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

fn to_usize(v: u64) -> Result<usize, String> {
    usize::try_from(v).map_err(|_| "a zip offset does not fit in memory".to_string())
}

/// Whether `bytes` starts like a zip archive.
pub fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}

/// Parses the central directory of `bytes`. Errors are human-readable reasons.
pub fn read_index(bytes: &[u8]) -> Result<ZipIndex, String> {
    let len = bytes.len();
    if len < 22 {
        return Err("the file is too small to be a zip archive".into());
    }
    // The EOCD record must end exactly at the end of the file (after its comment).
    let lowest = len.saturating_sub(22 + 0xffff);
    let mut eocd = None;
    let mut at = len - 22;
    loop {
        if u32_at(bytes, at) == Some(EOCD_SIG) {
            let comment = u16_at(bytes, at + 20).unwrap_or(0) as usize;
            if at + 22 + comment == len {
                eocd = Some(at);
                break;
            }
        }
        if at == lowest {
            break;
        }
        at -= 1;
    }
    let Some(eocd) = eocd else {
        return Err(
            "no zip end-of-central-directory record at the end of the file (truncated, or trailing bytes after the archive)"
                .into(),
        );
    };
    let field16 = |off: usize| u16_at(bytes, eocd + off).unwrap_or(0);
    let field32 = |off: usize| u32_at(bytes, eocd + off).unwrap_or(0);
    if field16(4) != 0 || field16(6) != 0 {
        return Err("multi-disk zip archives are not supported".into());
    }
    let mut count = u64::from(field16(10));
    let mut cd_size = u64::from(field32(12));
    let mut cd_offset = u64::from(field32(16));
    let mut cd_end_limit = eocd;
    if count == 0xffff || cd_size == 0xffff_ffff || cd_offset == 0xffff_ffff {
        let locator = eocd
            .checked_sub(20)
            .filter(|&l| u32_at(bytes, l) == Some(ZIP64_LOCATOR_SIG))
            .ok_or("a zip64 archive without its zip64 locator")?;
        let z = to_usize(u64_at(bytes, locator + 8).ok_or("truncated zip64 locator")?)?;
        if u32_at(bytes, z) != Some(ZIP64_EOCD_SIG) || z >= locator {
            return Err("the zip64 end-of-central-directory record is missing".into());
        }
        count = u64_at(bytes, z + 32).ok_or("truncated zip64 record")?;
        cd_size = u64_at(bytes, z + 40).ok_or("truncated zip64 record")?;
        cd_offset = u64_at(bytes, z + 48).ok_or("truncated zip64 record")?;
        cd_end_limit = z;
    }
    let cd_start = to_usize(cd_offset)?;
    let cd_end = cd_start
        .checked_add(to_usize(cd_size)?)
        .filter(|&e| e <= cd_end_limit)
        .ok_or("the zip central directory lies outside the file")?;
    // Each central record is at least 46 bytes: bound the count before allocating.
    if count > (cd_size / 46) + 1 {
        return Err("the zip central directory claims more entries than it can hold".into());
    }
    let mut index = ZipIndex::default();
    let mut pos = cd_start;
    for _ in 0..count {
        if u32_at(bytes, pos) != Some(CENTRAL_SIG) || pos + 46 > cd_end {
            return Err("a zip central directory record is malformed".into());
        }
        let method = u16_at(bytes, pos + 10).unwrap_or(0);
        let crc32 = u32_at(bytes, pos + 16).unwrap_or(0);
        let mut csize = u64::from(u32_at(bytes, pos + 20).unwrap_or(0));
        let mut usize_ = u64::from(u32_at(bytes, pos + 24).unwrap_or(0));
        let name_len = u16_at(bytes, pos + 28).unwrap_or(0) as usize;
        let extra_len = u16_at(bytes, pos + 30).unwrap_or(0) as usize;
        let comment_len = u16_at(bytes, pos + 32).unwrap_or(0) as usize;
        let mut local = u64::from(u32_at(bytes, pos + 42).unwrap_or(0));
        let name_start = pos + 46;
        let next = name_start + name_len + extra_len + comment_len;
        if next > cd_end {
            return Err("a zip central directory record runs past the directory".into());
        }
        let name = bytes
            .get(name_start..name_start + name_len)
            .and_then(|n| std::str::from_utf8(n).ok())
            .ok_or("a zip entry name is not UTF-8")?
            .to_string();
        // zip64 extended information: present values replace the 0xffffffff placeholders.
        let extra = bytes
            .get(name_start + name_len..name_start + name_len + extra_len)
            .unwrap_or(&[]);
        let mut e = 0;
        while e + 4 <= extra.len() {
            let id = u16_at(extra, e).unwrap_or(0);
            let size = u16_at(extra, e + 2).unwrap_or(0) as usize;
            if id == 0x0001 {
                let mut f = e + 4;
                let mut next64 = |v: &mut u64| {
                    if *v == 0xffff_ffff {
                        if let Some(x) = u64_at(extra, f) {
                            *v = x;
                        }
                        f += 8;
                    }
                };
                next64(&mut usize_);
                next64(&mut csize);
                next64(&mut local);
            }
            e += 4 + size;
        }
        if method != 0 {
            return Err(format!(
                "zip entry {name} is compressed (method {method}); torch.save writes only stored entries"
            ));
        }
        if csize != usize_ {
            return Err(format!("zip entry {name} has inconsistent sizes"));
        }
        let local = to_usize(local)?;
        if u32_at(bytes, local) != Some(LOCAL_SIG) {
            return Err(format!("zip entry {name} has no local header"));
        }
        let lname = u16_at(bytes, local + 26).unwrap_or(0) as usize;
        let lextra = u16_at(bytes, local + 28).unwrap_or(0) as usize;
        let local_name = bytes.get(local + 30..local + 30 + lname);
        if local_name != Some(name.as_bytes()) {
            return Err(format!(
                "zip entry {name}: the local header names a different file"
            ));
        }
        let data_start = local + 30 + lname + lextra;
        let data_end = data_start
            .checked_add(to_usize(csize)?)
            .filter(|&end| end <= cd_start)
            .ok_or_else(|| format!("zip entry {name} lies outside the file"))?;
        if index.entries.contains_key(&name) {
            return Err(format!("zip entry {name} appears twice"));
        }
        index.names.push(name.clone());
        index.entries.insert(
            name,
            Entry {
                data: data_start..data_end,
                crc32,
            },
        );
        pos = next;
    }
    Ok(index)
}

/// CRC-32 (IEEE), bitwise table built once per call site.
pub fn crc32(data: &[u8]) -> u32 {
    let mut table = [0u32; 256];
    for (i, slot) in table.iter_mut().enumerate() {
        let mut c = i as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
        *slot = c;
    }
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc = table[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub(crate) mod tests {
    use super::*;

    /// A minimal stored zip with the given entries.
    pub(crate) fn build(entries: &[(&str, &[u8])], method: u16) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, data) in entries {
            let offset = out.len() as u32;
            let crc = crc32(data);
            out.extend(LOCAL_SIG.to_le_bytes());
            out.extend([20, 0, 0, 0]);
            out.extend(method.to_le_bytes());
            out.extend([0, 0, 0, 0]);
            out.extend(crc.to_le_bytes());
            out.extend((data.len() as u32).to_le_bytes());
            out.extend((data.len() as u32).to_le_bytes());
            out.extend((name.len() as u16).to_le_bytes());
            out.extend(0u16.to_le_bytes());
            out.extend(name.as_bytes());
            out.extend(*data);
            central.extend(CENTRAL_SIG.to_le_bytes());
            central.extend([20, 0, 20, 0, 0, 0]);
            central.extend(method.to_le_bytes());
            central.extend([0, 0, 0, 0]);
            central.extend(crc.to_le_bytes());
            central.extend((data.len() as u32).to_le_bytes());
            central.extend((data.len() as u32).to_le_bytes());
            central.extend((name.len() as u16).to_le_bytes());
            central.extend([0u8; 12]);
            central.extend(offset.to_le_bytes());
            central.extend(name.as_bytes());
        }
        let cd_offset = out.len() as u32;
        out.extend(&central);
        out.extend(EOCD_SIG.to_le_bytes());
        out.extend([0, 0, 0, 0]);
        out.extend((entries.len() as u16).to_le_bytes());
        out.extend((entries.len() as u16).to_le_bytes());
        out.extend((central.len() as u32).to_le_bytes());
        out.extend(cd_offset.to_le_bytes());
        out.extend([0, 0]);
        out
    }

    #[test]
    fn reads_stored_and_refuses_the_rest() {
        let zip = build(&[("a/data.pkl", b"hello"), ("a/data/0", b"xy")], 0);
        let index = read_index(&zip).unwrap();
        assert_eq!(index.names, ["a/data.pkl", "a/data/0"]);
        let e = &index.entries["a/data/0"];
        assert_eq!(&zip[e.data.clone()], b"xy");
        assert_eq!(e.crc32, crc32(b"xy"));

        let deflated = build(&[("a/data.pkl", b"hello")], 8);
        assert!(read_index(&deflated).unwrap_err().contains("compressed"));
        let mut trailing = zip.clone();
        trailing.extend(b"junk");
        assert!(read_index(&trailing).unwrap_err().contains("trailing"));
        assert!(read_index(&zip[..zip.len() - 5]).is_err());
        let dup = build(&[("a/x", b"1"), ("a/x", b"2")], 0);
        assert!(read_index(&dup).unwrap_err().contains("twice"));
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }
}
