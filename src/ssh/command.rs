//! The command string of ExecSandbox (relay.md §A.9): environment entries
//! sorted by key as `KEY=<esc(value)>`, then each argument as `<esc(arg)>`,
//! joined by spaces, behind `cd <esc(workdir)> && ` when a workdir is set.
//! The supervisor runs it as `/bin/bash -lc <string>`.

use std::collections::BTreeMap;

/// The longest command string (relay.md §A.9): past it the RPC is
/// INVALID_ARGUMENT.
pub const MAX_COMMAND_BYTES: usize = 256 * 1024;

/// Why the string could not be built; `Display` is the spec's text after
/// "command construction failed: ".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// NUL, CR or LF in a value (the RPC validates these first).
    Unsafe,
    TooLong,
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::Unsafe => {
                f.write_str("value contains null, newline or carriage return characters")
            }
            CommandError::TooLong => {
                write!(f, "assembled command string exceeds {MAX_COMMAND_BYTES} byte limit")
            }
        }
    }
}

/// POSIX-shell quoting: unchanged when every byte is in `[A-Za-z0-9./_-]`,
/// `''` when empty, otherwise single-quoted with each `'` as `'"'"'`.
pub fn esc(v: &str) -> Result<String, CommandError> {
    if v.bytes().any(|b| matches!(b, 0 | b'\r' | b'\n')) {
        return Err(CommandError::Unsafe);
    }
    if v.is_empty() {
        return Ok("''".into());
    }
    if v.bytes().all(|b| b.is_ascii_alphanumeric() || b"./_-".contains(&b)) {
        return Ok(v.into());
    }
    Ok(format!("'{}'", v.replace('\'', "'\"'\"'")))
}

/// The string for `argv` with `env` (a BTreeMap: iteration is sorted by
/// key) and an optional `workdir`.
pub fn build_command(
    argv: &[String],
    env: &BTreeMap<String, String>,
    workdir: Option<&str>,
) -> Result<String, CommandError> {
    let mut parts = Vec::with_capacity(env.len() + argv.len());
    for (k, v) in env {
        parts.push(format!("{k}={}", esc(v)?));
    }
    for a in argv {
        parts.push(esc(a)?);
    }
    let joined = parts.join(" ");
    let out = match workdir {
        Some(w) => format!("cd {} && {joined}", esc(w)?),
        None => joined,
    };
    if out.len() > MAX_COMMAND_BYTES {
        return Err(CommandError::TooLong);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn esc_rules() {
        assert_eq!(esc("").unwrap(), "''");
        assert_eq!(esc("a-Z_0.9/x").unwrap(), "a-Z_0.9/x");
        assert_eq!(esc("a b").unwrap(), "'a b'");
        assert_eq!(esc("it's").unwrap(), "'it'\"'\"'s'");
        assert_eq!(esc("$HOME").unwrap(), "'$HOME'");
        assert_eq!(esc("é").unwrap(), "'é'");
        for bad in ["a\0", "a\nb", "\r"] {
            assert_eq!(esc(bad), Err(CommandError::Unsafe));
        }
    }

    #[test]
    fn env_sorted_then_argv_then_cd() {
        let env = BTreeMap::from([
            ("ZED".to_string(), "1".to_string()),
            ("ABC".to_string(), "x y".to_string()),
        ]);
        let cmd = build_command(&argv(&["sh", "-c", "echo hi"]), &env, None).unwrap();
        assert_eq!(cmd, "ABC='x y' ZED=1 sh -c 'echo hi'");
        let cmd = build_command(&argv(&["ls"]), &BTreeMap::new(), Some("/tmp/my dir")).unwrap();
        assert_eq!(cmd, "cd '/tmp/my dir' && ls");
        let cmd = build_command(&argv(&["ls", ""]), &BTreeMap::new(), Some("/w")).unwrap();
        assert_eq!(cmd, "cd /w && ls ''");
    }

    #[test]
    fn length_limit() {
        // 262144 bytes exactly is allowed; one more is not.
        let fits = "a".repeat(MAX_COMMAND_BYTES);
        assert_eq!(
            build_command(&argv(&[&fits]), &BTreeMap::new(), None).unwrap().len(),
            MAX_COMMAND_BYTES
        );
        let over = "a".repeat(MAX_COMMAND_BYTES - 1);
        let e = build_command(&argv(&[&over, "b"]), &BTreeMap::new(), None).unwrap_err();
        assert_eq!(e.to_string(), "assembled command string exceeds 262144 byte limit");
        // Quoting counts: 'x' around a value makes it longer.
        let q = " ".repeat(MAX_COMMAND_BYTES - 1);
        assert_eq!(build_command(&argv(&[&q]), &BTreeMap::new(), None), Err(CommandError::TooLong));
    }
}
