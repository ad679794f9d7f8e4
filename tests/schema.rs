//! The committed JSON Schemas of the task (`driver_start`) and of the plugin configuration
//! (`driver_configure`) must be exactly what schemars derives now from the types serde
//! parses (src/config.rs), plus the examples below; and the schemas and the requests'
//! validation must agree: every example is accepted by both, and documents the schema
//! rejects are rejected by validation on the same field.
//!
//! Regenerate after changing those types or their doc comments:
//!     UPDATE_SCHEMA=1 cargo test --test schema

mod common;

use execdriver::Code;
use execdriver::config::{PluginConfig, TaskRequest};
use execdriver::host::plugin;
use schemars::Schema;
use schemars::generate::SchemaSettings;
use schemars::transform::RecursiveTransform;
use serde_json::{Value, json};
use std::path::Path;

fn task_examples() -> Vec<Value> {
    vec![
        // The least a task needs.
        json!({
            "name": "hello",
            "driver": "raw_exec",
            "config": {"command": "/bin/echo", "args": ["hello", "world"]}
        }),
        // docs/api.md's driver_start example.
        json!({
            "id": "web-1",
            "name": "web",
            "driver": "exec",
            "alloc_id": "5f0c2b7e-1d7c-4d55-9e8b-2a6f3c0e9d11",
            "job_id": "example", "group_name": "cache",
            "config": {"command": "/bin/sh", "args": ["-c", "exec sleep 600"]},
            "env": {"GREETING": "hello from ${NOMAD_TASK_NAME}"},
            "resources": {"cpu_mhz": 200, "memory_mb": 128},
            "kill_signal": "SIGTERM", "kill_timeout_ms": 5000
        }),
        // Every field of an exec task.
        json!({
            "id": "api-0f3a",
            "name": "api",
            "driver": "exec",
            "alloc_id": "8d1e6c2a-3b4f-4e5d-9a7b-0c1d2e3f4a5b",
            "alloc_name": "shop.api[0]",
            "alloc_index": 0,
            "job_id": "shop", "job_name": "shop", "group_name": "api",
            "namespace": "prod", "datacenter": "dc1", "region": "eu",
            "alloc_dir": "/var/lib/execdriver/alloc/8d1e6c2a-3b4f-4e5d-9a7b-0c1d2e3f4a5b",
            "config": {
                "command": "local/api/bin/server",
                "args": ["--listen", "${NOMAD_ADDR_http}", "--workers", 4, "--verbose", true],
                "work_dir": "/local/api",
                "pid_mode": "private",
                "ipc_mode": "private",
                "cap_add": ["NET_BIND_SERVICE"],
                "cap_drop": ["MKNOD", "SYS_CHROOT"],
                "seccomp": "default"
            },
            "artifacts": [
                {
                    "source": "https://releases.example.com/api/${meta.release}/api.tar.gz",
                    "destination": "local/api",
                    "mode": "dir",
                    "options": {"checksum": "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"},
                    "headers": {"Authorization": "Bearer ${TOKEN}"}
                },
                {
                    "source": "https://config.example.com/api.toml",
                    "destination": "local/api/api.toml",
                    "mode": "file"
                }
            ],
            "env": {"RUST_LOG": "info", "DATA": "${NOMAD_ALLOC_DIR}/data"},
            "meta": {"release": "1.4.2", "owner": "team-shop"},
            "node": {
                "unique.id": "3c1f0e9a-node", "unique.name": "worker-7",
                "datacenter": "dc1", "class": "web",
                "attr": {"kernel.name": "linux"}, "meta": {"rack": "r12"}
            },
            "ports": {"http": {"ip": "10.0.0.7", "port": 8080}, "metrics": {"port": 9100}},
            "user": "nobody",
            "resources": {"cpu_mhz": 500, "cores": 1, "memory_mb": 256, "memory_max_mb": 512, "pids_max": 256},
            "network_isolation": {"mode": "group", "path": "/var/run/netns/8d1e6c2a"},
            "kill_signal": "SIGTERM",
            "kill_timeout_ms": 10000,
            "logs": {"max_files": 5, "max_file_size_mb": 20}
        }),
        // The older single-artifact form; args as one string, a signal as a number.
        json!({
            "name": "tool",
            "config": {
                "command": "tool",
                "args": "--once --quiet",
                "artifact_source": "https://downloads.example.com/tool",
                "checksum": "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
            },
            "network_isolation": {"mode": "none"},
            "kill_signal": 15
        }),
    ]
}

fn plugin_examples() -> Vec<Value> {
    vec![
        // Every default.
        json!({}),
        // docs/configuration.md's example.
        json!({
            "data_dir": "/var/lib/execdriver",
            "cgroup_parent": "execdriver",
            "max_kill_timeout_ms": 60000,
            "allow_caps": ["CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "NET_BIND_SERVICE", "SETGID", "SETUID"],
            "denied_host_uids": "0",
            "env_passthrough": ["PATH", "LANG"],
            "artifact": {"file_roots": ["/srv/artifacts"], "cache_dir": "/var/cache/execdriver", "retries": 5}
        }),
        // Every field, a more permissive operator.
        json!({
            "data_dir": "/var/lib/execdriver",
            "shim_path": "/usr/libexec/execdriver/execdriver-shim",
            "cgroup_parent": "nomad.slice",
            "default_pid_mode": "private",
            "default_ipc_mode": "host",
            "no_pivot_root": false,
            "chroot_env": {"/bin": "/bin", "/etc": "/etc", "/lib": "/lib", "/lib64": "/lib64", "/usr": "/usr", "/opt/jdk": "/opt/jdk"},
            "allow_caps": ["all"],
            "denied_host_uids": "0,1000-1999",
            "denied_host_gids": "0",
            "env_passthrough": ["PATH", "LANG", "TZ"],
            "max_kill_timeout_ms": 30000,
            "allow_unconfined_seccomp": true,
            "allow_host_pid_mode": true,
            "allow_host_ipc_mode": true,
            "netns_dirs": ["/var/run/netns"],
            "prestart_supervisor": true,
            "artifact": {
                "file_roots": ["/srv/artifacts"],
                "http_read_timeout_ms": 600000,
                "http_max_bytes": 10737418240u64,
                "decompression_size_limit": 10737418240u64,
                "decompression_file_count_limit": 10000,
                "retries": 3,
                "concurrency": 4,
                "cache_dir": null
            }
        }),
    ]
}

fn generate<T: schemars::JsonSchema>(title: &str, examples: Vec<Value>) -> String {
    // The deserialize contract: what serde accepts (a field with a default is optional).
    let mut schema = SchemaSettings::draft2020_12()
        .for_deserialize()
        .with_transform(RecursiveTransform(integer_range))
        .into_generator()
        .into_root_schema_for::<T>();
    schema.insert("title".into(), title.into());
    schema.insert("examples".into(), Value::Array(examples));
    serde_json::to_string_pretty(&schema).unwrap() + "\n"
}

/// schemars bounds 8- and 16-bit integers only, naming the others' width in `format`
/// alone (an annotation): serde refuses `2^32` for a `u32` all the same, so say so.
fn integer_range(s: &mut Schema) {
    let (min, max) = match s.get("format").and_then(Value::as_str) {
        Some("uint32") => (json!(0), json!(u32::MAX)),
        Some("uint64") => (json!(0), json!(u64::MAX)),
        Some("int32") => (json!(i32::MIN), json!(i32::MAX)),
        Some("int64") => (json!(i64::MIN), json!(i64::MAX)),
        _ => return,
    };
    // A tighter bound from the type's attributes stays.
    if s.get("minimum").is_none() {
        s.insert("minimum".into(), min);
    }
    if s.get("maximum").is_none() {
        s.insert("maximum".into(), max);
    }
}

fn task_schema() -> String {
    generate::<TaskRequest>("execdriver task (driver_start)", task_examples())
}

fn plugin_schema() -> String {
    generate::<PluginConfig>(
        "execdriver plugin configuration (driver_configure)",
        plugin_examples(),
    )
}

#[test]
fn task_schema_is_up_to_date() {
    up_to_date(&TASK);
}

#[test]
fn plugin_schema_is_up_to_date() {
    up_to_date(&PLUGIN);
}

#[test]
fn every_task_example_is_valid() {
    examples_are_valid(&TASK);
}

#[test]
fn every_plugin_example_is_valid() {
    examples_are_valid(&PLUGIN);
}

#[test]
fn what_the_task_schema_rejects_validation_rejects_on_the_same_field() {
    rejected_on_the_same_field(&TASK, task_rejects());
}

#[test]
fn what_the_plugin_schema_rejects_validation_rejects_on_the_same_field() {
    rejected_on_the_same_field(&PLUGIN, plugin_rejects());
}

/// One of the two requests: its committed schema, and the validation of the operation
/// that takes it.
struct Request {
    name: &'static str,
    rel: &'static str,
    generate: fn() -> String,
    validate: fn(&str) -> execdriver::Result<()>,
}

/// `driver_start`'s parse and checks, before it touches anything.
const TASK: Request = Request {
    name: "driver_start",
    rel: "docs/schema/task.schema.json",
    generate: task_schema,
    validate: |text| TaskRequest::parse(text).map(drop),
};

/// `driver_configure`'s parse and checks, before it touches anything.
const PLUGIN: Request = Request {
    name: "driver_configure",
    rel: "docs/schema/plugin-config.schema.json",
    generate: plugin_schema,
    validate: |text| plugin::validate(text).map(drop),
};

fn up_to_date(r: &Request) {
    common::committed_is_up_to_date(r.rel, &(r.generate)(), "UPDATE_SCHEMA", "schema");
}

/// The committed schema (what users get), falling back to the generated one while it
/// is being regenerated.
fn committed(r: &Request) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(r.rel);
    let text = std::fs::read_to_string(path).unwrap_or_else(|_| (r.generate)());
    serde_json::from_str(&text).unwrap()
}

fn examples_are_valid(r: &Request) {
    let schema = committed(r);
    let examples = schema["examples"].as_array().expect("examples");
    assert!(!examples.is_empty(), "{} has no examples", r.rel);
    for (i, ex) in examples.iter().enumerate() {
        if let Err((path, why)) = Checker::new(&schema).check(ex) {
            panic!(
                "{} example {i} fails its own schema at {path}: {why}",
                r.rel
            );
        }
        if let Err(e) = (r.validate)(&ex.to_string()) {
            panic!("{} refuses {} example {i}: {e}", r.name, r.rel);
        }
    }
}

fn rejected_on_the_same_field(r: &Request, cases: Vec<(Value, &str)>) {
    let schema = committed(r);
    for (doc, field) in cases {
        match Checker::new(&schema).check(&doc) {
            Err((path, _)) => assert_eq!(path, field, "the schema's path for {doc}"),
            Ok(()) => panic!("{} accepts {doc}", r.rel),
        }
        let e = (r.validate)(&doc.to_string()).expect_err(&doc.to_string());
        assert_eq!(e.code, Code::InvalidConfig, "{doc}: {e}");
        assert_eq!(
            e.field.as_deref(),
            Some(field),
            "{}'s field for {doc}: {e}",
            r.name
        );
    }
}

/// Each `default` in a schema is valid against the schema it sits in, and the effective
/// configuration `driver_configure` returns is a valid request again.
#[test]
fn defaults_fit_their_schemas() {
    for r in [&TASK, &PLUGIN] {
        let (rel, schema) = (r.rel, committed(r));
        let checker = Checker::new(&schema);
        let mut n = 0;
        walk(&schema, &mut |s| {
            if let Some(d) = s.get("default") {
                n += 1;
                if let Err((path, why)) = checker.check_at(s, d, "") {
                    panic!("{rel}: default {d} fails its schema at {path}: {why}");
                }
            }
        });
        assert!(n > 10, "{rel}: only {n} defaults");
    }
    let schema = committed(&PLUGIN);
    let effective = plugin::effective_json(&PluginConfig::default()).unwrap();
    if let Err((path, why)) = Checker::new(&schema).check(&effective) {
        panic!("the effective configuration fails the schema at {path}: {why}");
    }
    plugin::validate(&effective.to_string()).unwrap();
}

fn walk(v: &Value, f: &mut dyn FnMut(&serde_json::Map<String, Value>)) {
    match v {
        Value::Object(m) => {
            f(m);
            for (k, x) in m {
                // Examples and defaults are instances, not schemas.
                if k != "examples" && k != "default" {
                    walk(x, f);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| walk(x, f)),
        _ => {}
    }
}

/// Documents the schema refuses (a minimal task with the value at the dotted path), and
/// the field both it and validation name.
fn task_rejects() -> Vec<(Value, &'static str)> {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("nmae", json!("t"), "nmae"),
        ("config.comand", json!("x"), "config.comand"),
        ("resources.memroy_mb", json!(1), "resources.memroy_mb"),
        ("node.unique_id", json!("n"), "node.unique_id"),
        ("resources.memory_mb", json!("lots"), "resources.memory_mb"),
        ("kill_timeout_ms", json!(-1), "kill_timeout_ms"),
        ("alloc_index", json!(1.5), "alloc_index"),
        ("driver", json!("docker"), "driver"),
        ("config.seccomp", json!("off"), "config.seccomp"),
        ("config.args", json!({"a": 1}), "config.args"),
        ("env.A", json!(1), "env.A"),
        ("ports.http", json!({"port": 70000}), "ports.http.port"),
        ("ports.http", json!({"ip": "::1"}), "ports.http.port"),
        (
            "network_isolation",
            json!({"mode": "bridge"}),
            "network_isolation.mode",
        ),
        ("network_isolation", json!({}), "network_isolation.mode"),
        (
            "artifacts",
            json!([{"source": "x", "mode": "folder"}]),
            "artifacts[0].mode",
        ),
        (
            "artifacts",
            json!([{"destination": "local/"}]),
            "artifacts[0].source",
        ),
        ("kill_signal", json!(true), "kill_signal"),
        ("logs.max_files", json!(0), "logs.max_files"),
        ("name", json!(""), "name"),
        ("name", json!("n".repeat(129)), "name"),
        ("config.command", json!(""), "config.command"),
    ];
    let mut out: Vec<(Value, &str)> = cases
        .into_iter()
        .map(|(path, v, field)| {
            let mut t = json!({"name": "t", "config": {"command": "/bin/true"}});
            let keys: Vec<&str> = path.split('.').collect();
            let mut at = &mut t;
            for k in &keys[..keys.len() - 1] {
                at = at.as_object_mut().unwrap().entry(*k).or_insert(json!({}));
            }
            at[keys[keys.len() - 1]] = v;
            (t, field)
        })
        .collect();
    out.extend([
        (json!({"name": "t"}), "config"),
        (json!({"config": {"command": "x"}}), "name"),
        (json!({"name": "t", "config": {}}), "config.command"),
    ]);
    out
}

/// Configurations the schema refuses, and the field both it and validation name.
fn plugin_rejects() -> Vec<(Value, &'static str)> {
    vec![
        (json!({"data_dri": "/x"}), "data_dri"),
        (json!({"artifact": {"retry": 1}}), "artifact.retry"),
        (json!({"max_kill_timeout_ms": "60s"}), "max_kill_timeout_ms"),
        (json!({"artifact": {"retries": -1}}), "artifact.retries"),
        (
            json!({"artifact": {"retries": 4294967296u64}}),
            "artifact.retries",
        ),
        (json!({"default_pid_mode": "shared"}), "default_pid_mode"),
        (json!({"allow_caps": "CHOWN"}), "allow_caps"),
        (json!({"allow_caps": [1]}), "allow_caps[0]"),
        (json!({"chroot_env": {"/bin": null}}), "chroot_env./bin"),
        (json!({"no_pivot_root": "yes"}), "no_pivot_root"),
    ]
}

/// A checker of the JSON Schema subset schemars emits here. It refuses any keyword it
/// does not know, so the schema can never carry a constraint these tests skip.
struct Checker<'a> {
    root: &'a Value,
}

type Failure = (String, String);

impl<'a> Checker<'a> {
    fn new(root: &'a Value) -> Self {
        Checker { root }
    }

    fn check(&self, v: &Value) -> Result<(), Failure> {
        self.check_at(self.root.as_object().unwrap(), v, "")
    }

    fn check_schema(&self, s: &Value, v: &Value, path: &str) -> Result<(), Failure> {
        match s {
            Value::Bool(true) => Ok(()),
            Value::Bool(false) => Err((path.into(), "nothing is allowed here".into())),
            Value::Object(m) => self.check_at(m, v, path),
            _ => panic!("not a schema: {s}"),
        }
    }

    fn check_at(
        &self,
        s: &serde_json::Map<String, Value>,
        v: &Value,
        path: &str,
    ) -> Result<(), Failure> {
        let fail = |why: String| Err((path.to_string(), why));
        for (k, x) in s {
            match k.as_str() {
                "$schema"
                | "$defs"
                | "title"
                | "description"
                | "default"
                | "examples"
                | "format"
                | "required"
                | "additionalProperties" => {}
                "$ref" => {
                    let r = x.as_str().unwrap().strip_prefix('#').expect("a local $ref");
                    let target = self.root.pointer(r).expect("$ref resolves");
                    self.check_schema(target, v, path)?;
                }
                "type" => {
                    let types: Vec<&str> = match x {
                        Value::String(t) => vec![t],
                        Value::Array(a) => a.iter().map(|t| t.as_str().unwrap()).collect(),
                        _ => panic!("type {x}"),
                    };
                    if !types.iter().any(|t| has_type(v, t)) {
                        return fail(format!("{v} is not of type {x}"));
                    }
                }
                "enum" => {
                    if !x.as_array().unwrap().contains(v) {
                        return fail(format!("{v} is not one of {x}"));
                    }
                }
                "const" => {
                    if x != v {
                        return fail(format!("{v} is not {x}"));
                    }
                }
                "anyOf" | "oneOf" => {
                    let results: Vec<_> = x
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|b| self.check_schema(b, v, path))
                        .collect();
                    let passed = results.iter().filter(|r| r.is_ok()).count();
                    if passed == 0 {
                        // The branch that got furthest names the field, as serde would.
                        return Err(results
                            .into_iter()
                            .filter_map(Result::err)
                            .max_by_key(|(p, _)| p.len())
                            .unwrap());
                    }
                    if k == "oneOf" && passed > 1 {
                        return fail(format!("{v} matches {passed} branches of oneOf"));
                    }
                }
                "properties" => {
                    let Some(obj) = v.as_object() else { continue };
                    let props = x.as_object().unwrap();
                    for req in s
                        .get("required")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        let req = req.as_str().unwrap();
                        if !obj.contains_key(req) {
                            return Err((join(path, req), format!("missing field `{req}`")));
                        }
                    }
                    for (key, val) in obj {
                        let at = join(path, key);
                        match (props.get(key), s.get("additionalProperties")) {
                            (Some(p), _) => self.check_schema(p, val, &at)?,
                            (None, Some(Value::Bool(false))) => {
                                return Err((at, format!("unknown field `{key}`")));
                            }
                            (None, Some(a)) => self.check_schema(a, val, &at)?,
                            (None, None) => {}
                        }
                    }
                }
                "items" => {
                    for (i, item) in v.as_array().into_iter().flatten().enumerate() {
                        self.check_schema(x, item, &format!("{path}[{i}]"))?;
                    }
                }
                "minimum" | "maximum" => {
                    if let Some(n) = v.as_f64() {
                        let bound = x.as_f64().unwrap();
                        if (k == "minimum" && n < bound) || (k == "maximum" && n > bound) {
                            return fail(format!("{v} is beyond the {k} {x}"));
                        }
                    }
                }
                "minLength" | "maxLength" => {
                    if let Some(t) = v.as_str() {
                        let n = t.chars().count() as u64;
                        let bound = x.as_u64().unwrap();
                        if (k == "minLength" && n < bound) || (k == "maxLength" && n > bound) {
                            return fail(format!("a length of {n} is beyond the {k} {x}"));
                        }
                    }
                }
                other => panic!("the schema uses {other:?}, which this checker does not know"),
            }
        }
        // additionalProperties without properties (a map).
        if !s.contains_key("properties")
            && let (Some(obj), Some(a)) = (v.as_object(), s.get("additionalProperties"))
        {
            for (key, val) in obj {
                self.check_schema(a, val, &join(path, key))?;
            }
        }
        Ok(())
    }
}

fn has_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        "number" => v.is_number(),
        // As serde_json reads integers: 1.0 is not one.
        "integer" => v.is_i64() || v.is_u64(),
        _ => panic!("type {t:?}"),
    }
}

/// A JSON path as validation names fields: `a.b`, `a[0].b`.
fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}
