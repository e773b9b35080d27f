use s3_compressor_config::ConfigError;
use s3_compressor_formats::FormatError;

/// What can stop the worker before it handles anything.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),

    #[error(transparent)]
    Format(#[from] FormatError),

    /// The rules could not be rendered for the config's hash (serde_json found no way to).
    #[error("cannot render the config's rules as JSON: {0}")]
    Render(#[source] serde_json::Error),
}
