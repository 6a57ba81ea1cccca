//! `kubectl-sluice`: the kubectl plugin of sluice (kubectl runs it as `kubectl sluice`).
//!
//! Exit codes are part of the interface (see `--help`): scripts can tell "no cluster",
//! "no permission", "nothing matched" and "sluice not installed" apart.

mod bindings;
mod cli;
mod connect;
mod drains;
mod explain;
mod feed;
mod logs;
mod table;

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::{
    cli::{Cli, Command},
    connect::Failure,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completion { shell } = cli.command {
        clap_complete::generate(
            shell,
            &mut Cli::command(),
            "kubectl-sluice",
            &mut std::io::stdout(),
        );
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", table::printable(&format!("{e:#}")));
            match e.downcast_ref::<Failure>() {
                Some(f) => ExitCode::from(f.exit_code()),
                None => ExitCode::FAILURE,
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let target = connect::connect(&cli.global).await?;
    match cli.command {
        Command::Drains { all_namespaces } => drains::run(&target, all_namespaces).await,
        Command::Bindings { all_namespaces } => bindings::run(&target, all_namespaces).await,
        Command::Explain { pod, output } => {
            explain::run(&target, &cli.global.sluice_namespace, &pod, output).await
        }
        Command::Logs(args) => logs::run(&target, &args).await,
        Command::Completion { .. } => Ok(()),
    }
}
