//! Unit tests of the keys: each signer type signs and verifies, in both trust layouts.

use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn the_wei25519_generator_is_the_ed25519_base_point() {
    let g = [
        hex("2aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaad245a"),
        hex("20ae19a1b8a086b4e01edd2c7748d14c923d4d7e6d7c61b229e9c5a27eced3d9"),
    ]
    .concat();
    let ed = wei25519_to_ed25519(&g).unwrap();
    assert_eq!(ed.to_bytes().to_vec(), hex("5866666666666666666666666666666666666666666666666666666666666666"));
    // A point off the curve, and Y = 0, are refused.
    let mut off = g.clone();
    off[63] ^= 1;
    assert!(wei25519_to_ed25519(&off).unwrap_err().to_string().contains("not on WEI25519"));
    let outside = [vec![0xff; 32], g[32..].to_vec()].concat();
    assert!(wei25519_to_ed25519(&outside).unwrap_err().to_string().contains("outside the field"));
}

#[test]
fn curves_pkg_refuses_or_that_cannot_be_computed_are_named() {
    let p256 = Oid::new_unwrap("1.2.840.10045.3.1.7");
    assert!(Curve::from_oid(&p256).unwrap_err().to_string().contains("NIST P-256 (prime256v1), which pkg refuses"));
    let err = Curve::from_oid(&Curve::BrainpoolP512r1.oid()).unwrap_err().to_string();
    assert!(err.contains("brainpoolP512r1: pkg accepts it, but there is no well-kept Rust implementation"), "{err}");
    for c in Curve::ALL {
        assert_eq!(Curve::ALL.into_iter().find(|x| x.oid() == c.oid()), Some(c));
    }
}

#[test]
fn every_supported_curve_signs_and_verifies_over_sha256() {
    let message = Message::of(b"data");
    for curve in Curve::ALL.into_iter().filter(|c| c.supported().is_ok()) {
        let n = curve.sizes().1;
        let mut scalar = vec![0u8; n];
        scalar[n - 1] = 7;
        scalar[n - 2] = 1;
        let key = PrivateKey::ecdsa(EcdsaSecret::from_scalar(curve, &scalar).unwrap());
        assert_eq!(key.algorithm(), Algorithm::Ecdsa(curve));
        for layout in [TrustMode::Pubkey, TrustMode::Fingerprints] {
            let sig = key.sign(&message, layout).unwrap();
            key.public.verify(&message, SignerType::Ecdsa, layout, &sig).unwrap_or_else(|e| panic!("{curve}: {e}"));
            let other = if layout == TrustMode::Pubkey { TrustMode::Fingerprints } else { TrustMode::Pubkey };
            assert_eq!(key.public.verify(&message, SignerType::Ecdsa, other, &sig), Err(SignatureError::Mismatch));
        }
    }
}
