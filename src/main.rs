//! The `teal` binary: parse the command line, hand over to [`teal::cli::run`].

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    teal::cli::run(teal::cli::Cli::parse())
}
