//! The `hactl` binary. The commands, one function each, are in `src/commands.rs`.

fn main() -> std::process::ExitCode {
    hactl::main()
}
