//! One control plane per environment, enforced by an exclusive lock on the environment's state
//! directory itself, held for the control plane's life and released by the kernel when it exits,
//! however it exits. Token, address or lock files can go missing; the directory's lock cannot
//! be taken twice while the control plane that holds it lives, hung or not.

use std::fs::File;

use nix::fcntl::{Flock, FlockArg};

use crate::env::{Env, Error};

/// The lock, while held.
pub struct Lock(#[allow(dead_code)] Flock<File>);

/// Takes the environment's lock; `Ok(None)` when another process holds it.
pub fn try_lock(env: &Env) -> Result<Option<Lock>, Error> {
    // A lock on a file in the directory could be sidestepped by deleting the file (the next
    // process would lock a new one); the directory stays the same inode while files come and go.
    let path = env.dir.clone();
    let file = File::open(&path).map_err(|source| Error::Io { op: "open", path: path.clone(), source })?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(Lock(lock))),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(Error::Io { op: "lock", path, source: errno.into() }),
    }
}

/// Is a control plane running for this environment (alive, answering or not)?
pub fn held(env: &Env) -> bool {
    matches!(try_lock(env), Ok(None))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let env = crate::env::Env::resolve("t", Some(dir.path().to_path_buf())).unwrap();
        env.ensure_dirs().unwrap();
        let first = super::try_lock(&env).unwrap().expect("free at first");
        assert!(super::held(&env));
        // Deleting files in the state dir (an old `control-plane.lock` among them) changes nothing.
        for entry in std::fs::read_dir(&env.dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_file() {
                std::fs::remove_file(p).unwrap();
            }
        }
        assert!(super::try_lock(&env).unwrap().is_none(), "still held after its files went");
        drop(first);
        assert!(!super::held(&env), "released with its holder");
    }
}
