//! DEFLATE on every core, the way pigz does it: the input is cut into blocks, each block is
//! compressed on its own thread with the previous 32 KiB as its dictionary and ends on a byte
//! boundary (a sync flush), so the compressed blocks concatenate into one ordinary DEFLATE
//! stream that any inflater reads. The dictionary keeps the ratio within a fraction of a
//! percent of a single-threaded stream.
//!
//! Written here rather than taken from `gzp`: zip needs the raw stream ended by a final block,
//! and the worker hands over a borrowed, non-`'static` writer (the upload's), which
//! `gzp`'s writer-owning threads cannot take.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::num::NonZeroUsize;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use flate2::{Compress, Compression, FlushCompress, Status};

/// Input per block. pigz's default: large enough that the per-block cost (a sync flush, a
/// fresh Huffman table, a thread hand-off) is noise, small enough to keep every core busy
/// and memory small.
const BLOCK_SIZE: usize = 128 * 1024;

/// DEFLATE's window: a block can refer back this far into the block before it.
const DICTIONARY_SIZE: usize = 32 * 1024;

/// Blocks in flight per thread: one being compressed, one waiting, so a thread never idles
/// while the next block is read.
const BLOCKS_IN_FLIGHT_PER_THREAD: usize = 2;

/// What a zip data descriptor or a gzip trailer needs to know about the uncompressed input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deflated {
    pub crc32: u32,
    pub size: u64,
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
        );
        let produced = produce(&mut writer)?;
        let deflated = writer.finish()?;
        Ok((produced, deflated))
    })
}

/// One block for a compressing thread.
struct Job {
    input: Arc<Vec<u8>>,
    /// The block before this one, whose tail is this block's dictionary.
    previous: Option<Arc<Vec<u8>>>,
    last: bool,
    done: SyncSender<io::Result<Vec<u8>>>,
}

/// A compressing thread: takes blocks until the queue closes.
fn compress_blocks(queue: &Mutex<Receiver<Job>>, level: u32) {
    let mut compress = Compress::new(Compression::new(level), false);
    loop {
        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = next else { return };
        let previous = job.previous.as_deref().map(Vec::as_slice);
        let result = compress_block(&mut compress, &job.input, previous, job.last);
        // The writer has gone away only if it already failed; nobody needs the block then.
        let _ = job.done.send(result);
    }
}

fn compress_block(
    compress: &mut Compress,
    input: &[u8],
    previous: Option<&[u8]>,
    last: bool,
) -> io::Result<Vec<u8>> {
    compress.reset();
    if let Some(previous) = previous {
        let tail = &previous[previous.len().saturating_sub(DICTIONARY_SIZE)..];
        compress.set_dictionary(tail).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    // Incompressible data grows by a few bytes per stored block; this fits it in one pass.
    let mut output = Vec::with_capacity(input.len() + input.len() / 16 + 64);
    loop {
        let consumed = usize::try_from(compress.total_in())
            .unwrap_or(usize::MAX)
            .min(input.len());
        let status = compress
            .compress_vec(&input[consumed..], &mut output, flush)
            .map_err(io::Error::other)?;
        let done = match flush {
            FlushCompress::Finish => status == Status::StreamEnd,
            // A sync flush is complete once it returns with output space to spare.
            _ => compress.total_in() >= input.len() as u64 && output.len() < output.capacity(),
        };
        if done {
            return Ok(output);
        }
        output.reserve(64 * 1024);
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
    in_flight: VecDeque<Receiver<io::Result<Vec<u8>>>>,
    max_in_flight: usize,
    block: Vec<u8>,
    previous: Option<Arc<Vec<u8>>>,
    crc: crc32fast::Hasher,
    size: u64,
}

impl<'a> BlockWriter<'a> {
    fn new(
        dst: &'a mut dyn Write,
        level: u32,
        jobs: Sender<Job>,
        start_threads: &'a dyn Fn(),
        max_in_flight: usize,
    ) -> Self {
        Self {
            dst,
            level,
            jobs,
            start_threads: Some(start_threads),
            in_flight: VecDeque::with_capacity(max_in_flight),
            max_in_flight,
            block: Vec::with_capacity(BLOCK_SIZE),
            previous: None,
            crc: crc32fast::Hasher::new(),
            size: 0,
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
        let input = Arc::new(std::mem::replace(
            &mut self.block,
            Vec::with_capacity(BLOCK_SIZE),
        ));
        let (done, compressed) = mpsc::sync_channel(1);
        let job = Job {
            input: Arc::clone(&input),
            previous: self.previous.replace(input),
            last,
            done,
        };
        self.jobs.send(job).map_err(|_| threads_gone())?;
        self.in_flight.push_back(compressed);
        Ok(())
    }

    fn write_oldest(&mut self) -> io::Result<()> {
        let Some(compressed) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let block = compressed.recv().map_err(|_| threads_gone())??;
        self.dst.write_all(&block)
    }

    /// Ends the stream with a final block and waits for every block to be written.
    fn finish(mut self) -> io::Result<Deflated> {
        if self.previous.is_none() {
            let mut compress = Compress::new(Compression::new(self.level), false);
            let only = compress_block(&mut compress, &self.block, None, true)?;
            self.dst.write_all(&only)?;
        } else {
            self.dispatch(true)?;
            while !self.in_flight.is_empty() {
                self.write_oldest()?;
            }
        }
        Ok(Deflated {
            crc32: self.crc.clone().finalize(),
            size: self.size,
        })
    }
}

impl Write for BlockWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.block.len() == BLOCK_SIZE {
            self.dispatch(false)?;
        }
        let taken = buf.len().min(BLOCK_SIZE - self.block.len());
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

    fn inflate(stream: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::DeflateDecoder::new(stream)
            .read_to_end(&mut out)
            .expect("a valid DEFLATE stream");
        out
    }

    fn deflate_all(input: &[u8], threads: usize) -> (Vec<u8>, Deflated) {
        let mut stream = Vec::new();
        let threads = NonZeroUsize::new(threads).expect("at least one thread");
        let ((), deflated) =
            deflate(&mut stream, 6, threads, |w| w.write_all(input)).expect("deflate succeeds");
        (stream, deflated)
    }

    /// Text that repeats at distances beyond one block, so a lost dictionary would show up
    /// as a worse ratio, and a wrong one as a wrong inflate.
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

    #[test]
    fn blocks_join_into_one_stream_that_inflates_to_the_input() {
        for size in [
            0,
            1,
            BLOCK_SIZE - 1,
            BLOCK_SIZE,
            BLOCK_SIZE + 1,
            5 * BLOCK_SIZE + 77,
        ] {
            for threads in [1, 2, 4] {
                let input = text(size);
                let (stream, deflated) = deflate_all(&input, threads);
                assert_eq!(inflate(&stream), input, "size {size}, {threads} threads");
                assert_eq!(deflated.size, size as u64);
                assert_eq!(deflated.crc32, crc32fast::hash(&input));
            }
        }
    }

    #[test]
    fn an_input_of_one_block_starts_no_threads() {
        let input = text(BLOCK_SIZE);
        let starts = std::cell::Cell::new(0);
        let count_starts = || starts.set(starts.get() + 1);
        // No thread serves this queue: sending a block to it fails.
        let (jobs, queue) = mpsc::channel();
        drop(queue);
        let mut stream = Vec::new();
        let mut writer = BlockWriter::new(&mut stream, 6, jobs, &count_starts, 4);
        writer.write_all(&input).expect("buffered");
        let deflated = writer.finish().expect("compressed in place");
        assert_eq!(starts.get(), 0);
        assert_eq!(deflated.size, input.len() as u64);
        assert_eq!(inflate(&stream), input);
    }

    #[test]
    fn the_dictionary_keeps_the_ratio_of_a_single_stream() {
        let input = text(16 * BLOCK_SIZE);
        let (parallel, _) = deflate_all(&input, 2);
        let mut single = flate2::write::DeflateEncoder::new(Vec::new(), Compression::new(6));
        single.write_all(&input).expect("in-memory write");
        let single = single.finish().expect("in-memory finish");
        // Without the dictionary every block starts cold and this text grows by tens of percent.
        assert!(
            parallel.len() <= single.len() + single.len() / 100 + 16 * 8,
            "parallel {} bytes vs single stream {} bytes",
            parallel.len(),
            single.len()
        );
    }

    #[test]
    fn incompressible_input_round_trips() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let input: Vec<u8> = (0..3 * BLOCK_SIZE + 5)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let (stream, _) = deflate_all(&input, 2);
        assert_eq!(inflate(&stream), input);
    }

    #[test]
    fn a_failing_producer_fails_the_stream_and_stops_the_threads() {
        let mut stream = Vec::new();
        let threads = NonZeroUsize::new(2).expect("two");
        let failed = deflate(&mut stream, 6, threads, |w| {
            w.write_all(&text(3 * BLOCK_SIZE))?;
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
        let failed = deflate(&mut Broken, 6, threads, |w| {
            w.write_all(&text(20 * BLOCK_SIZE))
        });
        assert_eq!(
            failed.expect_err("the write error comes back").to_string(),
            "upload failed"
        );
    }
}
