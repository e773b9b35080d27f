/// Turns a byte offset from a TOML span into a 1-based `(line, column)`.
///
/// Columns count characters, not bytes, because that is what editors show: a non-ASCII prefix
/// earlier on the line must not push the caret off the value it is about. An offset past the
/// end or inside a character is moved back to the nearest character boundary rather than
/// trusted, since it comes from another crate.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let line = before.bytes().filter(|&byte| byte == b'\n').count() + 1;
    let column = before.get(line_start..).unwrap_or("").chars().count() + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_character_columns() {
        let text = "a = 1\r\nnaïve = \"日本\"\n\nz";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 4), (1, 5));
        assert_eq!(line_column(text, 7), (2, 1));
        let value = text.find('"').expect("a quote");
        assert_eq!(line_column(text, value), (2, 9));
        let z = text.find('z').expect("a z");
        assert_eq!(line_column(text, z), (4, 1));
    }

    #[test]
    fn odd_offsets_are_clamped() {
        let text = "é\nx";
        assert_eq!(line_column(text, 1), (1, 1));
        assert_eq!(line_column(text, 99), (2, 2));
        assert_eq!(line_column("", 3), (1, 1));
    }
}
