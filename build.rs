//! The built-in roles are compiled into the binary: rebuild when any of their files changes.

fn main() {
    println!("cargo:rerun-if-changed=roles");
    // Role grafana ships them: roles/grafana/files/dashboards links there.
    println!("cargo:rerun-if-changed=dashboards");
}
