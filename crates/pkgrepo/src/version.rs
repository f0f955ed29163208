//! Package version ordering as pkg 2.8.4 compares versions (`pkg version -t`,
//! `pkg audit`): libpkg/pkg_version.c, `pkg_version_cmp`, `split_version` and
//! `get_component`. See docs/reference/pkg-audit.md.
//!
//! A version is `VERSION[_REVISION][,EPOCH]`; the epoch decides first, then the version
//! component by component (split at anything not a digit, letter, `+` or `*`), then the
//! port revision. A component is a number, a letter with an optional patch number, or
//! one of the special words `pl` (sorts first), `snap`, `alpha`, `beta`, `pre`, `rc`.

use std::cmp::Ordering;

/// One component: number, letter (or special word), patch number.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Component {
    n: i64,
    a: i32,
    pl: i64,
}

/// `pl` sorts before every letter; the other words sort as their first letter
/// (pkg_version.c, `stages[]`, with ABASE = 2).
const STAGES: [(&str, i32); 6] = [
    ("pl", 0),
    ("snap", (b's' - b'a') as i32 + 2),
    ("alpha", 2),
    ("beta", (b'b' - b'a') as i32 + 2),
    ("pre", (b'p' - b'a') as i32 + 2),
    ("rc", (b'r' - b'a') as i32 + 2),
];

/// `pkg_version_cmp(a, b)`: how version (or `name-version`) `a` compares with `b`.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (v1, e1, r1) = split(a.as_bytes());
    let (v2, e2, r2) = split(b.as_bytes());
    let mut result = e1.cmp(&e2);
    if result == Ordering::Equal && !v1.eq_ignore_ascii_case(v2) {
        let (mut p1, mut p2) = (0, 0);
        while result == Ordering::Equal && (p1 < v1.len() || p2 < v2.len()) {
            let (mut c1, mut c2) = (Component::default(), Component::default());
            let block1 = !(p1 < v1.len() && v1[p1] != b'+');
            let block2 = !(p2 < v2.len() && v2[p2] != b'+');
            if !block1 {
                p1 = component(v1, p1, &mut c1);
            }
            if !block2 {
                p2 = component(v2, p2, &mut c2);
            }
            if block1 && block2 {
                p1 = (p1 + 1).min(v1.len());
                p2 = (p2 + 1).min(v2.len());
            } else {
                result = c1.n.cmp(&c2.n).then(c1.a.cmp(&c2.a)).then(c1.pl.cmp(&c2.pl));
            }
        }
    }
    result.then(r1.cmp(&r2))
}

/// `split_version`: the version part (after the last `-`, before `_REVISION` or
/// `,EPOCH`), the epoch and the revision.
fn split(s: &[u8]) -> (&[u8], u64, u64) {
    let start = s.iter().rposition(|&c| c == b'-').map_or(0, |i| i + 1);
    let version = &s[start..];
    let underscore = version.iter().rposition(|&c| c == b'_');
    let revision = underscore.map_or(0, |i| leading_number(&version[i + 1..]));
    let after = underscore.map_or(0, |i| i + 1);
    let comma = version[after..].iter().rposition(|&c| c == b',').map(|i| i + after);
    let epoch = comma.map_or(0, |i| leading_number(&version[i + 1..]));
    let end = underscore.or(comma).unwrap_or(version.len());
    (&version[..end], epoch, revision)
}

/// `strtoul`'s value of the leading digits (0 when none; saturating).
fn leading_number(s: &[u8]) -> u64 {
    s.iter()
        .take_while(|c| c.is_ascii_digit())
        .fold(0u64, |n, &c| n.saturating_mul(10).saturating_add(u64::from(c - b'0')))
}

/// `get_component`: reads one component at `pos`, returns the position after it and
/// its trailing separators.
fn component(s: &[u8], mut pos: usize, c: &mut Component) -> usize {
    let at = |i: usize| s.get(i).copied().unwrap_or(0);
    let mut has_stage = false;
    let mut has_patchlevel = false;
    if at(pos).is_ascii_digit() {
        let start = pos;
        while at(pos).is_ascii_digit() {
            pos += 1;
        }
        c.n = leading_number(&s[start..pos]).min(i64::MAX as u64) as i64;
    } else if at(pos) == b'*' {
        c.n = -2;
        pos += 1;
        while pos < s.len() && at(pos) != b'+' {
            pos += 1;
        }
    } else {
        c.n = -1;
        has_stage = true;
    }
    if at(pos).is_ascii_alphabetic() {
        let mut letter = at(pos).to_ascii_lowercase();
        has_patchlevel = true;
        if at(pos + 1).is_ascii_alphabetic() {
            for (name, value) in STAGES {
                let len = name.len();
                let word = s.get(pos..pos + len);
                if word.is_some_and(|w| w.eq_ignore_ascii_case(name.as_bytes())) && !at(pos + len).is_ascii_alphabetic()
                {
                    if has_stage {
                        c.a = value;
                        pos += len;
                    } else {
                        // A word after a number reads as `.word`: a new component.
                        c.a = 0;
                        has_patchlevel = false;
                    }
                    letter = 0;
                    break;
                }
            }
        }
        if letter != 0 {
            c.a = i32::from(letter - b'a') + 2;
            pos += 1;
            while at(pos).is_ascii_alphabetic() {
                pos += 1;
            }
        }
    } else {
        c.a = 0;
    }
    if has_patchlevel {
        if at(pos).is_ascii_digit() {
            let start = pos;
            while at(pos).is_ascii_digit() {
                pos += 1;
            }
            c.pl = leading_number(&s[start..pos]).min(i64::MAX as u64) as i64;
        } else {
            c.pl = -1;
        }
    } else {
        c.pl = 0;
    }
    while pos < s.len() && !at(pos).is_ascii_alphanumeric() && at(pos) != b'+' && at(pos) != b'*' {
        pos += 1;
    }
    pos
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn orders_as_pkg_version_does() {
        // Pairs and results as `pkg version -t` gives them (pkg_version.c's rules).
        for (a, b, want) in [
            ("1.0", "1.0", Equal),
            ("1.0", "1.1", Less),
            ("1.10", "1.9", Greater),
            ("1.0_1", "1.0", Greater),
            ("1.0,1", "2.0", Greater),
            ("1.0a", "1.0", Greater),
            ("1.0", "1.0.1", Less),
            ("1.0alpha1", "1.0", Less),
            ("1.0rc1", "1.0beta2", Greater),
            ("1.0pl1", "1.0a", Less),
            ("0.9.0", "0.10.0", Less),
            ("colibri-0.9.0_1", "colibri-0.9.0", Greater),
            // A missing component reads as 0.
            ("1.0.0", "1.0", Equal),
            ("2.4.59_1,1", "2.4.59,1", Greater),
            ("1.*", "1.5", Less),
        ] {
            assert_eq!(compare(a, b), want, "{a} vs {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn any_bytes_compare_without_panicking() {
        for s in ["", "-", "_", ",", "+", "*", "a", "1_", ",_", "9999999999999999999999", "a-b-c_9,9"] {
            let _ = compare(s, "1.0");
            let _ = compare("1.0", s);
        }
    }
}
