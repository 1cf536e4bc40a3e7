//! The `faultbridge` command.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    // A packager may stamp the build: FAULTBRIDGE_VERSION=2.1.0-3 cargo build.
    if let Some(v) = option_env!("FAULTBRIDGE_VERSION") {
        faultbridge::upgrade::info::set_version(v);
    }
    faultbridge::cli::main()
}
