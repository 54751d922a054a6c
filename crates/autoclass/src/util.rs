//! Small file helpers whose errors always name the file.

use std::path::Path;

use crate::error::{Error, Result};

/// Largest text file (config, tokenizer) we agree to read: 512 MiB.
pub const MAX_TEXT_FILE: u64 = 512 << 20;

/// Reads a UTF-8 text file, refusing files over [`MAX_TEXT_FILE`].
pub fn read_text(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.len() > MAX_TEXT_FILE {
        return Err(Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "file is {} bytes, over the {} byte limit for text files",
                    meta.len(),
                    MAX_TEXT_FILE
                ),
            ),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| {
        Error::io(
            path,
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not valid UTF-8: {e}"),
            ),
        )
    })
}
