use std::process::ExitCode;

fn main() -> ExitCode {
    match s3_compressor::cli::Cli::from_command_line().run(&mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
