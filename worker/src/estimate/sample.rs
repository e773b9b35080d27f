//! Reading a little of an object and measuring what the rule's codec makes of it.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use s3_compressor_config::Rule;
use s3_compressor_formats::{already_compressed, Compressor, Entry};

use super::model::{window_variance, Measured};
use crate::pipeline::{base_name, sample_compressed, SAMPLE_BYTES};

/// Objects up to this size are sampled whole; larger ones in [`WINDOWS`] windows.
pub(crate) const WHOLE_MAX: u64 = 256 * 1024;
/// Windows read of an object too large to read whole: the first (which is also the policy's
/// sample), the last, and evenly between. A stratum's first sample, which every stratum gets
/// before any gets a second, reads [`FIRST_WINDOWS`] (the first and the last), so that a small
/// budget covers more strata.
pub(crate) const WINDOWS: u64 = 4;
pub(crate) const FIRST_WINDOWS: u64 = 2;
/// Each window's size: the policy's sample, and 8 deflate blocks' worth of history.
pub(crate) const WINDOW_BYTES: u64 = SAMPLE_BYTES as u64;

/// The byte ranges (start, length) a sample of a `size`-byte object reads: all of it, or
/// `windows` (at least 2) spread from its start to its end.
pub(crate) fn ranges(size: u64, windows: u64) -> Vec<(u64, u64)> {
    if size <= WHOLE_MAX {
        return vec![(0, size)];
    }
    let windows = windows.max(2);
    let last = size - WINDOW_BYTES;
    (0..windows)
        .map(|index| (last * index / (windows - 1), WINDOW_BYTES))
        .collect()
}

/// What an object's first bytes are: a compressed kind `content.rs` knows, else `text` (UTF-8
/// without control characters other than whitespace) or `binary`.
pub(crate) fn kind_of(head: &[u8]) -> &'static str {
    if head.is_empty() {
        return "empty";
    }
    if let Some(kind) = already_compressed(head) {
        return kind;
    }
    // A head cut in the middle of a character is still text.
    let utf8 = match std::str::from_utf8(head) {
        Ok(_) => true,
        Err(error) => error.error_len().is_none(),
    };
    let controls = head
        .iter()
        .any(|&byte| byte < 0x20 && !matches!(byte, b'\t' | b'\n' | b'\r' | 0x0c | 0x1b));
    if utf8 && !controls {
        "text"
    } else {
        "binary"
    }
}

/// What a sampled object's measurement gave: its projected output and codec time, and
/// whether the rule's policy keeps it (its first bytes do not shrink).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Sampled {
    pub measured: Measured,
    pub cpu_seconds: f64,
    pub kept: bool,
}

/// Measures an object of `size` bytes from `windows`, the byte ranges [`ranges`] names, read:
/// the rule's policy first, as the worker judges it, then each window through the rule's
/// codec, timed with the decode that the worker's proof adds. The format's fixed overhead (an
/// archive's headers, measured on an empty input) is counted once for the object, not once
/// per window.
pub(crate) async fn measure(
    rule: &Rule,
    compressor: &Arc<Compressor>,
    key: &str,
    size: u64,
    windows: Vec<Bytes>,
) -> Sampled {
    let started = Instant::now();
    if rule.judges_content() {
        let first = windows.first().map_or(&[][..], |window| &window[..]);
        let sample = &first[..first.len().min(SAMPLE_BYTES)];
        let kept_as_compressed = rule.spares_content(already_compressed(sample)).is_some();
        let sampled = sample.len() as u64;
        let kept = kept_as_compressed
            || match sample_compressed(compressor, sample.to_vec()).await {
                Some(compressed) => rule.spares_sample(sampled, compressed).is_some(),
                None => false,
            };
        if kept {
            return Sampled {
                measured: Measured {
                    size,
                    out: size as f64,
                    within_variance: 0.0,
                },
                cpu_seconds: started.elapsed().as_secs_f64(),
                kept: true,
            };
        }
    }
    let compressor = Arc::clone(compressor);
    let name = base_name(key).to_owned();
    let measured = tokio::task::spawn_blocking(move || codec(&compressor, &name, size, &windows))
        .await
        .unwrap_or(None);
    match measured {
        Some((measured, cpu_seconds)) => Sampled {
            measured,
            cpu_seconds,
            kept: false,
        },
        // A codec that fails on the sample fails on the object too: the worker would keep
        // it where it is, failed.
        None => Sampled {
            measured: Measured {
                size,
                out: size as f64,
                within_variance: 0.0,
            },
            cpu_seconds: 0.0,
            kept: true,
        },
    }
}

/// Output bytes and codec seconds projected for the whole object from its windows.
fn codec(
    compressor: &Compressor,
    name: &str,
    size: u64,
    windows: &[Bytes],
) -> Option<(Measured, f64)> {
    let whole = windows.len() == 1 && windows[0].len() as u64 == size;
    let overhead = if whole {
        0
    } else {
        compressed_len(compressor, name, &[]).map(|(out, _)| out)?
    };
    let mut measured = Vec::with_capacity(windows.len());
    let mut seconds = 0.0;
    for window in windows {
        let (out, took) = compressed_len(compressor, name, window)?;
        seconds += took;
        measured.push((window.len() as u64, out.saturating_sub(overhead)));
    }
    let read: u64 = measured.iter().map(|(read, _)| read).sum();
    let out: u64 = measured.iter().map(|(_, out)| out).sum();
    let scale = if read == 0 {
        1.0
    } else {
        size as f64 / read as f64
    };
    Some((
        Measured {
            size,
            out: out as f64 * scale + overhead as f64,
            within_variance: if whole {
                0.0
            } else {
                window_variance(size, &measured)
            },
        },
        seconds * scale,
    ))
}

/// The length `bytes` compress to as the entry `name`, and the seconds that and decoding it
/// back took.
fn compressed_len(compressor: &Compressor, name: &str, bytes: &[u8]) -> Option<(u64, f64)> {
    let started = Instant::now();
    let entry = Entry::new(name).with_size(bytes.len() as u64);
    let mut output = Vec::with_capacity(bytes.len() / 2 + 1024);
    compressor
        .compress(&mut &bytes[..], &mut output, &entry)
        .ok()?;
    compressor
        .decompress(&mut output.as_slice(), &mut std::io::sink())
        .ok()?;
    Some((output.len() as u64, started.elapsed().as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_objects_are_read_whole_and_large_ones_in_spread_windows() {
        assert_eq!(ranges(0, WINDOWS), [(0, 0)]);
        assert_eq!(ranges(WHOLE_MAX, WINDOWS), [(0, WHOLE_MAX)]);
        let size = 10 * 1024 * 1024;
        assert_eq!(
            ranges(size, FIRST_WINDOWS),
            [(0, WINDOW_BYTES), (size - WINDOW_BYTES, WINDOW_BYTES)]
        );
        let windows = ranges(size, WINDOWS);
        assert_eq!(windows.len(), WINDOWS as usize);
        assert_eq!(windows[0], (0, WINDOW_BYTES));
        assert_eq!(windows[3], (size - WINDOW_BYTES, WINDOW_BYTES));
        assert!(windows[1].0 > WINDOW_BYTES && windows[2].0 + WINDOW_BYTES < windows[3].0);
    }

    #[test]
    fn content_kinds_are_told_from_the_first_bytes() {
        assert_eq!(kind_of(b"\x1f\x8b\x08\x00"), "gzip");
        assert_eq!(kind_of(b"date,amount\n2024-01-01,3\n"), "text");
        assert_eq!(kind_of("caf\u{e9}".as_bytes()), "text");
        assert_eq!(kind_of(&"caf\u{e9}".as_bytes()[..4]), "text");
        assert_eq!(kind_of(b"\x7fELF\x02\x01\x01\x00"), "binary");
        assert_eq!(kind_of(b""), "empty");
    }
}
