//! meshrig's image, made from the running binary: no registry and no Dockerfile build. One
//! layer holds the binary, the shared libraries it was linked against (as `ldd` resolves them,
//! at the same paths, so the binary runs as it does here), the CA roots and a `/tmp`. The
//! archive is a single-platform OCI image layout (`oci-layout`, `index.json`, blobs) with a
//! docker-style `manifest.json` beside it, so `kind load image-archive` and `docker load` both
//! take it. Everything is written with fixed times and owners: the same binary makes the same
//! archive.

use std::path::{Path, PathBuf};

/// Where the binary sits in the image (its entrypoint).
pub const BINARY: &str = "usr/local/bin/meshrig";
/// The CA bundle, for the JWKS fetcher and TLS origination in a pod.
pub const CA_BUNDLE: &str = "etc/ssl/certs/ca-certificates.crt";

/// One entry of a tar stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    Dir { path: String, mode: u32 },
    File { path: String, mode: u32, data: Vec<u8> },
}

fn digest(data: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A ustar header field: `value` in octal, zero-padded, NUL-terminated, in `width` bytes.
fn octal(field: &mut [u8], value: u64) {
    let width = field.len() - 1;
    let s = format!("{value:0width$o}");
    field[..width].copy_from_slice(&s.as_bytes()[s.len() - width..]);
    field[width] = 0;
}

/// A POSIX ustar stream of `entries` (owner root, time 0), ended by two empty blocks.
/// Paths are at most 100 bytes, or split at a `/` into a 155-byte prefix and a name.
pub fn tar(entries: &[Entry]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for e in entries {
        let (path, mode, data, typeflag) = match e {
            Entry::Dir { path, mode } => (format!("{}/", path.trim_end_matches('/')), *mode, &[][..], b'5'),
            Entry::File { path, mode, data } => (path.clone(), *mode, data.as_slice(), b'0'),
        };
        let mut h = [0u8; 512];
        let (prefix, name) = if path.len() <= 100 {
            ("", path.as_str())
        } else {
            let cut = path[..path.len().min(156)].rfind('/').filter(|i| path.len() - i - 1 <= 100);
            let i = cut.ok_or_else(|| format!("{path}: too long for a tar header"))?;
            (&path[..i], &path[i + 1..])
        };
        h[..name.len()].copy_from_slice(name.as_bytes());
        octal(&mut h[100..108], u64::from(mode));
        octal(&mut h[108..116], 0);
        octal(&mut h[116..124], 0);
        octal(&mut h[124..136], data.len() as u64);
        octal(&mut h[136..148], 0);
        h[156] = typeflag;
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[265..269].copy_from_slice(b"root");
        h[297..301].copy_from_slice(b"root");
        h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
        // The checksum is computed with its own field as spaces.
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        let s = format!("{sum:06o}\0 ");
        h[148..156].copy_from_slice(s.as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    Ok(out)
}

/// The shared libraries `binary` loads, as this machine's `ldd` resolves them (with the
/// dynamic loader); none for a static binary.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, String> {
    let ldd = which::which("ldd").map_err(|_| "ldd is not on PATH (Debian: apt-get install libc-bin)".to_string())?;
    let out = std::process::Command::new(ldd).arg(binary).output().map_err(|e| format!("run ldd: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic")
        {
            Ok(Vec::new())
        } else {
            Err(format!("ldd {}: {}", binary.display(), String::from_utf8_lossy(&out.stderr).trim()))
        };
    }
    Ok(parse_ldd(&text))
}

/// The paths in `ldd`'s answer: `name => /path (0x...)` and the loader's `/path (0x...)`.
pub fn parse_ldd(text: &str) -> Vec<PathBuf> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = l.split_once("=>").map_or(l, |(_, p)| p.trim());
            let path = path.split(" (").next()?.trim();
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// The layer's entries: the directories, the binary, the libraries (symlinks followed: each is
/// stored at the path the loader asks for), the CA bundle if there is one.
pub fn layer(binary: Vec<u8>, libraries: &[PathBuf], ca_bundle: Option<Vec<u8>>) -> Result<Vec<Entry>, String> {
    let mut files: Vec<(String, u32, Vec<u8>)> = vec![(BINARY.to_string(), 0o755, binary)];
    for lib in libraries {
        let data = std::fs::read(lib).map_err(|e| format!("read {}: {e}", lib.display()))?;
        files.push((lib.to_string_lossy().trim_start_matches('/').to_string(), 0o755, data));
    }
    if let Some(ca) = ca_bundle {
        files.push((CA_BUNDLE.to_string(), 0o644, ca));
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files.dedup_by(|a, b| a.0 == b.0);
    let mut dirs: Vec<String> = vec!["tmp".into()];
    for (path, _, _) in &files {
        let mut p = Path::new(path).parent();
        while let Some(d) = p.filter(|d| !d.as_os_str().is_empty()) {
            dirs.push(d.to_string_lossy().into_owned());
            p = d.parent();
        }
    }
    dirs.sort();
    dirs.dedup();
    let mut entries: Vec<Entry> =
        dirs.into_iter().map(|path| Entry::Dir { mode: if path == "tmp" { 0o1777 } else { 0o755 }, path }).collect();
    entries.extend(files.into_iter().map(|(path, mode, data)| Entry::File { path, mode, data }));
    Ok(entries)
}

/// The image archive of one `layer` (a tar), tagged `tag` (`docker.io/library/meshrig:...`).
pub fn archive(tag: &str, layer: Vec<u8>) -> Result<Vec<u8>, String> {
    let layer_digest = digest(&layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Entrypoint": [format!("/{BINARY}")],
            "Env": [
                "PATH=/usr/local/bin:/usr/bin:/bin",
                "HOME=/tmp",
                format!("SSL_CERT_FILE=/{CA_BUNDLE}"),
            ],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "meshrig image save"}],
    });
    let config = serde_json::to_vec(&config).expect("JSON");
    let config_digest = digest(&config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config_digest}"),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": format!("sha256:{layer_digest}"),
            "size": layer.len(),
        }],
    });
    let manifest = serde_json::to_vec(&manifest).expect("JSON");
    let manifest_digest = digest(&manifest);
    let reference = tag.rsplit_once(':').map_or("latest", |(_, r)| r);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_digest}"),
            "size": manifest.len(),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                "io.containerd.image.name": tag,
                "org.opencontainers.image.ref.name": reference,
            },
        }],
    });
    let docker = serde_json::json!([{
        "Config": format!("blobs/sha256/{config_digest}"),
        "RepoTags": [tag],
        "Layers": [format!("blobs/sha256/{layer_digest}")],
    }]);
    let file = |path: &str, data: Vec<u8>| Entry::File { path: path.to_string(), mode: 0o644, data };
    tar(&[
        Entry::Dir { path: "blobs".into(), mode: 0o755 },
        Entry::Dir { path: "blobs/sha256".into(), mode: 0o755 },
        file(&format!("blobs/sha256/{config_digest}"), config),
        file(&format!("blobs/sha256/{manifest_digest}"), manifest),
        file(&format!("blobs/sha256/{layer_digest}"), layer),
        file("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
        file("index.json", serde_json::to_vec(&index).expect("JSON")),
        file("manifest.json", serde_json::to_vec(&docker).expect("JSON")),
    ])
}

/// The image of the binary at `binary`, tagged as `kind::image_tag` names it, as an archive.
pub fn save(binary: &Path) -> Result<(String, Vec<u8>), String> {
    let bytes = std::fs::read(binary).map_err(|e| format!("read {}: {e}", binary.display()))?;
    let tag = crate::backend::kind::image_tag(&bytes);
    let libraries = shared_libraries(binary)?;
    let ca = std::fs::read(format!("/{CA_BUNDLE}")).ok();
    let layer = tar(&layer(bytes, &libraries, ca)?)?;
    Ok((tag.clone(), archive(&tag, layer)?))
}
