//! Shell-style globs as `fnmatch(3)`, the crate's one implementation: [`glob`] without
//! `FNM_PATHNAME` (`*` and `?` match `/` too: dpkg's `path-exclude` filters, patchpull's
//! policy and admission patterns) and [`glob_pathname`] with it (`*`, `?` and `[...]`
//! never match `/`: apk's `protected_paths.d` lists). Patterns come from images, so the
//! matcher must not be exponential: it is the two-pointer backtracking matcher, which
//! only ever returns to the last `*`, in at most `(pattern + 1) * (text + 1)` steps.

/// `fnmatch(3)` without `FNM_PATHNAME`: `*` and `?` match `/` too; `[...]` classes with
/// `!`/`^` negation and ranges; `\` escapes; an unclosed `[` is a literal.
pub fn glob(pattern: &[u8], text: &[u8]) -> bool {
    matches(pattern, text, Slash::Any, &mut 0)
}

/// `fnmatch(3)` with `FNM_PATHNAME`: as [`glob`], but `*`, `?` and `[...]` never match
/// `/`, which only a `/` in the pattern matches.
pub fn glob_pathname(pattern: &[u8], text: &[u8]) -> bool {
    matches(pattern, text, Slash::Literal, &mut 0)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slash {
    /// Wildcards match `/` like any byte.
    Any,
    /// Only a literal `/` matches `/`.
    Literal,
}

/// The matcher; `steps` counts the loop's turns (for the tests' bound).
fn matches(pattern: &[u8], text: &[u8], slash: Slash, steps: &mut u64) -> bool {
    let wildcard_matches = |byte: u8| slash == Slash::Any || byte != b'/';
    let (mut p, mut t) = (0, 0);
    // The last `*` seen and the text position its match currently ends at.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        *steps += 1;
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' if wildcard_matches(text[t]) => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'?' => {}
                b'[' => {
                    if let Some((matched, next)) = class(&pattern[p..], text[t]) {
                        if matched && wildcard_matches(text[t]) {
                            p += next;
                            t += 1;
                            continue;
                        }
                    } else if text[t] == b'[' {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
                b'\\' if p + 1 < pattern.len() && pattern[p + 1] == text[t] => {
                    p += 2;
                    t += 1;
                    continue;
                }
                b'\\' if p + 1 < pattern.len() => {}
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        // A mismatch: the last `*` takes one more byte and the rest is tried again from
        // there. An earlier `*` never needs to: whatever it could take, this one can.
        // Under `FNM_PATHNAME` a `*` cannot take a `/`, and no earlier one can reach past
        // the `/` that separates it from this one, so the match fails.
        match star {
            Some((star_p, star_t)) if wildcard_matches(text[star_t]) => {
                p = star_p + 1;
                t = star_t + 1;
                star = Some((star_p, star_t + 1));
            }
            _ => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches one byte against the class at the start of `pattern` (`[...]`): whether it
/// matched and the class's length; `None` when the class is not closed.
fn class(pattern: &[u8], byte: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pattern.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pattern.len() {
        let c = pattern[i];
        if c == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if i + 2 < pattern.len() && pattern[i + 1] == b'-' && pattern[i + 2] != b']' {
            if (c..=pattern[i + 2]).contains(&byte) {
                matched = true;
            }
            i += 3;
        } else {
            if c == byte {
                matched = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_fnmatch_without_pathname() {
        assert!(glob(b"/usr/share/doc/*", b"/usr/share/doc/a/b/c"));
        assert!(glob(
            b"/usr/share/doc/*/copyright",
            b"/usr/share/doc/x/copyright"
        ));
        assert!(!glob(
            b"/usr/share/doc/*/copyright",
            b"/usr/share/doc/x/NEWS"
        ));
        assert!(glob(b"/usr/share/locale/[a-e]?", b"/usr/share/locale/de"));
        assert!(!glob(b"/usr/share/locale/[!a-e]?", b"/usr/share/locale/de"));
        assert!(!glob(b"/usr/share/locale/[a-c]?", b"/usr/share/locale/de"));
        assert!(glob(b"/a\\*b", b"/a*b"));
        assert!(!glob(b"/a\\*b", b"/axb"));
        assert!(glob(b"*", b""));
        assert!(glob(b"a?c", b"a/c"));
        assert!(glob(b"[a", b"[a"));
    }

    #[test]
    fn globs_match_like_fnmatch_with_pathname() {
        assert!(glob_pathname(b"/lib/modules/*", b"/lib/modules/6.1"));
        assert!(!glob_pathname(
            b"/lib/modules/*",
            b"/lib/modules/6.1/kernel"
        ));
        assert!(glob_pathname(
            b"/usr/lib/gdk-pixbuf-2.0/*/loaders",
            b"/usr/lib/gdk-pixbuf-2.0/2.10.0/loaders"
        ));
        assert!(glob_pathname(b"/usr/bin", b"/usr/bin"));
        assert!(!glob_pathname(b"/usr/bin", b"/usr/bin/x"));
        assert!(glob_pathname(
            b"etc/ssl/certs/ca-cert-[a-z]*.pem",
            b"etc/ssl/certs/ca-cert-x1.pem"
        ));
        assert!(!glob_pathname(b"a?c", b"a/c"));
        assert!(!glob_pathname(b"a[/]c", b"a/c"));
        assert!(glob_pathname(b"[!x]", b"y"));
        // A later segment's `*` backtracks; an earlier segment's never has to.
        assert!(glob_pathname(b"*a/*b*b", b"xxa/bbxb"));
        assert!(!glob_pathname(b"*a/*b", b"xa/y/b"));
        assert!(glob_pathname(b"*/*", b"a/b"));
        assert!(!glob_pathname(b"*", b"a/b"));
    }

    /// `*a*a*a...b` against `aaaa...`: exponential for a recursive matcher (each `*`
    /// tries every split), at most (pattern + 1) * (text + 1) steps here.
    #[test]
    fn a_pathological_pattern_takes_bounded_steps() {
        let pattern = [&b"*a".repeat(30)[..], b"b"].concat();
        let text = b"a".repeat(200);
        let bound = ((pattern.len() + 1) * (text.len() + 1)) as u64;
        for slash in [Slash::Any, Slash::Literal] {
            let mut steps = 0;
            assert!(!matches(&pattern, &text, slash, &mut steps));
            assert!(steps <= bound, "{steps} steps, more than {bound}");
        }
        let mut steps = 0;
        let matching = [&text[..], b"b"].concat();
        assert!(matches(&pattern, &matching, Slash::Literal, &mut steps));
        assert!(steps <= bound, "{steps} steps, more than {bound}");
    }
}
