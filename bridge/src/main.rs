//! The `faultbridge` command.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    faultbridge::cli::main()
}
