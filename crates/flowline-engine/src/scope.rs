//! What a run is at one step, for templates and executors: `contact`, `vars`, `trigger`,
//! `execution` and `workspace`.

use std::sync::OnceLock;

use flowline_core::id::{ExecutionId, FlowId, WorkspaceId};
use flowline_store::execution::{ClaimedStep, Variable};
use serde::Serialize;
use serde_json::Value;

/// A run's context at one step. A step's is built from the parts its worker holds and handed to
/// the template engine as they are; its JSON form is built only for the executors that read it
/// (most steps render a template or two and never do).
pub struct Scope<'a>(Form<'a>);

enum Form<'a> {
    /// A step's parts, and their JSON once asked for.
    Parts(Parts<'a>, OnceLock<Value>),
    /// A context given whole.
    Json(Value),
}

#[derive(Serialize)]
struct Parts<'a> {
    contact: &'a Option<Value>,
    vars: Vars<'a>,
    trigger: &'a Value,
    execution: Execution<'a>,
    workspace: Workspace,
}

/// The run's variables as an object by name.
struct Vars<'a>(&'a [Variable]);

impl Serialize for Vars<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|v| (&v.name, &v.value)))
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Execution<'a> {
    id: ExecutionId,
    flow_id: FlowId,
    flow_version: i32,
    input: &'a Value,
    attempt: i32,
}

#[derive(Serialize)]
struct Workspace {
    id: WorkspaceId,
}

impl<'a> Scope<'a> {
    /// The context of `step`'s attempt, with the run's contact as read for it and its variables.
    pub fn of_step(
        step: &'a ClaimedStep,
        contact: &'a Option<Value>,
        variables: &'a [Variable],
    ) -> Self {
        Self(Form::Parts(
            Parts {
                contact,
                vars: Vars(variables),
                trigger: &step.trigger,
                execution: Execution {
                    id: step.execution_id,
                    flow_id: step.flow_id,
                    flow_version: step.flow_version,
                    input: &step.input,
                    attempt: step.attempt,
                },
                workspace: Workspace {
                    id: step.workspace_id,
                },
            },
            OnceLock::new(),
        ))
    }

    /// A context given whole, as JSON.
    pub fn from_json(json: Value) -> Self {
        Self(Form::Json(json))
    }

    /// The context as one JSON object.
    pub fn json(&self) -> &Value {
        match &self.0 {
            Form::Parts(parts, json) => {
                json.get_or_init(|| serde_json::to_value(parts).unwrap_or(Value::Null))
            }
            Form::Json(json) => json,
        }
    }
}

impl Serialize for Scope<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Form::Parts(parts, json) => match json.get() {
                Some(json) => json.serialize(serializer),
                None => parts.serialize(serializer),
            },
            Form::Json(json) => json.serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowline_core::id::{ActionId, StepId};
    use flowline_core::status::VariableType;
    use serde_json::json;

    #[test]
    fn a_steps_scope_is_the_runs_context_as_json_and_to_templates() {
        let step = ClaimedStep {
            id: StepId::new(),
            workspace_id: WorkspaceId::new(),
            execution_id: ExecutionId::new(),
            flow_id: FlowId::new(),
            flow_version: 3,
            contact_id: None,
            trigger: json!({"run": 7}),
            input: json!({"plan": "pro"}),
            step_count: 1,
            action_id: ActionId::new(),
            node_id: "n1".into(),
            attempt: 2,
            max_attempts: 3,
            lease_token: uuid::Uuid::nil(),
            variables: Vec::new(),
        };
        let contact = Some(json!({"email": "ada@example.com"}));
        let variables = vec![
            Variable {
                name: "count".into(),
                variable_type: VariableType::Number,
                value: json!(2),
            },
            Variable {
                name: "tags".into(),
                variable_type: VariableType::Array,
                value: json!(["a"]),
            },
        ];
        let expected = json!({
            "contact": {"email": "ada@example.com"},
            "vars": {"count": 2, "tags": ["a"]},
            "trigger": {"run": 7},
            "execution": {
                "id": step.execution_id,
                "flowId": step.flow_id,
                "flowVersion": 3,
                "input": {"plan": "pro"},
                "attempt": 2,
            },
            "workspace": {"id": step.workspace_id},
        });
        let scope = Scope::of_step(&step, &contact, &variables);
        let renderer = crate::template::Renderer::new(&scope);
        assert_eq!(scope.json(), &expected);
        assert_eq!(serde_json::to_value(&scope).unwrap(), expected);
        assert_eq!(
            renderer
                .render_str(
                    "v",
                    "{{ vars.count + trigger.run }} {{ execution.input.plan }}"
                )
                .unwrap(),
            json!("9 pro")
        );
        assert_eq!(Scope::from_json(expected.clone()).json(), &expected);
    }
}
