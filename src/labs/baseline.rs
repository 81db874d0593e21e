//! A lab's starting state, the same whether the learner arrives fresh or from the lab before:
//! what the baseline applies, and what must go (pure; `cli::lab::baseline` carries it out).
//!
//! Two rules make it so. Every mesh config kind (Istio's networking, security and telemetry
//! kinds, plus any kind the lab names in `owns`) is cleared in every namespace, except what the
//! baseline itself applies. And every object the course's own files create (a lab's starting,
//! solution and setup files: `ratings-faulty`, lab 06's clients, lab 08's certificate) is removed
//! unless this lab's baseline has it. The built-in samples `up` runs are left alone: they are
//! the apps every lab may lean on.

use std::collections::BTreeSet;

use super::Lab;
use crate::resources::parse::parse_documents;
use crate::resources::{Kind, Resource, ResourceKey};

/// Kinds that are mesh configuration: a lab starts with none but its own.
pub fn is_mesh_config(kind: Kind) -> bool {
    kind.api_versions().iter().any(|v| v.contains(".istio.io/"))
}

/// The lab's baseline as resources, in apply order: missing namespaces are not included (the
/// caller creates those it lacks), then built-in manifests, then the lab's own setup files.
pub fn resources(lab: &Lab) -> Result<Vec<Resource>, String> {
    let base = &lab.spec.baseline;
    let mut out = Vec::new();
    for m in &base.manifests {
        let text = super::manifest(m).ok_or_else(|| format!("manifest {m} is not built in"))?;
        for d in parse_documents(&format!("samples/{m}"), text).map_err(|e| e.to_string())? {
            let mut r = d.resource;
            r.set_default_namespace("default");
            out.push(r);
        }
    }
    for f in &base.files {
        out.extend(file_resources(lab, f)?);
    }
    Ok(out)
}

/// Every object the lab's own files hold.
pub fn lab_objects(lab: &Lab) -> Vec<Resource> {
    lab.spec.manifest_files().iter().flat_map(|f| file_resources(lab, f).unwrap_or_default()).collect()
}

/// One of the lab's files as resources, in the lab's namespace unless they name one.
pub fn file_resources(lab: &Lab, file: &str) -> Result<Vec<Resource>, String> {
    let text = lab.file(file).ok_or_else(|| format!("labs/{}/{file} is missing", lab.dir))?;
    let mut out = Vec::new();
    for d in parse_documents(&format!("labs/{}/{file}", lab.dir), text).map_err(|e| e.to_string())? {
        let mut r = d.resource;
        r.set_default_namespace(&lab.spec.baseline.namespace);
        out.push(r);
    }
    Ok(out)
}

/// Every object the course's files create that is not mesh config and not a namespace: the
/// workloads, services, secrets and certificates a lab brings and another must not inherit.
pub fn course_objects(course: &[Lab]) -> BTreeSet<ResourceKey> {
    let mut out = BTreeSet::new();
    for lab in course {
        for f in lab.spec.manifest_files() {
            for r in file_resources(lab, &f).unwrap_or_default() {
                if !is_mesh_config(r.kind()) && r.kind() != Kind::Namespace {
                    out.insert(r.key());
                }
            }
        }
    }
    out
}

/// The kinds whose every object this lab clears.
pub fn cleared_kinds(lab: &Lab) -> Vec<Kind> {
    let mut kinds: Vec<Kind> = Kind::ALL.iter().copied().filter(|k| is_mesh_config(*k)).collect();
    for k in lab.spec.baseline.owns.iter().filter_map(|k| Kind::from_user(k)) {
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    kinds
}

/// What to remove from `existing` (everything of the kinds the lab lists) to reach the lab's
/// baseline: cleared kinds and the course's objects, except what the baseline applies again.
pub fn to_remove(lab: &Lab, course: &BTreeSet<ResourceKey>, existing: &[Resource]) -> Vec<Resource> {
    let keep: BTreeSet<ResourceKey> = resources(lab).unwrap_or_default().iter().map(Resource::key).collect();
    let cleared = cleared_kinds(lab);
    existing
        .iter()
        .filter(|r| {
            let key = r.key();
            !keep.contains(&key) && (cleared.contains(&key.kind) || course.contains(&key))
        })
        .cloned()
        .collect()
}

/// The kinds to list to find what `to_remove` may remove.
pub fn kinds_to_list(lab: &Lab, course: &BTreeSet<ResourceKey>) -> Vec<Kind> {
    let mut kinds = cleared_kinds(lab);
    for k in course.iter().map(|k| k.kind) {
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(rs: &[Resource]) -> Vec<String> {
        let mut v: Vec<String> = rs.iter().map(|r| r.key().to_string()).collect();
        v.sort();
        v
    }

    /// What each lab leaves behind when solved, as the next lab finds it.
    fn left_by(lab: &Lab) -> Vec<Resource> {
        let mut out = resources(lab).unwrap();
        for f in lab.spec.start.iter().chain(&lab.spec.solution).filter(|f| crate::labs::is_manifest(f)) {
            out.extend(file_resources(lab, f).unwrap());
        }
        out
    }

    #[test]
    fn every_lab_clears_what_the_lab_before_leaves_but_its_own_baseline() {
        let course = crate::labs::all().unwrap();
        let objects = course_objects(&course);
        for pair in course.windows(2) {
            let (before, lab) = (&pair[0], &pair[1]);
            let existing = left_by(before);
            let removed = to_remove(lab, &objects, &existing);
            let removed_keys: BTreeSet<ResourceKey> = removed.iter().map(Resource::key).collect();
            let own: BTreeSet<ResourceKey> = resources(lab).unwrap().iter().map(Resource::key).collect();
            for r in &existing {
                let k = r.key();
                let stays = !removed_keys.contains(&k);
                if is_mesh_config(k.kind) || objects.contains(&k) {
                    assert_eq!(stays, own.contains(&k), "lab {} after lab {}: {k}", lab.number, before.number);
                }
            }
        }
        // The cases learners met: lab 05's VirtualServices and ratings-faulty do not reach 07,
        // lab 07's allow-nothing does not reach 08.
        let find = |n: &str| course.iter().find(|l| l.number == n).unwrap();
        let removed = keys(&to_remove(find("07"), &objects, &left_by(find("05"))));
        assert!(removed.contains(&"Deployment default/ratings-faulty".to_string()), "{removed:?}");
        assert!(removed.contains(&"VirtualService default/reviews".to_string()), "{removed:?}");
        let removed = keys(&to_remove(find("08"), &objects, &left_by(find("07"))));
        assert!(removed.contains(&"AuthorizationPolicy default/allow-nothing".to_string()), "{removed:?}");
        // The built-in apps stay: lab 08 runs httpbin, lab 07 left Bookinfo.
        assert!(!removed.iter().any(|k| k.starts_with("Deployment")), "{removed:?}");
        // What the baseline applies again is not "removed" (bookinfo-gateway from 09 to 10).
        let removed = keys(&to_remove(find("11"), &objects, &left_by(find("10"))));
        assert!(!removed.contains(&"Gateway default/bookinfo-gateway".to_string()), "{removed:?}");
        assert!(!removed.contains(&"Deployment default/ratings-faulty".to_string()), "lab 11 runs it too: {removed:?}");
    }
}
