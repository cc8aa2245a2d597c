//! Exit codes, in one place.

/// Everything went as asked.
pub const OK: u8 = 0;
/// The command ran and found a failure (a missed target, a failed check).
pub const FAILURE: u8 = 1;
/// A host failed, or the command is not implemented yet (clap's usage errors are 2 too).
pub const HOST_FAILED: u8 = 2;
/// A host could not be reached.
pub const UNREACHABLE: u8 = 3;
/// Bad input (inventory, role, template, config): nothing was run on any host.
pub const BAD_INPUT: u8 = 4;

/// An error that knows the exit code it means, so the code a user sees is decided where the
/// error is, not in a list at the command line's edge.
pub trait Code {
    fn exit_code(&self) -> u8;
}
