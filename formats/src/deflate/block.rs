//! One block of input, compressed on its own: by libdeflate, or kept as stored blocks when a
//! sample shows it will not shrink and the block holds no run of zeros.

use std::io;

use libdeflater::{CompressionLvl, Compressor};

use super::join::{continue_after, WINDOW_SIZE};

/// Bytes of each block a quick compression tries before the block is compressed in full.
const SAMPLE_SIZE: usize = 8 * 1024;

/// libdeflate's fastest level that compresses (its level 0 only stores).
const SAMPLE_LEVEL: i32 = 1;

/// A sample that libdeflate's fastest level cannot shrink below this share of its size
/// (in thousandths) marks its block as incompressible: JPEGs, videos, archives and encrypted
/// data, where full deflate effort buys a fraction of a percent.
const INCOMPRESSIBLE_PER_MILLE: usize = 980;

/// A block whose sample does not shrink is still compressed when it holds this many zero bytes
/// in a row at an aligned offset (so any run of twice as many): tar headers and padding, file
/// system images, the tables of executables. Compressed content and random bytes practically
/// never do (a run of 32 zeros in random bytes has odds of 2^-256), so storing them stays a copy
/// after this scan. A tar of `.gz` files stored whole was 3.9% larger than `zip -6`'s output;
/// compressed, it is smaller.
const ZERO_RUN: usize = 32;

/// A stored block holds at most this many bytes (its length field is 16 bits).
const STORED_BLOCK_MAX: usize = 0xFFFF;

/// One compressed block, and how it was written.
#[derive(Debug)]
pub(crate) struct Block {
    pub bytes: Vec<u8>,
    /// Written as stored blocks: the sample said compressing would not pay.
    pub stored: bool,
}

/// What a compressing thread keeps between blocks.
pub(crate) struct BlockCompressor {
    compressor: Compressor,
    /// libdeflate's output for one block, sized for the worst case once: a buffer of that
    /// size per block would be zeroed and made resident for every block. Allocated zeroed
    /// rather than filled with zeros, so that its pages are the kernel's zero pages until
    /// libdeflate writes them: a 4 MiB block of text touches the few hundred KiB it
    /// compresses to.
    output: Vec<u8>,
    /// The sample's compressor and output, and the join's window: made on first use, since
    /// an object of one small block (most of them) needs neither.
    sampler: Option<(Compressor, Vec<u8>)>,
    window: Vec<u8>,
}

impl BlockCompressor {
    pub(crate) fn new(level: u32) -> io::Result<Self> {
        let level = i32::try_from(level)
            .ok()
            .and_then(|level| CompressionLvl::new(level).ok())
            .ok_or_else(|| io::Error::other(format!("libdeflate has no level {level}")))?;
        Ok(Self {
            compressor: Compressor::new(level),
            output: Vec::new(),
            sampler: None,
            window: Vec::new(),
        })
    }

    /// Compresses `input` as DEFLATE blocks that end on a byte boundary. Unless `last`, the
    /// blocks are not final, so the next block's output can follow them in the same stream.
    pub(crate) fn compress(&mut self, input: &[u8], last: bool) -> io::Result<Block> {
        if self.is_incompressible(input) && !has_zero_run(input) {
            return Ok(Block {
                bytes: stored_blocks(input, last),
                stored: true,
            });
        }
        let bound = self.compressor.deflate_compress_bound(input.len());
        if self.output.len() < bound {
            self.output = vec![0; bound];
        }
        let size = self
            .compressor
            .deflate_compress(input, &mut self.output)
            .map_err(|error| io::Error::other(format!("libdeflate: {error:?}")))?;
        // Room for the marker that `continue_after` appends.
        let mut bytes = Vec::with_capacity(size + 5);
        bytes.extend_from_slice(&self.output[..size]);
        if !last {
            self.window.resize(WINDOW_SIZE, 0);
            continue_after(&mut bytes, &mut self.window)?;
        }
        Ok(Block {
            bytes,
            stored: false,
        })
    }

    /// Compresses a sample from the middle of `input` at the fastest level: the middle, since
    /// a file's first bytes are often a header that compresses when the rest does not.
    fn is_incompressible(&mut self, input: &[u8]) -> bool {
        // A smaller input is compressed whole: its compressed size says more than a sample's
        // (which headers dominate), and libdeflate stores what does not shrink anyway.
        if input.len() < 2 * SAMPLE_SIZE {
            return false;
        }
        let start = input.len() / 2 - SAMPLE_SIZE / 2;
        let sample = &input[start..start + SAMPLE_SIZE];
        let (sampler, sample_output) = self.sampler.get_or_insert_with(|| {
            let mut sampler =
                Compressor::new(CompressionLvl::new(SAMPLE_LEVEL).unwrap_or_default());
            let output = vec![0; sampler.deflate_compress_bound(SAMPLE_SIZE)];
            (sampler, output)
        });
        // A sample that does not fit the buffer did not shrink at all.
        let compressed = sampler
            .deflate_compress(sample, sample_output)
            .unwrap_or(usize::MAX);
        compressed.saturating_mul(1000) >= sample.len() * INCOMPRESSIBLE_PER_MILLE
    }
}

/// The OR of a whole chunk rather than a test per byte: the compiler makes it a few vector
/// instructions, so the scan of a random block runs at memory speed.
fn has_zero_run(input: &[u8]) -> bool {
    input
        .chunks_exact(ZERO_RUN)
        .any(|chunk| chunk.iter().fold(0, |any, &byte| any | byte) == 0)
}

/// `input` as stored blocks, byte-aligned from the start: each is a header byte (BFINAL,
/// BTYPE 00, padding), LEN and its complement NLEN, then the bytes as they are.
fn stored_blocks(input: &[u8], last: bool) -> Vec<u8> {
    let pieces = input.len().div_ceil(STORED_BLOCK_MAX).max(1);
    let mut bytes = Vec::with_capacity(input.len() + 5 * pieces);
    let mut chunks = input.chunks(STORED_BLOCK_MAX).peekable();
    if chunks.peek().is_none() {
        write_stored_block(&mut bytes, &[], last);
    }
    while let Some(chunk) = chunks.next() {
        let final_block = last && chunks.peek().is_none();
        write_stored_block(&mut bytes, chunk, final_block);
    }
    bytes
}

fn write_stored_block(bytes: &mut Vec<u8>, chunk: &[u8], final_block: bool) {
    // `chunks(STORED_BLOCK_MAX)` never yields more than 16 bits of length.
    let len = u16::try_from(chunk.len()).unwrap_or(u16::MAX);
    bytes.push(u8::from(final_block));
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend_from_slice(&(!len).to_le_bytes());
    bytes.extend_from_slice(chunk);
}
