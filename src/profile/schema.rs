//! The JSON Schema of the profile format, for `wsstorm schema` and the editors that complete
//! and check profiles with it.
//!
//! It is derived from the serde types the profile is parsed with, so it cannot drift from
//! them: serde's attributes give `additionalProperties: false`, defaults and names, doc
//! comments give descriptions, and the units ([`crate::units`]) describe their own spellings.
//! Three types deserialize by hand; two of them accept exactly what their derived schema says
//! (`Decision` is serde's externally tagged enum, `ThresholdSpec` an untagged string-or-map,
//! their visitors only word the errors better). `Target` is the one whose written form is not
//! its Rust shape, and its schema is here.

use std::borrow::Cow;

use schemars::generate::SchemaSettings;
use schemars::transform::RecursiveTransform;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde_json::{Value, json};

use super::{Profile, Target, TargetMap};

/// The schema of a profile file (JSON Schema draft 2020-12).
pub fn schema() -> Schema {
    let mut schema = SchemaSettings::draft2020_12()
        .with_transform(RecursiveTransform(unwrap_descriptions))
        .into_generator()
        .into_root_schema_for::<Profile>();
    schema.insert("title".into(), "wsstorm profile".into());
    schema
}

/// Doc comments are wrapped at 100 columns; an editor's hover wraps them itself. Paragraphs
/// stay apart.
fn unwrap_descriptions(schema: &mut Schema) {
    if let Some(Value::String(text)) = schema.get_mut("description") {
        let paragraphs: Vec<String> = text.split("\n\n").map(|p| p.replace('\n', " ")).collect();
        *text = paragraphs.join("\n\n");
    }
}

/// For a unit variant with a `#[serde(alias)]`, which schemars does not see: the variant's
/// `const` becomes an `enum` of its name and the alias.
pub(super) fn alias(alias: &'static str) -> impl Fn(&mut Schema) {
    move |schema| {
        if let Some(name) = schema.remove("const") {
            schema.insert("enum".into(), json!([name, alias]));
        }
    }
}

impl JsonSchema for Target {
    fn schema_name() -> Cow<'static, str> {
        "Target".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let settings = generator.subschema_for::<TargetMap>();
        json_schema!({
            "description": "The server under test: `embedded` (the built-in target), a ws:// or \
                            wss:// URL, or a map with `url` and settings.",
            "anyOf": [
                {
                    "type": "string",
                    "examples": ["embedded", "ws://127.0.0.1:9001/ws"],
                },
                settings,
            ],
        })
    }
}
