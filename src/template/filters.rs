//! Ansible's everyday filters and tests, on top of minijinja's builtins (default, join, map,
//! selectattr, first, unique, ...).

use std::sync::Arc;

use base64::Engine as _;
use minijinja::value::{Kwargs, Rest, Value, ValueKind};
use minijinja::{Environment, Error, ErrorKind};
use sha2::Digest as _;
use yaml_rust2::{Yaml, YamlEmitter};

use crate::secrets::SecretStore;

pub fn register(env: &mut Environment<'static>, secrets: Option<Arc<SecretStore>>) {
    env.add_filter("d", minijinja::filters::default);
    env.add_filter("to_json", to_json);
    env.add_filter("to_nice_json", to_nice_json);
    env.add_filter("from_json", from_json);
    env.add_filter("to_yaml", to_yaml);
    env.add_filter("to_nice_yaml", to_yaml);
    env.add_filter("b64encode", b64encode);
    env.add_filter("b64decode", b64decode);
    env.add_filter("regex_replace", regex_replace);
    env.add_filter("regex_search", regex_search);
    env.add_filter("quote", quote);
    env.add_filter("quote_ident", quote_ident);
    env.add_filter("quote_literal", quote_literal);
    env.add_filter("basename", basename);
    env.add_filter("dirname", dirname);
    env.add_filter("mandatory", mandatory);
    env.add_filter("ternary", ternary);
    env.add_filter("combine", combine);
    env.add_filter("dict2items", dict2items);
    env.add_filter("items2dict", items2dict);
    env.add_filter("flatten", flatten);
    env.add_filter("difference", difference);
    env.add_filter("union", union);
    env.add_filter("intersect", intersect);
    env.add_filter("hash", hash);
    env.add_filter("password_hash", password_hash);
    env.add_filter("checksum", checksum);
    env.add_filter("bool", to_bool);
    env.add_filter("int", to_int);
    env.add_filter("regex_findall", regex_findall);
    env.add_filter("splitext", splitext);
    env.add_test("version", test_version);
    env.add_test("version_compare", test_version);
    env.add_test("match", test_match);
    env.add_test("search", test_search);
    env.add_test("changed", |v: Value| flag(&v, "changed"));
    env.add_test("failed", |v: Value| flag(&v, "failed"));
    env.add_test("skipped", |v: Value| flag(&v, "skipped"));
    env.add_test("succeeded", |v: Value| !flag(&v, "failed"));
    env.add_test("success", |v: Value| !flag(&v, "failed"));
    env.add_function("now", || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default()
    });
    let for_query = secrets.clone();
    env.add_function("lookup", move |kind: String, arg: String| {
        lookup(kind, arg, secrets.as_deref())
    });
    let for_q = for_query.clone();
    env.add_function("query", move |kind: String, arg: Value| {
        query(kind, arg, for_query.as_deref())
    });
    env.add_function("q", move |kind: String, arg: Value| {
        query(kind, arg, for_q.as_deref())
    });
}

fn json(value: &Value) -> Result<serde_json::Value, Error> {
    serde_json::to_value(value).map_err(|e| Error::new(ErrorKind::BadSerialization, e.to_string()))
}

fn to_json(value: Value) -> Result<String, Error> {
    Ok(json(&value)?.to_string())
}

fn to_nice_json(value: Value, kwargs: Kwargs) -> Result<String, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let pretty = serde_json::to_string_pretty(&json(&value)?)
        .map_err(|e| Error::new(ErrorKind::BadSerialization, e.to_string()))?;
    Ok(match indent {
        Some(n) if n != 2 => pretty
            .lines()
            .map(|l| {
                let lead = l.len() - l.trim_start().len();
                format!("{}{}", " ".repeat(lead / 2 * n), l.trim_start())
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => pretty,
    })
}

fn from_json(text: String) -> Result<Value, Error> {
    let parsed: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("from_json: {e}")))?;
    Ok(crate::template::value_of(parsed))
}

fn yaml_of(value: &serde_json::Value) -> Yaml {
    use serde_json::Value as J;
    match value {
        J::Null => Yaml::Null,
        J::Bool(b) => Yaml::Boolean(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Integer(i),
            None => Yaml::Real(n.to_string()),
        },
        J::String(s) => Yaml::String(s.clone()),
        J::Array(items) => Yaml::Array(items.iter().map(yaml_of).collect()),
        J::Object(map) => Yaml::Hash(
            map.iter()
                .map(|(k, v)| (Yaml::String(k.clone()), yaml_of(v)))
                .collect(),
        ),
    }
}

/// YAML block style, without the `---` document marker.
pub fn yaml_text(value: &serde_json::Value) -> Result<String, Error> {
    let mut out = String::new();
    let mut emitter = YamlEmitter::new(&mut out);
    emitter.multiline_strings(true);
    emitter
        .dump(&yaml_of(value))
        .map_err(|e| Error::new(ErrorKind::BadSerialization, format!("{e:?}")))?;
    let body = out
        .strip_prefix("---\n")
        .or_else(|| out.strip_prefix("--- "))
        .unwrap_or(&out);
    Ok(format!("{body}\n"))
}

fn to_yaml(value: Value, _kwargs: Kwargs) -> Result<String, Error> {
    yaml_text(&json(&value)?)
}

fn b64encode(text: String) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn b64decode(text: String) -> Result<String, Error> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("b64decode: {e}")))?;
    Ok(String::from_utf8_lossy(&bytes).to_string())
}

fn regex(pattern: &str) -> Result<regex::Regex, Error> {
    regex::Regex::new(pattern)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("bad regex: {e}")))
}

/// Python's `\1` back-references become the regex crate's `${1}`.
fn replacement(python: &str) -> String {
    let backref = regex::Regex::new(r"\\(\d+)|\\g<(\w+)>").expect("static regex");
    backref
        .replace_all(&python.replace('$', "$$"), |c: &regex::Captures| {
            let group = c.get(1).or_else(|| c.get(2)).map_or("", |m| m.as_str());
            format!("${{{group}}}")
        })
        .to_string()
}

fn regex_replace(text: String, pattern: String, with: Option<String>) -> Result<String, Error> {
    let with = replacement(&with.unwrap_or_default());
    Ok(regex(&pattern)?
        .replace_all(&text, with.as_str())
        .to_string())
}

fn regex_search(text: String, pattern: String) -> Result<Value, Error> {
    Ok(match regex(&pattern)?.find(&text) {
        Some(m) => Value::from(m.as_str()),
        None => Value::from(()),
    })
}

/// A value as a text, as Ansible's filters take it: none is empty, a number its digits.
fn text_of(value: &Value) -> String {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => String::new(),
        _ => value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_string),
    }
}

/// Ansible's `quote`: one word for a POSIX shell, whatever the value holds.
/// `password_hash('bcrypt')`, as Ansible's filter: a bcrypt hash (cost 10) for web
/// configurations' `basic_auth_users`. Unlike Ansible's, the salt is not random but derived from
/// the password (or from `salt` when given), so that the same password renders the same hash
/// and a second apply changes nothing.
fn password_hash(password: String, scheme: String, salt: Option<String>) -> Result<String, Error> {
    if scheme != "bcrypt" {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("password_hash: only 'bcrypt' is supported (got {scheme:?})"),
        ));
    }
    let seed = salt.unwrap_or_else(|| format!("hactl-bcrypt:{password}"));
    let digest = sha2::Sha256::digest(seed.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // The same password and salt give the same hash: computed once per run, not per render
    // (bcrypt is slow on purpose, and every task is rendered for every host).
    type Hashes = std::collections::HashMap<(String, [u8; 16]), String>;
    static DONE: std::sync::LazyLock<std::sync::Mutex<Hashes>> =
        std::sync::LazyLock::new(Default::default);
    let mut done = DONE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(hash) = done.get(&(password.clone(), bytes)) {
        return Ok(hash.clone());
    }
    let hash = bcrypt::hash_with_salt(password.as_bytes(), 10, bytes)
        .map(|h| h.format_for_version(bcrypt::Version::TwoB))
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, format!("password_hash: {e}")))?;
    done.insert((password, bytes), hash.clone());
    Ok(hash)
}

fn quote(value: Value) -> String {
    crate::ssh::shell_quote(&text_of(&value))
}

/// A PostgreSQL identifier (role, table), always double-quoted: the name is taken as written.
fn quote_ident(value: Value) -> String {
    format!("\"{}\"", text_of(&value).replace('"', "\"\""))
}

/// A PostgreSQL string literal, as PostgreSQL's own `quote_literal` writes it: quotes doubled,
/// and backslashes doubled in an `E'…'` literal whatever `standard_conforming_strings` says.
fn quote_literal(value: Value) -> String {
    let text = text_of(&value).replace('\'', "''");
    if text.contains('\\') {
        format!("E'{}'", text.replace('\\', "\\\\"))
    } else {
        format!("'{text}'")
    }
}

fn basename(path: String) -> String {
    path.rsplit('/').next().unwrap_or_default().to_string()
}

fn dirname(path: String) -> String {
    match path.rfind('/') {
        Some(0) => "/".to_string(),
        Some(i) => path[..i].to_string(),
        None => String::new(),
    }
}

fn mandatory(value: Value, msg: Option<String>) -> Result<Value, Error> {
    if value.is_undefined() {
        return Err(Error::new(
            ErrorKind::UndefinedError,
            msg.unwrap_or_else(|| "mandatory variable not defined".into()),
        ));
    }
    Ok(value)
}

fn ternary(value: Value, yes: Value, no: Value) -> Value {
    if value.is_true() {
        yes
    } else {
        no
    }
}

fn merge(base: &mut serde_json::Value, over: serde_json::Value, recursive: bool) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if recursive => merge(existing, v, true),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn combine(value: Value, others: Rest<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let recursive: Option<bool> = kwargs.get("recursive")?;
    kwargs.assert_all_used()?;
    let mut out = json(&value)?;
    for other in others.iter() {
        merge(&mut out, json(other)?, recursive.unwrap_or(false));
    }
    Ok(crate::template::value_of(out))
}

fn dict2items(value: Value) -> Result<Value, Error> {
    let map = json(&value)?;
    let obj = map
        .as_object()
        .ok_or_else(|| Error::new(ErrorKind::InvalidOperation, "dict2items expects a mapping"))?;
    let items: Vec<serde_json::Value> = obj
        .iter()
        .map(|(k, v)| serde_json::json!({"key": k, "value": v}))
        .collect();
    Ok(crate::template::value_of(items))
}

fn items2dict(value: Value) -> Result<Value, Error> {
    let mut out = serde_json::Map::new();
    for item in value.try_iter()? {
        let key = item.get_attr("key")?;
        let key = key
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| key.to_string());
        out.insert(key, json(&item.get_attr("value")?)?);
    }
    Ok(crate::template::value_of(out))
}

/// Flattens `value`'s lists into `out`, `levels` deep (None: all the way); nulls are left out
/// unless `keep_nulls`.
fn flatten_into(
    value: &Value,
    levels: Option<u64>,
    keep_nulls: bool,
    out: &mut Vec<Value>,
) -> Result<(), Error> {
    for item in value.try_iter()? {
        if item.kind() == ValueKind::Seq && levels != Some(0) {
            flatten_into(&item, levels.map(|l| l - 1), keep_nulls, out)?;
        } else if keep_nulls || !(item.is_none() || item.is_undefined()) {
            out.push(item);
        }
    }
    Ok(())
}

/// Ansible's `flatten(levels=None, skip_nulls=True)`: `levels=1` is what `with_items` does.
fn flatten(value: Value, levels: Option<Value>, kwargs: Kwargs) -> Result<Value, Error> {
    let levels = match kwargs.get::<Option<Value>>("levels")?.or(levels) {
        Some(v) if !v.is_none() => Some(u64::try_from(v).map_err(|_| {
            Error::new(
                ErrorKind::InvalidOperation,
                "flatten: levels must be a whole number",
            )
        })?),
        _ => None,
    };
    let skip_nulls = kwargs.get::<Option<bool>>("skip_nulls")?.unwrap_or(true);
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    if value.kind() == ValueKind::Seq {
        flatten_into(&value, levels, !skip_nulls, &mut out)?;
    } else {
        out.push(value);
    }
    Ok(Value::from(out))
}

fn items(value: &Value) -> Result<Vec<Value>, Error> {
    Ok(value.try_iter()?.collect())
}

fn difference(a: Value, b: Value) -> Result<Value, Error> {
    let b = items(&b)?;
    Ok(Value::from(
        items(&a)?
            .into_iter()
            .filter(|x| !b.contains(x))
            .collect::<Vec<_>>(),
    ))
}

fn union(a: Value, b: Value) -> Result<Value, Error> {
    let mut out = items(&a)?;
    for x in items(&b)? {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    Ok(Value::from(out))
}

fn intersect(a: Value, b: Value) -> Result<Value, Error> {
    let b = items(&b)?;
    Ok(Value::from(
        items(&a)?
            .into_iter()
            .filter(|x| b.contains(x))
            .collect::<Vec<_>>(),
    ))
}

/// Ansible's `hash` (default sha1).
fn hash(text: String, algorithm: Option<String>) -> Result<String, Error> {
    let b = text.as_bytes();
    match algorithm.as_deref().unwrap_or("sha1") {
        "sha1" => Ok(hex(&sha1::Sha1::digest(b))),
        "md5" => Ok(hex(&md5::Md5::digest(b))),
        "sha224" => Ok(hex(&sha2::Sha224::digest(b))),
        "sha256" => Ok(hex(&sha2::Sha256::digest(b))),
        "sha384" => Ok(hex(&sha2::Sha384::digest(b))),
        "sha512" => Ok(hex(&sha2::Sha512::digest(b))),
        other => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "hash: unsupported algorithm {other} (md5, sha1, sha224, sha256, sha384, sha512)"
            ),
        )),
    }
}

/// Ansible's `checksum`: the text's sha1.
fn checksum(text: String) -> String {
    hex(&sha1::Sha1::digest(text.as_bytes()))
}

/// Ansible's `regex_findall`: every match; with groups, each match's groups (one group: its
/// text).
fn regex_findall(text: String, pattern: String, kwargs: Kwargs) -> Result<Value, Error> {
    let ignorecase: Option<bool> = kwargs.get("ignorecase")?;
    let multiline: Option<bool> = kwargs.get("multiline")?;
    kwargs.assert_all_used()?;
    let flags = match (ignorecase == Some(true), multiline == Some(true)) {
        (false, false) => "",
        (true, false) => "(?i)",
        (false, true) => "(?m)",
        (true, true) => "(?im)",
    };
    let re = regex(&format!("{flags}{pattern}"))?;
    let groups = re.captures_len() - 1;
    let found: Vec<Value> = re
        .captures_iter(&text)
        .map(|c| {
            let group = |i: usize| Value::from(c.get(i).map_or("", |m| m.as_str()));
            match groups {
                0 => group(0),
                1 => group(1),
                n => Value::from((1..=n).map(group).collect::<Vec<_>>()),
            }
        })
        .collect();
    Ok(Value::from(found))
}

/// Python's `os.path.splitext`: [root, extension].
fn splitext(path: String) -> Value {
    let name_at = path.rfind('/').map_or(0, |i| i + 1);
    let name = &path[name_at..];
    match name.rfind('.') {
        Some(dot) if name[..dot].chars().any(|c| c != '.') => Value::from(vec![
            path[..name_at + dot].to_string(),
            name[dot..].to_string(),
        ]),
        _ => Value::from(vec![path.clone(), String::new()]),
    }
}

/// Ansible's `version` test (loose): dotted numbers compared as numbers, other parts as text.
fn test_version(value: Value, other: Value, op: Option<String>) -> Result<bool, Error> {
    fn parts(v: &str) -> Vec<Result<u64, String>> {
        v.split(['.', '-', '+', '~', '_'])
            .filter(|p| !p.is_empty())
            .map(|p| p.parse::<u64>().map_err(|_| p.to_string()))
            .collect()
    }
    let (a, b) = (parts(&text_of(&value)), parts(&text_of(&other)));
    let ord = a
        .iter()
        .zip(b.iter())
        .map(|(x, y)| match (x, y) {
            (Ok(x), Ok(y)) => x.cmp(y),
            (Ok(_), Err(_)) => std::cmp::Ordering::Greater,
            (Err(_), Ok(_)) => std::cmp::Ordering::Less,
            (Err(x), Err(y)) => x.cmp(y),
        })
        .find(|o| o.is_ne())
        .unwrap_or_else(|| a.len().cmp(&b.len()));
    use std::cmp::Ordering::*;
    Ok(match op.as_deref().unwrap_or("==") {
        "<" | "lt" => ord == Less,
        "<=" | "le" => ord != Greater,
        ">" | "gt" => ord == Greater,
        ">=" | "ge" => ord != Less,
        "==" | "=" | "eq" => ord == Equal,
        "!=" | "<>" | "ne" => ord != Equal,
        other => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("version: unknown operator {other:?}"),
            ))
        }
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn to_bool(value: Value) -> bool {
    match value.as_str() {
        Some(s) => matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "yes" | "on" | "true" | "1" | "y"
        ),
        None => value.is_true(),
    }
}

/// Jinja2's `int`: what does not parse is the default (0), not an error.
fn to_int(value: Value, default: Option<i64>) -> i64 {
    let fallback = default.unwrap_or(0);
    match value.as_str() {
        Some(s) => {
            let t = s.trim();
            t.parse::<i64>()
                .ok()
                .or_else(|| t.parse::<f64>().ok().map(|f| f as i64))
                .unwrap_or(fallback)
        }
        None => i64::try_from(value.clone())
            .ok()
            .or_else(|| f64::try_from(value).ok().map(|f| f as i64))
            .unwrap_or(fallback),
    }
}

fn test_match(text: String, pattern: String) -> Result<bool, Error> {
    Ok(regex(&format!("^(?:{pattern})"))?.is_match(&text))
}

fn test_search(text: String, pattern: String) -> Result<bool, Error> {
    Ok(regex(&pattern)?.is_match(&text))
}

fn flag(result: &Value, name: &str) -> bool {
    result.get_attr(name).map(|v| v.is_true()).unwrap_or(false)
}

/// `lookup('env', 'NAME')` and `lookup('file', 'path')`, read on the control machine, and
/// `lookup('password', 'NAME length=N')` from the inventory's secret store.
fn lookup(kind: String, arg: String, secrets: Option<&SecretStore>) -> Result<Value, Error> {
    let bad = |msg: String| Error::new(ErrorKind::InvalidOperation, msg);
    match kind.as_str() {
        "env" => Ok(Value::from(std::env::var(&arg).unwrap_or_default())),
        "file" => std::fs::read_to_string(&arg)
            .map(|s| Value::from(s.trim_end_matches('\n')))
            .map_err(|e| bad(format!("lookup file {arg}: {e}"))),
        "password" => {
            let store = secrets.ok_or_else(|| bad("lookup password: no secret store".into()))?;
            let mut words = arg.split_whitespace();
            let name = words.next().unwrap_or_default();
            let mut length = None;
            for option in words {
                match option.split_once('=') {
                    Some(("length", n)) => {
                        length = Some(
                            n.parse()
                                .map_err(|_| bad(format!("lookup password: bad length {n}")))?,
                        )
                    }
                    _ => {
                        return Err(bad(format!(
                            "lookup password: unknown option {option} (length=N)"
                        )))
                    }
                }
            }
            store
                .get_or_create(name, length)
                .map(Value::from)
                .map_err(|e| bad(e.to_string()))
        }
        // Run on this machine, as Ansible's lookups are.
        "pipe" => {
            let out = std::process::Command::new("sh")
                .args(["-c", &arg])
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| bad(format!("lookup pipe: {e}")))?;
            if !out.status.success() {
                return Err(bad(format!(
                    "lookup pipe `{arg}`: {} {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
            Ok(Value::from(
                String::from_utf8_lossy(&out.stdout).trim_end_matches('\n'),
            ))
        }
        other => Err(bad(format!(
            "lookup: unsupported plugin {other} (env, file, password, pipe; query: also dict, items, list)"
        ))),
    }
}

/// The lists in `list` flattened into it, one level (Ansible's `items` lookup, `with_items`);
/// nulls are kept.
pub fn flatten_once(list: Vec<Value>) -> Vec<Value> {
    list.into_iter()
        .flat_map(|item| match item.kind() {
            ValueKind::Seq => item.try_iter().into_iter().flatten().collect(),
            _ => vec![item],
        })
        .collect()
}

/// Ansible's `query` (`q`): a lookup whose answer is always a list; `dict` gives a mapping's
/// items ({key, value}), `items` a list flattened one level, `list` the list.
fn query(kind: String, arg: Value, secrets: Option<&SecretStore>) -> Result<Value, Error> {
    match kind.as_str() {
        "dict" => dict2items(arg),
        "list" => Ok(Value::from(items(&arg)?)),
        "items" => Ok(Value::from(flatten_once(items(&arg)?))),
        _ => {
            let one = lookup(kind, text_of(&arg), secrets)?;
            Ok(match one.kind() {
                ValueKind::Seq => one,
                _ => Value::from(vec![one]),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_backreferences_work_in_regex_replace() {
        assert_eq!(
            regex_replace(
                "host-12".into(),
                r"(\w+)-(\d+)".into(),
                Some(r"\2.\1".into())
            )
            .unwrap(),
            "12.host"
        );
    }

    fn render(template: &str, value: serde_json::Value) -> String {
        let mut env = Environment::new();
        register(&mut env, None);
        env.render_str(
            template,
            minijinja::context! { v => Value::from(minijinja::value::Serde(value)) },
        )
        .unwrap()
    }

    #[test]
    fn password_hash_is_a_bcrypt_hash_of_the_password_and_the_same_on_every_render() {
        let hash = render("{{ v | password_hash('bcrypt') }}", "s3cret".into());
        assert!(hash.starts_with("$2b$10$"), "{hash}");
        assert!(bcrypt::verify("s3cret", &hash).unwrap());
        assert!(!bcrypt::verify("other", &hash).unwrap());
        assert_eq!(
            render("{{ v | password_hash('bcrypt') }}", "s3cret".into()),
            hash
        );
        let salted = render(
            "{{ v | password_hash('bcrypt', 'pepper') }}",
            "s3cret".into(),
        );
        assert_ne!(salted, hash);
        assert!(bcrypt::verify("s3cret", &salted).unwrap());
    }

    #[test]
    fn quote_makes_one_shell_word_of_any_value() {
        assert_eq!(render("{{ v | quote }}", "/usr/bin".into()), "/usr/bin");
        assert_eq!(
            render("{{ v | quote }}", "x; rm -rf / #".into()),
            "'x; rm -rf / #'"
        );
        assert_eq!(render("{{ v | quote }}", "it's".into()), "'it'\\''s'");
        assert_eq!(render("{{ v | quote }}", "$(id)".into()), "'$(id)'");
        assert_eq!(render("{{ v | quote }}", 5432.into()), "5432");
        assert_eq!(render("{{ v | quote }}", serde_json::Value::Null), "''");
    }

    #[test]
    fn sql_identifiers_and_literals_are_quoted_as_postgresql_does() {
        assert_eq!(
            render("{{ v | quote_ident }}", "hactl_prober".into()),
            "\"hactl_prober\""
        );
        assert_eq!(
            render("{{ v | quote_ident }}", "a\"; drop table x; --".into()),
            "\"a\"\"; drop table x; --\""
        );
        assert_eq!(
            render("{{ v | quote_literal }}", "hactl_prober".into()),
            "'hactl_prober'"
        );
        assert_eq!(
            render("{{ v | quote_literal }}", "o'clock".into()),
            "'o''clock'"
        );
        assert_eq!(
            render("{{ v | quote_literal }}", "a\\'b".into()),
            "E'a\\\\''b'"
        );
    }

    #[test]
    fn to_yaml_is_block_style_without_document_marker() {
        let text = yaml_text(&serde_json::json!({"a": [1, 2], "b": "x"})).unwrap();
        assert_eq!(text, "a:\n  - 1\n  - 2\nb: x\n");
    }
}

#[cfg(test)]
mod more_ansible {
    use super::*;

    fn render(template: &str) -> String {
        let mut env = Environment::new();
        register(&mut env, None);
        env.render_str(template, minijinja::context! {}).unwrap()
    }

    #[test]
    fn hashes_are_ansibles_defaults() {
        assert_eq!(
            render("{{ 'abc' | hash }} {{ 'abc' | checksum }}"),
            "a9993e364706816aba3e25717850c26c9cd0d89d a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            render("{{ 'abc' | hash('md5') }}"),
            "900150983cd24fb0d6963f7d28e17f72"
        );
    }

    #[test]
    fn regex_findall_splitext_and_the_version_test() {
        assert_eq!(
            render("{{ 'a1 b22 c333' | regex_findall('[a-z](\\\\d+)') }} {{ 'A b' | regex_findall('a', ignorecase=true) }}"),
            "['1', '22', '333'] ['A']"
        );
        assert_eq!(
            render("{{ '/a/b.tar.gz' | splitext }} {{ '.bashrc' | splitext }}"),
            "['/a/b.tar', '.gz'] ['.bashrc', '']"
        );
        assert_eq!(
            render("{{ '12.4' is version('12', '>=') }} {{ '1.10' is version('1.9', 'gt') }} {{ '2.0' is version('2', '==') }} {{ '16.1-1' is version_compare('16.2', '<') }}"),
            "True True False True"
        );
    }

    #[test]
    fn query_always_answers_a_list() {
        assert_eq!(
            render("{{ query('dict', {'a': 1}) }} {{ q('items', [[1, 2], 3]) }} {{ query('pipe', 'echo hi') }}"),
            "[{'key': 'a', 'value': 1}] [1, 2, 3] ['hi']"
        );
        assert_eq!(
            render("{{ lookup('pipe', 'printf \"a\\\\nb\\\\n\"') }}"),
            "a\nb"
        );
    }
}
