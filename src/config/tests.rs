//! Table-driven tests of the loader: every bad input names its key and fix.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

/// A valid data node file, the base every case edits.
pub(crate) const DATA: &str = "\
scope: demo
name: node1
raft:
  node_id: 1
  listen: 127.0.0.1:7001
  data_dir: ./data/node1/raft
  secret: 0123456789abcdef-secret
  peers:
    - { id: 1, name: node1, address: 127.0.0.1:7001 }
    - { id: 2, name: node2, address: 127.0.0.1:7002 }
    - { id: 3, name: witness1, address: 127.0.0.1:7003, witness: true }
postgresql:
  listen: 127.0.0.1:5433
  data_dir: ./data/node1/pgdata
  authentication:
    superuser: { username: postgres }
    replication: { username: replicator }
bootstrap:
  dcs:
    ttl: 5s
";

const WITNESS: &str = "\
scope: demo
name: witness1
raft:
  node_id: 3
  listen: 127.0.0.1:7003
  data_dir: ./data/witness1/raft
  secret: 0123456789abcdef-secret
  peers:
    - { id: 1, name: node1, address: 127.0.0.1:7001 }
    - { id: 2, name: node2, address: 127.0.0.1:7002 }
    - { id: 3, name: witness1, address: 127.0.0.1:7003, witness: true }
";

/// `base` with `from` replaced by `to`; fails when `from` is absent, so a
/// case can never silently test the unmodified base.
fn edit(base: &str, from: &str, to: &str) -> String {
    assert!(
        base.contains(from),
        "test bug: {from:?} is not in the base text"
    );
    base.replacen(from, to, 1)
}

fn problems(text: &str, kind: NodeKind) -> Vec<Problem> {
    match parse(text, "test.yaml", kind) {
        Ok(_) => panic!("expected problems, the config loaded:\n{text}"),
        Err(e) => {
            assert_eq!(e.origin, "test.yaml");
            assert!(
                !e.problems.is_empty(),
                "an error must hold at least one problem"
            );
            e.problems
        }
    }
}

#[test]
fn bases_are_valid() {
    let data = parse(DATA, "data", NodeKind::Data).expect("data base loads");
    assert_eq!(data.me().expect("own entry").name, "node1");
    let witness = parse(WITNESS, "witness", NodeKind::Witness).expect("witness base loads");
    assert!(witness.me().expect("own entry").witness);
}

#[test]
fn a_joining_node_lists_the_running_voters_and_itself() {
    let text = edit(DATA, "  node_id: 1\n", "  node_id: 1\n  join: true\n");
    let config = parse(&text, "join", NodeKind::Data).expect("a join config loads");
    assert!(config.raft.join);
    assert!(!parse(DATA, "data", NodeKind::Data).expect("base").raft.join);
}

/// (case, kind, text, key path, words of the fix the message must contain)
fn bad_cases() -> Vec<(&'static str, NodeKind, String, &'static str, &'static str)> {
    use NodeKind::{Data, Witness};
    let peer0 = "{ id: 1, name: node1, address: 127.0.0.1:7001 }";
    let peer1 = "{ id: 2, name: node2, address: 127.0.0.1:7002 }";
    let peer2 = "{ id: 3, name: witness1, address: 127.0.0.1:7003, witness: true }";
    let dcs = "  dcs:\n    ttl: 5s\n";
    vec![
        // Parse errors: the exact key, in operator words.
        ("unknown nested key", Data, edit(DATA, peer0, "{ id: 1, name: node1, address: 127.0.0.1:7001, bogus: 1 }"), "raft.peers[0].bogus", "remove it"),
        ("misspelt key", Data, edit(DATA, "  node_id: 1\n", "  node_id: 1\n  heartbeat_intervall: 50ms\n"), "raft.heartbeat_intervall", "did you mean `heartbeat_interval`"),
        ("dcs key at top level", Data, edit(DATA, "name: node1\n", "name: node1\nttl: 30\n"), "ttl", "move it under bootstrap.dcs"),
        ("patroni etcd3 section", Data, edit(DATA, "name: node1\n", "name: node1\netcd3: { hosts: x }\n"), "etcd3", "list the voters under raft.peers"),
        ("missing required key", Data, edit(DATA, "  node_id: 1\n", ""), "raft.node_id", "node_id: 1"),
        ("missing nested section", Data, edit(DATA, "  authentication:\n    superuser: { username: postgres }\n    replication: { username: replicator }\n", ""), "postgresql.authentication", "add it"),
        ("wrong type", Data, edit(DATA, "node_id: 1", "node_id: one"), "raft.node_id", "write a whole number"),
        ("top level not a mapping", Data, "- scope\n- name\n".to_owned(), "", "write a mapping of keys"),
        ("yaml syntax", Data, edit(DATA, "scope: demo", "scope: 'demo"), "", "fix the YAML syntax there (line"),
        ("duplicate key", Data, edit(DATA, "name: node1\n", "name: node1\nname: node2\n"), "", "has the key \"name\" twice in one mapping — keep only one"),
        ("empty file", Data, "# nothing\n\n".to_owned(), "", "write at least scope, name and a raft section"),
        ("listen is a host name", Data, edit(DATA, "listen: 127.0.0.1:7001", "listen: localhost:7001"), "raft.listen", "an IP, not a host name"),
        ("pg listen without port", Data, edit(DATA, "listen: 127.0.0.1:5433", "listen: 127.0.0.1"), "postgresql.listen", "write it like 127.0.0.1:5432"),
        ("duration typo", Data, edit(DATA, "ttl: 5s", "ttl: 5 parsecs"), "bootstrap.dcs.ttl", "write it like 500ms, 5s or 1m"),
        ("negative duration", Data, edit(DATA, "ttl: 5s", "ttl: -5"), "bootstrap.dcs.ttl", "zero or more"),
        ("synchronous_mode word", Data, edit(DATA, dcs, "  dcs:\n    ttl: 5s\n    synchronous_mode: sometimes\n"), "bootstrap.dcs.synchronous_mode", "write off, on or quorum"),
        ("watchdog mode word", Data, format!("{DATA}watchdog: {{ mode: sometimes }}\n"), "watchdog.mode", "write off, automatic or required"),
        ("nested parameter", Data, edit(DATA, "  data_dir: ./data/node1/pgdata\n", "  data_dir: ./data/node1/pgdata\n  parameters: { work_mem: { a: 1 } }\n"), "postgresql.parameters.work_mem", "a string, a number or true/false"),
        ("initdb two options in one item", Data, edit(DATA, dcs, "  dcs:\n    ttl: 5s\n  initdb: [ { encoding: UTF8, locale: C } ]\n"), "bootstrap.initdb[0]", "its own list item"),
        // Validation problems: all collected, each at its key.
        ("scope charset", Data, edit(DATA, "scope: demo", "scope: my demo"), "scope", "rename it"),
        ("peer address without port", Data, edit(DATA, "address: 127.0.0.1:7003", "address: foo"), "raft.peers[2].address", "write it like 127.0.0.1:7001"),
        ("peer port 0", Data, edit(DATA, "address: 127.0.0.1:7002", "address: 127.0.0.1:0"), "raft.peers[1].address", "from 1 to 65535"),
        ("peer address with scheme", Data, edit(DATA, "address: 127.0.0.1:7002", "address: http://127.0.0.1:7002"), "raft.peers[1].address", "drop the scheme"),
        ("duplicate id", Data, edit(DATA, "{ id: 2, name: node2", "{ id: 1, name: node2"), "raft.peers[1].id", "give every peer its own id"),
        ("duplicate name", Data, edit(DATA, "name: witness1,", "name: node2,"), "raft.peers[2].name", "give every peer its own name"),
        ("duplicate address", Data, edit(DATA, "address: 127.0.0.1:7003", "address: 127.0.0.1:7002"), "raft.peers[2].address", "its own host:port"),
        ("own name differs", Data, edit(DATA, "name: node1\n", "name: nodeA\n"), "raft.peers[0].name", "write name: nodeA"),
        ("own id not in peers", Data, edit(DATA, "node_id: 1", "node_id: 9"), "raft.node_id", "add { id: 9, name: node1, address: 127.0.0.1:7001 }"),
        ("own address differs", Data, edit(DATA, "listen: 127.0.0.1:7001", "listen: 127.0.0.1:7009"), "raft.peers[0].address", "set raft.advertise"),
        ("wildcard listen without advertise", Data, edit(DATA, "listen: 127.0.0.1:7001", "listen: 0.0.0.0:7001"), "raft.advertise", "set it to this host's address"),
        ("two voters", Data, edit(DATA, &format!("    - {peer2}\n"), ""), "raft.peers", "add a witness"),
        ("only witnesses", Witness, edit(WITNESS, &format!("    - {peer0}\n    - {peer1}\n"), ""), "raft.peers", "add the data nodes"),
        ("data node entry is a witness", Data, edit(DATA, "address: 127.0.0.1:7001 }", "address: 127.0.0.1:7001, witness: true }"), "raft.peers[0].witness", "run it with pgkeel-witness"),
        ("join without a running voter", Data, edit(DATA, "  node_id: 1\n", "  node_id: 1\n  join: true\n").replace(&format!("    - {peer1}\n    - {peer2}\n"), ""), "raft.peers", "list the cluster's current voters"),
        ("witness entry is not a witness", Witness, edit(WITNESS, "7003, witness: true", "7003"), "raft.peers[2].witness", "set witness: true"),
        ("witness with postgresql", Witness, format!("{WITNESS}postgresql: {{ listen: 127.0.0.1:5433, data_dir: x, authentication: {{ superuser: {{ username: a }}, replication: {{ username: b }} }} }}\n"), "postgresql", "remove `postgresql` from this file"),
        ("witness with tags", Witness, format!("{WITNESS}tags: {{ nofailover: true }}\n"), "tags", "remove `tags` from this file"),
        ("secret too short", Data, edit(DATA, "0123456789abcdef-secret", "short"), "raft.secret", "use at least 16"),
        ("no secret", Data, edit(DATA, "  secret: 0123456789abcdef-secret\n", ""), "raft.secret", "or raft.secret_file"),
        ("two secrets", Data, edit(DATA, "  secret: 0123456789abcdef-secret\n", "  secret: 0123456789abcdef-secret\n  secret_file: /nonexistent\n"), "raft.secret_file", "keep only one"),
        ("unreadable secret file", Data, edit(DATA, "  secret: 0123456789abcdef-secret\n", "  secret_file: /nonexistent/pgkeel-secret\n"), "raft.secret_file", "cannot read /nonexistent/pgkeel-secret"),
        ("admin token too short", Data, edit(DATA, "  peers:\n", "  admin_token: short\n  peers:\n"), "raft.admin_token", "use at least 16"),
        ("two admin tokens", Data, edit(DATA, "  peers:\n", "  admin_token: 0123456789abcdef-admin\n  admin_token_file: /nonexistent\n  peers:\n"), "raft.admin_token_file", "keep only one"),
        ("unreadable admin token file", Data, edit(DATA, "  peers:\n", "  admin_token_file: /nonexistent/pgkeel-admin\n  peers:\n"), "raft.admin_token_file", "cannot read /nonexistent/pgkeel-admin"),
        ("admin token equals the secret", Data, edit(DATA, "  peers:\n", "  admin_token: 0123456789abcdef-secret\n  peers:\n"), "raft.admin_token", "choose a different token"),
        ("ttl breaks the invariant", Data, edit(DATA, "ttl: 5s", "ttl: 2"), "bootstrap.dcs.ttl", "raise ttl to at least 3s"),
        ("invariant with raft timeout", Data, edit(DATA, "  node_id: 1\n", "  node_id: 1\n  election_timeout_max: 4s\n  request_timeout: 4s\n"), "bootstrap.dcs.ttl", "raise ttl to at least 6s"),
        ("ttl above 1h", Data, edit(DATA, "ttl: 5s", "ttl: 2h"), "bootstrap.dcs.ttl", "lower it"),
        ("loop_wait 0", Data, edit(DATA, dcs, "  dcs:\n    ttl: 5s\n    loop_wait: 0\n"), "bootstrap.dcs.loop_wait", "positive duration"),
        ("election min above max", Data, edit(DATA, "  node_id: 1\n", "  node_id: 1\n  election_timeout_min: 1s\n"), "raft.election_timeout_min", "lower it or raise the maximum"),
        ("heartbeat too slow", Data, edit(DATA, "  node_id: 1\n", "  node_id: 1\n  heartbeat_interval: 300ms\n"), "raft.heartbeat_interval", "lower it below 250ms"),
        ("request timeout too short", Data, edit(DATA, "  node_id: 1\n", "  node_id: 1\n  request_timeout: 500ms\n"), "raft.request_timeout", "raise it to at least 1s"),
        ("snapshot_every 0", Data, edit(DATA, "  node_id: 1\n", "  node_id: 1\n  snapshot_every: 0\n"), "raft.snapshot_every", "e.g. 10000"),
        ("watchdog reset_time", Data, format!("{DATA}watchdog: {{ mode: automatic, reset_time: 30s }}\n"), "watchdog.reset_time", "lower it"),
        ("watchdog safety_margin", Data, format!("{DATA}watchdog: {{ mode: off, safety_margin: 5 }}\n"), "watchdog.safety_margin", "move it to bootstrap.dcs.safety_margin"),
        ("initdb with dashes", Data, edit(DATA, dcs, "  dcs:\n    ttl: 5s\n  initdb: [ --data-checksums ]\n"), "bootstrap.initdb[0]", "without the leading dashes"),
        ("tag of the wrong type", Data, format!("{DATA}tags: {{ nofailover: yes }}\n"), "tags.nofailover", "write true or false"),
        ("pg wildcard without connect_address", Data, edit(DATA, "listen: 127.0.0.1:5433", "listen: '*:5433'"), "postgresql.connect_address", "set it to this host's address"),
        ("restapi bad connect_address", Data, format!("{DATA}restapi: {{ connect_address: 'node1' }}\n"), "restapi.connect_address", "write it like 10.0.0.1:8008"),
        ("restapi empty username", Data, format!("{DATA}restapi: {{ authentication: {{ username: '', password: 0123456789abcdef }} }}\n"), "restapi.authentication.username", "name the user"),
        ("restapi short password", Data, format!("{DATA}restapi: {{ authentication: {{ username: admin, password: short }} }}\n"), "restapi.authentication.password", "use at least 16"),
        ("restapi auth without password", Data, format!("{DATA}restapi: {{ authentication: {{ username: admin }} }}\n"), "restapi.authentication.password", "is required"),
        ("restapi short token", Data, format!("{DATA}restapi: {{ token: short }}\n"), "restapi.token", "use at least 16"),
        ("restapi two tokens", Data, format!("{DATA}restapi: {{ token: 0123456789abcdef, token_file: /nonexistent }}\n"), "restapi.token_file", "keep only one"),
        ("restapi unreadable token file", Data, format!("{DATA}restapi: {{ token_file: /nonexistent/pgkeel-token }}\n"), "restapi.token_file", "cannot read /nonexistent/pgkeel-token"),
        ("restapi certfile without keyfile", Data, format!("{DATA}restapi: {{ certfile: /etc/hosts }}\n"), "restapi.keyfile", "is missing while restapi.certfile is set — set both certfile and keyfile, or neither"),
        ("restapi keyfile without certfile", Data, format!("{DATA}restapi: {{ keyfile: /etc/hosts }}\n"), "restapi.certfile", "set both certfile and keyfile, or neither"),
        ("restapi missing certfile", Data, format!("{DATA}restapi: {{ certfile: /nonexistent/pgkeel.crt, keyfile: /etc/hosts }}\n"), "restapi.certfile", "cannot read /nonexistent/pgkeel.crt"),
        ("restapi missing keyfile", Data, format!("{DATA}restapi: {{ certfile: /etc/hosts, keyfile: /nonexistent/pgkeel.key }}\n"), "restapi.keyfile", "cannot read /nonexistent/pgkeel.key"),
        ("restapi empty certfile", Data, format!("{DATA}restapi: {{ certfile: '', keyfile: /etc/hosts }}\n"), "restapi.certfile", "name a PEM file"),
        ("log filter", Data, edit(DATA, "name: node1\n", "name: node1\nlog: { level: 'info,[' }\n"), "log.level", "write e.g. info"),
    ]
}

#[test]
fn every_bad_input_names_its_key_and_fix() {
    let mut failures = Vec::new();
    for (case, kind, text, path, fix) in bad_cases() {
        let found = problems(&text, kind);
        if !found
            .iter()
            .any(|p| p.path == path && p.message.contains(fix))
        {
            failures.push(format!("{case}: wanted `{path}: …{fix}…`, got {found:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn validation_reports_every_problem_at_once() {
    let text = edit(
        &edit(
            &edit(DATA, "scope: demo", "scope: 'a b'"),
            "{ id: 2,",
            "{ id: 1,",
        ),
        "0123456789abcdef-secret",
        "short",
    );
    let paths: Vec<String> = problems(&text, NodeKind::Data)
        .into_iter()
        .map(|p| p.path)
        .collect();
    for want in ["scope", "raft.peers[1].id", "raft.secret"] {
        assert!(
            paths.iter().any(|p| p == want),
            "{want} missing from {paths:?}"
        );
    }
}

#[test]
fn witness_refuses_every_data_section() {
    let text = format!("{WITNESS}restapi: {{}}\nbootstrap: {{}}\ntags: {{}}\nwatchdog: {{}}\n");
    let paths: Vec<String> = problems(&text, NodeKind::Witness)
        .into_iter()
        .map(|p| p.path)
        .collect();
    assert_eq!(paths, ["restapi", "bootstrap", "tags", "watchdog"]);
}

#[test]
fn error_display_names_file_path_and_reason() {
    let err = parse(
        &edit(DATA, "address: 127.0.0.1:7003", "address: foo"),
        "config/examples/node1.yaml",
        NodeKind::Data,
    )
    .expect_err("bad address");
    assert_eq!(
        err.to_string(),
        "config/examples/node1.yaml: raft.peers[2].address: \"foo\" is not host:port (no port) — write it like 127.0.0.1:7001"
    );
}

#[test]
fn durations_accept_humantime_and_seconds() {
    let ok = [
        ("500ms", Duration::from_millis(500)),
        ("5s", Duration::from_secs(5)),
        ("1m", Duration::from_secs(60)),
        ("1m 30s", Duration::from_secs(90)),
        ("5", Duration::from_secs(5)),
        ("1.5", Duration::from_millis(1500)),
        ("0", Duration::ZERO),
    ];
    for (text, want) in ok {
        assert_eq!(duration::parse(text), Ok(want), "{text}");
    }
    for bad in ["", "-1", "abc", "5 parsecs", "NaN", "inf"] {
        assert!(duration::parse(bad).is_err(), "{bad:?} should be refused");
    }
    // YAML numbers, integer and fractional, are seconds too.
    let yaml = [
        ("ttl: 7", Duration::from_secs(7)),
        ("ttl: 0.25", Duration::from_millis(250)),
        ("ttl: '7'", Duration::from_secs(7)),
    ];
    for (text, want) in yaml {
        let dcs: DcsConfig = serde_norway::from_str(text).expect(text);
        assert_eq!(dcs.ttl, want, "{text}");
    }
}

#[test]
fn optional_duration_helper() {
    #[derive(serde::Deserialize)]
    struct T {
        #[serde(default, with = "duration::option")]
        d: Option<Duration>,
    }
    let absent: T = serde_norway::from_str("{}").expect("absent");
    assert_eq!(absent.d, None);
    let null: T = serde_norway::from_str("d: null").expect("null");
    assert_eq!(null.d, None);
    let set: T = serde_norway::from_str("d: 250ms").expect("set");
    assert_eq!(set.d, Some(Duration::from_millis(250)));
    assert!(serde_norway::from_str::<T>("d: soon").is_err());
}

#[test]
fn dcs_config_round_trips_through_serde() {
    let mut dcs = DcsConfig {
        ttl: Duration::from_millis(4500),
        synchronous_mode: SynchronousMode::Quorum,
        ..DcsConfig::default()
    };
    dcs.postgresql
        .parameters
        .insert("max_connections".into(), Scalar::Int(100));
    dcs.postgresql
        .parameters
        .insert("hot_standby".into(), Scalar::Str("on".into()));
    let yaml = serde_norway::to_string(&dcs).expect("serialize");
    assert!(yaml.contains("ttl: 4s 500ms"), "{yaml}");
    let back: DcsConfig = serde_norway::from_str(&yaml).expect("deserialize");
    assert_eq!(back, dcs);
    let json = serde_json::to_string(&dcs).expect("json");
    assert_eq!(
        serde_json::from_str::<DcsConfig>(&json).expect("json back"),
        dcs
    );
}

#[test]
fn synchronous_mode_and_watchdog_mode_spellings() {
    for (text, want) in [
        ("false", SynchronousMode::Off),
        ("off", SynchronousMode::Off),
        ("true", SynchronousMode::On),
        ("on", SynchronousMode::On),
        ("quorum", SynchronousMode::Quorum),
    ] {
        let dcs: DcsConfig =
            serde_norway::from_str(&format!("synchronous_mode: {text}")).expect(text);
        assert_eq!(dcs.synchronous_mode, want, "{text}");
    }
    for (text, want) in [
        ("false", WatchdogMode::Off),
        ("off", WatchdogMode::Off),
        ("automatic", WatchdogMode::Automatic),
        ("required", WatchdogMode::Required),
    ] {
        let w: WatchdogConfig = serde_norway::from_str(&format!("mode: {text}")).expect(text);
        assert_eq!(w.mode, want, "{text}");
    }
}

#[test]
fn timing_invariant_is_strict_and_total() {
    let s = Duration::from_secs;
    let ms = Duration::from_millis;
    assert_eq!(check_timing(s(5), s(1), s(1), s(1), ms(500)), Ok(()));
    let err = check_timing(ms(3500), s(1), s(1), s(1), ms(500)).expect_err("equal is not greater");
    assert!(
        err.contains("= 3s 500ms") && err.contains("raise ttl to at least 4s"),
        "{err}"
    );
    assert!(
        check_timing(s(5), Duration::MAX, s(1), s(1), s(1)).is_err(),
        "overflow must not panic"
    );
    // The data node check uses the defaults when bootstrap is absent.
    let text = edit(
        &edit(DATA, "bootstrap:\n  dcs:\n    ttl: 5s\n", ""),
        "  node_id: 1\n",
        "  node_id: 1\n  election_timeout_max: 4s\n  request_timeout: 4s\n",
    );
    assert!(problems(&text, NodeKind::Data)
        .iter()
        .any(|p| p.path == "bootstrap.dcs.ttl"));
}

#[test]
fn defaults_and_accessors() {
    let config = parse(
        &edit(DATA, "bootstrap:\n  dcs:\n    ttl: 5s\n", ""),
        "t",
        NodeKind::Data,
    )
    .expect("loads");
    assert_eq!(config.dcs(), DcsConfig::default());
    assert_eq!(config.dcs().ttl, defaults::TTL);
    assert_eq!(config.restapi().listen, defaults::RESTAPI_LISTEN);
    assert_eq!(config.restapi().connect_address(), "127.0.0.1:8008");
    assert_eq!(config.raft.heartbeat_interval, Duration::from_millis(100));
    assert_eq!(config.raft.election_timeout_max, Duration::from_secs(1));
    assert_eq!(config.raft.advertise_address(), "127.0.0.1:7001");
    assert_eq!(config.raft.secret(), Some("0123456789abcdef-secret"));
    assert_eq!(config.log.level, "info");
    let pg = config.postgresql.as_ref().expect("postgresql");
    assert_eq!(pg.os_user, "postgres");
    assert!(pg.use_pg_rewind);
    assert_eq!(pg.connect_address().as_deref(), Some("127.0.0.1:5433"));
    assert_eq!(pg.listen.listen_addresses(), "127.0.0.1");
    assert!(
        !format!("{config:?}").contains("0123456789abcdef"),
        "Debug must not print the secret"
    );
}

#[test]
fn tags_initdb_and_pg_listen() {
    let text = format!("{}  initdb: [ {{ encoding: UTF8 }}, data-checksums ]\ntags: {{ nofailover: true, failover_priority: 3, rack: r1, noloadbalance: false, nostream: true, weight: 2.5 }}\n", edit(DATA, "listen: 127.0.0.1:5433", "listen: 127.0.0.1,10.0.0.5:5433\n  connect_address: 10.0.0.5:5433"));
    let config = parse(&text, "t", NodeKind::Data).expect("loads");
    let tags = config.tags.as_ref().expect("tags");
    assert!(tags.nofailover() && !tags.nosync());
    assert_eq!(tags.failover_priority(), 3);
    assert_eq!(tags.0.get("rack"), Some(&Scalar::Str("r1".into())));
    // What the core does not read is published as written; a false flag
    // is left out.
    let labels: Vec<(String, String)> = tags
        .labels()
        .into_iter()
        .map(|(k, v)| (k, v.to_string()))
        .collect();
    let want = [("nostream", "true"), ("rack", "r1"), ("weight", "2.5")];
    assert_eq!(labels, want.map(|(k, v)| (k.to_string(), v.to_string())));
    let args: Vec<String> = config
        .bootstrap
        .as_ref()
        .expect("bootstrap")
        .initdb
        .iter()
        .map(InitdbOption::to_arg)
        .collect();
    assert_eq!(args, ["--encoding=UTF8", "--data-checksums"]);
    let pg = config.postgresql.as_ref().expect("postgresql");
    assert_eq!(
        pg.listen,
        PgListen {
            hosts: vec!["127.0.0.1".into(), "10.0.0.5".into()],
            port: 5433
        }
    );
    assert_eq!(
        pg.listen.dialable(),
        None,
        "two hosts name no single address"
    );
    assert_eq!(pg.connect_address().as_deref(), Some("10.0.0.5:5433"));
}

#[test]
fn secret_file_is_read_and_trimmed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("secret");
    std::fs::write(&path, "0123456789abcdef-from-file\n").expect("write secret");
    let text = edit(
        DATA,
        "  secret: 0123456789abcdef-secret\n",
        &format!("  secret_file: {}\n", path.display()),
    );
    let config = parse(&text, "t", NodeKind::Data).expect("loads");
    assert_eq!(config.raft.secret(), Some("0123456789abcdef-from-file"));
}

#[test]
fn load_names_the_file() {
    let err =
        load(Path::new("/nonexistent/pgkeel.yaml"), NodeKind::Data).expect_err("missing file");
    assert_eq!(err.origin, "/nonexistent/pgkeel.yaml");
    assert!(
        err.to_string()
            .starts_with("/nonexistent/pgkeel.yaml: cannot read the config file"),
        "{err}"
    );
}

/// No input panics: every prefix of a valid file, and the file with any one
/// line dropped, either loads or returns problems.
#[test]
fn truncated_and_mangled_files_never_panic() {
    for kind in [NodeKind::Data, NodeKind::Witness] {
        for base in [DATA, WITNESS] {
            for (end, _) in base.char_indices() {
                let _ = parse(&base[..end], "t", kind);
            }
            let lines: Vec<&str> = base.lines().collect();
            for skip in 0..lines.len() {
                let text: Vec<&str> = lines
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != skip)
                    .map(|(_, l)| *l)
                    .collect();
                if let Err(e) = parse(&text.join("\n"), "t", kind) {
                    assert!(e.problems.iter().all(|p| !p.message.is_empty()));
                }
            }
        }
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read examples dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// Every shipped example loads with the binary that would run it, and the
/// files of one cluster agree on scope, secret and peers.
#[test]
fn example_files_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
    let mut files = Vec::new();
    yaml_files(&root, &mut files);
    files.sort();
    assert!(
        files.len() >= 6,
        "expected the example clusters under {}, found {files:?}",
        root.display()
    );
    let mut clusters: std::collections::BTreeMap<PathBuf, Vec<Config>> = Default::default();
    for file in &files {
        let witness = file
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("witness"));
        let kind = if witness {
            NodeKind::Witness
        } else {
            NodeKind::Data
        };
        let config = load(file, kind).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.me().expect("own entry").name, config.name);
        clusters
            .entry(file.parent().expect("parent").to_path_buf())
            .or_default()
            .push(config);
    }
    for (dir, configs) in clusters {
        let first = &configs[0];
        for other in &configs[1..] {
            assert_eq!(other.scope, first.scope, "{}", dir.display());
            assert_eq!(other.raft.peers, first.raft.peers, "{}", dir.display());
            assert_eq!(
                other.raft.secret(),
                first.raft.secret(),
                "{}",
                dir.display()
            );
        }
        assert_eq!(
            configs.len(),
            first.raft.peers.len(),
            "{}: one file per peer",
            dir.display()
        );
    }
}

#[test]
fn restapi_credentials_load_from_the_file_and_a_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let token_path = dir.path().join("token");
    std::fs::write(&token_path, "0123456789abcdef-token\n").unwrap();
    let text = format!(
        "{DATA}restapi: {{ authentication: {{ username: admin, password: 0123456789abcdef }}, token_file: {} }}\n",
        token_path.display()
    );
    let config = parse(&text, "node1.yaml", NodeKind::Data).expect("valid");
    let rest = config.restapi();
    assert_eq!(rest.token(), Some("0123456789abcdef-token"));
    let auth = rest.authentication.as_ref().expect("authentication");
    assert_eq!(auth.username, "admin");
    assert_eq!(auth.password.expose(), "0123456789abcdef");
    assert!(!format!("{rest:?}").contains("0123456789abcdef"));
}

#[test]
fn restapi_tls_files_are_both_or_neither() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("rest.crt"), dir.path().join("rest.key"));
    std::fs::write(&cert, "certificate").unwrap();
    std::fs::write(&key, "key").unwrap();
    let text = format!(
        "{DATA}restapi: {{ certfile: {}, keyfile: {} }}\n",
        cert.display(),
        key.display()
    );
    let config = parse(&text, "test.yml", NodeKind::Data).unwrap();
    assert_eq!(
        config.restapi().tls_files(),
        Some((cert.as_path(), key.as_path()))
    );
    assert_eq!(config.restapi().api_url(), "https://127.0.0.1:8008");
    let plain = parse(DATA, "test.yml", NodeKind::Data).unwrap();
    assert_eq!(plain.restapi().tls_files(), None);
    assert_eq!(plain.restapi().api_url(), "http://127.0.0.1:8008");
}
