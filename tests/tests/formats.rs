//! Every registered format, round-tripped through decoders that share no code with its backend.
//!
//! The formats come from `Registry::from_inventory()`, never from a list kept here, and every
//! format needs a decoder below: a format added later fails these tests until someone says how
//! to read it back. Two kinds of decoder check each format: the Rust crates' own readers (`zip`,
//! `flate2`, `zstd`, `tar`, `brotli`) and, where installed, the command-line tools a user would
//! reach for (`unzip`, `gzip`, `zstd`, `tar`, `brotli`). A missing tool is reported and skipped.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use s3_compressor_formats::{
    inventory, Compressor, Entry, FormatError, Kind, Levels, Options, Registration, Registry, Stats,
};

// Linked only for the `inventory::submit!` inside it, exactly as the worker links it.
use s3_compressor_format_brotli as _;
use s3_compressor_tests::random;

/// Every format this build should offer, sorted.
const EXPECTED_FORMATS: [&str; 7] = ["brotli", "gzip", "tar", "tar.gz", "tar.zst", "zip", "zstd"];

const NAME: &str = "report.csv";

/// 2023-11-14 22:13:20 UTC: an even number of seconds, which DOS time (zip) can hold exactly.
const MTIME: u64 = 1_700_000_000;

const MIB: usize = 1024 * 1024;

fn modified() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(MTIME)
}

fn registry() -> Registry {
    Registry::from_inventory().expect("the linked formats register without clashes")
}

fn entry_for(input: &[u8]) -> Entry {
    Entry::new(NAME)
        .with_size(input.len() as u64)
        .with_modified(modified())
}

// ---------------------------------------------------------------------------------------------
// Inputs

/// CSV-like text, the kind of object the worker is mostly given.
fn text(len: usize) -> Vec<u8> {
    s3_compressor_tests::csv_text(len, 0)
}

/// Half text, half noise.
fn mixed(len: usize) -> Vec<u8> {
    let mut out = text(len / 2);
    out.extend(random(len - len / 2, 7));
    out
}

fn round_trip_inputs() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("0 bytes", Vec::new()),
        ("1 byte", b"x".to_vec()),
        ("5 MiB of text", text(5 * MIB + 123)),
        ("5 MiB of random bytes", random(5 * MIB + 45, 1)),
    ]
}

// ---------------------------------------------------------------------------------------------
// Compressing

fn try_compress(
    registration: &'static Registration,
    options: &Options,
    input: &[u8],
    entry: &Entry,
) -> Result<(Vec<u8>, Stats), FormatError> {
    let compressor = registration.compressor(options)?;
    let mut output = Vec::new();
    let stats = compressor.compress(&mut &input[..], &mut output, entry)?;
    Ok((output, stats))
}

/// Compresses, checks the returned [`Stats`] against the input and output, and returns the
/// output.
fn compress(
    registration: &'static Registration,
    options: &Options,
    input: &[u8],
    entry: &Entry,
) -> Vec<u8> {
    let format = registration.name;
    let (output, stats) = try_compress(registration, options, input, entry)
        .unwrap_or_else(|error| panic!("{format}: compressing failed: {error}"));
    assert_stats(format, &stats, input, &output);
    output
}

fn assert_stats(format: &str, stats: &Stats, input: &[u8], output: &[u8]) {
    assert_eq!(
        stats.bytes_in,
        input.len() as u64,
        "{format}: Stats.bytes_in"
    );
    assert_eq!(
        stats.bytes_out,
        output.len() as u64,
        "{format}: Stats.bytes_out must be the output's length"
    );
    assert_eq!(
        stats.crc32,
        crc32fast::hash(input),
        "{format}: Stats.crc32 must be the input's CRC-32"
    );
}

// ---------------------------------------------------------------------------------------------
// Independent decoders

/// What a decoder found in a compressed output.
#[derive(Debug)]
struct Decoded {
    data: Vec<u8>,
    /// The entry name recorded in the output, for formats that record one.
    name: Option<String>,
    /// Permission bits, for archives.
    mode: Option<u32>,
    /// Modification time as Unix seconds, for formats that record one (0 = none recorded).
    mtime: Option<u64>,
}

type Decoder = fn(&[u8]) -> Decoded;

/// The independent decoder for a format, by registered name. A format missing here fails
/// [`every_registered_format_has_an_independent_decoder`] and every round trip.
fn decoder(format: &str) -> Option<Decoder> {
    Some(match format {
        "zip" => decode_zip,
        "gzip" => decode_gzip,
        "zstd" => decode_zstd,
        "tar" => decode_tar,
        "tar.gz" => |bytes| decode_tar(&decode_gzip(bytes).data),
        "tar.zst" => |bytes| decode_tar(&decode_zstd(bytes).data),
        "brotli" => decode_brotli,
        _ => return None,
    })
}

fn decode(format: &str, compressed: &[u8]) -> Decoded {
    let decoder = decoder(format).unwrap_or_else(|| {
        panic!("format \"{format}\" has no independent decoder in this test; add one to `decoder`")
    });
    decoder(compressed)
}

fn decode_zip(bytes: &[u8]) -> Decoded {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).expect("zip: read the archive");
    assert_eq!(archive.len(), 1, "zip: one entry per archive");
    let mut file = archive.by_index(0).expect("zip: open entry 0");
    assert!(file.is_file(), "zip: the entry is a regular file");
    assert_eq!(
        file.compression(),
        zip::CompressionMethod::Deflated,
        "zip: the entry is deflated"
    );
    let name = file.name().expect("zip: entry name").into_owned();
    let unix_mode = file
        .unix_mode()
        .expect("zip: the entry has Unix permissions");
    assert_eq!(
        unix_mode & 0o170_000,
        0o100_000,
        "zip: the Unix mode says regular file"
    );
    let mtime = file.last_modified().map(|t| {
        unix_seconds(
            t.year().into(),
            t.month().into(),
            t.day().into(),
            t.hour().into(),
            t.minute().into(),
            t.second().into(),
        )
    });
    let (size, crc) = (file.size(), file.crc32());
    let mut data = Vec::new();
    // The zip crate compares the CRC when the entry has been read to its end.
    file.read_to_end(&mut data)
        .expect("zip: inflate the entry and match its CRC");
    assert_eq!(
        size,
        data.len() as u64,
        "zip: the size in the central directory"
    );
    assert_eq!(crc, crc32fast::hash(&data), "zip: the CRC recorded");
    Decoded {
        data,
        name: Some(name),
        mode: Some(unix_mode & 0o7777),
        mtime,
    }
}

fn decode_gzip(bytes: &[u8]) -> Decoded {
    let mut decoder = flate2::bufread::GzDecoder::new(bytes);
    let mut data = Vec::new();
    decoder
        .read_to_end(&mut data)
        .expect("gzip: inflate and match CRC and length");
    let header = decoder.header().expect("gzip: a header").clone();
    let rest = decoder.into_inner();
    assert!(
        rest.is_empty(),
        "gzip: {} bytes follow the gzip member",
        rest.len()
    );
    let name = header.filename().map(|name| {
        String::from_utf8(name.to_vec()).expect("gzip: the header's file name is UTF-8")
    });
    Decoded {
        data,
        name,
        mode: None,
        mtime: Some(header.mtime().into()),
    }
}

fn decode_zstd(bytes: &[u8]) -> Decoded {
    let frame = zstd::zstd_safe::find_frame_compressed_size(bytes).expect("zstd: a whole frame");
    assert_eq!(frame, bytes.len(), "zstd: one frame and nothing after it");
    let data = zstd::stream::decode_all(bytes).expect("zstd: decode and match the checksum");
    Decoded {
        data,
        name: None,
        mode: None,
        mtime: None,
    }
}

fn decode_brotli(bytes: &[u8]) -> Decoded {
    let mut data = Vec::new();
    brotli::Decompressor::new(bytes, 64 * 1024)
        .read_to_end(&mut data)
        .expect("brotli: decode");
    Decoded {
        data,
        name: None,
        mode: None,
        mtime: None,
    }
}

/// Reads an uncompressed tar stream holding exactly one regular file.
fn decode_tar(tar_bytes: &[u8]) -> Decoded {
    assert_eq!(tar_bytes.len() % 512, 0, "tar: whole 512-byte blocks");
    let mut archive = tar::Archive::new(tar_bytes);
    let mut entries = archive.entries().expect("tar: read the archive");
    let mut entry = entries
        .next()
        .expect("tar: an entry")
        .expect("tar: a valid header");
    assert_eq!(
        entry.header().entry_type(),
        tar::EntryType::Regular,
        "tar: a regular file"
    );
    // `path()` follows GNU long-name records; the header's own field holds only 100 bytes.
    let name = entry
        .path()
        .expect("tar: entry path")
        .to_str()
        .expect("tar: UTF-8 path")
        .to_owned();
    let mode = entry.header().mode().expect("tar: mode");
    let mtime = entry.header().mtime().expect("tar: mtime");
    let size = entry.header().size().expect("tar: size");
    let mut data = Vec::new();
    entry.read_to_end(&mut data).expect("tar: entry data");
    assert_eq!(size, data.len() as u64, "tar: the size in the header");
    drop(entry);
    assert!(entries.next().is_none(), "tar: exactly one entry");
    Decoded {
        data,
        name: Some(name),
        mode: Some(mode),
        mtime: Some(mtime),
    }
}

/// Unix seconds of a UTC civil time (days_from_civil, proleptic Gregorian).
fn unix_seconds(year: i64, month: i64, day: i64, hour: i64, minute: i64, second: i64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    u64::try_from(days * 86_400 + hour * 3600 + minute * 60 + second).expect("after 1970")
}

/// What a zstd frame header says about the frame.
#[derive(Debug, PartialEq, Eq)]
struct ZstdFrame {
    content_size: Option<u64>,
    checksum: bool,
}

fn zstd_frame(bytes: &[u8]) -> ZstdFrame {
    assert!(
        bytes.starts_with(&[0x28, 0xB5, 0x2F, 0xFD]),
        "zstd: frame magic"
    );
    let content_size =
        zstd::zstd_safe::get_frame_content_size(bytes).expect("zstd: a valid frame header");
    // Frame_Header_Descriptor, bit 2: Content_Checksum_flag (RFC 8878, 3.1.1.1.1).
    let checksum = bytes[4] & 0b100 != 0;
    ZstdFrame {
        content_size,
        checksum,
    }
}

// ---------------------------------------------------------------------------------------------
// Command-line tools

/// The tool's path if it is on `PATH`, as `which` would find it; otherwise a line saying what
/// is skipped.
fn tool(name: &str, skipped: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        eprintln!("SKIPPED: `{name}` is not installed, so {skipped} is not checked");
    }
    found
}

/// Runs a tool in a fixed locale and time zone, and fails the test when it fails.
fn run<S: AsRef<OsStr>>(program: &Path, args: &[S]) -> Output {
    let output = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .output()
        .unwrap_or_else(|error| panic!("running {}: {error}", program.display()));
    let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
    assert!(
        output.status.success(),
        "`{} {}` failed ({}):\n{}{}",
        program.display(),
        shown.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    output
}

fn stdout_text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The file name the worker would give the output of `NAME`.
fn output_file_name(registration: &Registration) -> String {
    match registration.kind {
        Kind::Archive => format!("report.{}", registration.extension),
        Kind::Stream => format!("{NAME}.{}", registration.extension),
    }
}

/// Checks one output with the command-line tools for its format, where installed.
fn check_with_cli(registration: &Registration, dir: &Path, compressed: &[u8], input: &[u8]) {
    let format = registration.name;
    let file = dir.join(output_file_name(registration));
    fs::write(&file, compressed).expect("write the output to a file");
    let len = input.len().to_string();
    match format {
        "zip" => {
            let Some(unzip) = tool("unzip", "zip output with unzip") else {
                return;
            };
            let test = stdout_text(&run(&unzip, &[OsStr::new("-t"), file.as_os_str()]));
            assert!(
                test.contains("No errors detected"),
                "unzip -t on zip output:\n{test}"
            );
            let extracted = run(&unzip, &[OsStr::new("-p"), file.as_os_str()]).stdout;
            assert!(extracted == input, "unzip -p gives back the input");
            // zipinfo: "-rw-r--r--  3.0 unx   1234 bx defN 23-Nov-14 22:13 report.csv"
            let info = stdout_text(&run(&unzip, &[OsStr::new("-Z"), file.as_os_str()]));
            let line = info
                .lines()
                .find(|line| line.ends_with(&format!(" {NAME}")))
                .unwrap_or_else(|| panic!("zipinfo lists {NAME}:\n{info}"));
            assert!(
                line.starts_with("-rw-r--r--")
                    && line.contains(" unx ")
                    && line.split_whitespace().any(|field| field == len),
                "zipinfo shows a 0644 Unix file of {len} bytes: {line}"
            );
            assert!(
                line.contains("23-Nov-14 22:13"),
                "zipinfo shows the time: {line}"
            );
        }
        "gzip" => {
            let Some(gzip) = tool("gzip", "gzip output with gzip") else {
                return;
            };
            run(&gzip, &[OsStr::new("-t"), file.as_os_str()]);
            let extracted = run(&gzip, &[OsStr::new("-dc"), file.as_os_str()]).stdout;
            assert!(extracted == input, "gzip -dc gives back the input");
            // `gzip -dN` restores the name and time from the header, whatever the file is called.
            let restore = dir.join("gzip-dN");
            fs::create_dir_all(&restore).expect("folder for gzip -dN");
            let renamed = restore.join("renamed.gz");
            fs::write(&renamed, compressed).expect("write renamed.gz");
            // "defla 363a3020 Nov 14 22:13   37   6 -33.3% /tmp/.../gzip-dN/report.csv"
            let list = stdout_text(&run(&gzip, &[OsStr::new("-lvN"), renamed.as_os_str()]));
            let line = list.lines().nth(1).expect("gzip -lvN lists the file");
            assert!(
                line.ends_with(&format!("/{NAME}"))
                    && line.contains(&format!("{:08x} Nov 14 22:13", crc32fast::hash(input))),
                "gzip -lvN shows the CRC and the stored name and time: {line}"
            );
            run(&gzip, &[OsStr::new("-dN"), renamed.as_os_str()]);
            let restored = restore.join(NAME);
            assert!(
                fs::read(&restored).expect("gzip -dN wrote report.csv") == input,
                "gzip -dN gives back the input"
            );
            let mtime = fs::metadata(&restored)
                .and_then(|meta| meta.modified())
                .expect("mtime of the restored file");
            assert_eq!(mtime, modified(), "gzip -dN restores the time");
            fs::remove_file(&restored).expect("clean up");
        }
        "zstd" => {
            let Some(zstd) = tool("zstd", "zstd output with zstd") else {
                return;
            };
            run(&zstd, &[OsStr::new("-tq"), file.as_os_str()]);
            let extracted = run(&zstd, &[OsStr::new("-dcq"), file.as_os_str()]).stdout;
            assert!(extracted == input, "zstd -dc gives back the input");
            let list = stdout_text(&run(&zstd, &[OsStr::new("-lv"), file.as_os_str()]));
            assert!(
                list.contains("Decompressed Size: ") && list.contains(&format!("({len} B)")),
                "zstd -lv shows the content size {len}:\n{list}"
            );
            assert!(
                list.contains("Check: XXH64"),
                "zstd -lv shows a checksum:\n{list}"
            );
        }
        "tar" | "tar.gz" | "tar.zst" => {
            let Some(tar) = tool("tar", &format!("{format} output with tar")) else {
                return;
            };
            let outer: &[&str] = match format {
                "tar" => &[],
                "tar.gz" => &["--gzip"],
                _ => {
                    if tool("zstd", "tar.zst output with tar --zstd").is_none() {
                        return;
                    }
                    &["--zstd"]
                }
            };
            let args = |action: &'static str| {
                let mut args: Vec<&OsStr> = outer.iter().map(OsStr::new).collect();
                args.extend([OsStr::new(action), file.as_os_str()]);
                args
            };
            // "-rw-r--r-- 0/0  1234 2023-11-14 22:13 report.csv"
            let list = stdout_text(&run(&tar, &args("-tvf")));
            let lines: Vec<_> = list.lines().collect();
            assert_eq!(lines.len(), 1, "tar -tv lists one entry:\n{list}");
            let line = lines[0];
            assert!(
                line.starts_with("-rw-r--r-- ")
                    && line.contains(&format!(" {len} 2023-11-14 22:13 "))
                    && line.ends_with(&format!(" {NAME}")),
                "tar -tv shows {NAME}, 0644, {len} bytes, 2023-11-14 22:13: {line}"
            );
            let extracted = run(&tar, &args("-xOf")).stdout;
            assert!(extracted == input, "tar -xO gives back the input");
        }
        "brotli" => {
            let Some(brotli) = tool("brotli", "brotli output with the brotli CLI") else {
                return;
            };
            run(&brotli, &[OsStr::new("-t"), file.as_os_str()]);
            let extracted = run(&brotli, &[OsStr::new("-dc"), file.as_os_str()]).stdout;
            assert!(extracted == input, "brotli -dc gives back the input");
        }
        other => {
            panic!("format \"{other}\" has no command-line check; add one to `check_with_cli`")
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Round trips

#[test]
fn registry_holds_exactly_the_expected_formats() {
    assert_eq!(registry().names(), EXPECTED_FORMATS);
}

#[test]
fn every_registered_format_has_an_independent_decoder() {
    let missing: Vec<_> = registry()
        .names()
        .into_iter()
        .filter(|name| decoder(name).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "formats with no independent decoder in this test: {missing:?}"
    );
}

#[test]
fn every_format_round_trips_through_an_independent_decoder() {
    let registry = registry();
    for (what, input) in round_trip_inputs() {
        for registration in registry.iter() {
            let format = registration.name;
            let output = compress(
                registration,
                &Options::default(),
                &input,
                &entry_for(&input),
            );
            let decoded = decode(format, &output);
            assert!(
                decoded.data == input,
                "{format}, {what}: decoded {} bytes that differ from the input",
                decoded.data.len()
            );
            if let Some(name) = decoded.name {
                assert_eq!(name, NAME, "{format}, {what}: recorded name");
            }
        }
    }
}

fn compressed_with_defaults(
    registration: &'static Registration,
    input: &[u8],
) -> (Compressor, Vec<u8>) {
    let compressor = registration
        .compressor(&Options::default())
        .expect("default options");
    let mut output = Vec::new();
    compressor
        .compress(&mut &input[..], &mut output, &entry_for(input))
        .unwrap_or_else(|error| panic!("{}: {error}", registration.name));
    (compressor, output)
}

/// The worker deletes a source only when the format's own decoder gives the input back, so
/// that decoder must agree with the independent ones on every output.
#[test]
fn every_format_decodes_its_own_output_back_to_the_input() {
    for (what, input) in round_trip_inputs() {
        for registration in registry().iter() {
            let format = registration.name;
            let (compressor, output) = compressed_with_defaults(registration, &input);
            let mut decoded = Vec::new();
            compressor
                .decompress(&mut &output[..], &mut decoded)
                .unwrap_or_else(|error| panic!("{format}, {what}: own decoder: {error}"));
            assert!(
                decoded == input,
                "{format}, {what}: the own decoder gave {} bytes that differ from the input",
                decoded.len()
            );
        }
    }
}

/// What a verification must never accept: an output cut short anywhere, or one with bytes
/// after its end. A flipped byte must fail to decode or decode to something else.
#[test]
fn every_format_refuses_its_output_damaged() {
    let input = mixed(600 * 1024);
    for registration in registry().iter() {
        let format = registration.name;
        let (compressor, output) = compressed_with_defaults(registration, &input);
        let decode = |bytes: &[u8]| {
            let mut decoded = Vec::new();
            compressor
                .decompress(&mut &bytes[..], &mut decoded)
                .map(|()| decoded)
        };
        for cut in [
            0,
            1,
            10,
            output.len() / 3,
            output.len() / 2,
            output.len() - 1,
        ] {
            let result = decode(&output[..cut]);
            assert!(
                result.is_err(),
                "{format}: the output cut to {cut} of {} bytes decoded without error",
                output.len()
            );
        }
        let mut followed = output.clone();
        followed.extend_from_slice(b"trailing bytes");
        assert!(
            decode(&followed).is_err(),
            "{format}: bytes after the end were accepted"
        );
        for at in [output.len() / 4, output.len() / 2, output.len() * 3 / 4] {
            let mut flipped = output.clone();
            flipped[at] ^= 0x10;
            if let Ok(decoded) = decode(&flipped) {
                assert!(
                    decoded != input,
                    "{format}: a flipped byte at {at} decoded to the input"
                );
            }
        }
    }
}

#[test]
fn every_format_round_trips_when_the_size_is_unknown_or_fails_clearly() {
    let registry = registry();
    let input = mixed(3 * MIB);
    let entry = Entry::new(NAME).with_modified(modified());
    for registration in registry.iter() {
        let format = registration.name;
        match try_compress(registration, &Options::default(), &input, &entry) {
            Ok((output, stats)) => {
                assert_stats(format, &stats, &input, &output);
                assert!(
                    decode(format, &output).data == input,
                    "{format} without a size: round trip"
                );
                if format == "zstd" {
                    assert_eq!(
                        zstd_frame(&output),
                        ZstdFrame {
                            content_size: None,
                            checksum: true
                        },
                        "zstd without a size: no content size, still a checksum"
                    );
                }
                if format == "zip" {
                    // Unknown sizes get zip64 headers; unzip must still take them.
                    if let Some(unzip) = tool("unzip", "zip64 output of unknown size with unzip") {
                        let dir = tempfile::tempdir().expect("temp dir");
                        let file = dir.path().join("unknown-size.zip");
                        fs::write(&file, &output).expect("write zip");
                        let test = stdout_text(&run(&unzip, &[OsStr::new("-t"), file.as_os_str()]));
                        assert!(test.contains("No errors detected"), "unzip -t:\n{test}");
                    }
                }
            }
            Err(error) => {
                assert!(
                    format.starts_with("tar"),
                    "{format} refused an input of unknown size: {error}"
                );
                assert!(
                    error.to_string().contains("input size must be known"),
                    "{format}: the error says why: {error}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Command-line decoders and metadata

#[test]
fn every_format_is_accepted_by_its_command_line_tool() {
    let registry = registry();
    let dir = tempfile::tempdir().expect("temp dir");
    for input in [Vec::new(), mixed(MIB)] {
        for registration in registry.iter() {
            let output = compress(
                registration,
                &Options::default(),
                &input,
                &entry_for(&input),
            );
            check_with_cli(registration, dir.path(), &output, &input);
        }
    }
}

#[test]
fn archives_and_gzip_keep_name_mode_and_time() {
    let registry = registry();
    let input = text(100_000);
    for registration in registry.iter() {
        let format = registration.name;
        let output = compress(
            registration,
            &Options::default(),
            &input,
            &entry_for(&input),
        );
        let decoded = decode(format, &output);
        match format {
            "zip" | "tar" | "tar.gz" | "tar.zst" => {
                assert_eq!(decoded.name.as_deref(), Some(NAME), "{format}: entry name");
                assert_eq!(decoded.mode, Some(0o644), "{format}: mode 0644");
                assert_eq!(decoded.mtime, Some(MTIME), "{format}: modification time");
            }
            "gzip" => {
                assert_eq!(decoded.name.as_deref(), Some(NAME), "gzip: header FNAME");
                assert_eq!(decoded.mtime, Some(MTIME), "gzip: header MTIME");
            }
            "zstd" => assert_eq!(
                zstd_frame(&output),
                ZstdFrame {
                    content_size: Some(input.len() as u64),
                    checksum: true
                },
                "zstd: the frame records the content size and a checksum"
            ),
            "brotli" => {} // brotli streams record no metadata
            other => panic!("format \"{other}\" has no metadata check; add one here"),
        }
    }
}

#[test]
fn tar_keeps_names_longer_than_100_bytes() {
    let registry = registry();
    let long_name = format!("exports-2023-{}-quarterly-report.csv", "x".repeat(110));
    assert!(long_name.len() > 100);
    let input = text(10_000);
    let entry = Entry::new(&long_name)
        .with_size(input.len() as u64)
        .with_modified(modified());
    let dir = tempfile::tempdir().expect("temp dir");
    for format in ["tar", "tar.gz", "tar.zst", "zip"] {
        let registration = registry.get(format).expect("registered");
        let output = compress(registration, &Options::default(), &input, &entry);
        let decoded = decode(format, &output);
        assert_eq!(
            decoded.name.as_deref(),
            Some(long_name.as_str()),
            "{format}"
        );
        assert!(decoded.data == input, "{format}: data after a long name");

        let file = dir.path().join(output_file_name(registration));
        fs::write(&file, &output).expect("write output");
        let listing = match format {
            "zip" => tool("unzip", "long zip names with unzip")
                .map(|unzip| run(&unzip, &[OsStr::new("-Z1"), file.as_os_str()])),
            _ => tool("tar", "long tar names with tar").and_then(|tar| {
                let outer = match format {
                    "tar" => "--no-auto-compress",
                    "tar.gz" => "--gzip",
                    _ => {
                        tool("zstd", "long tar.zst names with tar --zstd")?;
                        "--zstd"
                    }
                };
                Some(run(
                    &tar,
                    &[OsStr::new(outer), OsStr::new("-tf"), file.as_os_str()],
                ))
            }),
        };
        if let Some(listing) = listing {
            assert_eq!(
                stdout_text(&listing),
                format!("{long_name}\n"),
                "{format}: the command-line tool lists the whole name"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Levels and threads

#[test]
fn levels_are_the_documented_ranges() {
    let registry = registry();
    let levels = |name| registry.get(name).expect("registered").levels;
    let deflate = Some(Levels {
        min: 1,
        max: 12,
        default: 7,
    });
    let zstd = Some(Levels {
        min: 1,
        max: 22,
        default: 3,
    });
    assert_eq!(levels("zip"), deflate);
    assert_eq!(levels("gzip"), deflate);
    assert_eq!(levels("tar.gz"), deflate);
    assert_eq!(levels("zstd"), zstd);
    assert_eq!(levels("tar.zst"), zstd);
    assert_eq!(
        levels("brotli"),
        Some(Levels {
            min: 0,
            max: 11,
            default: 9
        })
    );
    assert_eq!(levels("tar"), None);
}

#[test]
fn every_level_range_works_at_both_ends_and_nowhere_else() {
    let registry = registry();
    let input = text(256 * 1024);
    let entry = entry_for(&input);
    for registration in registry.iter() {
        let format = registration.name;
        let Some(levels) = registration.levels else {
            continue;
        };
        let mut sizes = Vec::new();
        for level in [levels.min, levels.max] {
            let options = Options {
                level: Some(level),
                threads: None,
            };
            let compressor = registration.compressor(&options).expect("a level in range");
            assert_eq!(compressor.settings().level, Some(level), "{format}");
            let output = compress(registration, &options, &input, &entry);
            assert!(
                decode(format, &output).data == input,
                "{format} at level {level}: round trip"
            );
            sizes.push(output.len());
        }
        assert!(
            sizes[1] < sizes[0],
            "{format}: level {} ({} bytes) compresses text smaller than level {} ({} bytes)",
            levels.max,
            sizes[1],
            levels.min,
            sizes[0]
        );

        for level in [levels.min - 1, levels.max + 1, i32::MIN, i32::MAX] {
            let options = Options {
                level: Some(level),
                threads: None,
            };
            let error = registration
                .compressor(&options)
                .expect_err("a level out of range is refused, not clamped");
            assert!(
                matches!(
                    error,
                    FormatError::LevelOutOfRange { format: f, level: l, min, max }
                        if f == format && l == level && min == levels.min && max == levels.max
                ),
                "{format}, level {level}: {error:?}"
            );
            let message = error.to_string();
            assert!(
                message.contains(&format!("from {} to {}", levels.min, levels.max))
                    && message.contains(&level.to_string())
                    && message.contains(format),
                "{format}: the message names the level and the range: {message}"
            );
        }
    }
}

#[test]
fn tar_refuses_a_level() {
    let tar = registry().get("tar").expect("registered");
    for level in [0, 1, 6] {
        let error = tar
            .compressor(&Options {
                level: Some(level),
                threads: None,
            })
            .expect_err("tar takes no level");
        assert!(
            matches!(error, FormatError::LevelNotAccepted { format: "tar" }),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .contains("\"tar\" takes no compression level"),
            "{error}"
        );
    }
    let compressor = tar
        .compressor(&Options::default())
        .expect("tar without a level");
    assert_eq!(compressor.settings().level, None);
}

#[test]
fn zero_threads_is_refused_by_every_format() {
    for registration in registry().iter() {
        let error = registration
            .compressor(&Options {
                level: None,
                threads: Some(0),
            })
            .expect_err("threads = 0 is refused");
        assert!(
            matches!(error, FormatError::ZeroThreads),
            "{}: {error:?}",
            registration.name
        );
        assert!(error.to_string().contains("at least 1"), "{error}");
    }
}

#[test]
fn threaded_formats_round_trip_on_one_two_and_four_threads() {
    let registry = registry();
    let dir = tempfile::tempdir().expect("temp dir");
    // Large enough for zstd to cut it into several jobs at level 1 and 3, and for deflate to
    // cut it into about a hundred blocks, each with the block before as its dictionary.
    let input = mixed(12 * MIB);
    let entry = entry_for(&input);
    for format in ["zip", "gzip", "tar.gz", "zstd", "tar.zst"] {
        let registration = registry.get(format).expect("registered");
        for threads in [1, 2, 4] {
            for level in [None, Some(1)] {
                let options = Options {
                    level,
                    threads: Some(threads),
                };
                let compressor = registration.compressor(&options).expect("threads accepted");
                assert_eq!(compressor.settings().threads.get(), threads);
                let output = compress(registration, &options, &input, &entry);
                assert!(
                    decode(format, &output).data == input,
                    "{format} on {threads} threads, level {level:?}: round trip"
                );
                check_with_cli(registration, dir.path(), &output, &input);
                if format == "zstd" {
                    assert_eq!(
                        zstd_frame(&output).content_size,
                        Some(input.len() as u64),
                        "zstd on {threads} threads still records the content size"
                    );
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Registry errors

#[test]
fn an_unknown_format_lists_the_known_ones() {
    let error = registry()
        .get("nope")
        .expect_err("no format is called nope");
    assert!(
        matches!(&error, FormatError::Unknown { name, .. } if name == "nope"),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "unknown format \"nope\"; known formats: brotli, gzip, tar, tar.gz, tar.zst, zip, zstd"
    );
}

#[derive(Debug)]
struct Never;

impl s3_compressor_formats::Format for Never {
    fn write_compressed(
        &self,
        _: &mut dyn Read,
        _: &mut dyn Write,
        _: &Entry,
    ) -> io::Result<s3_compressor_formats::Written> {
        Err(io::Error::other("never used"))
    }

    fn write_decompressed(&self, _: &mut dyn Read, _: &mut dyn Write) -> io::Result<()> {
        Err(io::Error::other("never used"))
    }
}

static ZIP_AGAIN_A: Registration = Registration {
    name: "zip-again",
    extension: "zip",
    content_type: "application/zip",
    kind: Kind::Archive,
    levels: None,
    crate_name: "first-crate",
    build: |_| Box::new(Never),
};

static ZIP_AGAIN_B: Registration = Registration {
    name: "zip-again",
    extension: "zip",
    content_type: "application/zip",
    kind: Kind::Archive,
    levels: None,
    crate_name: "second-crate",
    build: |_| Box::new(Never),
};

static ZIP_CLASH: Registration = Registration {
    name: "zip",
    extension: "zip",
    content_type: "application/zip",
    kind: Kind::Archive,
    levels: None,
    crate_name: "my-own-zip",
    build: |_| Box::new(Never),
};

#[test]
fn a_duplicate_registration_is_reported_with_both_crates() {
    let error = Registry::from_registrations([&ZIP_AGAIN_A, &ZIP_AGAIN_B])
        .expect_err("two registrations of one name");
    assert!(
        matches!(
            error,
            FormatError::Duplicate {
                name: "zip-again",
                first: "first-crate",
                second: "second-crate"
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("\"zip-again\"")
            && message.contains("first-crate")
            && message.contains("second-crate"),
        "{message}"
    );

    // An add-on that registers a built-in name clashes with the built-in.
    let error = Registry::from_registrations(
        inventory::iter::<Registration>
            .into_iter()
            .chain([&ZIP_CLASH]),
    )
    .expect_err("an add-on registering \"zip\" again");
    let message = error.to_string();
    assert!(
        message.contains("\"zip\"")
            && message.contains("s3-compressor-formats")
            && message.contains("my-own-zip"),
        "{message}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Entry names

#[test]
fn hostile_names_stay_inside_the_target_folder() {
    let registry = registry();
    let input = text(1000);
    let cases = [
        ("../../etc/passwd", "etc_passwd"),
        ("C:\\x\\y.txt", "x_y.txt"),
        ("/abs/../report.csv", "abs_report.csv"),
        // flate2 panics on a NUL in a gzip file name; control characters must not reach it.
        ("nul\0and\u{1b}[31mred.csv", "nul_and_[31mred.csv"),
    ];
    for (hostile, safe) in cases {
        let entry = Entry::new(hostile)
            .with_size(input.len() as u64)
            .with_modified(modified());
        for registration in registry.iter() {
            let format = registration.name;
            let output = compress(registration, &Options::default(), &input, &entry);
            let decoded = decode(format, &output);
            assert!(decoded.data == input, "{format}, {hostile:?}: round trip");
            let Some(name) = decoded.name else {
                continue; // zstd and brotli record no name
            };
            assert!(
                !name.contains(['/', '\\'])
                    && !name.chars().any(char::is_control)
                    && name != ".."
                    && !name.is_empty(),
                "{format}: {name:?} is one safe file name"
            );
            assert_eq!(name, safe, "{format}: the name recorded for {hostile:?}");
            assert_extracts_to(registration, &output, safe);
        }
    }
}

/// Unpacks an archive (or a gzip stream, with `gzip -dN`) with the command-line tool into an
/// empty folder, and checks that the folder then holds exactly one file, at `safe`.
fn assert_extracts_to(registration: &Registration, archive: &[u8], safe: &str) {
    let format = registration.name;
    let work = tempfile::tempdir().expect("temp dir");
    let file = work.path().join(output_file_name(registration));
    fs::write(&file, archive).expect("write the archive");
    let target = work.path().join("out");
    fs::create_dir(&target).expect("target folder");
    match format {
        "gzip" => {
            let Some(gzip) = tool("gzip", "restoring gzip names with gzip -dN") else {
                return;
            };
            // gzip writes next to the .gz file, which it then removes.
            let inside = target.join("upload.gz");
            fs::rename(&file, &inside).expect("move the .gz into the target folder");
            run(&gzip, &[OsStr::new("-dN"), inside.as_os_str()]);
            fs::write(&file, archive).expect("put the .gz back for the count below");
        }
        "zip" => {
            let Some(unzip) = tool("unzip", "extracting zip with unzip") else {
                return;
            };
            run(
                &unzip,
                &[
                    OsStr::new("-q"),
                    file.as_os_str(),
                    OsStr::new("-d"),
                    target.as_os_str(),
                ],
            );
        }
        _ => {
            let Some(tar) = tool("tar", &format!("extracting {format} with tar")) else {
                return;
            };
            let outer = match format {
                "tar" => "--no-auto-compress",
                "tar.gz" => "--gzip",
                "tar.zst" => {
                    if tool("zstd", "extracting tar.zst with tar --zstd").is_none() {
                        return;
                    }
                    "--zstd"
                }
                other => panic!("no extraction check for \"{other}\""),
            };
            run(
                &tar,
                &[
                    OsStr::new(outer),
                    OsStr::new("-xf"),
                    file.as_os_str(),
                    OsStr::new("-C"),
                    target.as_os_str(),
                ],
            );
        }
    }
    assert_eq!(
        files_under(&target),
        vec![target.join(safe)],
        "{format}: what extracting created"
    );
    assert_eq!(
        fs::read_dir(work.path()).expect("list").count(),
        2,
        "{format}: nothing was written beside the target folder"
    );
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for item in fs::read_dir(dir).expect("list folder") {
        let path = item.expect("folder entry").path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

// ---------------------------------------------------------------------------------------------
// 6. tar needs the exact size up front

#[test]
fn tar_fails_when_the_input_does_not_match_its_announced_size() {
    let registry = registry();
    let input = text(10_000);
    let len = input.len() as u64;
    let cases = [
        (Some(len + 1), "short of its announced size"),
        (Some(len + 100_000), "short of its announced size"),
        (Some(len - 1), "longer than its announced size"),
        (Some(0), "longer than its announced size"),
        (None, "input size must be known"),
    ];
    for format in ["tar", "tar.gz", "tar.zst"] {
        let registration = registry.get(format).expect("registered");
        for (size, expected) in cases {
            let mut entry = Entry::new(NAME).with_modified(modified());
            if let Some(size) = size {
                entry = entry.with_size(size);
            }
            let error = try_compress(registration, &Options::default(), &input, &entry)
                .map(|(output, _)| output.len())
                .expect_err("a size mismatch fails instead of writing a broken archive");
            assert!(
                matches!(&error, FormatError::Compress { format: f, .. } if *f == format),
                "{format}, size {size:?}: {error:?}"
            );
            let message = error.to_string();
            assert!(
                message.contains(expected),
                "{format}, size {size:?} for {len} bytes: the error says so: {message}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 7. zip64: one entry over 4 GiB, streamed

/// Length of one line of [`CounterText`].
const LINE: usize = 64;

/// Lines of text numbered from 0, produced on demand: any length, in constant memory.
#[derive(Debug)]
struct CounterText {
    remaining: u64,
    line: [u8; LINE],
    /// Where the next byte comes from in `line`.
    pos: usize,
}

impl CounterText {
    const DIGITS: usize = 20;

    fn new(len: u64) -> Self {
        let mut line = [b' '; LINE];
        line[..Self::DIGITS].fill(b'0');
        let text = b"counter-text line of the zip64 test";
        line[Self::DIGITS + 1..Self::DIGITS + 1 + text.len()].copy_from_slice(text);
        line[LINE - 1] = b'\n';
        Self {
            remaining: len,
            line,
            pos: 0,
        }
    }

    /// Moves to the next line number, counting in ASCII.
    fn next_line(&mut self) {
        for digit in self.line[..Self::DIGITS].iter_mut().rev() {
            if *digit == b'9' {
                *digit = b'0';
            } else {
                *digit += 1;
                break;
            }
        }
        self.pos = 0;
    }
}

impl Read for CounterText {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let mut done = 0;
        while done < want {
            if self.pos == LINE {
                self.next_line();
            }
            let n = (LINE - self.pos).min(want - done);
            buf[done..done + n].copy_from_slice(&self.line[self.pos..self.pos + n]);
            self.pos += n;
            done += n;
        }
        self.remaining -= want as u64;
        Ok(want)
    }
}

/// A writer that compares everything written to it with what a fresh [`CounterText`] yields,
/// and checksums it.
struct MatchesCounterText {
    expected: CounterText,
    scratch: Vec<u8>,
    offset: u64,
    crc: crc32fast::Hasher,
}

impl Write for MatchesCounterText {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.scratch.resize(buf.len(), 0);
        self.expected.read_exact(&mut self.scratch).map_err(|_| {
            io::Error::other(format!(
                "more data than the input's length, at offset {}",
                self.offset
            ))
        })?;
        // Slice equality is a memcmp even in an unoptimised test build; a byte loop is not.
        if buf != self.scratch.as_slice() {
            let at = buf
                .iter()
                .zip(&self.scratch)
                .take_while(|(a, b)| a == b)
                .count();
            return Err(io::Error::other(format!(
                "data differs from the input at offset {}",
                self.offset + at as u64
            )));
        }
        self.crc.update(buf);
        self.offset += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// 4 GiB + 200 MiB: past every 32-bit size field in zip.
const ZIP64_LEN: u64 = (4 << 30) + (200 << 20);

#[test]
fn zip64_entry_over_4_gib_round_trips_when_its_size_is_known() {
    zip64_round_trip(true);
}

#[test]
fn zip64_entry_over_4_gib_round_trips_when_its_size_is_unknown() {
    zip64_round_trip(false);
}

fn zip64_round_trip(size_known: bool) {
    let case = if size_known {
        "known size"
    } else {
        "unknown size"
    };
    let zip = registry().get("zip").expect("registered");
    let compressor = zip
        .compressor(&Options {
            level: Some(1),
            threads: None,
        })
        .expect("zip level 1");
    let mut entry = Entry::new(NAME).with_modified(modified());
    if size_known {
        entry = entry.with_size(ZIP64_LEN);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("big.zip");

    let started = Instant::now();
    let mut out = BufWriter::with_capacity(MIB, File::create(&path).expect("create big.zip"));
    let stats = compressor
        .compress(&mut CounterText::new(ZIP64_LEN), &mut out, &entry)
        .expect("compress > 4 GiB into zip");
    out.into_inner()
        .expect("flush big.zip")
        .sync_all()
        .expect("sync big.zip");
    let compress_time = started.elapsed();
    let file_len = fs::metadata(&path).expect("stat big.zip").len();
    assert_eq!(stats.bytes_in, ZIP64_LEN, "Stats.bytes_in");
    assert_eq!(stats.bytes_out, file_len, "Stats.bytes_out == file length");

    // The zip crate's reader, streaming the entry through a comparison with the input.
    let started = Instant::now();
    let mut archive =
        zip::ZipArchive::new(BufReader::new(File::open(&path).expect("open big.zip")))
            .expect("zip crate reads the zip64 archive");
    assert_eq!(archive.len(), 1);
    let mut file = archive.by_index(0).expect("the entry");
    assert_eq!(file.name().expect("name"), NAME);
    assert_eq!(file.size(), ZIP64_LEN, "the zip64 uncompressed size");
    assert_eq!(file.crc32(), stats.crc32, "the CRC recorded == Stats.crc32");
    let mut check = MatchesCounterText {
        expected: CounterText::new(ZIP64_LEN),
        scratch: Vec::new(),
        offset: 0,
        crc: crc32fast::Hasher::new(),
    };
    let copied = io::copy(&mut file, &mut check).expect("inflate, compare, and match the CRC");
    assert_eq!(copied, ZIP64_LEN, "the whole entry came back");
    assert_eq!(check.offset, ZIP64_LEN);
    assert_eq!(check.crc.finalize(), stats.crc32, "CRC of the input");
    drop(file);
    let read_time = started.elapsed();

    // unzip, as a user would check it.
    let started = Instant::now();
    if let Some(unzip) = tool("unzip", "the > 4 GiB zip64 archive with unzip") {
        let test = stdout_text(&run(&unzip, &[OsStr::new("-t"), path.as_os_str()]));
        assert!(
            test.contains("No errors detected"),
            "unzip -t on > 4 GiB:\n{test}"
        );
        let list = stdout_text(&run(&unzip, &[OsStr::new("-l"), path.as_os_str()]));
        assert!(
            list.contains(&format!("{ZIP64_LEN}  ")),
            "unzip -l shows the {ZIP64_LEN}-byte size:\n{list}"
        );
    }
    let unzip_time = started.elapsed();

    // The format's own decoder, which the worker's verification runs: zip64 data descriptor
    // and central directory.
    let started = Instant::now();
    let mut check = MatchesCounterText {
        expected: CounterText::new(ZIP64_LEN),
        scratch: Vec::new(),
        offset: 0,
        crc: crc32fast::Hasher::new(),
    };
    compressor
        .decompress(
            &mut BufReader::new(File::open(&path).expect("open big.zip")),
            &mut check,
        )
        .expect("the own decoder reads the zip64 archive back to the input");
    assert_eq!(
        check.offset, ZIP64_LEN,
        "the own decoder gave the whole entry"
    );
    let own_time = started.elapsed();
    eprintln!(
        "zip64 ({case}): {ZIP64_LEN} bytes -> {file_len} bytes; compress {compress_time:.1?}, \
         zip crate read {read_time:.1?}, unzip {unzip_time:.1?}, own decoder {own_time:.1?}"
    );
}
