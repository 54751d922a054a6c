//! Tesseract OCR as transformers' LayoutLMv2/LayoutLMv3 image processors run it
//! (`apply_tesseract`, through `pytesseract.image_to_data(image, lang, output_type="dict",
//! config)`).
//!
//! The flow is pytesseract's, step for step:
//! 1. The image (as the numpy array transformers holds: gray, gray+alpha, RGB or RGBA, 8-bit) is
//!    written as a PNG file `<tmp>_input.PNG` (a PIL image made from an array has no format, so
//!    pytesseract picks PNG). Images with an alpha channel are first pasted onto a white RGB
//!    background through their alpha (Pillow's `paste` rounding).
//! 2. The program runs as `tesseract <tmp>_input.PNG <tmp> [-l <lang>] -c tessedit_create_tsv=1
//!    <shlex.split(config.strip())...>` with stdin closed and stdout/stderr captured.
//! 3. `<tmp>.tsv` is read as UTF-8 and parsed like pytesseract's `file_to_dict`.
//! 4. Rows whose `text.strip()` is empty are dropped; each word's box `[left, top, left+width,
//!    top+height]` is normalised with the image size as `int(1000 * (v / size))`.
//!
//! The program is `tesseract` from `PATH` unless the environment variable **`TESSERACT_CMD`**
//! names another one (pytesseract's `pytesseract.tesseract_cmd`), or [`TesseractOptions::program`]
//! is set. Unlike pytesseract (no timeout by default) the process is killed after
//! [`TesseractOptions::timeout`] (120 s by default). pytesseract's `tesseract --version` check
//! (tesseract ≥ 3.05) is not run; an older tesseract fails with "no TSV output".

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ::image::{DynamicImage, ImageFormat, RgbImage};

use crate::error::{Error, Result};

/// The environment variable naming the tesseract program (default: `tesseract` from `PATH`).
pub const TESSERACT_CMD_ENV: &str = "TESSERACT_CMD";

/// The default time limit of one tesseract run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The words tesseract found in one image and their boxes, as transformers' `apply_tesseract`
/// returns them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OcrWords {
    /// The words (tesseract's `text` entries whose `strip()` is not empty), in tesseract's order.
    pub words: Vec<String>,
    /// One box per word, `[x0, y0, x1, y1]` normalised to 0..1000 with the image size:
    /// `[int(1000*(left/W)), int(1000*(top/H)), int(1000*((left+width)/W)),
    /// int(1000*((top+height)/H))]`.
    pub boxes: Vec<[i64; 4]>,
}

/// One row of tesseract's TSV output (`image_to_data`).
#[derive(Clone, Debug, PartialEq)]
pub struct TsvRow {
    /// 1 page, 2 block, 3 paragraph, 4 line, 5 word.
    pub level: i64,
    /// Page number (1-based).
    pub page_num: i64,
    /// Block number within the page.
    pub block_num: i64,
    /// Paragraph number within the block.
    pub par_num: i64,
    /// Line number within the paragraph.
    pub line_num: i64,
    /// Word number within the line.
    pub word_num: i64,
    /// Left edge of the box in pixels.
    pub left: i64,
    /// Top edge of the box in pixels.
    pub top: i64,
    /// Box width in pixels.
    pub width: i64,
    /// Box height in pixels.
    pub height: i64,
    /// Confidence as written by tesseract (`-1` for non-word rows); pytesseract's dict holds
    /// `int(float(conf))`.
    pub conf: f64,
    /// The recognised text (empty for non-word rows).
    pub text: String,
}

/// The column names of tesseract's TSV output, in order.
pub const TSV_COLUMNS: [&str; 12] = [
    "level",
    "page_num",
    "block_num",
    "par_num",
    "line_num",
    "word_num",
    "left",
    "top",
    "width",
    "height",
    "conf",
    "text",
];

/// How to run tesseract.
#[derive(Clone, Debug)]
pub struct TesseractOptions {
    /// The program; `None`: `$TESSERACT_CMD` if set and not empty, else `tesseract` from `PATH`.
    pub program: Option<PathBuf>,
    /// Kill the process and fail after this long.
    pub timeout: Duration,
}

impl Default for TesseractOptions {
    fn default() -> Self {
        TesseractOptions {
            program: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl TesseractOptions {
    /// The program that will run.
    pub fn resolved_program(&self) -> OsString {
        if let Some(p) = &self.program {
            return p.clone().into_os_string();
        }
        match std::env::var_os(TESSERACT_CMD_ENV) {
            Some(v) if !v.is_empty() => v,
            _ => OsString::from("tesseract"),
        }
    }
}

/// transformers' `apply_tesseract(image, lang, tesseract_config)`: runs tesseract on the image
/// (at its own size) and returns the non-empty words with boxes normalised to 0..1000.
/// `lang` is passed as `-l <lang>` when given; `config` is split like `shlex.split`.
/// The program is `$TESSERACT_CMD` or `tesseract`; see [`apply_tesseract_with`].
pub fn apply_tesseract(image: &DynamicImage, lang: Option<&str>, config: &str) -> Result<OcrWords> {
    apply_tesseract_with(image, lang, config, &TesseractOptions::default())
}

/// [`apply_tesseract`] with an explicit program and time limit.
pub fn apply_tesseract_with(
    image: &DynamicImage,
    lang: Option<&str>,
    config: &str,
    options: &TesseractOptions,
) -> Result<OcrWords> {
    let prepared = prepare(image)?;
    let (width, height) = (prepared.width(), prepared.height());
    let rows = image_to_data(&prepared, lang, config, options)?;
    Ok(words_from_rows(&rows, width, height))
}

/// Filters and normalises TSV rows as `apply_tesseract` does, for an image of `width` x
/// `height` pixels.
pub fn words_from_rows(rows: &[TsvRow], width: u32, height: u32) -> OcrWords {
    let mut out = OcrWords::default();
    for row in rows {
        if python_strip(&row.text).is_empty() {
            continue;
        }
        out.words.push(row.text.clone());
        out.boxes.push(normalize_box(
            [
                row.left,
                row.top,
                row.left + row.width,
                row.top + row.height,
            ],
            width,
            height,
        ));
    }
    out
}

/// transformers' `normalize_box`: `int(1000 * (v / size))` per coordinate (float64, truncated).
pub fn normalize_box(b: [i64; 4], width: u32, height: u32) -> [i64; 4] {
    let (w, h) = (f64::from(width), f64::from(height));
    let n = |v: i64, size: f64| (1000.0 * (v as f64 / size)) as i64;
    [n(b[0], w), n(b[1], h), n(b[2], w), n(b[3], h)]
}

/// Python's `str.strip()` (whitespace per `str.isspace`).
fn python_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// The arguments after the program: `<input> <output_base> [-l lang] -c tessedit_create_tsv=1
/// <shlex.split(config.strip())>` (pytesseract's `image_to_data` → `run_tesseract`).
pub fn tesseract_args(
    input: &Path,
    output_base: &Path,
    lang: Option<&str>,
    config: &str,
) -> Result<Vec<OsString>> {
    let mut args: Vec<OsString> = vec![input.into(), output_base.into()];
    if let Some(lang) = lang {
        args.push("-l".into());
        args.push(lang.into());
    }
    let full = format!("-c tessedit_create_tsv=1 {}", python_strip(config));
    args.extend(shlex_split(&full)?.into_iter().map(OsString::from));
    Ok(args)
}

/// Python's `shlex.split(s)` (POSIX mode, no comments).
pub fn shlex_split(s: &str) -> Result<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum State {
        Whitespace,
        Word,
        Quote(char),
        Escape(char),
    }
    let is_ws = |c: char| matches!(c, ' ' | '\t' | '\r' | '\n');
    let mut out = Vec::new();
    let mut token = String::new();
    let mut quoted = false;
    let mut state = State::Whitespace;
    // The state an escape returns to.
    let mut chars = s.chars();
    loop {
        let next = chars.next();
        match state {
            State::Whitespace | State::Word => match next {
                None => break,
                Some(c) if is_ws(c) => {
                    if state == State::Word || quoted {
                        out.push(std::mem::take(&mut token));
                        quoted = false;
                    }
                    state = State::Whitespace;
                }
                Some('\\') => state = State::Escape('a'),
                Some(c @ ('\'' | '"')) => state = State::Quote(c),
                Some(c) => {
                    token.push(c);
                    state = State::Word;
                }
            },
            State::Quote(q) => {
                quoted = true;
                match next {
                    None => {
                        return Err(Error::input(format!(
                            "tesseract_config {s:?}: No closing quotation"
                        )))
                    }
                    Some(c) if c == q => state = State::Word,
                    Some('\\') if q == '"' => state = State::Escape(q),
                    Some(c) => token.push(c),
                }
            }
            State::Escape(back) => match next {
                None => {
                    return Err(Error::input(format!(
                        "tesseract_config {s:?}: No escaped character"
                    )))
                }
                Some(c) => {
                    // Inside double quotes a backslash only escapes `"` and `\`.
                    if back == '"' && c != '"' && c != '\\' {
                        token.push('\\');
                    }
                    token.push(c);
                    state = if back == '"' {
                        State::Quote('"')
                    } else {
                        State::Word
                    };
                }
            },
        }
    }
    if state == State::Word || quoted {
        out.push(token);
    }
    Ok(out)
}

/// pytesseract's `prepare`: the image pytesseract writes (alpha pasted onto white).
fn prepare(image: &DynamicImage) -> Result<DynamicImage> {
    let (w, h) = (image.width(), image.height());
    if w == 0 || h == 0 {
        return Err(Error::input(format!(
            "cannot run OCR on an empty image ({w}x{h})"
        )));
    }
    // Pillow's paste with an L mask: DIV255(bg * (255 - a) + c * a), bg = 255.
    let paste = |c: u8, a: u8| -> u8 {
        let v = 255 * (255 - u32::from(a)) + u32::from(c) * u32::from(a) + 128;
        (((v >> 8) + v) >> 8) as u8
    };
    Ok(match image {
        DynamicImage::ImageLuma8(_) | DynamicImage::ImageRgb8(_) => image.clone(),
        DynamicImage::ImageLumaA8(i) => {
            let data = i
                .pixels()
                .flat_map(|p| {
                    let v = paste(p.0[0], p.0[1]);
                    [v, v, v]
                })
                .collect();
            DynamicImage::ImageRgb8(rgb_from_raw(w, h, data)?)
        }
        DynamicImage::ImageRgba8(i) => {
            let data = i
                .pixels()
                .flat_map(|p| {
                    let a = p.0[3];
                    [paste(p.0[0], a), paste(p.0[1], a), paste(p.0[2], a)]
                })
                .collect();
            DynamicImage::ImageRgb8(rgb_from_raw(w, h, data)?)
        }
        other if other.color().has_alpha() => prepare(&DynamicImage::ImageRgba8(other.to_rgba8()))?,
        other if other.color().channel_count() == 1 => DynamicImage::ImageLuma8(other.to_luma8()),
        other => DynamicImage::ImageRgb8(other.to_rgb8()),
    })
}

fn rgb_from_raw(w: u32, h: u32, data: Vec<u8>) -> Result<RgbImage> {
    RgbImage::from_raw(w, h, data)
        .ok_or_else(|| Error::input(format!("internal error: bad {w}x{h} RGB buffer")))
}

/// A fresh temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mut last_err = None;
        for _ in 0..16 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = base.join(format!(
                "autoclass_tess_{}_{n}_{nanos:08x}",
                std::process::id()
            ));
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(TempDir(dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_err = Some(e),
                Err(e) => return Err(Error::io(dir, e)),
            }
        }
        Err(Error::io(
            base,
            last_err.unwrap_or_else(|| std::io::Error::other("cannot create a temp directory")),
        ))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn read_pipe<R: Read + Send + 'static>(pipe: Option<R>) -> Option<JoinHandle<Vec<u8>>> {
    pipe.map(|mut p| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = p.read_to_end(&mut buf);
            buf
        })
    })
}

fn join_pipe(handle: Option<JoinHandle<Vec<u8>>>) -> Vec<u8> {
    handle.and_then(|h| h.join().ok()).unwrap_or_default()
}

/// Waits for `child` up to `timeout`; kills it after that. `Ok(None)`: timed out.
fn wait_with_timeout(
    child: &mut Child,
    timeout: Duration,
) -> std::io::Result<Option<std::process::ExitStatus>> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if start.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// pytesseract's `image_to_data(image, lang, config, output_type=DICT)` as parsed rows.
/// `image` must already be prepared (no alpha).
fn image_to_data(
    image: &DynamicImage,
    lang: Option<&str>,
    config: &str,
    options: &TesseractOptions,
) -> Result<Vec<TsvRow>> {
    let program = options.resolved_program();
    let dir = TempDir::new()?;
    let base = dir.0.join("tess_");
    let input = dir.0.join("tess__input.PNG");
    let args = tesseract_args(&input, &base, lang, config)?;
    image
        .save_with_format(&input, ImageFormat::Png)
        .map_err(|e| Error::io(&input, std::io::Error::other(e.to_string())))?;
    let spawned = Command::new(&program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::input(format!(
                "{} is not installed or it's not in your PATH. OCR (apply_ocr=True) requires the \
                 Tesseract OCR engine (transformers uses it through pytesseract): install \
                 tesseract (e.g. `apt install tesseract-ocr`), set {TESSERACT_CMD_ENV} to the \
                 program, or set apply_ocr to false and pass words and boxes yourself.",
                program.to_string_lossy()
            )))
        }
        Err(e) => {
            return Err(Error::io(
                PathBuf::from(&program),
                std::io::Error::new(e.kind(), format!("cannot run tesseract: {e}")),
            ))
        }
    };
    let stdout = read_pipe(child.stdout.take());
    let stderr = read_pipe(child.stderr.take());
    let status = wait_with_timeout(&mut child, options.timeout)
        .map_err(|e| Error::io(PathBuf::from(&program), e))?;
    let _ = join_pipe(stdout);
    let err_text = String::from_utf8_lossy(&join_pipe(stderr)).into_owned();
    // pytesseract's get_errors: stderr lines joined with spaces.
    let errors = err_text.lines().collect::<Vec<_>>().join(" ");
    let errors = errors.trim();
    let Some(status) = status else {
        return Err(Error::input(format!(
            "Tesseract process timeout: {} did not finish within {:?} and was killed",
            program.to_string_lossy(),
            options.timeout
        )));
    };
    if !status.success() {
        let code = status
            .code()
            .map(|c| c.to_string())
            .unwrap_or_else(|| "killed by a signal".into());
        return Err(Error::input(format!(
            "tesseract failed (exit status {code}): {errors}"
        )));
    }
    let tsv_path = dir.0.join("tess_.tsv");
    let bytes = match std::fs::read(&tsv_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::input(format!(
                "tesseract produced no TSV output (tesseract >= 3.05 is required); its \
                 messages: {errors}"
            )))
        }
        Err(e) => return Err(Error::io(tsv_path, e)),
    };
    let text = String::from_utf8(bytes)
        .map_err(|e| Error::input(format!("tesseract's TSV output is not UTF-8: {e}")))?;
    parse_tsv(&text)
}

/// Parses tesseract's TSV output as pytesseract's `file_to_dict(tsv, "\t", -1)` reads it:
/// `tsv.strip()` split on `\n`, then on tabs; the first line is the header (it must be
/// tesseract's 12 columns, see [`TSV_COLUMNS`]); a last row one cell short gets an empty text.
/// Numeric cells are parsed as numbers (`int(float(cell))` for the integer columns). Fewer than
/// two lines: no rows. Anything else malformed is an error.
pub fn parse_tsv(text: &str) -> Result<Vec<TsvRow>> {
    let text = python_strip(text);
    let lines: Vec<&str> = text.split('\n').collect();
    let bad = |line: usize, reason: String| {
        Error::input(format!(
            "malformed tesseract TSV output (line {line}): {reason}"
        ))
    };
    let header: Vec<&str> = lines
        .first()
        .map(|l| l.split('\t').collect())
        .unwrap_or_default();
    if lines.len() < 2 {
        if text.is_empty() || header == TSV_COLUMNS {
            return Ok(Vec::new());
        }
        return Err(bad(1, format!("unexpected header {header:?}")));
    }
    if header != TSV_COLUMNS {
        return Err(bad(
            1,
            format!("expected the columns {TSV_COLUMNS:?}, found {header:?}"),
        ));
    }
    let last = lines.len() - 1;
    let mut rows = Vec::with_capacity(last);
    for (i, line) in lines.iter().enumerate().skip(1) {
        let mut cells: Vec<&str> = line.split('\t').collect();
        if i == last && cells.len() == TSV_COLUMNS.len() - 1 {
            cells.push("");
        }
        if cells.len() != TSV_COLUMNS.len() {
            return Err(bad(
                i + 1,
                format!(
                    "{} cells instead of {}: {line:?}",
                    cells.len(),
                    TSV_COLUMNS.len()
                ),
            ));
        }
        let num = |k: usize| -> Result<f64> {
            cells[k]
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    bad(
                        i + 1,
                        format!("`{}` is not a number: {:?}", TSV_COLUMNS[k], cells[k]),
                    )
                })
        };
        let int = |k: usize| -> Result<i64> { num(k).map(|v| v.trunc() as i64) };
        rows.push(TsvRow {
            level: int(0)?,
            page_num: int(1)?,
            block_num: int(2)?,
            par_num: int(3)?,
            line_num: int(4)?,
            word_num: int(5)?,
            left: int(6)?,
            top: int(7)?,
            width: int(8)?,
            height: int(9)?,
            conf: num(10)?,
            text: cells[11].to_string(),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use ::image::GrayImage;

    #[test]
    fn shlex_like_python() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("--psm 6", &["--psm", "6"]),
            ("  -c a=b   --oem 1 ", &["-c", "a=b", "--oem", "1"]),
            ("'a b' c", &["a b", "c"]),
            ("\"a\\\"b\" \"x\\y\"", &["a\"b", "x\\y"]),
            ("a\\ b", &["a b"]),
            ("'' x", &["", "x"]),
            ("a'b c'd", &["ab cd"]),
            (
                "-c \"tessedit_char_whitelist=0123 \"",
                &["-c", "tessedit_char_whitelist=0123 "],
            ),
        ];
        for (input, want) in cases {
            assert_eq!(shlex_split(input).unwrap(), *want, "{input:?}");
        }
        assert!(shlex_split("'abc").is_err());
        assert!(shlex_split("abc\\").is_err());
    }

    #[test]
    fn args_like_pytesseract() {
        let args = tesseract_args(
            Path::new("in.PNG"),
            Path::new("out"),
            Some("eng"),
            " --psm 6 ",
        )
        .unwrap();
        let args: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "in.PNG",
                "out",
                "-l",
                "eng",
                "-c",
                "tessedit_create_tsv=1",
                "--psm",
                "6"
            ]
        );
        let args = tesseract_args(Path::new("in.PNG"), Path::new("out"), None, "").unwrap();
        assert_eq!(args.len(), 4);
    }

    #[test]
    fn tsv_parsing_and_filtering() {
        let tsv = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n\
                   1\t1\t0\t0\t0\t0\t0\t0\t500\t120\t-1\t\n\
                   5\t1\t1\t1\t1\t1\t24\t41\t123\t28\t96.5\tHELLO\n\
                   5\t1\t1\t1\t1\t2\t159\t41\t142\t28\t95.0\t \n\
                   5\t1\t1\t1\t1\t3\t313\t40\t89\t29\t91.2\t2024\n";
        let rows = parse_tsv(tsv).unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[1].conf, 96.5);
        assert_eq!(rows[2].text, " ");
        let words = words_from_rows(&rows, 500, 120);
        assert_eq!(words.words, ["HELLO", "2024"]);
        assert_eq!(words.boxes[0], [48, 341, 294, 575]);
        // A last row without its text cell.
        let short = "level\tpage_num\tblock_num\tpar_num\tline_num\tword_num\tleft\ttop\twidth\theight\tconf\ttext\n\
                     1\t1\t0\t0\t0\t0\t0\t0\t500\t120\t-1\t";
        assert_eq!(parse_tsv(short).unwrap()[0].text, "");
        assert!(parse_tsv("").unwrap().is_empty());
        assert!(parse_tsv("foo\tbar\n1\t2").is_err());
        assert!(parse_tsv(&tsv.replace("96.5", "x")).is_err());
        assert!(parse_tsv(&tsv.replace("\t-1\t\n", "\n")).is_err());
    }

    #[test]
    fn missing_program_is_a_clear_error() {
        let img = DynamicImage::ImageLuma8(GrayImage::new(4, 4));
        let opts = TesseractOptions {
            program: Some(PathBuf::from("/nonexistent/tesseract")),
            ..TesseractOptions::default()
        };
        let err = apply_tesseract_with(&img, None, "", &opts).unwrap_err();
        assert!(err.to_string().contains("not installed"), "{err}");
    }

    #[test]
    fn alpha_is_pasted_on_white() {
        let img = DynamicImage::ImageRgba8(::image::RgbaImage::from_pixel(
            1,
            1,
            ::image::Rgba([0, 100, 200, 128]),
        ));
        let p = prepare(&img).unwrap().to_rgb8();
        // DIV255(255*127 + c*128)
        let f = |c: u32| {
            let v = 255 * 127 + c * 128 + 128;
            (((v >> 8) + v) >> 8) as u8
        };
        assert_eq!(p.get_pixel(0, 0).0, [f(0), f(100), f(200)]);
    }
}
