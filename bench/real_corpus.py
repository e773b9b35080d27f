#!/usr/bin/env python3
"""Real corpora for the deflate benchmark: files this machine already holds, each kind tarred
into one object, as a user would upload a folder.

Writes into OUTDIR (each at most --max-mb MiB of files, taken in sorted path order until the
next file would pass the cap):

  html.tar        the HTML pages of the Rust toolchain's documentation sites
                  ($(rustc --print sysroot)/share/doc/rust/html/{book,cargo,reference,rustc,
                  nomicon,embedded-book,rust-by-example,unstable-book}/**/*.html)
  source.tar      the source of this workspace's dependencies as Cargo.lock pins them
                  (~/.cargo/registry/src/*/NAME-VERSION/**, every file; `cargo fetch` and a
                  build put them there)
  json.tar        botocore's AWS service models (botocore/data/**/service-2.json, stored
                  gzipped in recent botocore and unpacked here) of the botocore that
                  `python3 -c 'import botocore'` finds
  binaries.tar    the ELF executables in /usr/bin
  compressed.tar  the gzipped files under /usr/share/doc (Debian's changelogs and manuals)

There is no CSV corpus: this machine holds no real CSV of more than 1.4 MiB (the generated
corpus has records.csv). A source that is missing is skipped with a note on stderr.

Members carry their path relative to the source folder, mode 0644, owner 0 and mtime 0, so
the same files give byte-identical tars.

  python3 bench/real_corpus.py /tmp/s3-compressor-real
"""
import argparse
import gzip
import io
import os
import subprocess
import sys
import tarfile

MiB = 1 << 20
WORKSPACE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUST_DOC_SITES = ["book", "cargo", "reference", "rustc", "nomicon", "embedded-book",
                  "rust-by-example", "unstable-book"]


def walk(root, keep):
    """Every regular file under root that keep(path) accepts, sorted by path."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in files:
            path = os.path.join(folder, name)
            if os.path.isfile(path) and not os.path.islink(path) and keep(path):
                found.append(path)
    return sorted(found)


def write_tar(out, members, cap):
    """members: (name, read()) in order; stops before the member that would pass cap bytes."""
    total = 0
    count = 0
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, read in members:
            data = read()
            if total + len(data) > cap:
                break
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))
            total += len(data)
            count += 1
    print(f"{out}: {count} files, {total} bytes of content, {os.path.getsize(out)} bytes",
          file=sys.stderr)


def files(root, paths):
    for path in paths:
        yield os.path.relpath(path, root), (lambda path=path: open(path, "rb").read())


def html():
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True,
                             check=True, cwd=WORKSPACE).stdout.strip()
    root = os.path.join(sysroot, "share", "doc", "rust", "html")
    for site in RUST_DOC_SITES:
        base = os.path.join(root, site)
        yield from files(root, walk(base, lambda path: path.endswith(".html")))


def source():
    registry = os.path.expanduser("~/.cargo/registry/src")
    indexes = sorted(os.listdir(registry)) if os.path.isdir(registry) else []
    with open(os.path.join(WORKSPACE, "Cargo.lock")) as lock:
        text = lock.read()
    crates = []
    for package in text.split("[[package]]")[1:]:
        fields = dict(line.split(" = ", 1) for line in package.strip().splitlines()
                      if " = " in line)
        if "source" in fields:
            crates.append(f"{fields['name'].strip(chr(34))}-{fields['version'].strip(chr(34))}")
    for crate in sorted(crates):
        for index in indexes:
            base = os.path.join(registry, index, crate)
            if os.path.isdir(base):
                yield from files(os.path.join(registry, index), walk(base, lambda _: True))
                break


def json_models():
    found = subprocess.run(["python3", "-c", "import botocore, os; "
                            "print(os.path.dirname(botocore.__file__))"],
                           capture_output=True, text=True, check=True)
    root = os.path.join(found.stdout.strip(), "data")
    for path in walk(root, lambda path: os.path.basename(path).startswith("service-2.json")):
        name = os.path.relpath(path, root)
        if path.endswith(".gz"):
            yield name[:-3], (lambda path=path: gzip.open(path, "rb").read())
        else:
            yield name, (lambda path=path: open(path, "rb").read())


def is_elf(path):
    with open(path, "rb") as file:
        return file.read(4) == b"\x7fELF"


def binaries():
    yield from files("/usr/bin", [path for path in walk("/usr/bin", is_elf)
                                  if os.path.dirname(path) == "/usr/bin"])


def compressed():
    yield from files("/usr/share/doc", walk("/usr/share/doc", lambda p: p.endswith(".gz")))


CORPORA = {"html": html, "source": source, "json": json_models, "binaries": binaries,
           "compressed": compressed}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir")
    parser.add_argument("--max-mb", type=int, default=64, help="cap per corpus, MiB")
    parser.add_argument("--only", action="append", choices=sorted(CORPORA))
    args = parser.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    for name, members in CORPORA.items():
        if args.only and name not in args.only:
            continue
        try:
            write_tar(os.path.join(args.outdir, f"{name}.tar"), members(), args.max_mb * MiB)
        except (OSError, subprocess.CalledProcessError) as error:
            print(f"{name}: skipped ({error})", file=sys.stderr)


if __name__ == "__main__":
    main()
