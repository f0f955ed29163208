//! pkg's own base32: the alphabet `ybndrfg8ejkmcpqxot1uwisza345h769` with bits packed
//! least-significant first (neither RFC 4648 nor standard z-base-32). Used for the
//! `2$` BLAKE2b sums in catalogues (pkg's `libpkg/pkg_checksum.c`, `pkg_checksum_encode_base32`).

pub(crate) const ALPHABET: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";

/// Which bytes are digits of [`ALPHABET`].
const IS_DIGIT: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        table[ALPHABET[i] as usize] = true;
        i += 1;
    }
    table
};

/// Whether `b` is a digit of pkg's base32.
pub(crate) fn is_digit(b: u8) -> bool {
    IS_DIGIT[usize::from(b)]
}

/// Encodes bytes: each byte's bits are appended above the bits left over, 5-bit digits
/// are taken from the bottom, and a final partial digit is emitted. 64 bytes give 103
/// characters.
pub(crate) fn encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 8 / 5 + 1);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        buffer |= u32::from(b) << bits;
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[(buffer & 31) as usize] as char);
            buffer >>= 5;
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[(buffer & 31) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_the_alphabet() {
        for b in 0..=255u8 {
            assert_eq!(is_digit(b), ALPHABET.contains(&b), "{b}");
        }
    }

    #[test]
    fn lengths() {
        assert_eq!(encode(&[]), "");
        assert_eq!(encode(&[0; 64]).len(), 103);
        assert_eq!(encode(&[0; 5]), "yyyyyyyy");
        assert_eq!(encode(&[1]), "by");
        assert_eq!(encode(&[0x20]), "yb");
    }

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
    }

    /// BLAKE2b-512 digests computed by coreutils' `b2sum`, and the base32 the real pkg
    /// 2.8.4 wrote for them (the `sum`s in tests/data: the production package in the
    /// catalogues, two files in its `+MANIFEST`).
    #[test]
    fn encodes_as_the_real_pkg_did() {
        for (b2sum, pkg) in [
            (
                "65fb27a33410c1090d918e688564e1fe66c0a3b8d79beb1e1ad591b05072dbecbb7d765f921d40dc3bb1f35379fb61ad080f30da8a86823b3336425b83bd3a38",
                "f56x1t1goeouogr1qr4ke1fh6z3yhtnzz6gzqxediqrbmejq5g5z563q91r5byt55jc89jfx5xa4krhbotsiedko53ccdbpmdcxidhy",
            ),
            (
                "3e699fd06934249afcdfd6719b0634e1d78f444464fdc338f2b95d6b32061d2d969a533a5990a2152dc64f3a0ec0cb3772cbe067fe162ec667532296d3c02c52",
                "6j46je8pwbjwj695sqhsjdogb9i9enterm98che63pzsg3ay7emcjpqk4jsyjtsnptt9r7aby61xd3p3y93hxmafg63gfta1ugo3njb",
            ),
            (
                "7a8230b5814b4648f41460757b4afc1e5594e001dc605cbc618dfec5f2f9605fba7a623ec1e2bfa7054184740a4423004077aea804124d684dd38522cad30346",
                "4uybu4gom1tor4unym7s8ft96eiejo8yhgaaf6gcpw9mc389y5zwm7jc6jof696wfeoee4jbr4eyyy7qqfkjyjwjemug7nkrk6w8ydb",
            ),
        ] {
            assert_eq!(encode(&unhex(b2sum)), pkg);
        }
    }
}
