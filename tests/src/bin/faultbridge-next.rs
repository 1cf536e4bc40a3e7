//! A second build of `faultbridge` that reports another version (the
//! package's, with `+next`): the "new binary" of the upgrade tests.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    faultbridge::upgrade::info::set_version(concat!(env!("CARGO_PKG_VERSION"), "+next"));
    faultbridge::cli::main()
}
