//! What is measured on every input: s3-compressor end to end, its codecs alone, and the CLI
//! tools a user would run instead.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

/// The formats measured end to end and as codecs.
pub const FORMATS: [&str; 3] = ["zip", "gzip", "zstd"];

/// One column of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contender {
    /// `s3-compressor compress` against the local S3 endpoint.
    EndToEnd(&'static str),
    /// `s3-compressor-bench codec`: the format's codec on a local file.
    Codec(&'static str),
    /// `s3-compressor-bench codec --prove`: the codec, and the proof the worker runs on it.
    Proven(&'static str),
    Tool(Tool),
    /// The same as `EndToEnd`, `Codec` and `Tool`, the measured process on one CPU: what a
    /// Lambda function of up to 1,769 MB (one vCPU) gets.
    EndToEndOneCore(&'static str),
    CodecOneCore(&'static str),
    ToolOneCore(Tool),
}

/// The format measured on one core, end to end and as a codec.
pub const ONE_CORE_FORMAT: &str = "zip";

/// The tool measured on one core, beside [`ONE_CORE_FORMAT`].
pub const ONE_CORE_TOOL: Tool = Tool::Zip;

/// How a contender was run, as recorded in results.json.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    EndToEnd,
    Codec,
    Tool,
}

impl Contender {
    /// Every contender, in table order.
    pub fn all(tools: bool) -> Vec<Contender> {
        let mut all: Vec<Contender> = FORMATS.iter().map(|f| Contender::EndToEnd(f)).collect();
        all.push(Contender::EndToEndOneCore(ONE_CORE_FORMAT));
        all.extend(FORMATS.iter().map(|f| Contender::Codec(f)));
        all.push(Contender::CodecOneCore(ONE_CORE_FORMAT));
        all.extend(FORMATS.iter().map(|f| Contender::Proven(f)));
        if tools {
            all.extend(Tool::ALL.iter().copied().map(Contender::Tool));
            all.push(Contender::ToolOneCore(ONE_CORE_TOOL));
        }
        all
    }

    pub fn name(self) -> String {
        match self {
            Contender::EndToEnd(format) => end_to_end_name(format),
            Contender::Codec(format) => codec_name(format),
            Contender::Proven(format) => proven_name(format),
            Contender::Tool(tool) => tool.name().to_owned(),
            Contender::EndToEndOneCore(format) => end_to_end_one_core_name(format),
            Contender::CodecOneCore(format) => one_core_name(&codec_name(format)),
            Contender::ToolOneCore(tool) => one_core_name(tool.name()),
        }
    }

    pub fn kind(self) -> Kind {
        match self {
            Contender::EndToEnd(_) | Contender::EndToEndOneCore(_) => Kind::EndToEnd,
            Contender::Codec(_) | Contender::Proven(_) | Contender::CodecOneCore(_) => Kind::Codec,
            Contender::Tool(_) | Contender::ToolOneCore(_) => Kind::Tool,
        }
    }

    pub fn format(self) -> Option<&'static str> {
        match self {
            Contender::EndToEnd(format)
            | Contender::Codec(format)
            | Contender::Proven(format)
            | Contender::EndToEndOneCore(format)
            | Contender::CodecOneCore(format) => Some(format),
            Contender::Tool(_) | Contender::ToolOneCore(_) => None,
        }
    }

    /// Whether its measured process runs on one CPU.
    pub fn one_core(self) -> bool {
        matches!(
            self,
            Contender::EndToEndOneCore(_) | Contender::CodecOneCore(_) | Contender::ToolOneCore(_)
        )
    }
}

pub fn end_to_end_name(format: &str) -> String {
    format!("s3-compressor {format} (e2e)")
}

pub fn codec_name(format: &str) -> String {
    format!("{format} codec only")
}

pub fn proven_name(format: &str) -> String {
    format!("{format} codec + proof")
}

pub fn end_to_end_one_core_name(format: &str) -> String {
    format!("s3-compressor {format} (e2e, 1 core)")
}

/// A contender's name with its measured process on one CPU.
pub fn one_core_name(name: &str) -> String {
    format!("{name} (1 core)")
}

/// The CLI tools, at the levels that match the formats' defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Zip,
    Gzip,
    Pigz,
    Zstd,
    ZstdT2,
}

impl Tool {
    pub const ALL: [Tool; 5] = [Tool::Zip, Tool::Gzip, Tool::Pigz, Tool::Zstd, Tool::ZstdT2];

    pub fn name(self) -> &'static str {
        match self {
            Tool::Zip => "zip -6",
            Tool::Gzip => "gzip -6",
            Tool::Pigz => "pigz -6 -p 2",
            Tool::Zstd => "zstd -3",
            Tool::ZstdT2 => "zstd -3 -T2",
        }
    }

    pub fn program(self) -> &'static str {
        match self {
            Tool::Zip => "zip",
            Tool::Gzip => "gzip",
            Tool::Pigz => "pigz",
            Tool::Zstd | Tool::ZstdT2 => "zstd",
        }
    }

    /// The Debian/Ubuntu package that installs it.
    pub fn package(self) -> &'static str {
        self.program()
    }

    /// The command compressing `input` into `output`, and whether the bench must send its
    /// stdout to `output` (the stream tools write to stdout, as `tool -c IN > OUT`).
    pub fn command(self, input: &Path, output: &Path) -> (Command, bool) {
        let mut command = Command::new(self.program());
        let to_stdout = match self {
            Tool::Zip => {
                command.args(["-6", "-q"]).arg(output).arg(input);
                false
            }
            Tool::Gzip => {
                command.args(["-6", "-c"]).arg(input);
                true
            }
            Tool::Pigz => {
                command.args(["-6", "-p", "2", "-c"]).arg(input);
                true
            }
            Tool::Zstd => {
                command.args(["-3", "-q", "-c"]).arg(input);
                true
            }
            Tool::ZstdT2 => {
                command.args(["-3", "-T2", "-q", "-c"]).arg(input);
                true
            }
        };
        (command, to_stdout)
    }
}

/// Fails, naming every missing tool and the package that installs it, unless all are on PATH.
pub fn check_tools() -> anyhow::Result<()> {
    let mut missing: Vec<Tool> = Tool::ALL
        .iter()
        .copied()
        .filter(|tool| find_on_path(tool.program()).is_none())
        .collect();
    missing.dedup_by_key(|tool| tool.program());
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|tool| tool.program()).collect();
    let packages: Vec<&str> = missing.iter().map(|tool| tool.package()).collect();
    anyhow::bail!(
        "{} not found on PATH; install with `sudo apt-get install -y {}`, or pass --skip-tools \
         to leave the CLI tools out",
        names.join(", "),
        packages.join(" ")
    )
}

/// The first executable file called `name` in a directory of PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|meta| {
                meta.is_file()
                    && std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0
            })
        })
}
