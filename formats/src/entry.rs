use std::time::SystemTime;

/// The one file inside an archive, or the name recorded in a stream header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    name: String,
    size: Option<u64>,
    modified: Option<SystemTime>,
}

impl Entry {
    /// An entry named after `name`, made safe to extract with [`safe_entry_name`].
    pub fn new(name: &str) -> Self {
        Self {
            name: safe_entry_name(name),
            size: None,
            modified: None,
        }
    }

    /// The input's size when known in advance: tar must write it up front, zstd records it in
    /// the frame and zip can then skip zip64 records for small entries.
    pub fn with_size(mut self, size: u64) -> Self {
        self.size = Some(size);
        self
    }

    pub fn with_modified(mut self, modified: SystemTime) -> Self {
        self.modified = Some(modified);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn size(&self) -> Option<u64> {
        self.size
    }

    pub fn modified(&self) -> Option<SystemTime> {
        self.modified
    }

    /// Seconds since the Unix epoch, 0 when unknown or before 1970.
    pub(crate) fn modified_unix_seconds(&self) -> u64 {
        self.modified
            .and_then(|time| time.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |elapsed| elapsed.as_secs())
    }
}

/// The name given to an entry whose name has nothing safe left in it.
const FALLBACK_NAME: &str = "file";

/// Turns an arbitrary object name into one file name that extracts inside the target folder on
/// every common unpacker, with no folders of its own.
///
/// Object keys may hold anything, and tools like `unzip` and `tar` follow what an archive says:
/// `..` components and absolute paths escape the target, backslashes and drive letters do the
/// same on Windows, and control characters can rewrite a terminal. So: `/` and `\` split the
/// name into parts, empty, `.` and `..` parts and drive letters are dropped, the parts left are
/// joined with `_` (one file, so nothing an unpacker has to create or check a folder for),
/// control characters become `_`, a name left empty becomes `file`, and a name longer than the
/// 255 bytes Linux, macOS and Windows allow a file name is cut to fit, keeping its extension
/// (an S3 key's last part may be 1,000 bytes, and no unpacker could create that file).
pub fn safe_entry_name(name: &str) -> String {
    let mut safe = Vec::new();
    for component in name.split(['/', '\\']) {
        let component = strip_drive_letter(component);
        if component.is_empty() || component == "." || component == ".." {
            continue;
        }
        let cleaned: String = component
            .chars()
            .map(|c| if c.is_control() { '_' } else { c })
            .collect();
        safe.push(cleaned);
    }
    if safe.is_empty() {
        FALLBACK_NAME.to_owned()
    } else {
        shortened(safe.join("_"))
    }
}

/// The longest file name (in bytes) common file systems take.
const MAX_NAME_BYTES: usize = 255;

/// `name` cut to [`MAX_NAME_BYTES`] at a character boundary, its extension (up to 16 bytes)
/// kept so the file still opens with the right program.
fn shortened(name: String) -> String {
    if name.len() <= MAX_NAME_BYTES {
        return name;
    }
    let extension = match name.rfind('.') {
        Some(dot) if dot > 0 && name.len() - dot <= 16 => &name[dot..],
        _ => "",
    };
    let mut keep = MAX_NAME_BYTES - extension.len();
    while !name.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{extension}", &name[..keep])
}

/// Drops every leading `X:`, so `C:D:x` cannot turn into a drive letter on a second pass.
fn strip_drive_letter(mut component: &str) -> &str {
    loop {
        let bytes = component.as_bytes();
        match bytes {
            [letter, b':', ..] if letter.is_ascii_alphabetic() => component = &component[2..],
            _ => return component,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_names_are_kept() {
        for name in [
            "report.csv",
            "a b+c%20.txt",
            "naïve-日本.log",
            ".env",
            "x..y",
        ] {
            assert_eq!(safe_entry_name(name), name);
        }
    }

    #[test]
    fn escapes_are_removed() {
        assert_eq!(safe_entry_name("../../etc/passwd"), "etc_passwd");
        assert_eq!(safe_entry_name("/etc/passwd"), "etc_passwd");
        assert_eq!(safe_entry_name("C:\\Windows\\win.ini"), "Windows_win.ini");
        assert_eq!(safe_entry_name("..\\..\\evil.exe"), "evil.exe");
        assert_eq!(safe_entry_name("a/./b//c"), "a_b_c");
        assert_eq!(safe_entry_name("bell\u{7}\r\n.txt"), "bell___.txt");
        assert_eq!(safe_entry_name(".."), FALLBACK_NAME);
        let long = format!("{}.csv", "日".repeat(400));
        let cut = safe_entry_name(&long);
        assert!(
            cut.len() <= MAX_NAME_BYTES && cut.ends_with("日.csv"),
            "{cut}"
        );
        assert_eq!(safe_entry_name(""), FALLBACK_NAME);
        assert_eq!(safe_entry_name("c:"), FALLBACK_NAME);
    }

    proptest! {
        #[test]
        fn any_name_is_safe(name in any::<String>()) {
            let safe = safe_entry_name(&name);
            prop_assert!(!safe.is_empty());
            prop_assert!(!safe.contains(['/', '\\']));
            prop_assert!(safe.len() <= MAX_NAME_BYTES);
            prop_assert!(!safe.chars().any(char::is_control));
            prop_assert!(safe != "." && safe != "..");
            prop_assert_eq!(strip_drive_letter(&safe), safe.as_str());
        }

        #[test]
        fn sanitising_is_idempotent(name in any::<String>()) {
            let once = safe_entry_name(&name);
            prop_assert_eq!(safe_entry_name(&once), once.clone());
        }

        #[test]
        fn ordinary_names_survive(name in "[A-Za-z0-9_-][A-Za-z0-9 ._+%-]{0,40}") {
            prop_assert_eq!(safe_entry_name(&name), name);
        }
    }
}
