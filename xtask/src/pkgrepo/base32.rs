//! pkg's own base32: the alphabet `ybndrfg8ejkmcpqxot1uwisza345h769` with bits packed
//! least-significant first (neither RFC 4648 nor standard z-base-32). Used for the
//! `2$` BLAKE2b sums in catalogues.

const ALPHABET: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";

/// Encodes bytes: each byte's bits are appended above the bits left over, 5-bit digits
/// are taken from the bottom, and a final partial digit is emitted. 64 bytes give 103
/// characters.
pub fn encode(bytes: &[u8]) -> String {
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
    fn lengths() {
        assert_eq!(encode(&[]), "");
        assert_eq!(encode(&[0; 64]).len(), 103);
        assert_eq!(encode(&[0; 5]), "yyyyyyyy");
        assert_eq!(encode(&[1]), "by");
        assert_eq!(encode(&[0x20]), "yb");
    }
}
