use std::process::ExitCode;

fn main() -> ExitCode {
    patchpull::cli::main()
}
