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

impl Code for crate::inventory::InventoryError {
    fn exit_code(&self) -> u8 {
        BAD_INPUT
    }
}

impl Code for crate::roles::RoleError {
    fn exit_code(&self) -> u8 {
        BAD_INPUT
    }
}

impl Code for crate::stack::StackError {
    fn exit_code(&self) -> u8 {
        BAD_INPUT
    }
}

impl Code for crate::engine::ApplyError {
    fn exit_code(&self) -> u8 {
        BAD_INPUT
    }
}

impl Code for crate::lab::LabError {
    fn exit_code(&self) -> u8 {
        use crate::lab::LabError;
        match self {
            LabError::Inventory(_) | LabError::Config(_) => BAD_INPUT,
            _ => FAILURE,
        }
    }
}

impl Code for crate::failover::FailoverError {
    fn exit_code(&self) -> u8 {
        match self {
            crate::failover::FailoverError::Input(_) => BAD_INPUT,
            _ => FAILURE,
        }
    }
}

impl Code for crate::probe::ProbeError {
    fn exit_code(&self) -> u8 {
        if self.is_bad_input() {
            BAD_INPUT
        } else {
            FAILURE
        }
    }
}
