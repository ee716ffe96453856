//! `run_javascript`: the script runs in a sandbox child process (see `flowline-sandbox`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flowline_core::action::advanced::RunJavascriptConfig;
use flowline_core::status::{ErrorCategory, VariableType};
use flowline_sandbox::pool::{PoolError, SandboxPool};
use flowline_sandbox::protocol::{ErrorKind, Request};
use flowline_store::execution::Variable;
use serde_json::{Value, json};

use super::{Executor, StepContext, StepOutput};
use crate::failure::Failure;
use crate::template::json_size;

/// The most bytes of `contact`, `vars` and `trigger` together a script is given.
pub const MAX_INPUT_BYTES: usize = 1024 * 1024;

/// Runs scripts in a pool of sandbox processes.
pub struct RunJavascript {
    pool: Arc<SandboxPool>,
    default_timeout: Duration,
    timeout_cap: Duration,
    memory_cap_mb: u32,
}

impl RunJavascript {
    /// Scripts in `pool`, with the deadline scripts get when they name none, and caps no
    /// script's own limits may exceed.
    pub fn new(
        pool: Arc<SandboxPool>,
        default_timeout: Duration,
        timeout_cap: Duration,
        memory_cap_mb: u32,
    ) -> Self {
        Self {
            pool,
            default_timeout,
            timeout_cap,
            memory_cap_mb,
        }
    }

    /// The pool the scripts run in.
    pub fn pool(&self) -> &Arc<SandboxPool> {
        &self.pool
    }
}

fn variable_type(value: &Value) -> Option<VariableType> {
    Some(match value {
        Value::String(_) => VariableType::String,
        Value::Number(_) => VariableType::Number,
        Value::Bool(_) => VariableType::Boolean,
        Value::Object(_) => VariableType::Object,
        Value::Array(_) => VariableType::Array,
        Value::Null => return None,
    })
}

fn sandbox(message: impl Into<String>, suggestion: impl Into<String>) -> Failure {
    Failure::new(ErrorCategory::Sandbox, message, suggestion)
}

#[async_trait]
impl Executor for RunJavascript {
    async fn execute(&self, step: &StepContext<'_>) -> Result<StepOutput, Failure> {
        let config: RunJavascriptConfig = step.saved_config()?;
        let timeout = config
            .timeout_ms
            .map_or(self.default_timeout, Duration::from_millis)
            .min(self.timeout_cap);
        let memory = config.memory_limit_mb.unwrap_or(32).min(self.memory_cap_mb);
        let field = |name: &str| step.data.json().get(name).cloned().unwrap_or(Value::Null);
        let request = Request {
            code: config.code.clone(),
            contact: field("contact"),
            vars: field("vars"),
            trigger: field("trigger"),
            timeout_ms: timeout.as_millis() as u64,
            memory_limit_mb: memory,
        };
        let size =
            json_size(&request.contact) + json_size(&request.vars) + json_size(&request.trigger);
        if size > MAX_INPUT_BYTES {
            return Err(sandbox(
                format!(
                    "the script's input (contact, vars, trigger) is {size} bytes; the limit is {MAX_INPUT_BYTES}"
                ),
                "keep large data out of run variables and trigger payloads",
            ));
        }
        let input =
            json!({"code": config.code, "timeoutMs": request.timeout_ms, "memoryLimitMb": memory});
        step.show(&input);
        let response = self.pool.run(&request).await.map_err(|error| match error {
            PoolError::Killed => {
                let mut failure = Failure::new(
                    ErrorCategory::Timeout,
                    format!(
                        "the script ran past its {} ms deadline inside a built-in that does not stop, and its sandbox process was killed",
                        request.timeout_ms
                    ),
                    "look for loops over huge ranges or catastrophic regular expressions; raise timeoutMs only if the work is real",
                );
                failure.error.retryable = false;
                failure
            }
            PoolError::Died(status) => {
                let mut failure = sandbox(
                    format!("the sandbox process died while running the script ({status})"),
                    "the step is retried per its policy; if it keeps happening, the script may be crashing the interpreter",
                );
                failure.error.retryable = true;
                failure
            }
            PoolError::Spawn(why) => Failure::new(
                ErrorCategory::Internal,
                format!("the sandbox could not start: {why}"),
                "check that the flowline binary can run its `sandbox` subcommand; the step is retried per its policy",
            ),
        })?;
        let logs = json!(response.logs);
        if let Some(error) = response.error {
            let at = error
                .line
                .map(|l| format!("line {l}: "))
                .unwrap_or_default();
            let mut failure = match error.kind {
                ErrorKind::Timeout => Failure::new(
                    ErrorCategory::Timeout,
                    format!("the script ran past its {} ms deadline", request.timeout_ms),
                    "make the script finish sooner (an endless loop?), or raise timeoutMs",
                ),
                ErrorKind::Memory => sandbox(
                    format!("{at}the script ran out of its {memory} MiB of memory"),
                    "build smaller strings and arrays, or raise memoryLimitMb",
                ),
                ErrorKind::Stack => sandbox(
                    format!("{at}{}", error.message),
                    "look for a function that calls itself without end",
                ),
                ErrorKind::Output => sandbox(
                    format!(
                        "the script's return value cannot be kept: {}",
                        error.message
                    ),
                    "return plain JSON data (no cycles, functions or huge values)",
                ),
                ErrorKind::Script => sandbox(
                    format!("{at}{}", error.message),
                    "fix the script; `contact`, `vars` and `trigger` are plain data, and only setVariable and console.log are provided",
                ),
            };
            failure.error.retryable = false;
            return Err(failure);
        }
        let value = response.value.unwrap_or(Value::Null);
        let mut variables = Vec::new();
        for (name, value) in response.variables {
            let Some(variable_type) = variable_type(&value) else {
                continue;
            };
            variables.push(Variable {
                name,
                variable_type,
                value,
            });
        }
        if let Some(name) = &config.output_variable {
            let Some(variable_type) = variable_type(&value) else {
                let mut failure = sandbox(
                    format!("the script returned nothing for outputVariable `{name}`"),
                    "return a value, or remove outputVariable",
                );
                failure.error.retryable = false;
                return Err(failure);
            };
            variables.retain(|v| &v.name != name);
            variables.push(Variable {
                name: name.clone(),
                variable_type,
                value: value.clone(),
            });
        }
        Ok(StepOutput {
            output: json!({"result": value, "logs": logs, "logsTruncated": response.logs_truncated}),
            variables,
            input: Some(input),
        })
    }
}
