//! The names a received file may take: sanitised, never hidden, never colliding.

use interconnect_proto::MAX_FILE_NAME_LEN;

/// Makes a file name offered by the peer safe to create inside the files folder: no
/// path separators or `..` (only the last component is kept), no control characters,
/// no leading or trailing dots and spaces, no device names reserved on Windows, at most
/// [`MAX_FILE_NAME_LEN`] bytes with the extension kept. Never empty.
///
/// ```
/// use interconnect::sanitize_file_name;
/// assert_eq!(sanitize_file_name("../../etc/passwd"), "passwd");
/// assert_eq!(sanitize_file_name("a/b"), "b");
/// assert_eq!(sanitize_file_name("con.txt"), "_con.txt");
/// assert_eq!(sanitize_file_name("..."), "file");
/// assert_eq!(sanitize_file_name("bad\0name\n.txt"), "badname.txt");
/// ```
pub fn sanitize_file_name(offered: &str) -> String {
    let last = offered
        .rsplit(['/', '\\'])
        .find(|part| !part.trim().is_empty())
        .unwrap_or("");
    let cleaned: String = last
        .chars()
        .filter(|c| {
            !c.is_control()
                && !is_invisible(*c)
                && !matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*')
        })
        .collect();
    let trimmed = cleaned.trim_matches(|c: char| c == '.' || c.is_whitespace());
    let mut name = if trimmed.is_empty() {
        "file".to_string()
    } else {
        trimmed.to_string()
    };
    let stem = name.split('.').next().unwrap_or("").to_ascii_uppercase();
    let reserved = matches!(stem.as_str(), "CON" | "PRN" | "AUX" | "NUL")
        || ((stem.starts_with("COM") || stem.starts_with("LPT"))
            && stem.len() == 4
            && stem.as_bytes()[3].is_ascii_digit());
    if reserved {
        name.insert(0, '_');
    }
    truncate_keeping_extension(&name, MAX_FILE_NAME_LEN)
}

/// Unicode format characters (category Cf: bidi controls such as U+202E, which makes
/// `\u{202e}gnp.exe` display as "exe.png", zero-width characters, the byte-order mark)
/// and the line and paragraph separators: they change how a name looks, not what it is.
pub(super) fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

pub(super) fn truncate_keeping_extension(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 && name.len() - dot <= 16 => name.split_at(dot),
        _ => (name, ""),
    };
    let mut end = max - ext.len();
    while !stem.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{}", &stem[..end], ext)
}

/// `name`, or `name (1).ext`, `name (2).ext`, ... : the first that does not exist in `dir`.
pub(super) fn candidate_names(name: &str) -> impl Iterator<Item = String> + '_ {
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 => name.split_at(dot),
        _ => (name, ""),
    };
    std::iter::once(name.to_string()).chain((1..).map(move |n| {
        let suffix = format!(" ({n}){ext}");
        let mut end = stem
            .len()
            .min(MAX_FILE_NAME_LEN.saturating_sub(suffix.len()));
        while !stem.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}{}", &stem[..end], suffix)
    }))
}

/// The partial-file key of an offer: package, offered name, size and modification time.
/// A partial copy found under it is resumed; the digest checked at the end proves it
/// belonged to the same content.
pub(crate) fn partial_key(package: &str, name: &str, size: u64, modified: u64) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(package.as_bytes());
    hasher.update(&[0]);
    hasher.update(name.as_bytes());
    hasher.update(&[0]);
    hasher.update(&size.to_le_bytes());
    hasher.update(&modified.to_le_bytes());
    hex::encode(&hasher.finalize().as_bytes()[..16])
}
