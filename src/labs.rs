//! Labs: the `lab.yaml` format, the embedded course, README rendering, and running checks.
//!
//! A lab is `labs/NN-slug/` with `lab.yaml`, a learner-facing `README.md`, starting files and
//! `solution/`. Its baseline says what the mesh holds when it starts: namespaces, built-in
//! manifests, and the kinds the lab owns (removed in every namespace, so other labs' leftovers
//! cannot interfere). Checks are data: a request (through the gateway for now) and what the
//! answer must be. Each check retries until a deadline because mesh config is eventually
//! consistent.

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
    pub baseline: Baseline,
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
pub struct Baseline {
    /// Namespace the learner's files apply to (they name none).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Namespaces that must exist (created when missing).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Built-in samples (paths under `samples/`) applied before the lab starts.
    #[serde(default)]
    pub manifests: Vec<String>,
    /// The lab's own manifests (files in its directory) applied after them: workloads in other
    /// namespaces, with their labels.
    #[serde(default)]
    pub files: Vec<String>,
    /// Kinds the lab owns: every resource of these kinds, in every namespace, is removed when
    /// the lab starts or resets (and saved, so `meshrig lab restore` can bring it back).
    #[serde(default)]
    pub owns: Vec<String>,
    /// Addons the lab needs running (`prometheus`), enabled when it starts.
    #[serde(default)]
    pub addons: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub title: String,
    pub text: String,
    /// In a lab whose checks belong to steps: the files that solve this step (for `lab verify`).
    #[serde(default)]
    pub solution: Vec<String>,
}

fn default_namespace() -> String {
    "default".into()
}

impl Spec {
    /// The last step any check belongs to (0: the lab has one final state).
    pub fn staged_steps(&self) -> u32 {
        self.checks.iter().filter_map(|c| c.step).max().unwrap_or(0)
    }

    /// The checks that judge `step` (every check when the lab is not staged).
    pub fn checks_for(&self, step: u32) -> Vec<check::Check> {
        self.checks.iter().filter(|c| c.step.is_none_or(|s| s == step)).cloned().collect()
    }
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
        for f in lab.spec.start.iter().chain(&lab.spec.solution).chain(lab.spec.steps.iter().flat_map(|s| &s.solution))
        {
            if lab.file(f).is_none() {
                return Err(Error::MissingFile { dir: dir.clone(), file: f.clone() });
            }
        }
        for k in &lab.spec.baseline.owns {
            if crate::resources::Kind::from_user(k).is_none() {
                return Err(Error::Invalid { dir: dir.clone(), message: format!("baseline.owns: unknown kind {k:?}") });
            }
        }
        let problems = check::lint(&lab.spec.checks);
        if !problems.is_empty() {
            return Err(Error::Invalid { dir: dir.clone(), message: problems.join("; ") });
        }
        render(lab.readme(), &Vars::example()).map_err(|message| Error::Invalid { dir: dir.clone(), message })?;
        for m in &lab.spec.baseline.manifests {
            if manifest(m).is_none() {
                return Err(Error::Invalid {
                    dir: dir.clone(),
                    message: format!("setup manifest {m:?} is not a built-in sample (samples/)"),
                });
            }
        }
        for f in &lab.spec.baseline.files {
            if lab.file(f).is_none() {
                return Err(Error::Invalid {
                    dir: dir.clone(),
                    message: format!("baseline file {f:?} is not in the lab"),
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

/// Saved progress: which lab is current, which passed, how many hints each has shown.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Progress {
    pub current: Option<String>,
    #[serde(default)]
    pub passed: Vec<String>,
    #[serde(default)]
    pub hints_shown: std::collections::BTreeMap<String, usize>,
    /// The step a learner is on, per lab whose checks belong to steps (1-based).
    #[serde(default)]
    pub step: std::collections::BTreeMap<String, u32>,
}

/// What a lab's README may name: the environment's real addresses, rendered at `lab start`.
pub struct Vars {
    /// `http://127.0.0.1:8080`: the gateway's port 80.
    pub gateway: String,
    /// `127.0.0.1:8080`
    pub gateway_address: String,
    /// `meshrig-labs/01-ingress-gateway`: the learner's copy of the lab.
    pub workspace: String,
}

impl Vars {
    pub fn example() -> Vars {
        Vars {
            gateway: "http://127.0.0.1:8080".into(),
            gateway_address: "127.0.0.1:8080".into(),
            workspace: "meshrig-labs/01-ingress-gateway".into(),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        match name {
            "gateway" => Some(&self.gateway),
            "gateway_address" => Some(&self.gateway_address),
            "workspace" => Some(&self.workspace),
            _ => None,
        }
    }
}

/// Replaces `{{ name }}` with the variable's value; an unknown name or an unclosed `{{` is an
/// error (the course test renders every README, so a typo never reaches a learner).
pub fn render(text: &str, vars: &Vars) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| "README.md: `{{` without `}}`".to_string())?;
        let name = after[..end].trim();
        let value = vars.get(name).ok_or_else(|| {
            format!("README.md: unknown variable {{{{ {name} }}}}; known: gateway, gateway_address, workspace")
        })?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
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

    #[test]
    fn readmes_render_with_the_real_addresses() {
        let vars = super::Vars {
            gateway: "http://127.0.0.1:18080".into(),
            gateway_address: "127.0.0.1:18080".into(),
            workspace: "w".into(),
        };
        assert_eq!(
            super::render("at {{gateway}}/x and {{ workspace }}", &vars).unwrap(),
            "at http://127.0.0.1:18080/x and w"
        );
        assert!(super::render("{{ nope }}", &vars).unwrap_err().contains("unknown variable {{ nope }}"));
        assert!(super::render("{{ gateway", &vars).is_err());
        let readme = super::find("1").unwrap().readme();
        let rendered = super::render(readme, &vars).unwrap();
        assert!(rendered.contains("http://127.0.0.1:18080"), "lab 01's README names the gateway's address");
        assert!(!rendered.contains("{{"));
    }
}
