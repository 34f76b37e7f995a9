//! `postgresql.callbacks`, `pre_promote` and `callback_timeout` at load.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use super::tests::DATA;
use super::*;

/// DATA with `lines` added to its `postgresql:` section.
fn with_postgresql(lines: &str) -> String {
    let from = "postgresql:\n";
    assert!(DATA.contains(from));
    DATA.replacen(from, &format!("{from}{lines}"), 1)
}

fn script(dir: &Path, name: &str, mode: u32) -> String {
    let path = dir.join(name);
    std::fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.display().to_string()
}

fn problems_of(text: &str) -> Vec<Problem> {
    match parse(text, "node1.yaml", NodeKind::Data) {
        Ok(_) => panic!("expected problems, the config loaded:\n{text}"),
        Err(e) => e.problems,
    }
}

#[test]
fn callbacks_load_with_arguments_and_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let exe = script(dir.path(), "cb.sh", 0o755);
    let text = with_postgresql(&format!(
        "  callbacks:\n    on_role_change: {exe} --vip 10.0.0.5\n    on_start: {exe}\n  pre_promote: {exe}\n  callback_timeout: 5s\n"
    ));
    let config = parse(&text, "node1.yaml", NodeKind::Data).expect("valid");
    let pg = config.postgresql.expect("postgresql");
    let role_change = pg.callbacks.on_role_change.clone().expect("on_role_change");
    assert_eq!(role_change.words(), vec![exe.as_str(), "--vip", "10.0.0.5"]);
    let keys: Vec<&str> = pg.callbacks.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, vec!["on_start", "on_role_change"]);
    assert_eq!(
        pg.pre_promote.expect("pre_promote").words(),
        vec![exe.as_str()]
    );
    assert_eq!(pg.callback_timeout, Duration::from_secs(5));
}

#[test]
fn callback_defaults() {
    let config = parse(DATA, "node1.yaml", NodeKind::Data).expect("valid");
    let pg = config.postgresql.expect("postgresql");
    assert_eq!(pg.callbacks, Callbacks::default());
    assert_eq!(pg.pre_promote, None);
    assert_eq!(pg.callback_timeout, Duration::from_secs(30));
}

#[test]
fn bad_callbacks_name_their_key_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let plain = script(dir.path(), "plain.sh", 0o644);
    let exe = script(dir.path(), "cb.sh", 0o755);
    let dir_path = dir.path().display().to_string();
    let cases = [
        (
            "  callbacks:\n    on_start: /nonexistent/cb.sh\n".to_string(),
            "postgresql.callbacks.on_start",
            "cannot use /nonexistent/cb.sh",
        ),
        (
            format!("  callbacks:\n    on_stop: {plain} x\n"),
            "postgresql.callbacks.on_stop",
            "is not executable — run chmod +x",
        ),
        (
            "  callbacks:\n    on_reload: cb.sh\n".to_string(),
            "postgresql.callbacks.on_reload",
            "is not an absolute path",
        ),
        (
            "  callbacks:\n    on_restart: '  '\n".to_string(),
            "postgresql.callbacks.on_restart",
            "is empty — name an executable",
        ),
        (
            format!("  pre_promote: {dir_path}\n"),
            "postgresql.pre_promote",
            "is not a file",
        ),
        (
            format!("  pre_promote: {exe}\n  callback_timeout: 0s\n"),
            "postgresql.callback_timeout",
            "is zero — give callbacks time to run",
        ),
        (
            format!("  callbacks:\n    on_role_chnage: {exe}\n"),
            "postgresql.callbacks.on_role_chnage",
            "did you mean `on_role_change`?",
        ),
    ];
    let mut failures = Vec::new();
    for (lines, path, fix) in cases {
        let found = problems_of(&with_postgresql(&lines));
        if !found
            .iter()
            .any(|p| p.path == path && p.message.contains(fix))
        {
            failures.push(format!("wanted `{path}: …{fix}…`, got {found:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
