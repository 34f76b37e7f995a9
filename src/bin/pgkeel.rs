//! `pgkeel --config FILE`: a data node.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use pgkeel::config::NodeKind;

/// PostgreSQL high availability with embedded Raft: one per database host.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The node's YAML configuration file.
    #[arg(short, long, env = "PGKEEL_CONFIG")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    pgkeel::entry::run_voter_binary(&args.config, NodeKind::Data)
}
