//! `set_variable`: a typed run variable, coerced from its rendered value.

use async_trait::async_trait;
use flowline_core::action::basic::SetVariableConfig;
use flowline_core::status::{ErrorCategory, VariableType};
use flowline_store::execution::Variable;
use serde_json::{Value, json};

use super::{Executor, StepContext, StepOutput};
use crate::failure::Failure;

/// Sets a typed variable.
pub struct SetVariable;

/// Coerces a rendered value to `target`, or says why it cannot be.
pub fn coerce(value: Value, target: VariableType) -> Result<Value, String> {
    let describe = |v: &Value| match v {
        Value::Null => "null".to_owned(),
        Value::String(s) => format!("the text {:?}", s.chars().take(60).collect::<String>()),
        other => other.to_string().chars().take(60).collect(),
    };
    match (target, value) {
        (VariableType::String, Value::String(s)) => Ok(Value::String(s)),
        (VariableType::String, v @ (Value::Number(_) | Value::Bool(_))) => {
            Ok(Value::String(v.to_string()))
        }
        (VariableType::Number, v @ Value::Number(_)) => Ok(v),
        (VariableType::Number, Value::String(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(|f| {
                if f.fract() == 0.0 && f.abs() < 9e15 {
                    json!(f as i64)
                } else {
                    json!(f)
                }
            })
            .ok_or_else(|| format!("{} is not a number", describe(&Value::String(s)))),
        (VariableType::Boolean, v @ Value::Bool(_)) => Ok(v),
        (VariableType::Boolean, Value::String(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(format!(
                "{} is not true or false",
                describe(&Value::String(s))
            )),
        },
        (VariableType::Object, v @ Value::Object(_)) => Ok(v),
        (VariableType::Array, v @ Value::Array(_)) => Ok(v),
        (VariableType::Object | VariableType::Array, Value::String(s)) => {
            match serde_json::from_str::<Value>(&s) {
                Ok(parsed) if target == VariableType::Object && parsed.is_object() => Ok(parsed),
                Ok(parsed) if target == VariableType::Array && parsed.is_array() => Ok(parsed),
                _ => Err(format!(
                    "{} is not a JSON {target}",
                    describe(&Value::String(s))
                )),
            }
        }
        (target, other) => Err(format!("{} cannot be a {target}", describe(&other))),
    }
}

#[async_trait]
impl Executor for SetVariable {
    async fn execute(&self, step: &StepContext<'_>) -> Result<StepOutput, Failure> {
        let config: SetVariableConfig = step.saved_config()?;
        let rendered = step
            .renderer
            .render_value("value", &config.value)
            .map_err(Failure::template)?;
        let value = coerce(rendered, config.variable_type).map_err(|why| {
            Failure::new(
                ErrorCategory::Validation,
                format!("variable `{}`: {why}", config.name),
                format!(
                    "make the value render to a {}, or change the variable's type",
                    config.variable_type
                ),
            )
        })?;
        let variable = Variable {
            name: config.name.clone(),
            variable_type: config.variable_type,
            value,
        };
        Ok(StepOutput {
            output: serde_json::to_value(&variable).unwrap_or(Value::Null),
            input: Some(
                json!({"name": config.name, "type": config.variable_type, "value": variable.value}),
            ),
            variables: vec![variable],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_coerced_to_their_type_or_refused() {
        assert_eq!(
            coerce(json!("42"), VariableType::Number).unwrap(),
            json!(42)
        );
        assert_eq!(
            coerce(json!(" 2.5 "), VariableType::Number).unwrap(),
            json!(2.5)
        );
        assert_eq!(coerce(json!(7), VariableType::String).unwrap(), json!("7"));
        assert_eq!(
            coerce(json!("TRUE"), VariableType::Boolean).unwrap(),
            json!(true)
        );
        assert_eq!(
            coerce(json!("{\"a\":1}"), VariableType::Object).unwrap(),
            json!({"a": 1})
        );
        assert_eq!(coerce(json!([1]), VariableType::Array).unwrap(), json!([1]));
        for (value, target) in [
            (json!("abc"), VariableType::Number),
            (json!("NaN"), VariableType::Number),
            (json!("yes"), VariableType::Boolean),
            (json!(1), VariableType::Boolean),
            (json!("[1]"), VariableType::Object),
            (json!({"a": 1}), VariableType::String),
            (Value::Null, VariableType::Number),
        ] {
            assert!(
                coerce(value.clone(), target).is_err(),
                "{value} as {target}"
            );
        }
    }
}
