//! Output is stored as bytes; these helpers keep chunk boundaries on UTF-8 character
//! boundaries so that decoding a chunk for display never splits a character.

/// How many leading bytes of `buf` can be cut off without splitting a UTF-8 sequence at
/// the end. Bytes that are not UTF-8 at all are not held back: output need not be text.
pub fn utf8_safe_len(buf: &[u8]) -> usize {
    // A UTF-8 sequence is at most 4 bytes, so only the last 3 bytes can start an
    // incomplete one.
    let start = buf.len().saturating_sub(3);
    for i in (start..buf.len()).rev() {
        let b = buf[i];
        let need = if b & 0b1000_0000 == 0 {
            1
        } else if b & 0b1110_0000 == 0b1100_0000 {
            2
        } else if b & 0b1111_0000 == 0b1110_0000 {
            3
        } else if b & 0b1111_1000 == 0b1111_0000 {
            4
        } else {
            // A continuation byte: keep looking for its lead byte.
            continue;
        };
        return if buf.len() - i < need { i } else { buf.len() };
    }
    buf.len()
}

/// `s` cut to at most `max` bytes on a character boundary, with `…` when cut.
pub fn cut_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    format!("{}…", &s[..s.floor_char_boundary(max)])
}

/// `s` cut to at most `max` characters, with `…` when cut.
pub fn cut_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_string(),
        Some((end, _)) => format!("{}…", &s[..end]),
    }
}

/// The first line of `s`, cut to at most `max` characters (with `…` when cut).
pub fn first_line(s: &str, max: usize) -> String {
    let line = s.trim().lines().next().unwrap_or("");
    let mut out: String = line.chars().take(max).collect();
    if out.len() < line.len() || s.trim().lines().nth(1).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_incomplete_sequences_only() {
        let s = "aé€😀".as_bytes();
        assert_eq!(utf8_safe_len(s), s.len());
        for cut in 0..s.len() {
            let n = utf8_safe_len(&s[..cut]);
            assert!(std::str::from_utf8(&s[..n]).is_ok(), "cut {cut} -> {n}");
            assert!(cut - n < 4);
        }
        // Invalid bytes are passed through, not held back forever.
        assert_eq!(utf8_safe_len(&[0xff, 0xfe, 0x41]), 3);
    }

    #[test]
    fn cuts_keep_whole_characters() {
        assert_eq!(cut_bytes("ééé", 3), "é…");
        assert_eq!(cut_bytes("abc", 3), "abc");
        assert_eq!(cut_chars("ééé", 2), "éé…");
        assert_eq!(cut_chars("éé", 2), "éé");
    }
}
