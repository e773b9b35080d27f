use std::process::ExitCode;

fn main() -> ExitCode {
    if !s3_compressor_allocator::return_large_allocations_when_freed() {
        eprintln!("warning: glibc refused a fixed mmap threshold; freed buffers may stay resident");
    }
    match s3_compressor::cli::Cli::from_command_line().run(&mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
