//! `pgkeel-witness --config FILE`: a Raft voter with no PostgreSQL, for the
//! third host of a two-data-node site.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use pgkeel::config::NodeKind;

/// The pgkeel witness: votes and stores, never runs PostgreSQL.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The witness's YAML configuration file.
    #[arg(short, long, env = "PGKEEL_CONFIG")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    pgkeel::entry::run_voter_binary(&args.config, NodeKind::Witness)
}
