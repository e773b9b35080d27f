//! The built-in formats, one per file. Each file registers itself; nothing here lists them.

mod gzip;
mod tar;
mod zip;
mod zstd;

/// Deflate levels as libdeflate numbers them: 1-9 as `gzip` and `zip` do (6 the default),
/// then 10-12 for its slower, smaller near-optimal parsing. 0 (store) is left out because
/// storing is never what a compression worker is for.
pub(crate) const DEFLATE_LEVELS: crate::Levels = crate::Levels {
    min: 1,
    max: 12,
    default: 6,
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

/// Starts a zstd encoder the way every zstd-based format here wants it: checksummed, with the
/// content size recorded when known, and on up to `threads` worker threads.
pub(crate) fn zstd_encoder<W: std::io::Write>(
    dst: W,
    level: i32,
    threads: std::num::NonZeroUsize,
    pledged_size: Option<u64>,
) -> std::io::Result<::zstd::stream::write::Encoder<'static, W>> {
    let mut encoder = ::zstd::stream::write::Encoder::new(dst, level)?;
    encoder.include_checksum(true)?;
    if let Some(size) = pledged_size {
        encoder.include_contentsize(true)?;
        encoder.set_pledged_src_size(Some(size))?;
    }
    let workers = u32::try_from(threads.get()).unwrap_or(u32::MAX);
    if workers > 1 {
        encoder.multithread(workers)?;
        encoder.set_parameter(::zstd::stream::raw::CParameter::JobSize(ZSTD_JOB_SIZE))?;
    }
    Ok(encoder)
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
