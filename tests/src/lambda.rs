//! The function on a Lambda Runtime API: cargo-lambda's emulator, and the binary polling it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::moto::Moto;
use crate::process::{free_port, wait_for_port, KillOnDrop, HANG_LIMIT};

/// The emulator runs `cargo metadata` first, which waits for cargo's locks while a build runs.
const STARTUP_LIMIT: Duration = Duration::from_secs(120);

/// The `s3-compressor` binary as a Lambda function: cargo-lambda's Runtime API emulator on a
/// free port of 127.0.0.1, and the binary started the way Lambda starts it, with no command
/// and the runtime's environment. Both are stopped on drop.
#[derive(Debug)]
pub struct LambdaFunction {
    // Dropped in this order: the function first, then the API it polls.
    function: KillOnDrop,
    emulator: KillOnDrop,
    port: u16,
    dir: tempfile::TempDir,
    agent: ureq::Agent,
}

/// What the Runtime API answered to one invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// 200, or 500 when the function failed (cargo-lambda's choice; the real Invoke API says
    /// 200 with an `X-Amz-Function-Error` header).
    pub status: u16,
    pub body: Value,
}

fn log_file(path: &Path) -> File {
    File::create(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

impl LambdaFunction {
    /// Starts the emulator and the function against `moto`, with `config` as its `--config`
    /// (the built-in default without one) and `env` added to its environment.
    pub fn start(moto: &Moto, config: Option<&Path>, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir for the function's output");
        let port = free_port();

        let emulator_log = dir.path().join("emulator.log");
        let log = log_file(&emulator_log);
        let spawned = Command::new("cargo")
            .args([
                "lambda",
                "watch",
                "--only-lambda-apis",
                "-A",
                "127.0.0.1",
                "-P",
            ])
            .arg(port.to_string())
            // It reads the workspace with `cargo metadata`.
            .current_dir(crate::workspace_root())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file handle"))
            .stderr(log)
            .spawn();
        let mut emulator = match spawned {
            Ok(child) => KillOnDrop(child),
            Err(error) => panic!("cannot run cargo lambda: {error}"),
        };
        if let Err(problem) = wait_for_port(port, &mut emulator, STARTUP_LIMIT) {
            panic!(
                "the Lambda Runtime API emulator did not start: {problem}. The tests need \
                 cargo-lambda on PATH ({}). Its log:\n{}",
                crate::PYTHON_TOOLS,
                std::fs::read_to_string(&emulator_log).unwrap_or_default()
            );
        }

        let mut command = Command::new(crate::s3_compressor_binary());
        command.env_remove("S3_COMPRESSOR_CONFIG");
        moto.point_at(&mut command);
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        command
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{port}/.rt"),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", "_")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log_file(&dir.path().join("function.stdout")))
            .stderr(log_file(&dir.path().join("function.stderr")));
        let function = match command.spawn() {
            Ok(child) => KillOnDrop(child),
            Err(error) => panic!("cannot start the function {command:?}: {error}"),
        };
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(HANG_LIMIT))
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            function,
            emulator,
            port,
            dir,
            agent,
        }
    }

    /// Invokes the function with `payload` as the Lambda Invoke API would, and returns the
    /// function's response, or `{"errorType", "errorMessage"}` when it failed.
    pub fn invoke(&mut self, payload: &Value) -> Invocation {
        if let Some(status) = self.function.exited() {
            panic!(
                "the function exited ({status}) before the invocation:\n{}",
                self.stderr()
            );
        }
        let url = format!(
            "http://127.0.0.1:{}/2015-03-31/functions/_/invocations",
            self.port
        );
        let result = self
            .agent
            .post(&url)
            .header("content-type", "application/json")
            .send(payload.to_string());
        let mut response = match result {
            Ok(response) => response,
            Err(error) => panic!(
                "invoking the function failed: {error}\n--- function stderr ---\n{}\n--- emulator ---\n{}",
                self.stderr(),
                self.emulator_log()
            ),
        };
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .unwrap_or_else(|error| panic!("reading the invocation's response: {error}"));
        let body = serde_json::from_str(&text).unwrap_or_else(|error| {
            panic!(
                "the invocation answered HTTP {status} with a body that is not JSON ({error}): \
                 {text:?}\n--- function stderr ---\n{}",
                self.stderr()
            )
        });
        Invocation { status, body }
    }

    /// What the function wrote to stdout so far (the EMF metric lines).
    pub fn stdout(&self) -> String {
        self.read("function.stdout")
    }

    /// What the function logged so far.
    pub fn stderr(&self) -> String {
        self.read("function.stderr")
    }

    fn emulator_log(&self) -> String {
        self.read("emulator.log")
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Whether the function process is still running.
    pub fn is_running(&mut self) -> bool {
        self.function.exited().is_none()
    }
}

impl Drop for LambdaFunction {
    fn drop(&mut self) {
        self.function.stop();
        self.emulator.stop();
        // A test already failing has said what went wrong; a second panic would abort.
        if !std::thread::panicking() {
            crate::assert_no_leaks("the Lambda function", &self.stdout());
            crate::assert_no_leaks("the Lambda function", &self.stderr());
        }
    }
}
