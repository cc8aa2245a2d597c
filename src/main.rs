//! The `hactl` command: parses the command line and dispatches to one function per subcommand.

use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;

use hactl::cli::{Cli, Command, InventoryAction, Output};
use hactl::inventory::{self, Inventory};
use hactl::{exit, lab};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Apply(_) => not_implemented("apply"),
        Command::FailoverTest(_) => not_implemented("failover-test"),
        Command::Probe(_) => not_implemented("probe"),
        Command::Lab(args) => lab::run(&args),
        Command::Inventory(args) => inventory_command(args.action),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("hactl: {err:#}");
            let bad_input = err.downcast_ref::<inventory::InventoryError>().is_some();
            ExitCode::from(if bad_input {
                exit::BAD_INPUT
            } else {
                exit::FAILURE
            })
        }
    }
}

/// Prints what an inventory means: a host listing or the group tree.
fn inventory_command(action: InventoryAction) -> Result<u8> {
    match action {
        InventoryAction::List { file, output } => {
            let inventory = Inventory::load(&file)?;
            match output {
                Output::Text => print!("{}", inventory::list_text(&inventory)),
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&inventory::list_json(&inventory))?
                ),
            }
        }
        InventoryAction::Graph { file } => {
            print!("{}", inventory::graph(&Inventory::load(&file)?));
        }
    }
    Ok(exit::OK)
}

/// A subcommand whose issue has not landed yet.
fn not_implemented(name: &str) -> Result<u8> {
    eprintln!("hactl {name}: not implemented yet");
    Ok(exit::HOST_FAILED)
}
