//! Randomness as an input: the session's seed feeds a ChaCha20 generator, and snow's
//! handshake draws its ephemeral keys from a generator seeded by it, never from the
//! system. The runtime seeds sessions from the operating system; firmware from its
//! hardware generator; tests from constants, for a reproducible transcript.

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::CryptoResolver;
use snow::types::{Cipher, Dh, Hash, Random};

#[allow(unused_imports)]
use crate::prelude::*;

/// The generator a session and each of its links draw from.
pub(crate) type Rng = ChaCha20Rng;

/// A generator from a 32-byte seed.
pub(crate) fn rng(seed: [u8; 32]) -> Rng {
    ChaCha20Rng::from_seed(seed)
}

/// 32 fresh bytes from `rng`.
pub(crate) fn draw(rng: &mut Rng) -> [u8; 32] {
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    bytes
}

/// snow's primitives (ring's where the `ring` feature is on, RustCrypto's otherwise),
/// with a generator of ours for the ephemeral keys.
pub(crate) struct Resolver {
    seed: [u8; 32],
}

impl Resolver {
    pub(crate) fn new(seed: [u8; 32]) -> Self {
        Resolver { seed }
    }
}

struct Seeded(Rng);

impl Random for Seeded {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(Seeded(rng(self.seed))))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        snow::resolvers::DefaultResolver.resolve_dh(choice)
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        #[cfg(feature = "ring")]
        if let Some(hash) = snow::resolvers::RingResolver.resolve_hash(choice) {
            return Some(hash);
        }
        snow::resolvers::DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        #[cfg(feature = "ring")]
        if let Some(cipher) = snow::resolvers::RingResolver.resolve_cipher(choice) {
            return Some(cipher);
        }
        snow::resolvers::DefaultResolver.resolve_cipher(choice)
    }
}
