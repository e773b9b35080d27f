//! The corpus: which inputs exist, reading them into the page cache, and the streamed input.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The single-file inputs make_corpus.py writes, in table order.
pub const INPUT_NAMES: [&str; 3] = ["logs.jsonl", "records.csv", "random.bin"];
/// The folder of small files.
pub const SMALL_DIR: &str = "small";

/// One input file.
#[derive(Debug, Clone)]
pub struct Input {
    pub name: String,
    pub path: PathBuf,
    pub bytes: u64,
}

/// What was found in the corpus folder.
#[derive(Debug, Default)]
pub struct Corpus {
    pub inputs: Vec<Input>,
    /// The files of `small/`, sorted.
    pub small: Vec<PathBuf>,
    /// Why something is not measured.
    pub notes: Vec<String>,
}

impl Corpus {
    pub fn discover(dir: &Path) -> anyhow::Result<Self> {
        anyhow::ensure!(
            dir.is_dir(),
            "the corpus {} is not a folder; make one with python3 ../shared/bench/make_corpus.py {}",
            dir.display(),
            dir.display()
        );
        let mut corpus = Corpus::default();
        for name in INPUT_NAMES {
            let path = dir.join(name);
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() => corpus.inputs.push(Input {
                    name: name.to_owned(),
                    path,
                    bytes: meta.len(),
                }),
                _ => corpus
                    .notes
                    .push(format!("{name} is not in the corpus; skipped")),
            }
        }
        let small = dir.join(SMALL_DIR);
        if small.is_dir() {
            for entry in std::fs::read_dir(&small)
                .with_context(|| format!("cannot list {}", small.display()))?
            {
                let entry = entry.with_context(|| format!("cannot list {}", small.display()))?;
                if entry.file_type().is_ok_and(|kind| kind.is_file()) {
                    corpus.small.push(entry.path());
                }
            }
            corpus.small.sort();
        }
        if corpus.small.is_empty() {
            corpus.notes.push(format!(
                "{SMALL_DIR}/ is missing or empty in the corpus; the many-small-objects run is skipped"
            ));
        }
        Ok(corpus)
    }

    pub fn input(&self, name: &str) -> Option<&Input> {
        self.inputs.iter().find(|input| input.name == name)
    }
}

/// Reads a file to its end and discards it, so it is in the page cache for every contender.
pub fn warm_page_cache(path: &Path) -> anyhow::Result<u64> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    io::copy(&mut file, &mut io::sink()).with_context(|| format!("cannot read {}", path.display()))
}

/// `source` repeated until `limit` bytes were given: the streamed input, never stored whole.
#[derive(Debug)]
pub struct Repeated {
    path: PathBuf,
    file: File,
    /// Bytes still to give.
    left: u64,
}

impl Repeated {
    pub fn new(path: &Path, limit: u64) -> anyhow::Result<Self> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        anyhow::ensure!(
            file.metadata()?.len() > 0,
            "{} is empty, it cannot be repeated",
            path.display()
        );
        Ok(Self {
            path: path.to_owned(),
            file,
            left: limit,
        })
    }
}

impl Read for Repeated {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = usize::try_from(self.left)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let mut n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            // The end of the source: start it again.
            self.file = File::open(&self.path)?;
            n = self.file.read(&mut buf[..want])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} became empty", self.path.display()),
                ));
            }
        }
        self.left -= n as u64;
        Ok(n)
    }
}
