use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The OS error is the source, not part of the message: `{:#}` (anyhow's chain) prints it
    /// once, after this.
    #[error("cannot read config file {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Everything wrong with the file at once, in file order, so one edit can fix them all.
    #[error("{}", ProblemLines::new(.origin, .problems))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The problems of an invalid config; empty for a file that could not be read.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Read { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

/// One thing wrong with a config file, at the value or key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based.
    pub line: usize,
    /// 1-based, counted in characters rather than bytes so editors agree with it.
    pub column: usize,
    /// A sentence saying what is wrong and what to do about it.
    pub message: String,
}

/// `LINE:COLUMN: message`, the tail of the `ORIGIN:LINE:COLUMN: message` that editors and
/// terminals turn into links.
impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

/// One `ORIGIN:LINE:COLUMN: message` line per problem.
struct ProblemLines<'a> {
    origin: &'a str,
    problems: &'a [Problem],
}

impl<'a> ProblemLines<'a> {
    fn new(origin: &'a str, problems: &'a [Problem]) -> Self {
        Self { origin, problems }
    }
}

impl fmt::Display for ProblemLines<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, problem) in self.problems.iter().enumerate() {
            if index > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{}:{problem}", self.origin)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_lists_one_line_per_problem() {
        let error = ConfigError::Invalid {
            origin: "compressor.toml".into(),
            problems: vec![
                Problem {
                    line: 2,
                    column: 10,
                    message: "first".into(),
                },
                Problem {
                    line: 7,
                    column: 1,
                    message: "second".into(),
                },
            ],
        };
        assert_eq!(
            error.to_string(),
            "compressor.toml:2:10: first\ncompressor.toml:7:1: second"
        );
        assert_eq!(error.problems().len(), 2);
    }
}
