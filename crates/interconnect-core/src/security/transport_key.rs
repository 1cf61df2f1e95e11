//! One direction of a Noise transport: the AEAD key that the handshake's split produced,
//! used with explicit nonces, in place.
//!
//! `snow` runs the handshake; after it, sealing and opening use `ring` (the `ring`
//! feature, on a host) or RustCrypto's AEADs (otherwise) directly with the split keys. `snow`'s transport API takes a plaintext and an output slice, so each
//! sealed frame cost a zeroed buffer and a copy on each end on top of the encryption;
//! working in place on the frame buffer removes both, which on a 256 MiB transfer was
//! about a sixth of the CPU time of the thread that runs the links. The construction is
//! Noise's own (`ENCRYPT(k, n, ad, plaintext)`, with the segment's place in its frame as `ad`, nonce as 32 zero bits then the
//! counter, big-endian for AES-GCM and little-endian for ChaCha20-Poly1305, `REKEY`
//! as the first 32 bytes of encrypting 32 zero bytes at nonce 2^64 − 1); a test checks
//! every output against `snow`'s transport, rekeys included.

use zeroize::Zeroizing;

use super::CipherSuite;

/// The length of an AEAD tag (both suites).
pub(crate) const TAG_LEN: usize = 16;

/// The AEAD key of one direction of an established link.
pub(crate) struct TransportKey {
    suite: CipherSuite,
    key: Key,
}

/// The AEAD refused: a tag did not verify (or, when sealing, the input was too long).
#[derive(Debug)]
pub(crate) struct AeadError;

/// ring's keys: the host's fast path.
#[cfg(feature = "ring")]
struct Key(ring::aead::LessSafeKey);

/// RustCrypto's keys: pure Rust, for firmware and any build without ring.
#[cfg(not(feature = "ring"))]
enum Key {
    /// Boxed: its expanded key schedule is a kilobyte, thirty times ChaCha's key.
    AesGcm(alloc::boxed::Box<aes_gcm::Aes256Gcm>),
    ChaChaPoly(chacha20poly1305::ChaCha20Poly1305),
}

impl TransportKey {
    pub(crate) fn new(suite: CipherSuite, key: &[u8; 32]) -> Self {
        #[cfg(feature = "ring")]
        let key = {
            use ring::aead::{AES_256_GCM, CHACHA20_POLY1305, LessSafeKey, UnboundKey};
            let algorithm = match suite {
                CipherSuite::AesGcm => &AES_256_GCM,
                CipherSuite::ChaChaPoly => &CHACHA20_POLY1305,
            };
            let key = UnboundKey::new(algorithm, key).expect("32-byte keys suit both algorithms");
            Key(LessSafeKey::new(key))
        };
        #[cfg(not(feature = "ring"))]
        let key = {
            use aes_gcm::KeyInit;
            match suite {
                CipherSuite::AesGcm => {
                    Key::AesGcm(alloc::boxed::Box::new(aes_gcm::Aes256Gcm::new(key.into())))
                }
                CipherSuite::ChaChaPoly => {
                    Key::ChaChaPoly(chacha20poly1305::ChaCha20Poly1305::new(key.into()))
                }
            }
        };
        TransportKey { suite, key }
    }

    /// Noise's nonce: 32 zero bits, then the counter (big-endian for AES-GCM,
    /// little-endian for ChaCha20-Poly1305).
    fn nonce(&self, n: u64) -> [u8; 12] {
        let mut bytes = [0u8; 12];
        bytes[4..].copy_from_slice(&match self.suite {
            CipherSuite::AesGcm => n.to_be_bytes(),
            CipherSuite::ChaChaPoly => n.to_le_bytes(),
        });
        bytes
    }

    /// Encrypts `in_out` in place under nonce `n`, binding `aad`, and returns the tag.
    pub(crate) fn seal_in_place(
        &self,
        n: u64,
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], AeadError> {
        #[cfg(feature = "ring")]
        {
            use ring::aead::{Aad, Nonce};
            let tag = self
                .key
                .0
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(self.nonce(n)),
                    Aad::from(aad),
                    in_out,
                )
                .map_err(|_| AeadError)?;
            tag.as_ref().try_into().map_err(|_| AeadError)
        }
        #[cfg(not(feature = "ring"))]
        {
            use aes_gcm::AeadInPlace;
            let nonce = self.nonce(n);
            let tag = match &self.key {
                Key::AesGcm(key) => key.encrypt_in_place_detached(&nonce.into(), aad, in_out),
                Key::ChaChaPoly(key) => key.encrypt_in_place_detached(&nonce.into(), aad, in_out),
            }
            .map_err(|_| AeadError)?;
            Ok(tag.into())
        }
    }

    /// Decrypts `in_out` in place under nonce `n`, checking `tag`. On failure `in_out`
    /// holds no plaintext worth reading.
    pub(crate) fn open_in_place(
        &self,
        n: u64,
        aad: &[u8],
        in_out: &mut [u8],
        tag: &[u8],
    ) -> Result<(), AeadError> {
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| AeadError)?;
        #[cfg(feature = "ring")]
        {
            use ring::aead::{Aad, Nonce, Tag};
            self.key
                .0
                .open_in_place_separate_tag(
                    Nonce::assume_unique_for_key(self.nonce(n)),
                    Aad::from(aad),
                    Tag::from(tag),
                    in_out,
                    0..,
                )
                .map(|_| ())
                .map_err(|_| AeadError)
        }
        #[cfg(not(feature = "ring"))]
        {
            use aes_gcm::AeadInPlace;
            let nonce = self.nonce(n);
            match &self.key {
                Key::AesGcm(key) => {
                    key.decrypt_in_place_detached(&nonce.into(), aad, in_out, &tag.into())
                }
                Key::ChaChaPoly(key) => {
                    key.decrypt_in_place_detached(&nonce.into(), aad, in_out, &tag.into())
                }
            }
            .map_err(|_| AeadError)
        }
    }

    /// Decrypts the ciphertext and tag at `in_out[from..]` under nonce `n`, writing the
    /// plaintext at the start of `in_out`; returns its length. ring does it in one pass;
    /// RustCrypto moves the ciphertext first.
    pub(crate) fn open_within(
        &self,
        n: u64,
        aad: &[u8],
        in_out: &mut [u8],
        from: usize,
    ) -> Result<usize, AeadError> {
        #[cfg(feature = "ring")]
        {
            use ring::aead::{Aad, Nonce};
            self.key
                .0
                .open_within(
                    Nonce::assume_unique_for_key(self.nonce(n)),
                    Aad::from(aad),
                    in_out,
                    from..,
                )
                .map(|plain| plain.len())
                .map_err(|_| AeadError)
        }
        #[cfg(not(feature = "ring"))]
        {
            let sealed_len = in_out.len().checked_sub(from).ok_or(AeadError)?;
            let plain_len = sealed_len.checked_sub(TAG_LEN).ok_or(AeadError)?;
            in_out.copy_within(from.., 0);
            let (body, rest) = in_out.split_at_mut(plain_len);
            self.open_in_place(n, aad, body, &rest[..TAG_LEN])?;
            Ok(plain_len)
        }
    }

    /// Noise `REKEY`: the new key is the first 32 bytes of encrypting 32 zero bytes at the
    /// largest nonce (empty associated data).
    #[cfg(test)]
    pub(crate) fn rekey(&mut self) {
        *self = self.rekeyed();
    }

    /// The key `REKEY` would produce, leaving this one as it is (callers commit only once
    /// the new key did its job).
    pub(crate) fn rekeyed(&self) -> TransportKey {
        let mut key = Zeroizing::new([0u8; 32]);
        let _tag = self
            .seal_in_place(u64::MAX, &[], &mut key[..])
            .expect("32 bytes are never too long");
        TransportKey::new(self.suite, &key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(unused_imports)]
    use crate::prelude::*;

    /// Two `snow` handshake states after a completed XX handshake.
    fn handshake(suite: CipherSuite) -> (snow::HandshakeState, snow::HandshakeState) {
        let params: snow::params::NoiseParams = suite.noise_name().parse().unwrap();
        let key = |b: u8| [b; 32];
        let resolver = || Box::new(crate::security::random::Resolver::new([9; 32]));
        let mut initiator = snow::Builder::with_resolver(params.clone(), resolver())
            .local_private_key(&key(1))
            .unwrap()
            .build_initiator()
            .unwrap();
        let mut responder = snow::Builder::with_resolver(params, resolver())
            .local_private_key(&key(2))
            .unwrap()
            .build_responder()
            .unwrap();
        let (mut buf, mut out) = ([0u8; 512], [0u8; 512]);
        let mut from = &mut initiator;
        let mut to = &mut responder;
        while !(from.is_handshake_finished() && to.is_handshake_finished()) {
            let len = from.write_message(&[], &mut buf).unwrap();
            to.read_message(&buf[..len], &mut out).unwrap();
            core::mem::swap(&mut from, &mut to);
        }
        (initiator, responder)
    }

    #[test]
    fn sealing_and_opening_match_snow_across_rekeys() {
        for suite in CipherSuite::ALL {
            let (mut initiator, mut responder) = handshake(suite);
            let (to_responder, to_initiator) = initiator.dangerously_get_raw_split();
            assert_eq!(
                responder.dangerously_get_raw_split(),
                (to_responder, to_initiator)
            );
            let mut snow_send = initiator.into_stateless_transport_mode().unwrap();
            let mut snow_recv = responder.into_stateless_transport_mode().unwrap();
            let mut ours_send = TransportKey::new(suite, &to_responder);
            let mut ours_recv = TransportKey::new(suite, &to_responder);
            let plain: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
            for epoch in 0..3 {
                for n in [0u64, 1, 255, 256, 1 << 40] {
                    let mut expected = vec![0u8; plain.len() + interconnect_proto::SEALED_TAG_LEN];
                    snow_send.write_message(n, &plain, &mut expected).unwrap();
                    let mut ours = plain.clone();
                    let tag = ours_send.seal_in_place(n, &[], &mut ours).unwrap();
                    ours.extend_from_slice(&tag);
                    assert_eq!(ours, expected, "{suite:?} epoch {epoch} nonce {n}");

                    let (body, tag) = expected.split_at_mut(plain.len());
                    ours_recv.open_in_place(n, &[], body, tag).unwrap();
                    assert_eq!(body, &plain[..]);
                    let mut opened = vec![0u8; plain.len()];
                    snow_recv.read_message(n, &ours, &mut opened).unwrap();
                    assert_eq!(opened, plain);
                }
                snow_send.rekey_outgoing();
                snow_recv.rekey_incoming();
                ours_send.rekey();
                ours_recv.rekey();
            }
        }
    }

    #[test]
    fn a_flipped_bit_or_a_wrong_nonce_does_not_open() {
        let key = TransportKey::new(CipherSuite::AesGcm, &[5; 32]);
        let mut data = b"attack at dawn".to_vec();
        let tag = key.seal_in_place(7, b"ad", &mut data).unwrap();
        let mut wrong_nonce = data.clone();
        assert!(
            key.open_in_place(8, b"ad", &mut wrong_nonce, tag.as_ref())
                .is_err()
        );
        let mut wrong_ad = data.clone();
        assert!(
            key.open_in_place(7, b"da", &mut wrong_ad, tag.as_ref())
                .is_err()
        );
        let mut right = data.clone();
        assert!(
            key.open_in_place(7, b"ad", &mut right, tag.as_ref())
                .is_ok()
        );
        assert_eq!(right, b"attack at dawn");
        data[0] ^= 1;
        assert!(
            key.open_in_place(7, b"ad", &mut data, tag.as_ref())
                .is_err()
        );
        assert!(key.open_in_place(7, b"ad", &mut data, &[0; 3]).is_err());
    }
}
