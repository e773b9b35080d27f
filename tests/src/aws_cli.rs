//! The AWS CLI for a test's own checks, run in one Python process for the whole test.
//!
//! Each `aws` process spends most of a CPU second importing botocore and the CLI before it
//! sends a request. The deployment tests check what `deploy.sh` made with about a hundred such
//! calls each, which was minutes of CPU on a 2-core machine. Here the same CLI code (awscli's
//! own `clidriver`, the entry point of the `aws` script) runs each call in a process started
//! once, with that call's arguments and environment. What users run, `deploy.sh` and
//! `cleanup.sh`, still start `aws` as a process for every call.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Mutex;

use crate::process::Finished;

/// Reads one request a line, `{"args": [...], "env": {"NAME": "value" or null}}`, and answers
/// each with one line, `{"rc": N, "stdout": "...", "stderr": "..."}`.
const SHELL: &str = r#"
import contextlib, io, json, os, sys
from awscli.clidriver import create_clidriver
base = dict(os.environ)
answers = sys.stdout
for line in sys.stdin:
    request = json.loads(line)
    os.environ.clear()
    os.environ.update(base)
    for name, value in request["env"].items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = create_clidriver().main(request["args"])
        except SystemExit as stop:
            rc = stop.code if isinstance(stop.code, int) else 1
    answers.write(json.dumps({"rc": rc, "stdout": out.getvalue(), "stderr": err.getvalue()}) + "\n")
    answers.flush()
"#;

struct Shell {
    // Kept so that the process is not reaped early; it ends when its stdin closes, with the
    // test's process.
    _child: Child,
    requests: ChildStdin,
    answers: BufReader<ChildStdout>,
}

static RUNNING: Mutex<Option<Shell>> = Mutex::new(None);

/// `aws ARGS` with the environment `command` was given (its `env` and `env_remove`), as if
/// `command` were the `aws` process.
pub fn aws(command: &Command, args: &[&str]) -> Finished {
    let env: serde_json::Map<String, serde_json::Value> = command
        .get_envs()
        .map(|(name, value)| {
            (
                name.to_string_lossy().into_owned(),
                value.map_or(serde_json::Value::Null, |value| {
                    serde_json::Value::String(value.to_string_lossy().into_owned())
                }),
            )
        })
        .collect();
    let request = serde_json::json!({ "args": args, "env": env });
    let mut running = RUNNING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let shell = running.get_or_insert_with(start);
    writeln!(shell.requests, "{request}").expect("send a request to the AWS CLI shell");
    shell
        .requests
        .flush()
        .expect("send a request to the AWS CLI shell");
    let mut line = String::new();
    shell
        .answers
        .read_line(&mut line)
        .expect("read the AWS CLI shell's answer");
    assert!(
        !line.is_empty(),
        "the AWS CLI shell stopped on aws {args:?}; run that command as a process to see why"
    );
    let answer: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|error| panic!("the AWS CLI shell answered {line:?}: {error}"));
    let text = |name: &str| answer[name].as_str().unwrap_or_default().to_owned();
    let code = answer["rc"].as_i64().unwrap_or(1);
    Finished {
        status: ExitStatus::from_raw(i32::try_from(code & 0xff).unwrap_or(1) << 8),
        stdout: text("stdout"),
        stderr: text("stderr"),
    }
}

/// The Python that the first `aws` script on PATH runs (its `#!` line), running [`SHELL`].
fn start() -> Shell {
    let python = python_of_aws().expect("the AWS CLI (an aws script run by Python) on PATH");
    let mut child = Command::new(&python)
        .args(["-c", SHELL])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        // Not the test's: a process still holding the test's output when it ends is a leak
        // to the test runner. Each call's own stderr comes back in its answer.
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {python} for the AWS CLI: {error}"));
    let requests = child.stdin.take().expect("piped stdin");
    let answers = BufReader::new(child.stdout.take().expect("piped stdout"));
    Shell {
        _child: child,
        requests,
        answers,
    }
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
