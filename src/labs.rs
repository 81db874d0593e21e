//! Labs: the `lab.yaml` format, the embedded course, README rendering, and running checks.
//!
//! A lab is `labs/NN-slug/` with `lab.yaml`, a learner-facing `README.md`, starting files and
//! `solution/`. Its baseline says what the mesh holds when it starts: namespaces, built-in
//! manifests, its own setup files; `baseline` makes it the same whether the learner arrives fresh
//! or from the lab before. Checks are data: a request (through the gateway for now) and what the
//! answer must be. Each check retries until a deadline because mesh config is eventually
//! consistent.

pub mod advice;
pub mod baseline;
pub mod body;
pub mod check;
pub mod probe;

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
    /// Kinds the lab clears besides mesh config (which every lab clears): every resource of these
    /// kinds, in every namespace, is removed when
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

    /// Every manifest the lab's own files hold: setup, starting, solution and step solution files.
    pub fn manifest_files(&self) -> Vec<String> {
        let files = self.baseline.files.iter().chain(&self.start).chain(&self.solution);
        let mut out: Vec<String> = Vec::new();
        for f in files.chain(self.steps.iter().flat_map(|s| &s.solution)).filter(|f| is_manifest(f)) {
            if !out.contains(f) {
                out.push(f.clone());
            }
        }
        out
    }

    /// The files that solve `step` (the lab's solution when the step names none, or the lab has
    /// one final state).
    pub fn step_solution(&self, step: u32) -> Vec<String> {
        match self.steps.get(step.max(1) as usize - 1) {
            Some(s) if self.staged_steps() > 0 && !s.solution.is_empty() => s.solution.clone(),
            _ => self.solution.clone(),
        }
    }

    /// The learner's files as `step`'s solution leaves them: the starting files, each replaced
    /// by the solution file of the same name, and the solution's other files.
    pub fn solved_files(&self, step: u32) -> Vec<String> {
        let solution = self.step_solution(step);
        let name = |f: &String| f.rsplit('/').next().unwrap_or(f).to_string();
        let replaced: Vec<String> = solution.iter().map(name).collect();
        let mut files: Vec<String> = self.start.iter().filter(|f| !replaced.contains(&name(f))).cloned().collect();
        files.extend(solution);
        files
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

/// Is this lab file a manifest (applied), rather than an answer a check reads (a query)?
pub fn is_manifest(file: &str) -> bool {
    file.ends_with(".yaml") || file.ends_with(".yml")
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
        render(lab.readme(), &Vars::example())
            .map_err(|message| Error::Invalid { dir: dir.clone(), message: format!("README.md: {message}") })?;
        for step in &lab.spec.steps {
            render(&step.text, &Vars::example()).map_err(|message| Error::Invalid {
                dir: dir.clone(),
                message: format!("step {:?}: {message}", step.title),
            })?;
        }
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
    /// Where `lab start` wrote each lab's files (absolute), so `lab check` works from anywhere.
    #[serde(default)]
    pub workspaces: std::collections::BTreeMap<String, std::path::PathBuf>,
}

/// What a lab's texts may name: the environment's real addresses, rendered at `lab start` and
/// by `lab show`. A lab never writes a port of its own: on a shared machine another learner's
/// gateway may hold it.
#[derive(Clone, Debug, Serialize)]
pub struct Vars {
    /// `http://127.0.0.1:8080`: the gateway's port 80.
    pub gateway: String,
    /// `127.0.0.1:8080`
    pub gateway_address: String,
    /// `8080`: the host port behind the gateway's port 80 (for `curl --resolve`).
    pub http_port: String,
    /// `https://127.0.0.1:8443`: the gateway's port 443.
    pub gateway_https: String,
    /// `8443`: the host port behind the gateway's port 443.
    pub https_port: String,
    /// `127.0.0.1:31400`: the gateway's TCP port 31400.
    pub gateway_tcp: String,
    /// `http://127.0.0.1:9090`: the Prometheus addon.
    pub prometheus: String,
    /// `http://127.0.0.1:16686`: the trace collector's Jaeger query API.
    pub jaeger: String,
    /// `http://127.0.0.1:20001`: `meshrig dashboard`'s default address.
    pub dashboard: String,
    /// `meshrig-labs/01-ingress-gateway`: the learner's copy of the lab.
    pub workspace: String,
}

/// The names a lab text may use, for the error that lists them.
const VAR_NAMES: &str = "gateway, gateway_address, http_port, gateway_https, https_port, gateway_tcp, prometheus, \
jaeger, dashboard, workspace";

impl Vars {
    pub fn example() -> Vars {
        Vars {
            gateway: "http://127.0.0.1:8080".into(),
            gateway_address: "127.0.0.1:8080".into(),
            http_port: "8080".into(),
            gateway_https: "https://127.0.0.1:8443".into(),
            https_port: "8443".into(),
            gateway_tcp: "127.0.0.1:31400".into(),
            prometheus: "http://127.0.0.1:9090".into(),
            jaeger: "http://127.0.0.1:16686".into(),
            dashboard: "http://127.0.0.1:20001".into(),
            workspace: "meshrig-labs/01-ingress-gateway".into(),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        Some(match name {
            "gateway" => &self.gateway,
            "gateway_address" => &self.gateway_address,
            "http_port" => &self.http_port,
            "gateway_https" => &self.gateway_https,
            "https_port" => &self.https_port,
            "gateway_tcp" => &self.gateway_tcp,
            "prometheus" => &self.prometheus,
            "jaeger" => &self.jaeger,
            "dashboard" => &self.dashboard,
            "workspace" => &self.workspace,
            _ => return None,
        })
    }
}

/// Replaces `{{ name }}` with the variable's value; an unknown name or an unclosed `{{` is an
/// error (the course test renders every text, so a typo never reaches a learner).
pub fn render(text: &str, vars: &Vars) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| "`{{` without `}}`".to_string())?;
        let name = after[..end].trim();
        let value = vars.get(name).ok_or_else(|| format!("unknown variable {{{{ {name} }}}}; known: {VAR_NAMES}"))?;
        out.push_str(value);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Where a text names an address with a fixed port instead of a variable: a loopback address
/// (`127.0.0.1:8443`, `localhost:9090`), a gateway host's URL (`https://httpbin.example.com:8443`)
/// or a `curl --resolve` pin. Services inside the mesh (`http://httpbin:8000`) keep their ports:
/// those are the Service's, the same everywhere. Returns `(line, text)`.
pub fn fixed_ports(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let bytes = line.as_bytes();
        let fixed = line.match_indices(':').any(|(at, _)| {
            let digits = bytes[at + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
            if !(2..=5).contains(&digits) {
                return false;
            }
            let before = &line[..at];
            let start = before
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-')))
                .map(|i| i + 1)
                .unwrap_or(0);
            let host = &before[start..];
            matches!(host, "127.0.0.1" | "localhost" | "0.0.0.0")
                || host.ends_with("example.com")
                || (before.contains("--resolve") && host.contains('.'))
        });
        if fixed {
            out.push((i + 1, line.trim().to_string()));
        }
    }
    out
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
            ..super::Vars::example()
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

    #[test]
    fn fixed_ports_are_found_and_mesh_service_ports_are_not() {
        let found = |t: &str| !super::fixed_ports(t).is_empty();
        assert!(found("curl http://127.0.0.1:9090/api/v1/query"));
        assert!(found("curl --resolve httpbin.example.com:8443:127.0.0.1 https://httpbin.example.com:8443/"));
        assert!(found("open localhost:16686"));
        assert!(!found("meshrig exec curl -- curl -s http://httpbin:8000/headers"));
        assert!(!found("request: {via: workload, host: \"httpbin.foo:8000\"}"));
        assert!(!found("    port: {number: 443, name: https, protocol: HTTPS}"));
        assert!(!found("curl -s {{ gateway }}/productpage"));
        assert!(!found("at 10:30 the page answers"));
    }

    /// No lab names a fixed host port: its README, step texts, hints and files use `{{ ... }}`.
    #[test]
    fn no_lab_names_a_fixed_port() {
        let mut problems = Vec::new();
        for lab in super::all().unwrap() {
            let mut files: Vec<String> = vec!["README.md".into(), "lab.yaml".into()];
            let s = &lab.spec;
            files.extend(s.start.iter().chain(&s.solution).chain(&s.baseline.files).cloned());
            files.extend(s.steps.iter().flat_map(|st| st.solution.clone()));
            for f in files {
                for (line, text) in super::fixed_ports(lab.file(&f).unwrap_or("")) {
                    problems.push(format!("labs/{}/{f}:{line}: {text}", lab.dir));
                }
            }
        }
        assert!(problems.is_empty(), "fixed ports; use {{{{ gateway_https }}}}, {{{{ https_port }}}}, {{{{ prometheus }}}}, {{{{ jaeger }}}}...:\n{}", problems.join("\n"));
    }

    #[test]
    fn a_step_solution_replaces_the_starting_file_of_the_same_name() {
        let lab = super::find("5").unwrap();
        assert_eq!(lab.spec.solved_files(1), ["ratings-faulty.yaml", "reviews.yaml", "solution/step1/ratings.yaml"]);
        assert_eq!(
            lab.spec.solved_files(2),
            ["ratings-faulty.yaml", "solution/step2/ratings.yaml", "solution/step2/reviews.yaml"]
        );
        let lab = super::find("1").unwrap();
        assert_eq!(lab.spec.solved_files(1), ["solution/gateway.yaml"]);
    }
}
