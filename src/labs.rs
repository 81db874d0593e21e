//! Labs: the `lab.yaml` format, the embedded course, and running checks.
//!
//! A lab is `labs/NN-slug/` with `lab.yaml`, a learner-facing `README.md`, starting files and
//! `solution/`. Checks are data: a request (through the gateway for now) and what the answer
//! must be. Each check retries until a deadline because mesh config is eventually consistent.

pub mod check;

use include_dir::{include_dir, Dir};
use serde::{Deserialize, Serialize};

static LABS: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/labs");

/// The format version this binary reads.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no lab {0:?}; `meshrig lab list` shows the labs")]
    NotFound(String),
    #[error("labs/{dir}/lab.yaml: {message}")]
    Invalid { dir: String, message: String },
    #[error("labs/{dir}: file {file:?} named in lab.yaml is missing")]
    MissingFile { dir: String, file: String },
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    pub format_version: u32,
    pub title: String,
    pub summary: String,
    #[serde(default)]
    pub setup: Setup,
    /// Starting files, relative to the lab directory; written into the learner's workspace.
    #[serde(default)]
    pub start: Vec<String>,
    /// Solution files, relative to the lab directory.
    pub solution: Vec<String>,
    /// What the learner does, in order (the README explains each step at length).
    pub steps: Vec<Step>,
    pub checks: Vec<check::Check>,
    /// Progressive hints, first the gentlest.
    #[serde(default)]
    pub hints: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Setup {
    /// Namespace the lab works in.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Built-in samples (paths under `samples/`) applied before the lab starts.
    #[serde(default)]
    pub manifests: Vec<String>,
    /// Kinds deleted from the lab's namespace first, so other labs' leftovers cannot interfere.
    #[serde(default)]
    pub clean: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub title: String,
    pub text: String,
}

fn default_namespace() -> String {
    "default".into()
}

#[derive(Clone, Debug)]
pub struct Lab {
    /// `01`
    pub number: String,
    /// `01-ingress-gateway`
    pub dir: String,
    pub spec: Spec,
}

impl Lab {
    pub fn file(&self, rel: &str) -> Option<&'static str> {
        LABS.get_file(format!("{}/{rel}", self.dir)).and_then(|f| f.contents_utf8())
    }

    pub fn readme(&self) -> &'static str {
        self.file("README.md").unwrap_or("")
    }
}

/// A setup manifest: a built-in sample by its path (`httpbin/httpbin.yaml`).
pub fn manifest(name: &str) -> Option<&'static str> {
    crate::samples::get(name)
}

/// Every lab, in order, validated (the course ships inside the binary).
pub fn all() -> Result<Vec<Lab>, Error> {
    let mut dirs: Vec<&Dir> = LABS.dirs().collect();
    dirs.sort_by_key(|d| d.path().to_path_buf());
    let mut labs = Vec::new();
    for d in dirs {
        let dir = d.path().to_string_lossy().to_string();
        let Some(yaml) = d.get_file(d.path().join("lab.yaml")).and_then(|f| f.contents_utf8()) else { continue };
        let spec: Spec =
            serde_yaml::from_str(yaml).map_err(|e| Error::Invalid { dir: dir.clone(), message: e.to_string() })?;
        if spec.format_version != FORMAT_VERSION {
            return Err(Error::Invalid {
                dir,
                message: format!("formatVersion {} is not {FORMAT_VERSION}", spec.format_version),
            });
        }
        let number = dir.split('-').next().unwrap_or(&dir).to_string();
        let lab = Lab { number, dir: dir.clone(), spec };
        for f in lab.spec.start.iter().chain(&lab.spec.solution) {
            if lab.file(f).is_none() {
                return Err(Error::MissingFile { dir: dir.clone(), file: f.clone() });
            }
        }
        for m in &lab.spec.setup.manifests {
            if manifest(m).is_none() {
                return Err(Error::Invalid {
                    dir: dir.clone(),
                    message: format!("setup manifest {m:?} is not a built-in sample (samples/)"),
                });
            }
        }
        labs.push(lab);
    }
    Ok(labs)
}

/// Finds a lab by number (`1`, `01`) or directory name.
pub fn find(id: &str) -> Result<Lab, Error> {
    let labs = all()?;
    let want = id.trim_start_matches('0');
    labs.into_iter()
        .find(|l| {
            l.dir == id
                || l.number.trim_start_matches('0') == want
                || l.dir.split_once('-').is_some_and(|(_, slug)| slug == id)
        })
        .ok_or_else(|| Error::NotFound(id.to_string()))
}

/// Saved progress: which lab is current and which passed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Progress {
    pub current: Option<String>,
    #[serde(default)]
    pub passed: Vec<String>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedded_course_is_valid() {
        let labs = super::all().expect("labs parse");
        assert!(!labs.is_empty());
        assert_eq!(labs[0].number, "01");
        for lab in &labs {
            assert!(!lab.spec.checks.is_empty(), "{} has no checks", lab.dir);
            assert!(!lab.spec.steps.is_empty(), "{} has no steps", lab.dir);
            assert!(!lab.readme().is_empty(), "{} has no README.md", lab.dir);
        }
        assert_eq!(super::find("1").unwrap().dir, "01-ingress-gateway");
    }
}
