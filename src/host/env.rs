//! The task's environment and `${…}` interpolation (docs/task.md "Environment").
//!
//! Pure functions: the caller reads whatever it needs from the host (the
//! `env_passthrough` variables, the user's home) and hands it in through [`EnvInputs`].
//!
//! Choices about Nomad's behaviour (Nomad's `client/taskenv` and `helper/args`):
//! - Every `NOMAD_*` name of docs/task.md is always set, empty when the task leaves its
//!   field empty (Nomad omits some empty ones); except `NOMAD_CPU_CORES`, set only when
//!   `resources.cores > 0`, and `NOMAD_MEMORY_MAX_LIMIT`, only when `memory_max_mb > 0`,
//!   as in Nomad. `NOMAD_CPU_CORES` is the number of cores (Nomad gives the cpuset list
//!   such as `0-3`, which is only known once the cgroup is made).
//! - Names starting with `NOMAD_META_`, `NOMAD_IP_`, `NOMAD_PORT_`, `NOMAD_ADDR_` and
//!   `NOMAD_HOST_PORT_` are cleaned like Nomad's `helper.CleanEnvVar`: every byte that is
//!   not `[A-Za-z0-9_.]` becomes `_` (so `NOMAD_META_my-key` → `NOMAD_META_my_key`, a
//!   two-byte `é` → `__`; `.` is kept, as current Nomad does). This applies to task `env`
//!   keys with those prefixes too.
//! - `NOMAD_META_<key>` is set for the key as given and upper-cased (both cleaned).
//! - `NOMAD_ADDR_<l>` is `ip:port`, `[ip]:port` for an IPv6 address (Go's `JoinHostPort`).
//! - Task `env` values are interpolated against the environment built before them
//!   (passthrough, `NOMAD_*`, `USER`/`LOGNAME`/`HOME`) and the node, not against each other:
//!   Nomad's result there depends on Go's map order, ours is deterministic. Task `env`
//!   overrides everything before it. Passthrough values are taken literally.
//! - Interpolation: `${X}` looks X up in the node first (`node.unique.id`,
//!   `node.unique.name`, `node.datacenter`, `node.class`, `node.region` (= `NOMAD_REGION`),
//!   `attr.<k>`, `meta.<k>`), then in the environment, like Nomad. `$NAME` (bare, `NAME` =
//!   `[A-Za-z_][A-Za-z0-9_]*`) and `$$` are our additions from the contract (Nomad has neither).

use crate::config::{Node, TaskRequest};
use crate::error::{Code, Error, Result};
use std::collections::BTreeMap;

/// An environment: name → value. Later insertions override earlier ones.
pub type Env = BTreeMap<String, String>;

/// What [`build_env`] needs besides the task.
#[derive(Debug, Clone)]
pub struct EnvInputs<'a> {
    pub task: &'a TaskRequest,
    /// `NOMAD_TASK_DIR`: `/local` for exec, the host path for raw_exec.
    pub task_dir: String,
    /// `NOMAD_ALLOC_DIR`.
    pub alloc_dir: String,
    /// `NOMAD_SECRETS_DIR`.
    pub secrets_dir: String,
    /// `USER` and `LOGNAME`.
    pub user: String,
    /// `HOME`.
    pub home: String,
    /// The host variables `env_passthrough` allows, already read by the caller.
    pub passthrough: Vec<(String, String)>,
}

const CLEANED_PREFIXES: [&str; 5] = [
    "NOMAD_ADDR_",
    "NOMAD_IP_",
    "NOMAD_PORT_",
    "NOMAD_HOST_PORT_",
    "NOMAD_META_",
];

/// Nomad's `helper.CleanEnvVar(s, '_')`: each byte outside `[A-Za-z_.]`, and digits at
/// position 0, becomes `_`.
pub fn clean_env_name(s: &str) -> String {
    s.bytes()
        .enumerate()
        .map(|(i, c)| {
            let ok =
                c == b'_' || c == b'.' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit());
            if ok { c as char } else { '_' }
        })
        .collect()
}

/// Cleans `name` when it has one of the prefixes Nomad cleans.
fn clean_key(name: &str) -> String {
    if CLEANED_PREFIXES.iter().any(|p| name.starts_with(p)) {
        clean_env_name(name)
    } else {
        name.to_string()
    }
}

/// `host:port` as Go's `net.JoinHostPort` writes it.
fn join_host_port(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// The task's full environment: the passthrough variables, the `NOMAD_*` set of docs/task.md,
/// `USER`/`LOGNAME`/`HOME`, then the task's `env` with each value interpolated against
/// everything before it and the node. Later entries override earlier ones.
pub fn build_env(inp: &EnvInputs) -> Env {
    let t = inp.task;
    let r = &t.resources;
    let mut env = Env::new();
    for (k, v) in &inp.passthrough {
        env.insert(k.clone(), v.clone());
    }
    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    set("NOMAD_TASK_DIR", inp.task_dir.clone());
    set("NOMAD_ALLOC_DIR", inp.alloc_dir.clone());
    set("NOMAD_SECRETS_DIR", inp.secrets_dir.clone());
    set("NOMAD_TASK_NAME", t.name.clone());
    set("NOMAD_ALLOC_ID", t.alloc_id.clone());
    set("NOMAD_SHORT_ALLOC_ID", t.alloc_id.chars().take(8).collect());
    set("NOMAD_ALLOC_NAME", t.alloc_name.clone());
    set("NOMAD_ALLOC_INDEX", t.alloc_index.to_string());
    set("NOMAD_JOB_ID", t.job_id.clone());
    set("NOMAD_JOB_NAME", t.job_name.clone());
    set("NOMAD_GROUP_NAME", t.group_name.clone());
    set("NOMAD_NAMESPACE", t.namespace.clone());
    set("NOMAD_DC", t.datacenter.clone());
    set("NOMAD_REGION", t.region.clone());
    set("NOMAD_CPU_LIMIT", r.cpu_mhz.to_string());
    if r.cores > 0 {
        set("NOMAD_CPU_CORES", r.cores.to_string());
    }
    set("NOMAD_MEMORY_LIMIT", r.memory_mb.to_string());
    if r.memory_max_mb > 0 {
        set("NOMAD_MEMORY_MAX_LIMIT", r.memory_max_mb.to_string());
    }
    for (k, v) in &t.meta {
        env.insert(clean_env_name(&format!("NOMAD_META_{k}")), v.clone());
        env.insert(
            clean_env_name(&format!("NOMAD_META_{}", k.to_uppercase())),
            v.clone(),
        );
    }
    for (label, p) in &t.ports {
        env.insert(clean_env_name(&format!("NOMAD_IP_{label}")), p.ip.clone());
        env.insert(
            clean_env_name(&format!("NOMAD_PORT_{label}")),
            p.port.to_string(),
        );
        env.insert(
            clean_env_name(&format!("NOMAD_ADDR_{label}")),
            join_host_port(&p.ip, p.port),
        );
    }
    env.insert("USER".into(), inp.user.clone());
    env.insert("LOGNAME".into(), inp.user.clone());
    env.insert("HOME".into(), inp.home.clone());

    let base = env.clone();
    for (k, v) in &t.env {
        env.insert(clean_key(k), interpolate(v, &base, &t.node));
    }
    env
}

/// The value of `${name}`: the node's fields, attributes and meta first, then `env`.
fn lookup_braced<'a>(name: &str, env: &'a Env, node: &'a Node) -> Option<&'a str> {
    let from_node = match name {
        "node.unique.id" => Some(node.unique_id.as_str()),
        "node.unique.name" => Some(node.unique_name.as_str()),
        "node.datacenter" => Some(node.datacenter.as_str()),
        "node.class" => Some(node.class.as_str()),
        "node.region" => env.get("NOMAD_REGION").map(String::as_str),
        _ => {
            if let Some(k) = name.strip_prefix("attr.") {
                node.attr.get(k).map(String::as_str)
            } else if let Some(k) = name.strip_prefix("meta.") {
                node.meta.get(k).map(String::as_str)
            } else {
                None
            }
        }
    };
    from_node.or_else(|| env.get(name).map(String::as_str))
}

/// Interpolates `s`:
/// - `${X}`: the node's `node.unique.id`, `node.unique.name`, `node.datacenter`,
///   `node.class`, `node.region`, `attr.<k>`, `meta.<k>` (node meta), else the variable X
///   of `env`. The name runs to the first `}`; no escapes or nesting inside.
/// - `$NAME` with `NAME` = `[A-Za-z_][A-Za-z0-9_]*`: the variable of `env`.
/// - `$$`: a literal `$`.
///
/// An unknown name is left exactly as written, and so is anything malformed: `${` without
/// a closing `}`, `${}`, `${a${b}}` (its "name" is `a${b`), a `$` before anything else or
/// at the end. Never panics; multi-byte characters pass through untouched.
pub fn interpolate(s: &str, env: &Env, node: &Node) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut lit = 0; // start of the literal run not yet copied
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        out.push_str(&s[lit..i]);
        // All the bytes matched below are ASCII, so every index is a char boundary.
        match b.get(i + 1) {
            Some(b'$') => {
                out.push('$');
                i += 2;
            }
            Some(b'{') => match s[i + 2..].find('}') {
                Some(rel) => {
                    let name = &s[i + 2..i + 2 + rel];
                    let end = i + 2 + rel + 1;
                    match lookup_braced(name, env, node) {
                        Some(v) if !name.is_empty() => out.push_str(v),
                        _ => out.push_str(&s[i..end]),
                    }
                    i = end;
                }
                None => {
                    out.push_str("${");
                    i += 2;
                }
            },
            Some(&c) if c == b'_' || c.is_ascii_alphabetic() => {
                let mut j = i + 2;
                while j < b.len() && (b[j] == b'_' || b[j].is_ascii_alphanumeric()) {
                    j += 1;
                }
                match env.get(&s[i + 1..j]) {
                    Some(v) => out.push_str(v),
                    None => out.push_str(&s[i..j]),
                }
                i = j;
            }
            _ => {
                out.push('$');
                i += 1;
            }
        }
        lit = i;
    }
    out.push_str(&s[lit..]);
    out
}

/// [`interpolate`] over a list (e.g. `args`).
#[cfg(test)]
pub fn interpolate_all(list: &[String], env: &Env, node: &Node) -> Vec<String> {
    list.iter().map(|s| interpolate(s, env, node)).collect()
}

/// Why `name=value` cannot go into an environment, if it cannot.
fn env_entry_problem(name: &str, value: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("an environment variable name must not be empty")
    } else if name.contains('=') {
        Some("an environment variable name must not contain '='")
    } else if name.contains('\0') {
        Some("an environment variable name must not contain a NUL character")
    } else if value.contains('\0') {
        Some("an environment variable value must not contain a NUL character")
    } else {
        None
    }
}

/// Checks the task's own `env`: names must be non-empty and free of `=` and NUL, values
/// free of NUL. Error: `invalid_config` with field `env.<name>`.
pub fn validate_env(task: &TaskRequest) -> Result<()> {
    check_env(&task.env)
}

/// Checks a whole environment (e.g. the result of [`build_env`], whose values can carry
/// a NUL from node meta through interpolation) the same way as [`validate_env`].
pub fn check_env(env: &Env) -> Result<()> {
    for (k, v) in env {
        if let Some(problem) = env_entry_problem(k, v) {
            let field = format!("env.{k}");
            return Err(Error::field(
                Code::InvalidConfig,
                &field,
                format!("{field}: {problem}"),
            ));
        }
    }
    Ok(())
}

/// The environment as `NAME=value` strings, in name order (for `execve`).
#[cfg(test)]
pub fn to_strings(env: &Env) -> Vec<String> {
    env.iter().map(|(k, v)| format!("{k}={v}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn task() -> TaskRequest {
        TaskRequest::parse(
            r#"{
              "name": "web",
              "alloc_id": "0123456789abcdef-0000",
              "alloc_name": "example.cache[2]",
              "alloc_index": 2,
              "job_id": "example", "job_name": "Example",
              "group_name": "cache", "namespace": "prod",
              "datacenter": "dc1", "region": "eu",
              "config": {"command": "/bin/true"},
              "env": {
                "GREETING": "hello from ${NOMAD_TASK_NAME} in $NOMAD_DC",
                "RACK": "${meta.rack}/${attr.kernel.name}/${node.unique.id}",
                "PRICE": "$$5 ${nope} $NOPE",
                "HOME": "/override",
                "NOMAD_META_x-y": "cleaned",
                "SELF": "${GREETING}"
              },
              "meta": {"owner": "team-a", "my-key.v": "1", "Zone": "z"},
              "node": {"unique.id": "node-1", "unique.name": "n1", "datacenter": "dc1",
                       "class": "c", "attr": {"kernel.name": "linux"}, "meta": {"rack": "r1"}},
              "ports": {"http": {"ip": "10.0.0.1", "port": 8080},
                        "db-main": {"ip": "::1", "port": 5432}},
              "resources": {"cpu_mhz": 500, "cores": 2, "memory_mb": 256, "memory_max_mb": 512}
            }"#,
        )
        .unwrap()
    }

    fn inputs(t: &TaskRequest) -> EnvInputs<'_> {
        EnvInputs {
            task: t,
            task_dir: "/local".into(),
            alloc_dir: "/alloc".into(),
            secrets_dir: "/secrets".into(),
            user: "nobody".into(),
            home: "/nonexistent".into(),
            passthrough: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("NOMAD_TASK_NAME".into(), "host-value".into()),
            ],
        }
    }

    fn get<'a>(env: &'a Env, k: &str) -> &'a str {
        env.get(k)
            .unwrap_or_else(|| panic!("{k} missing from {env:#?}"))
    }

    #[test]
    fn full_nomad_set() {
        let t = task();
        let env = build_env(&inputs(&t));
        for (k, v) in [
            ("NOMAD_TASK_DIR", "/local"),
            ("NOMAD_ALLOC_DIR", "/alloc"),
            ("NOMAD_SECRETS_DIR", "/secrets"),
            ("NOMAD_TASK_NAME", "web"),
            ("NOMAD_ALLOC_ID", "0123456789abcdef-0000"),
            ("NOMAD_SHORT_ALLOC_ID", "01234567"),
            ("NOMAD_ALLOC_NAME", "example.cache[2]"),
            ("NOMAD_ALLOC_INDEX", "2"),
            ("NOMAD_JOB_ID", "example"),
            ("NOMAD_JOB_NAME", "Example"),
            ("NOMAD_GROUP_NAME", "cache"),
            ("NOMAD_NAMESPACE", "prod"),
            ("NOMAD_DC", "dc1"),
            ("NOMAD_REGION", "eu"),
            ("NOMAD_CPU_LIMIT", "500"),
            ("NOMAD_CPU_CORES", "2"),
            ("NOMAD_MEMORY_LIMIT", "256"),
            ("NOMAD_MEMORY_MAX_LIMIT", "512"),
            ("USER", "nobody"),
            ("LOGNAME", "nobody"),
            ("PATH", "/usr/bin:/bin"),
        ] {
            assert_eq!(get(&env, k), v, "{k}");
        }
        // Task env overrides what comes before it.
        assert_eq!(get(&env, "HOME"), "/override");
    }

    #[test]
    fn optional_limits_and_defaults() {
        let t = TaskRequest::parse(r#"{"name":"t","config":{"command":"x"}}"#).unwrap();
        let env = build_env(&inputs(&t));
        assert!(!env.contains_key("NOMAD_CPU_CORES"));
        assert!(!env.contains_key("NOMAD_MEMORY_MAX_LIMIT"));
        assert_eq!(get(&env, "NOMAD_CPU_LIMIT"), "100");
        assert_eq!(get(&env, "NOMAD_MEMORY_LIMIT"), "300");
        assert_eq!(get(&env, "NOMAD_NAMESPACE"), "default");
        assert_eq!(get(&env, "NOMAD_ALLOC_ID"), "");
        assert_eq!(get(&env, "NOMAD_SHORT_ALLOC_ID"), "");
        assert_eq!(get(&env, "NOMAD_ALLOC_INDEX"), "0");
        let mut t = t;
        t.alloc_id = "abc".into();
        assert_eq!(get(&build_env(&inputs(&t)), "NOMAD_SHORT_ALLOC_ID"), "abc");
    }

    #[test]
    fn meta_given_and_upper_cleaned() {
        let t = task();
        let env = build_env(&inputs(&t));
        assert_eq!(get(&env, "NOMAD_META_owner"), "team-a");
        assert_eq!(get(&env, "NOMAD_META_OWNER"), "team-a");
        assert_eq!(get(&env, "NOMAD_META_Zone"), "z");
        assert_eq!(get(&env, "NOMAD_META_ZONE"), "z");
        assert_eq!(get(&env, "NOMAD_META_my_key.v"), "1");
        assert_eq!(get(&env, "NOMAD_META_MY_KEY.V"), "1");
        assert!(!env.keys().any(|k| k.contains('-')), "{env:#?}");
        // Task env keys with a cleaned prefix are cleaned too (Nomad does so).
        assert_eq!(get(&env, "NOMAD_META_x_y"), "cleaned");
    }

    #[test]
    fn ports() {
        let t = task();
        let env = build_env(&inputs(&t));
        assert_eq!(get(&env, "NOMAD_IP_http"), "10.0.0.1");
        assert_eq!(get(&env, "NOMAD_PORT_http"), "8080");
        assert_eq!(get(&env, "NOMAD_ADDR_http"), "10.0.0.1:8080");
        assert_eq!(get(&env, "NOMAD_IP_db_main"), "::1");
        assert_eq!(get(&env, "NOMAD_PORT_db_main"), "5432");
        assert_eq!(get(&env, "NOMAD_ADDR_db_main"), "[::1]:5432");
    }

    #[test]
    fn task_env_interpolation() {
        let t = task();
        let env = build_env(&inputs(&t));
        // NOMAD_TASK_NAME from the NOMAD_* set wins over the passthrough one.
        assert_eq!(get(&env, "GREETING"), "hello from web in dc1");
        assert_eq!(get(&env, "RACK"), "r1/linux/node-1");
        assert_eq!(get(&env, "PRICE"), "$5 ${nope} $NOPE");
        // Task env values do not see each other.
        assert_eq!(get(&env, "SELF"), "${GREETING}");
    }

    fn ctx() -> (Env, Node) {
        let t = task();
        let env = build_env(&inputs(&t));
        (env, t.node.clone())
    }

    fn i(s: &str) -> String {
        let (env, node) = ctx();
        interpolate(s, &env, &node)
    }

    #[test]
    fn interpolation_forms() {
        assert_eq!(i("${NOMAD_TASK_NAME}"), "web");
        assert_eq!(i("$NOMAD_TASK_NAME"), "web");
        assert_eq!(i("$NOMAD_TASK_NAME.log"), "web.log");
        assert_eq!(i("a$USER-b"), "anobody-b");
        assert_eq!(i("${meta.rack}"), "r1");
        assert_eq!(i("${attr.kernel.name}"), "linux");
        assert_eq!(
            i("${node.unique.id} ${node.unique.name} ${node.datacenter} ${node.class}"),
            "node-1 n1 dc1 c"
        );
        assert_eq!(i("${node.region}"), "eu");
        assert_eq!(i("${NOMAD_META_owner}"), "team-a");
        assert_eq!(i("${NOMAD_ADDR_http}"), "10.0.0.1:8080");
        assert_eq!(i("$$"), "$");
        assert_eq!(i("$$USER"), "$USER");
        assert_eq!(i("$${USER}"), "${USER}");
        assert_eq!(i("$$$USER"), "$nobody");
        // Unknown names stay as written.
        assert_eq!(i("${UNKNOWN}"), "${UNKNOWN}");
        assert_eq!(i("$UNKNOWN"), "$UNKNOWN");
        assert_eq!(i("${meta.nope}"), "${meta.nope}");
        assert_eq!(i("${attr.nope}"), "${attr.nope}");
        assert_eq!(i("${node.nope}"), "${node.nope}");
        assert_eq!(
            i("pre ${UNKNOWN} ${USER} post"),
            "pre ${UNKNOWN} nobody post"
        );
    }

    #[test]
    fn odd_inputs() {
        for (input, want) in [
            ("", ""),
            ("$", "$"),
            ("${", "${"),
            ("${}", "${}"),
            ("$}", "$}"),
            ("$$$", "$$"),
            ("$$$$", "$$"),
            ("${a${b}}", "${a${b}}"),
            ("${a${USER}}", "${a${USER}}"),
            ("${USER", "${USER"),
            ("${ $USER", "${ nobody"),
            ("${USER }", "${USER }"),
            ("${{USER}}", "${{USER}}"),
            ("$1", "$1"),
            ("$1USER", "$1USER"),
            ("$-", "$-"),
            ("$ USER", "$ USER"),
            ("trailing $", "trailing $"),
            ("trailing $$", "trailing $"),
            ("{USER}", "{USER}"),
            ("}", "}"),
            ("$é", "$é"),
            ("é$USERé", "énobodyé"),
            ("${é}", "${é}"),
            ("${USER}日本", "nobody日本"),
            ("日本$", "日本$"),
            ("日$本${", "日$本${"),
            ("$🦀$$🦀", "$🦀$🦀"),
            ("\u{0}$USER\u{0}", "\u{0}nobody\u{0}"),
        ] {
            assert_eq!(i(input), want, "input {input:?}");
        }
    }

    #[test]
    fn list_helper() {
        let (env, node) = ctx();
        let args = vec!["-p".to_string(), "${NOMAD_PORT_http}".into(), "$$x".into()];
        assert_eq!(
            interpolate_all(&args, &env, &node),
            vec!["-p", "8080", "$x"]
        );
    }

    #[test]
    fn env_validation() {
        let mut t = task();
        validate_env(&t).unwrap();
        for bad in ["A=B", "A\0B", ""] {
            t.env = [(bad.to_string(), "v".to_string())].into();
            let e = validate_env(&t).unwrap_err();
            assert_eq!(e.code, Code::InvalidConfig);
            assert_eq!(e.field.as_deref(), Some(format!("env.{bad}").as_str()));
        }
        t.env = [("OK".to_string(), "a\0b".to_string())].into();
        assert_eq!(
            validate_env(&t).unwrap_err().field.as_deref(),
            Some("env.OK")
        );
        // A NUL reaching the env through node meta is caught on the final env.
        let mut t = task();
        t.node.meta.insert("rack".into(), "r\0".into());
        let env = build_env(&inputs(&t));
        assert_eq!(
            check_env(&env).unwrap_err().field.as_deref(),
            Some("env.RACK")
        );
        assert!(to_strings(&build_env(&inputs(&task()))).contains(&"USER=nobody".to_string()));
    }

    #[test]
    fn clean_names() {
        assert_eq!(clean_env_name("NOMAD_META_a-b.c"), "NOMAD_META_a_b.c");
        assert_eq!(clean_env_name("NOMAD_META_é"), "NOMAD_META___");
        assert_eq!(clean_env_name("1A"), "_A");
        assert_eq!(clean_key("MY-VAR"), "MY-VAR");
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC*") {
            let (env, node) = ctx();
            let _ = interpolate(&s, &env, &node);
        }

        #[test]
        fn never_panics_on_dollar_soup(s in "[$\\{\\}a-zA-Z_0-9.é🦀 ]{0,40}") {
            let (env, node) = ctx();
            let _ = interpolate(&s, &env, &node);
        }

        #[test]
        fn identity_without_dollar(s in "[^$]*") {
            let (env, node) = ctx();
            prop_assert_eq!(interpolate(&s, &env, &node), s);
        }

        #[test]
        fn escaped_dollars_round_trip(s in "[$\\{\\}A-Z_a-z.é ]{0,40}") {
            let (env, node) = ctx();
            prop_assert_eq!(interpolate(&s.replace('$', "$$"), &env, &node), s);
        }
    }
}
