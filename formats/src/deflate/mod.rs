//! DEFLATE on every core, the way pigz does it: the input is cut into blocks, each block is
//! compressed on its own thread and ends on a byte boundary without the final-block bit, so
//! the compressed blocks concatenate into one ordinary DEFLATE stream that any inflater reads.
//!
//! Each block is compressed by libdeflate, which compresses about twice as fast per core as
//! zlib at a smaller output (bench/README.md compares the engines). libdeflate takes whole
//! buffers and no dictionary, so a block starts with an empty window; at 4 MiB per block that
//! costs about 0.3% of the output against one libdeflate stream (HTML pages, which repeat
//! their boilerplate from file to file, lose most: ratio 7.53 against 7.62 at level 7). It
//! also always ends a buffer with a final block, which [`join`] turns into a block others can
//! follow. A block that a quick sample shows will not shrink (random bytes, JPEGs, archives)
//! is written as stored blocks instead, at the cost of a copy.
//!
//! Written here rather than taken from `gzp`: zip needs the raw stream ended by a final block,
//! and the worker hands over a borrowed, non-`'static` writer (the upload's), which
//! `gzp`'s writer-owning threads cannot take.

mod block;
mod join;

use std::collections::VecDeque;
use std::io::{self, Write};
use std::num::NonZeroUsize;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use block::{Block, BlockCompressor};

/// Input per block. Large enough that starting each block with an empty window costs little:
/// at level 7 on real files (bench/README.md, "Real data"), AWS's JSON service models reach
/// ratio 7.86 at 1 MiB, 7.89 at 2 MiB and 7.90 at 4 MiB against `zip -6`'s 7.898, HTML 7.40,
/// 7.49 and 7.53 against 7.32, at the same speed. Memory holds one block per thread and the
/// one being filled, each with its output, whatever the object's size.
const BLOCK_SIZE: usize = 4 * 1024 * 1024;

/// Blocks in flight per thread, besides the one being filled: a thread compresses a block in
/// about the time the next one is read, and a second block each would cost a block of memory
/// per thread.
const BLOCKS_IN_FLIGHT_PER_THREAD: usize = 1;

/// A libdeflate compressor's own state: hash chains up to level 9; from 10 its near-optimal
/// parser's match cache (1.5 M matches of 4 bytes) and optimum nodes, about 9 MiB.
fn engine_memory(level: u32) -> u64 {
    if level >= 10 {
        10 * MIB
    } else {
        MIB
    }
}

/// What reading the stream back takes: the inflater's window and its output buffer.
const INFLATE_MEMORY: u64 = 256 * 1024;

const MIB: u64 = 1024 * 1024;

/// The most [`deflate`] and the proof's inflater hold at once for an input of `size` bytes:
/// the block being filled and every block in flight, each with its output, and a compressor
/// per thread at work (an input of one block is compressed on the caller's thread).
pub(crate) fn memory(level: u32, threads: NonZeroUsize, size: Option<u64>) -> u64 {
    let block = BLOCK_SIZE as u64;
    let blocks = size.map_or(u64::MAX, |size| size.div_ceil(block).max(1));
    let held = blocks.min((threads.get() * BLOCKS_IN_FLIGHT_PER_THREAD) as u64 + 1);
    let block_bytes = size.map_or(block, |size| size.min(block));
    let engines = blocks.min(threads.get() as u64);
    // A block's output is at most its input plus stored-block headers.
    held * 2 * (block_bytes + 1024) + engines * engine_memory(level) + INFLATE_MEMORY
}

/// What a zip data descriptor or a gzip trailer needs to know about the uncompressed input,
/// and how much of it was stored rather than compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deflated {
    pub crc32: u32,
    pub size: u64,
    /// Input bytes written as stored blocks because a sample showed they would not shrink.
    pub stored: u64,
}

/// Compresses everything `produce` writes into one raw DEFLATE stream on `dst`, on `threads`
/// threads at `level`, and returns `produce`'s result with the CRC-32 and size of the input.
///
/// Memory stays at about `2 × threads` blocks in and out, whatever the input size.
pub(crate) fn deflate<T>(
    dst: &mut dyn Write,
    level: u32,
    threads: NonZeroUsize,
    produce: impl FnOnce(&mut dyn Write) -> io::Result<T>,
) -> io::Result<(T, Deflated)> {
    deflate_in_blocks(dst, level, threads, BLOCK_SIZE, produce)
}

/// [`deflate`] with blocks of `block_size` bytes of input (tests join many small ones).
fn deflate_in_blocks<T>(
    dst: &mut dyn Write,
    level: u32,
    threads: NonZeroUsize,
    block_size: usize,
    produce: impl FnOnce(&mut dyn Write) -> io::Result<T>,
) -> io::Result<(T, Deflated)> {
    thread::scope(|scope| {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let start_threads = || {
            for _ in 0..threads.get() {
                let queue = Arc::clone(&queue);
                scope.spawn(move || compress_blocks(&queue, level));
            }
        };
        // Dropping the writer (on success or error) closes the queue, which ends the threads
        // before the scope joins them.
        let mut writer = BlockWriter::new(
            dst,
            level,
            jobs,
            &start_threads,
            threads.get() * BLOCKS_IN_FLIGHT_PER_THREAD,
            block_size,
        );
        let produced = produce(&mut writer)?;
        let deflated = writer.finish()?;
        Ok((produced, deflated))
    })
}

/// One block for a compressing thread.
struct Job {
    input: Vec<u8>,
    last: bool,
    done: SyncSender<io::Result<Done>>,
}

/// A compressed block, and its input buffer back for the next block: the buffers are reused
/// rather than freed on one thread and allocated anew on another.
struct Done {
    block: Block,
    input: Vec<u8>,
}

/// A compressing thread: takes blocks until the queue closes.
fn compress_blocks(queue: &Mutex<Receiver<Job>>, level: u32) {
    let mut compressor = BlockCompressor::new(level);
    loop {
        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = next else { return };
        let result = match &mut compressor {
            Ok(compressor) => compressor.compress(&job.input, job.last).map(|block| Done {
                block,
                input: job.input,
            }),
            Err(error) => Err(io::Error::new(error.kind(), error.to_string())),
        };
        // The writer has gone away only if it already failed; nobody needs the block then.
        let _ = job.done.send(result);
    }
}

/// The `Write` that `produce` sees: cuts blocks, hands them out, and writes the compressed
/// blocks to `dst` in input order.
struct BlockWriter<'a> {
    dst: &'a mut dyn Write,
    level: u32,
    jobs: Sender<Job>,
    /// Taken by the first block sent off: an input of a single block (most small objects) is
    /// compressed on the caller's thread, without starting threads or handing data across.
    start_threads: Option<&'a dyn Fn()>,
    in_flight: VecDeque<Receiver<io::Result<Done>>>,
    max_in_flight: usize,
    block_size: usize,
    block: Vec<u8>,
    /// Input buffers back from the threads, for the next blocks.
    spare: Vec<Vec<u8>>,
    crc: crc32fast::Hasher,
    size: u64,
    stored: u64,
}

impl<'a> BlockWriter<'a> {
    fn new(
        dst: &'a mut dyn Write,
        level: u32,
        jobs: Sender<Job>,
        start_threads: &'a dyn Fn(),
        max_in_flight: usize,
        block_size: usize,
    ) -> Self {
        Self {
            dst,
            level,
            jobs,
            start_threads: Some(start_threads),
            in_flight: VecDeque::with_capacity(max_in_flight),
            max_in_flight,
            block_size,
            block: Vec::with_capacity(block_size),
            spare: Vec::new(),
            crc: crc32fast::Hasher::new(),
            size: 0,
            stored: 0,
        }
    }

    /// Sends the current block off; first waits for the oldest block when enough are in flight.
    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        if let Some(start_threads) = self.start_threads.take() {
            start_threads();
        }
        while self.in_flight.len() >= self.max_in_flight {
            self.write_oldest()?;
        }
        let next = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(self.block_size));
        let input = std::mem::replace(&mut self.block, next);
        let (done, compressed) = mpsc::sync_channel(1);
        self.jobs
            .send(Job { input, last, done })
            .map_err(|_| threads_gone())?;
        self.in_flight.push_back(compressed);
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(compressed) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let Done { block, mut input } = compressed.recv().map_err(|_| threads_gone())??;
        self.write_block(&block, input.len() as u64)?;
        input.clear();
        self.spare.push(input);
        Ok(())
    }

    fn write_block(&mut self, block: &Block, input_size: u64) -> io::Result<()> {
        if block.stored {
            self.stored += input_size;
        }
        self.dst.write_all(&block.bytes)
    }

    /// Ends the stream with a final block and waits for every block to be written.
    fn finish(mut self) -> io::Result<Deflated> {
        if self.start_threads.is_some() {
            let only = BlockCompressor::new(self.level)?.compress(&self.block, true)?;
            self.write_block(&only, self.block.len() as u64)?;
        } else {
            self.dispatch(true)?;
            while !self.in_flight.is_empty() {
                self.write_oldest()?;
            }
        }
        Ok(Deflated {
            crc32: self.crc.clone().finalize(),
            size: self.size,
            stored: self.stored,
        })
    }
}

impl Write for BlockWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.block.len() == self.block_size {
            self.dispatch(false)?;
        }
        let taken = buf.len().min(self.block_size - self.block.len());
        self.block.extend_from_slice(&buf[..taken]);
        self.crc.update(&buf[..taken]);
        self.size += taken as u64;
        Ok(taken)
    }

    /// Compressed output can only be written in block order, so a flush has nothing to push
    /// that would not break the stream; the data goes out at `finish`.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn threads_gone() -> io::Error {
    io::Error::other("a deflate thread stopped before finishing its block")
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    /// Blocks small enough that the tests join many of them quickly.
    const TEST_BLOCK: usize = 256 * 1024;

    fn inflate(stream: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(stream)
            .read_to_end(&mut out)
            .expect("a valid DEFLATE stream");
        out
    }

    fn deflate_at(input: &[u8], level: u32, threads: usize) -> (Vec<u8>, Deflated) {
        let mut stream = Vec::new();
        let threads = NonZeroUsize::new(threads).expect("at least one thread");
        let ((), deflated) = deflate_in_blocks(&mut stream, level, threads, TEST_BLOCK, |w| {
            w.write_all(input)
        })
        .expect("deflate succeeds");
        (stream, deflated)
    }

    fn deflate_all(input: &[u8], threads: usize) -> (Vec<u8>, Deflated) {
        deflate_at(input, 6, threads)
    }

    /// Text that repeats at distances beyond one block, so a wrong join would show up as a
    /// wrong inflate.
    fn text(size: usize) -> Vec<u8> {
        let mut text = Vec::with_capacity(size);
        let mut line = 0u64;
        while text.len() < size {
            text.extend_from_slice(
                format!(
                    "{{\"line\":{line},\"service\":\"svc-{}\",\"msg\":\"request done\"}}\n",
                    line % 7
                )
                .as_bytes(),
            );
            line += 1;
        }
        text.truncate(size);
        text
    }

    fn random(size: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..size)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn blocks_join_into_one_stream_that_inflates_to_the_input() {
        for size in [
            0,
            1,
            TEST_BLOCK - 1,
            TEST_BLOCK,
            TEST_BLOCK + 1,
            3 * TEST_BLOCK + 77,
        ] {
            for threads in [1, 2, 4] {
                let input = text(size);
                let (stream, deflated) = deflate_all(&input, threads);
                assert_eq!(inflate(&stream), input, "size {size}, {threads} threads");
                assert_eq!(deflated.size, size as u64);
                assert_eq!(deflated.crc32, crc32fast::hash(&input));
                assert_eq!(deflated.stored, 0, "text is compressed");
            }
        }
    }

    /// libdeflate splits a block where the data changes, so the final-block bit that the join
    /// must clear is in the middle of the block's stream, at every bit offset; text and random
    /// runs of varied lengths give it many.
    #[test]
    fn blocks_whose_final_bit_is_mid_stream_join_at_every_bit_offset() {
        for seed in 1..=24u64 {
            let mut input = Vec::new();
            while input.len() < 2 * TEST_BLOCK + 1000 {
                let run = 7_000 + (seed as usize * 7_919 + input.len()) % 90_000;
                if input.len() / run % 2 == 0 {
                    input.extend_from_slice(&text(run));
                } else {
                    input.extend_from_slice(&random(run / 8, seed + input.len() as u64));
                }
            }
            let (stream, _) = deflate_all(&input, 2);
            assert_eq!(inflate(&stream), input, "seed {seed}");
        }
    }

    #[test]
    fn every_level_from_1_to_12_round_trips() {
        let input = text(2 * TEST_BLOCK + 5);
        let mut sizes = Vec::new();
        for level in 1..=12 {
            let (stream, _) = deflate_at(&input, level, 2);
            assert_eq!(inflate(&stream), input, "level {level}");
            sizes.push(stream.len());
        }
        assert!(
            sizes[11] < sizes[0],
            "level 12 compresses better than level 1: {sizes:?}"
        );
    }

    #[test]
    fn an_input_of_one_block_starts_no_threads() {
        let input = text(TEST_BLOCK);
        let starts = std::cell::Cell::new(0);
        let count_starts = || starts.set(starts.get() + 1);
        // No thread serves this queue: sending a block to it fails.
        let (jobs, queue) = mpsc::channel();
        drop(queue);
        let mut stream = Vec::new();
        let mut writer = BlockWriter::new(&mut stream, 6, jobs, &count_starts, 4, TEST_BLOCK);
        writer.write_all(&input).expect("buffered");
        let deflated = writer.finish().expect("compressed in place");
        assert_eq!(starts.get(), 0);
        assert_eq!(deflated.size, input.len() as u64);
        assert_eq!(inflate(&stream), input);
    }

    #[test]
    fn blocks_on_their_own_keep_the_ratio_of_a_single_stream() {
        let input = text(3 * BLOCK_SIZE);
        let mut parallel = Vec::new();
        let two = NonZeroUsize::new(2).expect("two");
        deflate(&mut parallel, 6, two, |w| w.write_all(&input)).expect("deflate succeeds");
        let mut single = libdeflater::Compressor::new(libdeflater::CompressionLvl::default());
        let mut whole = vec![0; single.deflate_compress_bound(input.len())];
        let whole_size = single
            .deflate_compress(&input, &mut whole)
            .expect("fits its bound");
        assert!(
            parallel.len() <= whole_size + whole_size / 50,
            "parallel {} bytes vs one stream {whole_size} bytes",
            parallel.len(),
        );
    }

    #[test]
    fn incompressible_input_is_stored_at_the_cost_of_its_block_headers() {
        let input = random(3 * TEST_BLOCK + 5, 0x9E37_79B9_7F4A_7C15);
        let (stream, deflated) = deflate_all(&input, 2);
        assert_eq!(inflate(&stream), input);
        // All but the last 5 bytes, which are too few to judge by a sample and compressed.
        assert_eq!(deflated.stored, 3 * TEST_BLOCK as u64);
        let headers = 5 * input.len().div_ceil(0xFFFF) + 16;
        assert!(
            stream.len() <= input.len() + headers,
            "{} bytes stored for {} bytes of input",
            stream.len(),
            input.len()
        );
    }

    #[test]
    fn stored_and_compressed_blocks_mix_in_one_stream() {
        let mut input = text(TEST_BLOCK);
        input.extend_from_slice(&random(TEST_BLOCK, 7));
        input.extend_from_slice(&text(TEST_BLOCK / 2));
        let (stream, deflated) = deflate_all(&input, 2);
        assert_eq!(inflate(&stream), input);
        assert_eq!(deflated.stored, TEST_BLOCK as u64, "only the random block");
    }

    /// A tar of compressed files: its sample does not shrink, but the headers and padding
    /// between the members do.
    #[test]
    fn incompressible_content_with_runs_of_zeros_is_compressed() {
        let mut input = Vec::new();
        for member in 0..3 * TEST_BLOCK / 62_464 {
            input.extend_from_slice(&random(61_440, member as u64 + 1));
            input.extend_from_slice(&[0; 1024]);
        }
        let (stream, deflated) = deflate_all(&input, 2);
        assert_eq!(inflate(&stream), input);
        assert_eq!(deflated.stored, 0);
        assert!(
            stream.len() < input.len() - input.len() / 100,
            "{} bytes for {} bytes of input",
            stream.len(),
            input.len()
        );
    }

    #[test]
    fn a_small_input_is_compressed_whole_not_judged_by_a_sample() {
        let input = text(1000);
        let (stream, deflated) = deflate_all(&input, 1);
        assert_eq!(deflated.stored, 0);
        assert!(stream.len() < input.len() / 4, "{} bytes", stream.len());
    }

    #[test]
    fn a_failing_producer_fails_the_stream_and_stops_the_threads() {
        let mut stream = Vec::new();
        let threads = NonZeroUsize::new(2).expect("two");
        let failed = deflate_in_blocks(&mut stream, 6, threads, TEST_BLOCK, |w| {
            w.write_all(&text(3 * TEST_BLOCK))?;
            Err::<(), _>(io::Error::other("source broke"))
        });
        let error = failed.expect_err("the producer's error comes back");
        assert_eq!(error.to_string(), "source broke");
    }

    #[test]
    fn a_failing_destination_fails_the_stream() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("upload failed"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let threads = NonZeroUsize::new(2).expect("two");
        let failed = deflate_in_blocks(&mut Broken, 6, threads, TEST_BLOCK, |w| {
            w.write_all(&text(6 * TEST_BLOCK))
        });
        assert_eq!(
            failed.expect_err("the write error comes back").to_string(),
            "upload failed"
        );
    }
}
