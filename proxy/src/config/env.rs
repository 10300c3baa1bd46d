//! `WARD_*` environment overrides, applied to the YAML before it is read.

use yaml_serde::Value;

use super::{ConfigError, NOT_SETTINGS, SECTIONS, TOP_LEVEL};

/// yaml errors end with " at line L column C"; the caller prints the location first.
pub(super) fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

pub(super) fn apply_env(
    value: &mut Value,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut vars: Vec<(String, String)> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with("WARD_") && !NOT_SETTINGS.contains(&k.as_str()))
        .collect();
    vars.sort();
    for (key, raw) in vars {
        let name = key["WARD_".len()..].to_ascii_lowercase();
        let (section, field) = if TOP_LEVEL.contains(&name.as_str()) {
            (None, name.clone())
        } else if let Some((section, field)) = SECTIONS
            .iter()
            .find_map(|s| name.strip_prefix(&format!("{s}_")).map(|f| (*s, f)))
        {
            (Some(section), field.to_owned())
        } else {
            return Err(ConfigError::new(format!(
                "{key}: not a ward-proxy setting (see the README for WARD_<SECTION>_<FIELD>)"
            )));
        };
        let parsed = if section == Some("workload") && field == "labels" && !raw.contains('{') {
            parse_labels(&raw).map_err(|e| ConfigError::new(format!("{key}: {e}")))?
        } else {
            yaml_serde::from_str::<Value>(&raw).map_err(|e| {
                ConfigError::new(format!("{key}: {}", strip_location(&e.to_string())))
            })?
        };
        let root = value
            .as_mapping_mut()
            .ok_or_else(|| ConfigError::new("the configuration must be a YAML mapping"))?;
        let target = match section {
            None => root,
            Some(section) => {
                let entry = root
                    .entry(Value::String(section.to_owned()))
                    .or_insert_with(|| Value::Mapping(Default::default()));
                entry.as_mapping_mut().ok_or_else(|| {
                    ConfigError::new(format!("{key}: section {section} is not a mapping"))
                })?
            }
        };
        target.insert(Value::String(field), parsed);
    }
    Ok(())
}

fn parse_labels(raw: &str) -> Result<Value, String> {
    let mut map = yaml_serde::Mapping::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("label {pair:?} is not key=value"))?;
        map.insert(
            Value::String(k.trim().into()),
            Value::String(v.trim().into()),
        );
    }
    Ok(Value::Mapping(map))
}
