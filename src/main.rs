//! The `nolist` binary: everything lives in the library; see `nolist::cli`.

fn main() -> std::process::ExitCode {
    nolist::cli::main()
}
