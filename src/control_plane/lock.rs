//! One control plane per environment, enforced by an exclusive lock on a file in the state dir
//! (`control-plane.lock`), held for the control plane's life and released by the kernel when it
//! exits, however it exits. Token or address files can go missing; the lock cannot lie.

use std::fs::{File, OpenOptions};

use nix::fcntl::{Flock, FlockArg};

use crate::env::{Env, Error};

/// The lock, while held.
pub struct Lock(#[allow(dead_code)] Flock<File>);

/// Takes the environment's lock; `Ok(None)` when another process holds it.
pub fn try_lock(env: &Env) -> Result<Option<Lock>, Error> {
    let path = env.dir.join("control-plane.lock");
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(|source| Error::Io {
        op: "open",
        path: path.clone(),
        source,
    })?;
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
        drop(first);
        assert!(!super::held(&env), "released with its holder");
    }
}
