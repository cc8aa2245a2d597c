//! Where a role's files come from: a folder on disk, or the built-in roles compiled into the
//! binary (so an installed hactl works from any directory).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use include_dir::{include_dir, Dir};
use indexmap::IndexMap;

use super::Asset;

static BUILTIN: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/roles");

pub enum Source {
    Disk(PathBuf),
    Builtin(&'static Dir<'static>),
}

/// A text file of the built-in roles folder.
pub fn builtin_text(path: &str) -> Option<String> {
    BUILTIN
        .get_file(path)
        .and_then(|f| f.contents_utf8())
        .map(str::to_string)
}

/// The names of the built-in roles.
pub fn builtin_roles() -> Vec<String> {
    BUILTIN
        .dirs()
        .map(|d| d.path().display().to_string())
        .collect()
}

impl Source {
    /// The role folder `name`: beside the site file first, then built in.
    pub fn find(name: &str, dir: Option<&Path>) -> Option<Source> {
        if let Some(dir) = dir {
            // Beside the site file, or in roles/ beside it (an Ansible playbook directory).
            for candidate in [dir.join(name), dir.join("roles").join(name)] {
                if candidate.is_dir() {
                    return Some(Source::Disk(candidate));
                }
            }
        }
        BUILTIN.get_dir(name).map(Source::Builtin)
    }

    /// How a file of this role is named in messages.
    pub fn display(&self, file: &str) -> Arc<str> {
        match self {
            Source::Disk(dir) => Arc::from(super::relative(&dir.join(file)).display().to_string()),
            Source::Builtin(d) => {
                Arc::from(format!("roles/{}/{file} (built-in)", d.path().display()))
            }
        }
    }

    /// A text file of the role, if it exists.
    pub fn text(&self, file: &str) -> Option<(Arc<str>, String)> {
        let text = match self {
            Source::Disk(dir) => std::fs::read_to_string(dir.join(file)).ok()?,
            Source::Builtin(d) => d
                .get_file(d.path().join(file))?
                .contents_utf8()?
                .to_string(),
        };
        Some((self.display(file), text))
    }

    /// Every file under `sub` (templates/, files/), by path relative to it.
    pub fn assets(&self, sub: &str) -> IndexMap<String, Asset> {
        let mut out = IndexMap::new();
        match self {
            Source::Disk(dir) => disk_assets(&dir.join(sub), "", &mut out),
            Source::Builtin(d) => {
                if let Some(sub_dir) = d.get_dir(d.path().join(sub)) {
                    builtin_assets(sub_dir, sub_dir.path(), &mut out);
                }
            }
        }
        for (rel, asset) in out.iter_mut() {
            asset.display = self.display(&format!("{sub}/{rel}"));
        }
        out
    }
}

fn disk_assets(dir: &Path, prefix: &str, out: &mut IndexMap<String, Asset>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        let path = entry.path();
        if path.is_dir() {
            disk_assets(&path, &format!("{name}/"), out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.insert(
                name,
                Asset {
                    display: Arc::from(""),
                    bytes,
                },
            );
        }
    }
}

fn builtin_assets(dir: &'static Dir<'static>, base: &Path, out: &mut IndexMap<String, Asset>) {
    for file in dir.files() {
        if let Ok(rel) = file.path().strip_prefix(base) {
            out.insert(
                rel.display().to_string(),
                Asset {
                    display: Arc::from(""),
                    bytes: file.contents().to_vec(),
                },
            );
        }
    }
    for sub in dir.dirs() {
        builtin_assets(sub, base, out);
    }
}
