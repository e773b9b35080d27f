//! Joining libdeflate's streams into one.
//!
//! libdeflate compresses a whole buffer into a complete DEFLATE stream: its last block carries
//! the "final block" bit (BFINAL), and the stream ends on a byte boundary padded with zero
//! bits. A stream that other blocks will follow must instead end the way zlib's sync flush
//! ends one: no final bit, then an empty stored block that brings the bit stream to a byte
//! boundary. libdeflate has no option for that, and the final bit sits in the last block's
//! header, somewhere inside the stream; [`continue_after`] finds it by walking the stream's
//! blocks with miniz_oxide's inflater, which can stop at every block boundary and say where
//! it is, to the bit.

use std::io;

use miniz_oxide::inflate::core::inflate_flags::TINFL_FLAG_STOP_ON_BLOCK_BOUNDARY;
use miniz_oxide::inflate::core::{decompress, DecompressorOxide};
use miniz_oxide::inflate::TINFLStatus;

/// The inflater's window: the walk decodes into this ring and never looks at the bytes.
pub(super) const WINDOW_SIZE: usize = 32 * 1024;

/// An empty stored block's length and its ones' complement: what follows its 3 header bits
/// once they are padded to a byte boundary.
const EMPTY_STORED_LENGTHS: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];

/// Turns the complete stream `stream` into one that more blocks can follow: clears the final
/// bit of its last block and ends it with an empty stored block, as a sync flush does.
///
/// `window` is scratch space of [`WINDOW_SIZE`] bytes, kept between calls to save an
/// allocation per block.
pub(super) fn continue_after(stream: &mut Vec<u8>, window: &mut [u8]) -> io::Result<()> {
    let mut walker = DecompressorOxide::new();
    let mut consumed = 0;
    let mut written = 0;
    // The first block's header starts at bit 0.
    let mut cleared_final = clear_final_bit_at(stream, 0, 0);
    loop {
        let (status, read, wrote) = decompress(
            &mut walker,
            stream.get(consumed..).unwrap_or_default(),
            window,
            written,
            TINFL_FLAG_STOP_ON_BLOCK_BOUNDARY,
        );
        consumed += read;
        written = (written + wrote) % window.len();
        match status {
            TINFLStatus::HasMoreOutput => {}
            TINFLStatus::BlockBoundary => {
                let Some(mut boundary) = walker.block_boundary_state() else {
                    return Err(broken(
                        "the walk stopped between blocks without saying where",
                    ));
                };
                // The bits of the last byte read that the inflater has not used yet: the next
                // block's header starts at the lowest of them.
                let spare_bits = boundary.num_bits;
                if cleared_final {
                    return end_with_empty_stored_block(stream, consumed, spare_bits);
                }
                cleared_final = clear_final_bit_at(stream, consumed, spare_bits);
                if cleared_final && spare_bits > 0 {
                    // The inflater holds those bits already: clear the bit in its copy too.
                    boundary.bit_buf &= !1;
                    walker = DecompressorOxide::from_block_boundary_state(&boundary);
                }
            }
            TINFLStatus::Done => {
                return Err(broken("the stream ended without a block marked final"));
            }
            other => return Err(broken(&format!("the stream did not decode ({other:?})"))),
        }
    }
}

/// Clears the final bit of the block header that starts `spare_bits` before the end of
/// `stream[..consumed]`; returns whether it was set.
fn clear_final_bit_at(stream: &mut [u8], consumed: usize, spare_bits: u8) -> bool {
    let (byte, bit) = if spare_bits == 0 {
        (consumed, 0)
    } else {
        (consumed.wrapping_sub(1), 8 - spare_bits)
    };
    let Some(byte) = stream.get_mut(byte) else {
        return false;
    };
    let set = *byte >> bit & 1 == 1;
    *byte &= !(1 << bit);
    set
}

/// Cuts `stream` after the last block, which ends `spare_bits` before the end of
/// `stream[..consumed]`, and appends an empty, non-final stored block.
fn end_with_empty_stored_block(
    stream: &mut Vec<u8>,
    consumed: usize,
    spare_bits: u8,
) -> io::Result<()> {
    if consumed != stream.len() {
        return Err(broken("bytes follow the stream's last block"));
    }
    if let Some(last) = stream.last_mut() {
        // Zero the padding: the stored block's header (BFINAL 0, BTYPE 00) is zero bits.
        *last &= 0xFF >> spare_bits;
    }
    // The 3-bit header goes into the padding when it fits, else into a byte of its own.
    if spare_bits < 3 {
        stream.push(0);
    }
    stream.extend_from_slice(&EMPTY_STORED_LENGTHS);
    Ok(())
}

fn broken(what: &str) -> io::Error {
    io::Error::other(format!("joining libdeflate's blocks: {what}"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::io::Read;

    use libdeflater::{CompressionLvl, Compressor};

    use super::*;

    fn libdeflate(input: &[u8], level: i32) -> Vec<u8> {
        let level = CompressionLvl::new(level).expect("a libdeflate level");
        let mut compressor = Compressor::new(level);
        let mut stream = vec![0; compressor.deflate_compress_bound(input.len())];
        let size = compressor
            .deflate_compress(input, &mut stream)
            .expect("fits its bound");
        stream.truncate(size);
        stream
    }

    /// Text and pseudo-random runs, so libdeflate ends blocks where the data changes.
    fn mixed(seed: u64, size: usize) -> Vec<u8> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut input = Vec::with_capacity(size);
        while input.len() < size {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let run = 6_000 + (state % 40_000) as usize;
            if state % 3 == 0 {
                input.extend((0..run).map(|i| (state >> (i % 56)) as u8 ^ i as u8));
            } else {
                let line = format!("{{\"n\":{},\"level\":\"info\"}}\n", state % 1000);
                input.extend(line.bytes().cycle().take(run));
            }
        }
        input.truncate(size);
        input
    }

    #[test]
    fn a_joined_stream_is_followed_by_the_next_at_every_bit_offset() {
        let mut window = vec![0; WINDOW_SIZE];
        let mut final_bit_offsets = BTreeSet::new();
        let mut final_blocks_mid_stream = 0;
        for seed in 0..64 {
            let first = mixed(seed, 20_000 + seed as usize * 3_001);
            let second = mixed(seed + 1000, 9_000);
            let original = libdeflate(&first, 1 + (seed % 12) as i32);
            let mut joined = original.clone();
            continue_after(&mut joined, &mut window).expect("a libdeflate stream joins");
            // The cleared final bit is the first bit that differs from the original.
            let cleared = original
                .iter()
                .zip(&joined)
                .enumerate()
                .find(|(_, (a, b))| a != b)
                .map(|(at, (a, b))| at * 8 + (a ^ b).trailing_zeros() as usize)
                .expect("a bit was cleared");
            final_bit_offsets.insert(cleared % 8);
            if cleared > 0 {
                final_blocks_mid_stream += 1;
            }
            joined.extend_from_slice(&libdeflate(&second, 6));
            let mut decoded = Vec::new();
            flate2::read::DeflateDecoder::new(joined.as_slice())
                .read_to_end(&mut decoded)
                .expect("the joined stream inflates");
            assert_eq!(decoded, [first, second].concat(), "seed {seed}");
        }
        assert!(
            final_blocks_mid_stream > 32,
            "{final_blocks_mid_stream} of 64"
        );
        assert_eq!(final_bit_offsets.len(), 8, "{final_bit_offsets:?}");
    }

    #[test]
    fn a_stream_with_no_final_block_is_refused() {
        let mut stream = libdeflate(b"some text, some text, some text", 6);
        let mut window = vec![0; WINDOW_SIZE];
        continue_after(&mut stream, &mut window).expect("joins once");
        // Joined already: no block is final any more, and the walk says so.
        let error = continue_after(&mut stream, &mut window).expect_err("nothing to clear");
        assert!(
            error.to_string().contains("joining libdeflate's blocks"),
            "{error}"
        );
    }
}
