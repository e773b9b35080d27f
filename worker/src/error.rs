use s3_compressor_config::ConfigError;
use s3_compressor_formats::FormatError;

/// What can stop the worker before it handles anything.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error(transparent)]
    Format(#[from] FormatError),
}
