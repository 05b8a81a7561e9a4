//! Rendering stored output for people: chunks in capture order, with a marker wherever
//! the output cap dropped bytes.

use crate::event::Stream;

/// Renders chunks (in capture order) as bytes. A gap in a stream's offsets becomes a
/// line `[deputy: N bytes omitted]`.
pub fn render<'a>(chunks: impl IntoIterator<Item = (Stream, u64, &'a [u8])>) -> Vec<u8> {
    render_from(chunks, 0)
}

/// Like [`render`] for output that starts at byte `start` of each stream (a range).
pub fn render_from<'a>(
    chunks: impl IntoIterator<Item = (Stream, u64, &'a [u8])>,
    start: u64,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut next = [start; 2];
    for (stream, offset, data) in chunks {
        let i = match stream {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        };
        if offset > next[i] {
            if !out.is_empty() && !out.ends_with(b"\n") {
                out.push(b'\n');
            }
            out.extend_from_slice(omitted_marker(offset - next[i]).as_bytes());
        }
        out.extend_from_slice(data);
        next[i] = offset + data.len() as u64;
    }
    out
}

/// The last `n` lines of `text` (a trailing newline does not start another line).
pub fn tail_lines(text: &str, n: usize) -> String {
    if n == 0 {
        return String::new();
    }
    let trimmed = text.strip_suffix('\n').unwrap_or(text);
    let start = trimmed
        .rmatch_indices('\n')
        .nth(n - 1)
        .map_or(0, |(i, _)| i + 1);
    text[start..].to_string()
}

pub fn omitted_marker(n: u64) -> String {
    format!("[deputy: {n} bytes omitted]\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails() {
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(tail_lines("a\nb\nc", 2), "b\nc");
        assert_eq!(tail_lines("a\n", 5), "a\n");
        assert_eq!(tail_lines("a\n", 0), "");
    }

    #[test]
    fn marks_gaps() {
        let out = render([
            (Stream::Stdout, 0, &b"head"[..]),
            (Stream::Stdout, 10, &b"tail\n"[..]),
        ]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "head\n[deputy: 6 bytes omitted]\ntail\n"
        );
    }
}
