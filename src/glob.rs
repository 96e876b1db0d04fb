//! Shell-style globs as `fnmatch(3)` without `FNM_PATHNAME`: `*` and `?` match `/` too.
//! dpkg's path filters and patchpull's policy patterns both use them.

/// `fnmatch(3)` without `FNM_PATHNAME`: `*` and `?` match `/` too; `[...]` classes with
/// `!`/`^` negation and ranges; `\` escapes.
pub fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class(&pattern[p..], text[t]) {
                        if matched {
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
        match star {
            Some((star_p, star_t)) => {
                p = star_p + 1;
                t = star_t + 1;
                star = Some((star_p, star_t + 1));
            }
            None => return false,
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
    use super::glob;

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
    }
}
