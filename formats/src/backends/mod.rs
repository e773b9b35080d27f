//! The built-in formats, one per file. Each file registers itself; nothing here lists them.

mod gzip;
mod tar;
mod zip;
mod zstd;
mod zstd_memory;

/// Deflate levels as libdeflate numbers them: 1-9 as `gzip` and `zip` do, then 10-12 for its
/// slower, smaller near-optimal parsing. 0 (store) is left out because storing is never what a
/// compression worker is for. The default is 7, not zlib's 6: libdeflate's level 6 searches
/// less than zlib's (35 candidates against 128, matches of 65 bytes good enough against 128),
/// and on real JSON, HTML and source it wrote up to 3% more than `zip -6`; its level 7 writes
/// less on all of them at about half `zip -6`'s CPU (bench/README.md, "Real data").
pub(crate) const DEFLATE_LEVELS: crate::Levels = crate::Levels {
    min: 1,
    max: 12,
    default: 7,
};

/// zstd's own range without the negative "fast" levels; 3 is the zstd CLI's default.
pub(crate) const ZSTD_LEVELS: crate::Levels = crate::Levels {
    min: 1,
    max: 22,
    default: 3,
};

/// The level a format with levels was built with.
///
/// [`Registration::settings`](crate::Registration::settings) always fills it in for such formats,
/// so the fallback only guards against a registration that declares no levels yet asks for one.
pub(crate) fn level_or(settings: &crate::Settings, levels: crate::Levels) -> i32 {
    settings.level.unwrap_or(levels.default)
}

/// Input per zstd worker job. zstd's own choice is four windows (8 MiB at level 3, 32 MiB at
/// 19), and it keeps several jobs' input and output per worker: 50 MiB at level 3 on two
/// workers, where 2 MiB jobs need a fraction of that for a ratio within a fraction of a percent.
const ZSTD_JOB_SIZE: u32 = 2 * 1024 * 1024;

/// What a zstd encoder is told of its input's size.
#[derive(Debug, Clone, Copy)]
pub(crate) enum InputSize {
    /// Recorded in the frame, and checked: the encoder fails on any other size.
    Exact(u64),
    /// Close to the size, for choosing the window and tables only.
    About(u64),
    Unknown,
}

impl InputSize {
    fn bytes(self) -> Option<u64> {
        match self {
            Self::Exact(size) | Self::About(size) => Some(size),
            Self::Unknown => None,
        }
    }
}

/// Starts a zstd encoder the way every zstd-based format here wants it: checksummed, with the
/// content size recorded when known exactly, sized for the input when its size is known at
/// all (a small input at level 19 then gets a small window and small tables, not the 80 MiB
/// of tables meant for large ones), and on up to `threads` worker threads for an input large
/// enough to share out.
pub(crate) fn zstd_encoder<W: std::io::Write>(
    dst: W,
    level: i32,
    threads: std::num::NonZeroUsize,
    size: InputSize,
) -> std::io::Result<::zstd::stream::write::Encoder<'static, W>> {
    use ::zstd::stream::raw::CParameter;
    let mut encoder = ::zstd::stream::write::Encoder::new(dst, level)?;
    encoder.include_checksum(true)?;
    match size {
        InputSize::Exact(size) => {
            encoder.include_contentsize(true)?;
            encoder.set_pledged_src_size(Some(size))?;
        }
        InputSize::About(size) => {
            // zstd takes hints up to i32::MAX; anything larger gets the large-input parameters.
            let hint = u32::try_from(size.min(i32::MAX as u64)).unwrap_or(i32::MAX as u32);
            encoder.set_parameter(CParameter::SrcSizeHint(hint))?;
        }
        InputSize::Unknown => {}
    }
    let workers = u32::try_from(zstd_workers(threads, size).get()).unwrap_or(u32::MAX);
    if workers > 1 {
        encoder.multithread(workers)?;
        encoder.set_parameter(CParameter::JobSize(ZSTD_JOB_SIZE))?;
    }
    Ok(encoder)
}

/// Inputs up to this size are compressed on one thread whatever the settings, as zstd itself
/// does for a pledged size (`ZSTDMT_JOBSIZE_MIN`): a job would hold them whole.
const ZSTD_SINGLE_THREAD_MAX: u64 = 512 * 1024;

/// Worker threads for an input of `size`.
fn zstd_workers(threads: std::num::NonZeroUsize, size: InputSize) -> std::num::NonZeroUsize {
    match size.bytes() {
        Some(size) if size <= ZSTD_SINGLE_THREAD_MAX => std::num::NonZeroUsize::MIN,
        _ => threads,
    }
}

/// What [`zstd_encoder`] with these settings and the decoder of its frame hold at most.
pub(crate) fn zstd_memory(level: i32, threads: std::num::NonZeroUsize, size: InputSize) -> u64 {
    let workers = zstd_workers(threads, size);
    zstd_memory::memory(level, workers, u64::from(ZSTD_JOB_SIZE), size.bytes())
}

/// Reads the one checksummed zstd frame [`zstd_encoder`] wrote, handing its decoded bytes to
/// `consume`; nothing may follow the frame.
pub(crate) fn read_zstd_frame(
    src: &mut dyn std::io::Read,
    consume: impl FnOnce(&mut dyn std::io::Read) -> std::io::Result<()>,
) -> std::io::Result<()> {
    /// zstd's largest window at the levels offered (22 uses 2^27): the decoder allocates up to
    /// this much, so a frame asking for more is refused rather than trusted.
    const WINDOW_LOG_MAX: u32 = 27;
    let mut decoder =
        ::zstd::stream::read::Decoder::with_buffer(std::io::BufReader::new(src))?.single_frame();
    decoder.window_log_max(WINDOW_LOG_MAX)?;
    consume(&mut decoder)?;
    // Reading to the frame's end is what checks its checksum.
    crate::expect_end(&mut decoder)?;
    crate::expect_end(&mut decoder.finish())
}
