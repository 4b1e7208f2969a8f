//! Namespaces: the YAML spec teams write (the `prism-namespace` crate, shared
//! with `prismctl`), and loading them from a directory.

pub use prism_namespace::{
    Access, Consistency, Durability, Metadata, NamespaceDoc, NamespaceSpec, Needs, PatternKind, SpecError, validate,
    yaml,
};

use std::path::{Path, PathBuf};

/// A namespace file that could not be used, and why.
#[derive(Debug, Clone)]
pub struct LoadError {
    pub file: PathBuf,
    pub message: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

/// Namespace files of a directory: the valid ones, and an error for each
/// file that was skipped. One bad file never hides the others.
#[derive(Debug, Default)]
pub struct Loaded {
    pub namespaces: Vec<(PathBuf, NamespaceDoc)>,
    pub errors: Vec<LoadError>,
}

/// Reads every `*.yaml` / `*.yml` file of `dir`, in name order.
pub fn load_dir(dir: &Path) -> std::io::Result<Loaded> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    let mut loaded = Loaded::default();
    for file in files {
        let parsed = std::fs::read_to_string(&file).map_err(|e| e.to_string()).and_then(|text| {
            NamespaceDoc::parse(&text)
                .map_err(|errs| errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
        });
        match parsed {
            Ok(doc) if loaded.namespaces.iter().any(|(_, d)| d.metadata.name == doc.metadata.name) => {
                loaded.errors.push(LoadError {
                    file,
                    message: format!("namespace {:?} is already defined by another file", doc.metadata.name),
                });
            }
            Ok(doc) => loaded.namespaces.push((file, doc)),
            Err(message) => loaded.errors.push(LoadError { file, message }),
        }
    }
    Ok(loaded)
}
