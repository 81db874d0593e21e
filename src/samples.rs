//! The project's own sample manifests (`samples/` in the repository, built into the binary):
//! httpbin, its gateway, curl, sleep, a JWT issuer (our own), and Bookinfo with its `networking/` files, with the names, labels, ports, images and service
//! accounts of Istio's samples, at Istio's paths, so istio.io's commands work unchanged.
//! `up` and the labs apply them; `meshrig samples DIR` writes them out.

use std::path::{Path, PathBuf};

use include_dir::{include_dir, Dir};

static SAMPLES: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/samples");

/// A sample by its path under `samples/` (`httpbin/httpbin.yaml`).
pub fn get(path: &str) -> Option<&'static str> {
    SAMPLES.get_file(path).and_then(|f| f.contents_utf8())
}

/// Every sample, as (path under `samples/`, text), in path order.
pub fn all() -> Vec<(String, &'static str)> {
    fn walk(dir: &'static Dir<'static>, out: &mut Vec<(String, &'static str)>) {
        for f in dir.files() {
            if let Some(text) = f.contents_utf8() {
                out.push((f.path().to_string_lossy().into_owned(), text));
            }
        }
        for d in dir.dirs() {
            walk(d, out);
        }
    }
    let mut out = Vec::new();
    walk(&SAMPLES, &mut out);
    out.sort();
    out
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{} exists; pass --force to overwrite it (nothing was written)", .0.display())]
    Exists(PathBuf),
    #[error("write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

/// Writes every sample under `dir/samples/`, all or nothing: when a file exists and `force`
/// is off, nothing is written. Returns the files written.
pub fn write(dir: &Path, force: bool) -> Result<Vec<PathBuf>, Error> {
    let files: Vec<(PathBuf, &str)> = all().into_iter().map(|(p, t)| (dir.join("samples").join(p), t)).collect();
    if !force {
        if let Some((p, _)) = files.iter().find(|(p, _)| p.exists()) {
            return Err(Error::Exists(p.clone()));
        }
    }
    for (path, text) in &files {
        let parent = path.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent).map_err(|source| Error::Write { path: parent.to_path_buf(), source })?;
        std::fs::write(path, text).map_err(|source| Error::Write { path: path.clone(), source })?;
    }
    Ok(files.into_iter().map(|(p, _)| p).collect())
}

#[cfg(test)]
mod tests {
    use crate::resources::parse_documents;
    use crate::validate::validate;

    #[test]
    fn every_sample_parses_and_validates_and_has_istios_paths() {
        let all = super::all();
        let paths: Vec<&str> = all.iter().map(|(p, _)| p.as_str()).collect();
        for p in [
            "curl/curl.yaml",
            "httpbin/httpbin-gateway.yaml",
            "httpbin/httpbin.yaml",
            "sleep/sleep.yaml",
            "bookinfo/platform/kube/bookinfo.yaml",
            "bookinfo/networking/bookinfo-gateway.yaml",
            "bookinfo/networking/destination-rule-all.yaml",
            "bookinfo/networking/virtual-service-reviews-test-v2.yaml",
            "bookinfo/networking/virtual-service-ratings-test-abort.yaml",
        ] {
            assert!(paths.contains(&p), "{p} missing from {paths:?}");
        }
        for (path, text) in all {
            for d in parse_documents(&path, text).unwrap_or_else(|e| panic!("{e}")) {
                validate(&d.resource).unwrap_or_else(|e| panic!("{path}: {e:?}"));
            }
        }
    }

    #[test]
    fn writing_refuses_to_overwrite_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let written = super::write(dir.path(), false).unwrap();
        assert!(written.iter().any(|p| p.ends_with("samples/httpbin/httpbin.yaml")));
        let err = super::write(dir.path(), false).unwrap_err().to_string();
        assert!(err.contains("--force") && err.contains("nothing was written"), "{err}");
        assert_eq!(super::write(dir.path(), true).unwrap().len(), written.len());
    }
}
