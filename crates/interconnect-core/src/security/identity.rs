//! Who a device is: its static key pair and the fingerprint others pin. The key's file
//! form, its generation from the system's randomness and the known-peers file live in
//! the runtime crate (`interconnect`): this crate reads no file and draws no randomness.

use core::fmt;
use core::str::FromStr;

use alloc::string::String;

use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

/// A device's static X25519 key pair, used in every Noise handshake.
///
/// Made from 32 random bytes that the caller draws (the runtime crate's
/// `IdentityFile::generate` draws them from the system and stores them); peers pin its
/// [`fingerprint`](Self::fingerprint).
///
/// ```
/// use interconnect_core::DeviceIdentity;
///
/// let identity = DeviceIdentity::from_private_key([7; 32]);
/// assert_eq!(identity.device_id().0[..], identity.fingerprint().0[..16]);
/// println!("this watch is {}", identity.fingerprint());
/// ```
#[derive(Clone)]
pub struct DeviceIdentity {
    /// Wiped when dropped.
    private: Zeroizing<[u8; 32]>,
    public: [u8; 32],
}

impl fmt::Debug for DeviceIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceIdentity")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl DeviceIdentity {
    /// The identity of a known private key (the public key is derived from it).
    pub fn from_private_key(private: [u8; 32]) -> Self {
        let secret = x25519_dalek::StaticSecret::from(private);
        let public = x25519_dalek::PublicKey::from(&secret).to_bytes();
        let mut private = private;
        private.zeroize();
        DeviceIdentity {
            private: Zeroizing::new(secret.to_bytes()),
            public,
        }
    }

    /// The public key peers see in the handshake.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public
    }

    /// The private key, for storing the identity (the runtime's identity file). Keep it
    /// secret: whoever holds it is this device.
    pub fn private_key(&self) -> &[u8; 32] {
        &self.private
    }

    /// SHA-256 of the public key: what a peer pins.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_public_key(&self.public)
    }

    /// The device id that goes with this key: the fingerprint's first 16 bytes.
    ///
    /// ```
    /// let identity = interconnect_core::DeviceIdentity::from_private_key([7; 32]);
    /// let id = identity.device_id();
    /// assert_eq!(id.0[..], identity.fingerprint().0[..16]);
    /// assert_eq!(id.to_string().len(), 32); // hex
    /// ```
    pub fn device_id(&self) -> interconnect_proto::DeviceId {
        self.fingerprint().device_id()
    }
}

/// SHA-256 of a device's public key, written as 32 colon-separated hex bytes (the form
/// Android certificate fingerprints take).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a raw X25519 public key.
    pub fn of_public_key(public: &[u8]) -> Self {
        Fingerprint(Sha256::digest(public).into())
    }

    /// The device id of the key with this fingerprint (its first 16 bytes).
    pub fn device_id(&self) -> interconnect_proto::DeviceId {
        let mut id = [0; 16];
        id.copy_from_slice(&self.0[..16]);
        interconnect_proto::DeviceId(id)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// A string that is not a fingerprint.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a fingerprint (want 32 hex bytes, colons optional): {0:?}")]
pub struct ParseFingerprintError(String);

impl FromStr for Fingerprint {
    type Err = ParseFingerprintError;

    /// Accepts `AB:CD:...` or plain hex, in either case.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let digits: String = text.trim().chars().filter(|c| *c != ':').collect();
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&digits, &mut bytes)
            .map_err(|_| ParseFingerprintError(text.chars().take(100).collect()))?;
        Ok(Fingerprint(bytes))
    }
}

/// The 6-digit code both sides show during numeric-comparison pairing. Equal codes mean
/// no one sits between the two devices (a mismatch by chance: one in a million).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PairingCode(pub u32);

impl fmt::Display for PairingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:06}", self.0 % 1_000_000)
    }
}

impl fmt::Debug for PairingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PairingCode({self})")
    }
}
