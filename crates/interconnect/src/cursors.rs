//! The receiving side of durable messages: per peer, app and sending origin, the highest
//! message number the app took. A message at or below it was taken already (the sender
//! sent it again after a restart, or after a link drop lost the acknowledgement) and is
//! acknowledged without reaching the app again. With a store the cursors are on the disk
//! (written before the app gets the message); without one they last as long as the
//! process.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::Error;
use crate::store::Store;

/// Origins kept per peer and app without a store (as the store keeps).
const MAX_ORIGINS: usize = 16;

pub(crate) struct Cursors {
    store: Option<Store>,
    memory: Mutex<HashMap<(String, u64), u64>>,
}

impl Cursors {
    pub(crate) fn new(store: Option<Store>) -> Cursors {
        Cursors {
            store,
            memory: Mutex::default(),
        }
    }

    /// The highest number the app took of `origin` from `scope` (0: none).
    pub(crate) fn taken(&self, scope: &str, origin: u64) -> u64 {
        if let Some(store) = &self.store {
            return store.cursor(scope, origin);
        }
        let memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        memory
            .get(&(scope.to_owned(), origin))
            .copied()
            .unwrap_or(0)
    }

    /// The app takes message `seq` of `origin` from `scope` (a peer and an app): `false`
    /// when it took it already. With a store, the cursor is on the disk when this
    /// returns `true`.
    pub(crate) fn take(&self, scope: &str, origin: u64, seq: u64) -> Result<bool, Error> {
        if let Some(store) = &self.store {
            return store.take(scope, origin, seq);
        }
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        let key = (scope.to_owned(), origin);
        if memory.get(&key).is_some_and(|&taken| taken >= seq) {
            return Ok(false);
        }
        if !memory.contains_key(&key) {
            let mut others: Vec<u64> = memory
                .keys()
                .filter(|(s, _)| s == scope)
                .map(|(_, o)| *o)
                .collect();
            if others.len() >= MAX_ORIGINS {
                others.sort_unstable();
                memory.remove(&(scope.to_owned(), others[0]));
            }
        }
        memory.insert(key, seq);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_number_is_taken_once_and_the_origins_are_bounded() {
        let cursors = Cursors::new(None);
        assert_eq!(cursors.take("p/app", 7, 1), Ok(true));
        assert_eq!(cursors.take("p/app", 7, 1), Ok(false));
        assert_eq!(
            cursors.take("p/app", 7, 3),
            Ok(true),
            "a cancelled 2 leaves a gap"
        );
        assert_eq!(cursors.take("p/app", 7, 2), Ok(false));
        assert_eq!(cursors.take("q/app", 7, 1), Ok(true), "another peer");
        for origin in 100..200 {
            assert_eq!(cursors.take("p/app", origin, 1), Ok(true));
        }
        let memory = cursors.memory.lock().unwrap();
        assert!(memory.keys().filter(|(s, _)| s == "p/app").count() <= MAX_ORIGINS);
    }
}
