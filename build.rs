//! The built-in roles are compiled into the binary: rebuild when any of their files changes.

fn main() {
    println!("cargo:rerun-if-changed=roles");
}
