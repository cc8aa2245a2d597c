//! Module arguments: typing them, the value types Ansible's spellings need, and what an `Args`
//! type says of itself — its argument names and the ones it cannot do without — read from its
//! `Deserialize`, so that no list of names is kept beside the struct.

use std::fmt;

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::Deserialize;

use super::Module;

/// Arguments that do not fit the module.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    #[error(transparent)]
    Type(#[from] serde_json::Error),
    /// A rule between arguments: one of `cmd` or `argv`, say.
    #[error("{0}")]
    Invalid(String),
}

/// Types the rendered arguments of a call of `M`: a mapping, or a command line for modules that
/// take one.
pub fn parse<M: Module>(args: serde_json::Value) -> Result<M::Args, ArgsError> {
    let typed = match args {
        serde_json::Value::String(line) => match M::free_form(line) {
            Some(a) => a,
            None => return Err(ArgsError::Invalid("expected a mapping of arguments".into())),
        },
        other => serde_json::from_value(other)?,
    };
    M::validate(&typed)?;
    Ok(typed)
}

/// The argument names of `T`, in the order the struct declares them (empty if `T` is no struct).
pub fn fields<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut fields = None;
    let _ = T::deserialize(Probe {
        given: &[],
        fields: &mut fields,
    });
    fields.unwrap_or_default()
}

/// The arguments `T` cannot do without: neither an `Option` nor defaulted. Serde reports the
/// first missing one; giving it (any string will do for these) reveals the next.
pub fn required<T: DeserializeOwned>() -> Vec<&'static str> {
    let mut found = Vec::new();
    loop {
        let mut fields = None;
        match T::deserialize(Probe {
            given: &found,
            fields: &mut fields,
        }) {
            Err(Answer::Missing(name)) if !found.contains(&name) => found.push(name),
            _ => return found,
        }
    }
}

/// What deserializing through a [`Probe`] taught.
#[derive(Debug)]
enum Answer {
    Missing(&'static str),
    Other,
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Missing(name) => write!(f, "missing {name}"),
            Answer::Other => f.write_str("not a struct of arguments"),
        }
    }
}

impl std::error::Error for Answer {}

impl de::Error for Answer {
    fn custom<T: fmt::Display>(_: T) -> Answer {
        Answer::Other
    }

    fn missing_field(field: &'static str) -> Answer {
        Answer::Missing(field)
    }
}

/// A deserializer that notes the fields a struct asks for and offers it only `given` ones.
struct Probe<'a> {
    given: &'a [&'static str],
    fields: &'a mut Option<&'static [&'static str]>,
}

impl<'de> de::Deserializer<'de> for Probe<'_> {
    type Error = Answer;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Answer> {
        *self.fields = Some(fields);
        visitor.visit_map(Given {
            keys: self.given.iter(),
        })
    }

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Answer> {
        Err(Answer::Other)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

struct Given<'a> {
    keys: std::slice::Iter<'a, &'static str>,
}

impl<'de> de::MapAccess<'de> for Given<'_> {
    type Error = Answer;

    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Answer> {
        self.keys
            .next()
            .map(|k| seed.deserialize((*k).into_deserializer()))
            .transpose()
    }

    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Answer> {
        seed.deserialize(EmptyText)
    }
}

/// `""` for anything asked of it.
struct EmptyText;

impl<'de> de::Deserializer<'de> for EmptyText {
    type Error = Answer;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Answer> {
        visitor.visit_str("")
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Answer> {
        visitor.visit_some(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier
        ignored_any
    }
}

/// Whether a thing (a user, a group) is to exist: `state: present` (the default) or `absent`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    #[default]
    Present,
    Absent,
}

/// A command and the note that says what it changes.
pub type Change = (String, String);

impl Presence {
    /// The one command that brings a thing to this presence, given what was `found`: `add` it,
    /// `modify` it (None when nothing differs) or `remove` it.
    pub fn plan<T>(
        self,
        found: Option<&T>,
        add: impl FnOnce() -> Change,
        modify: impl FnOnce(&T) -> Option<Change>,
        remove: impl FnOnce() -> Change,
    ) -> super::Plan<Vec<super::Step>> {
        let change = match (self, found) {
            (Presence::Present, None) => Some(add()),
            (Presence::Present, Some(it)) => modify(it),
            (Presence::Absent, Some(_)) => Some(remove()),
            (Presence::Absent, None) => None,
        };
        match change {
            Some((cmd, note)) => {
                super::Plan::change(note.clone(), vec![super::Step::run(note, cmd)])
            }
            None => super::Plan::nothing(),
        }
    }
}

/// A file mode as Ansible takes it: `"0644"`, `"644"`, or a YAML 1.1 octal integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mode(pub u32);

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Mode, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        let parsed = match &v {
            serde_json::Value::String(s) => u32::from_str_radix(s.trim(), 8).ok(),
            serde_json::Value::Number(n) => n.as_u64().map(|n| n as u32),
            _ => None,
        };
        match parsed {
            Some(m) if m <= 0o7777 => Ok(Mode(m)),
            _ => Err(de::Error::custom(format!(
                "mode: expected an octal string like \"0644\", got {v}"
            ))),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

/// A string or a list of strings (`name: etcd` or `name: [etcd, patroni]`).
#[derive(Debug, Clone, Default)]
pub struct Names(pub Vec<String>);

impl<'de> Deserialize<'de> for Names {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Names, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(s) => Names(
                s.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
            OneOrMany::Many(v) => Names(v),
        })
    }
}

/// Ansible's booleans: true/false, yes/no, "true"/"false" as rendered by a template.
pub(crate) fn de_bool<'de, D: de::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    match &v {
        serde_json::Value::Bool(b) => Ok(Some(*b)),
        serde_json::Value::String(s) => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(Some(true)),
            "false" | "no" | "off" | "0" => Ok(Some(false)),
            _ => Err(de::Error::custom(format!("expected a boolean, got {v}"))),
        },
        serde_json::Value::Null => Ok(None),
        _ => Err(de::Error::custom(format!("expected a boolean, got {v}"))),
    }
}

/// Numbers as Ansible takes them: 5432 or "5432" (a rendered template is a string).
pub(crate) fn de_u64<'de, D: de::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    let bad = || de::Error::custom(format!("expected a whole number, got {v}"));
    match &v {
        serde_json::Value::Number(n) => n.as_u64().map(Some).ok_or_else(bad),
        serde_json::Value::String(s) => s.trim().parse().map(Some).map_err(|_| bad()),
        serde_json::Value::Null => Ok(None),
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Example {
        path: String,
        mode: Option<Mode>,
        #[serde(default, deserialize_with = "de_u64")]
        port: Option<u64>,
        names: Names,
        #[serde(default)]
        force: bool,
        config: serde_json::Value,
        #[serde(skip)]
        filled_in_later: Vec<u8>,
    }

    #[test]
    fn argument_names_come_from_the_struct() {
        assert_eq!(
            fields::<Example>(),
            ["path", "mode", "port", "names", "force", "config"]
        );
        assert!(fields::<String>().is_empty());
    }

    #[test]
    fn required_arguments_are_those_neither_optional_nor_defaulted() {
        assert_eq!(required::<Example>(), ["path", "names", "config"]);
    }

    #[test]
    fn modes_are_octal_however_written() {
        let mode = |v| serde_json::from_value::<Mode>(v);
        assert_eq!(mode(serde_json::json!("0640")).unwrap(), Mode(0o640));
        assert_eq!(mode(serde_json::json!(420)).unwrap(), Mode(0o644));
        assert!(mode(serde_json::json!("rw-")).is_err());
    }
}
