//! An `aws` command for the deployment tests that pays Python's start-up once per test.
//!
//! Each `aws` process spends most of a CPU second importing botocore and the CLI before it
//! sends a request, and a deployment test makes well over a hundred calls: `deploy.sh` and
//! `cleanup.sh` about thirty a run, the test's own checks the rest. That was minutes of CPU on a
//! 2-core machine. [`bin_dir`] holds an `aws` that hands its arguments, environment, working
//! folder and standard streams over a Unix socket to a process that imported the CLI once; that
//! process forks, and the child runs awscli's own `clidriver` (the entry point of the real `aws`
//! script) on the caller's streams and answers with its exit code. The scripts and the checks
//! run the same CLI code on the same arguments; only the imports are shared.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;

use crate::process::{Finished, Running, HANG_LIMIT};

/// The process that imported the CLI: `python3 -c ZYGOTE SOCKET`. It prints `ready` once it
/// listens, forks a child for each connection, and exits when its stdin closes (when the test's
/// process ends), removing the socket's folder.
const ZYGOTE: &str = r#"
import json, os, selectors, shutil, signal, socket, sys
before = dict(os.environ)
from awscli.clidriver import create_clidriver
create_clidriver()  # imports the modules of every command now, not in each child
# What importing the CLI set (AWS_DATA_PATH, where it finds its own data): every call needs it.
imported = {name: value for name, value in os.environ.items() if before.get(name) != value}
listener = socket.socket(socket.AF_UNIX)
listener.bind(sys.argv[1])
listener.listen(64)
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
events = selectors.DefaultSelector()
events.register(listener, selectors.EVENT_READ)
events.register(sys.stdin.fileno(), selectors.EVENT_READ)
print("ready", flush=True)

def serve(connection):
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _, streams, _, _ = socket.recv_fds(connection, 1, 3)
    request = b""
    while chunk := connection.recv(1 << 16):
        request += chunk
    request = json.loads(request)
    for target, stream in enumerate(streams):
        os.dup2(stream, target)
        os.close(stream)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ.update(imported)
    try:
        code = create_clidriver().main(request["args"])
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    sys.stdout.flush()
    sys.stderr.flush()
    connection.sendall(str(code or 0).encode())
    os._exit(0)

while True:
    for key, _ in events.select():
        if key.fileobj != listener:
            if not os.read(sys.stdin.fileno(), 4096):
                shutil.rmtree(os.path.dirname(sys.argv[1]), ignore_errors=True)
                sys.exit(0)
            continue
        connection, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            try:
                serve(connection)
            finally:
                os._exit(70)
        connection.close()
"#;

/// The `aws` in [`bin_dir`]: `-S` skips the virtualenv's site-packages, and with them most of
/// Python's start-up; it needs only the standard library.
const CLIENT: &str = r#"
import json, os, socket, sys
streams = []
for fd in (0, 1, 2):
    try:
        os.fstat(fd)
        streams.append(fd)
    except OSError:
        streams.append(os.open(os.devnull, os.O_RDWR))
zygote = socket.socket(socket.AF_UNIX)
zygote.connect(SOCKET)
socket.send_fds(zygote, [b"-"], streams)
zygote.sendall(json.dumps({"args": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}).encode())
zygote.shutdown(socket.SHUT_WR)
answer = b""
while chunk := zygote.recv(64):
    answer += chunk
if not answer.isdigit():
    sys.exit("aws (the tests' preloaded AWS CLI) ended without an exit code; run the real aws to see why")
sys.exit(int(answer))
"#;

struct Zygote {
    // Kept so that its stdin closes, and it exits, only when the test's process ends.
    _child: Child,
    _stdin: ChildStdin,
    /// Removed by the zygote as it exits: a static is never dropped.
    dir: PathBuf,
}

static STARTED: OnceLock<Zygote> = OnceLock::new();

/// A folder holding an `aws` that runs the CLI in a child of the preloaded process: put it
/// first on `PATH` for `deploy.sh` and `cleanup.sh`.
pub fn bin_dir() -> &'static Path {
    &STARTED.get_or_init(start).dir
}

/// `aws ARGS` run by the `aws` of [`bin_dir`], with `command`'s environment (its `env` and
/// `env_remove`).
pub fn aws(command: &Command, args: &[&str]) -> Finished {
    let mut aws = Command::new(bin_dir().join("aws"));
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => aws.env(name, value),
            None => aws.env_remove(name),
        };
    }
    Running::spawn(aws.args(args)).finish(HANG_LIMIT)
}

/// The Python that the first `aws` script on PATH runs (its `#!` line), running [`ZYGOTE`].
fn start() -> Zygote {
    let python = python_of_aws().expect("the AWS CLI (an aws script run by Python) on PATH");
    let dir = tempfile::tempdir()
        .expect("a temporary folder for the AWS CLI's socket")
        .keep();
    let socket = dir.join("aws.sock");
    let mut child = Command::new(&python)
        .args(["-c", ZYGOTE])
        .arg(&socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // Not the test's: a process still holding the test's output when it ends is a leak
        // to the test runner. Each call's own stderr is the caller's.
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {python} for the AWS CLI: {error}"));
    let stdin = child.stdin.take().expect("piped stdin");
    let mut ready = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut ready)
        .expect("read whether the AWS CLI started");
    assert_eq!(
        ready.trim(),
        "ready",
        "the preloaded AWS CLI did not start; does `{python} -c 'import awscli'` work?"
    );
    let client = format!(
        "#!{python} -S\nSOCKET = {:?}\n{CLIENT}",
        socket.display().to_string()
    );
    write_executable(&dir.join("aws"), &client);
    Zygote {
        _child: child,
        _stdin: stdin,
        dir,
    }
}

fn write_executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write the tests' aws");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .expect("make the tests' aws executable");
}

fn python_of_aws() -> Option<String> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("aws"))
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .find_map(|script| {
            let python = script.lines().next()?.strip_prefix("#!")?.trim();
            python.contains("python").then(|| python.to_owned())
        })
}
