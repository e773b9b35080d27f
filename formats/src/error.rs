use std::io;

/// Everything that can go wrong choosing, configuring or running a format.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("unknown format \"{name}\"; known formats: {known}")]
    Unknown { name: String, known: String },

    #[error(
        "format \"{name}\" is registered twice ({first} and {second}); \
         remove one of the crates that register it"
    )]
    Duplicate {
        name: &'static str,
        first: &'static str,
        second: &'static str,
    },

    #[error(
        "level {level} is out of range for format \"{format}\"; use a level from {min} to {max}"
    )]
    LevelOutOfRange {
        format: &'static str,
        level: i32,
        min: i32,
        max: i32,
    },

    #[error("format \"{format}\" takes no compression level; remove the level")]
    LevelNotAccepted { format: &'static str },

    #[error("threads must be at least 1 (leave it out to use every available core)")]
    ZeroThreads,

    #[error("{format} compression failed: {source}")]
    Compress {
        format: &'static str,
        #[source]
        source: io::Error,
    },

    #[error("{format} output does not decode: {source}")]
    Decompress {
        format: &'static str,
        #[source]
        source: io::Error,
    },
}
