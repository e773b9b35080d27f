use std::io::{self, Read, Write};

/// Counts and checksums what a backend reads, so [`Stats`](crate::Stats) does not depend on
/// each backend reporting honestly.
pub(crate) struct HashingReader<'a> {
    inner: &'a mut dyn Read,
    hasher: crc32fast::Hasher,
    count: u64,
}

impl<'a> HashingReader<'a> {
    pub(crate) fn new(inner: &'a mut dyn Read) -> Self {
        Self {
            inner,
            hasher: crc32fast::Hasher::new(),
            count: 0,
        }
    }

    pub(crate) fn finish(self) -> (u64, u32) {
        (self.count, self.hasher.finalize())
    }
}

impl Read for HashingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

pub(crate) struct CountingWriter<'a> {
    inner: &'a mut dyn Write,
    count: u64,
}

impl<'a> CountingWriter<'a> {
    pub(crate) fn new(inner: &'a mut dyn Write) -> Self {
        Self { inner, count: 0 }
    }

    pub(crate) fn count(&self) -> u64 {
        self.count
    }
}

impl Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
