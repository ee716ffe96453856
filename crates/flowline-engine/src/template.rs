//! Templates over a run's context: `{{ … }}` in config strings and edge conditions.
//!
//! Strict: an unknown name is an error, never an empty string. Bounded: templates and their
//! output are size-capped and evaluation runs on fuel. Typed: a string that is one whole
//! expression (`"{{ vars.count + 1 }}"`) yields the expression's value (a number here), not text.

use std::collections::HashMap;

use minijinja::{Environment, UndefinedBehavior};
use serde_json::Value;

/// The longest template source accepted.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// The longest rendered string.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;
/// Evaluation steps one template may take.
const FUEL: u64 = 100_000;

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// Where in the config (`value`, `headers.X-Plan`, `edge condition`).
    pub location: String,
    /// What went wrong.
    pub message: String,
}

/// Renders templates against one context.
pub struct Renderer {
    env: &'static Environment<'static>,
    context: minijinja::Value,
}

/// One environment for every render: its settings never change (fuel is counted per render),
/// and building one per step would cost more than most steps' templates.
static ENVIRONMENT: std::sync::LazyLock<Environment<'static>> =
    std::sync::LazyLock::new(environment);

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(64);
    env
}

/// The most compiled expressions kept; past it the cache starts over.
const MAX_CACHED_EXPRESSIONS: usize = 4096;
/// The longest expression kept compiled: longer ones, rare, are compiled each time, so the
/// cache stays within a few megabytes whatever the flows hold.
const MAX_CACHED_EXPRESSION_BYTES: usize = 512;

type Compiled = std::sync::Arc<minijinja::Expression<'static, 'static>>;

/// Expressions compiled once for every step that renders them: a flow's templates are few and
/// run again and again, and compiling one costs more than evaluating it.
static EXPRESSIONS: std::sync::LazyLock<std::sync::Mutex<HashMap<String, Compiled>>> =
    std::sync::LazyLock::new(Default::default);

/// `expression`, compiled in the shared environment, from the cache when it is there.
fn compiled(expression: &str) -> Result<Compiled, minijinja::Error> {
    let cache = || EXPRESSIONS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = cache().get(expression) {
        return Ok(found.clone());
    }
    let fresh = Compiled::new(ENVIRONMENT.compile_expression_owned(expression.to_owned())?);
    if expression.len() > MAX_CACHED_EXPRESSION_BYTES {
        return Ok(fresh);
    }
    let mut cache = cache();
    if cache.len() >= MAX_CACHED_EXPRESSIONS {
        cache.clear();
    }
    cache.insert(expression.to_owned(), fresh.clone());
    Ok(fresh)
}

/// How many bytes `value` takes as JSON, counted without writing the text anywhere.
pub fn json_size(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len();
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing a JSON value to a sink that takes everything cannot fail.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

/// The expression inside a string that is exactly one `{{ … }}`.
fn whole_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    (!inner.contains("{{") && !inner.contains("}}")).then_some(inner.trim())
}

impl Renderer {
    /// A renderer over `context` (an object: contact, vars, trigger, execution, workspace; a
    /// step's [`Scope`](crate::scope::Scope) or JSON).
    pub fn new(context: &impl serde::Serialize) -> Self {
        Self {
            env: &ENVIRONMENT,
            context: minijinja::Value::from(minijinja::value::Serde(context)),
        }
    }

    fn fail(location: &str, message: impl std::fmt::Display) -> TemplateError {
        TemplateError {
            location: location.to_owned(),
            message: message.to_string(),
        }
    }

    /// Renders one string: a whole expression keeps its type, anything else becomes text.
    pub fn render_str(&self, location: &str, source: &str) -> Result<Value, TemplateError> {
        if !source.contains("{{") && !source.contains("{%") {
            return Ok(Value::String(source.to_owned()));
        }
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(Self::fail(
                location,
                format!("the template is over {MAX_TEMPLATE_BYTES} bytes"),
            ));
        }
        if let Some(expression) = whole_expression(source) {
            let value = self.eval(location, expression)?;
            let json = serde_json::to_value(&value).map_err(|e| Self::fail(location, e))?;
            if json_size(&json) > MAX_OUTPUT_BYTES {
                return Err(Self::fail(
                    location,
                    format!("the value is over {MAX_OUTPUT_BYTES} bytes"),
                ));
            }
            return Ok(json);
        }
        let text = self
            .env
            .render_str(source, &self.context)
            .map_err(|e| Self::fail(location, describe(&e)))?;
        if text.len() > MAX_OUTPUT_BYTES {
            return Err(Self::fail(
                location,
                format!("the rendered text is over {MAX_OUTPUT_BYTES} bytes"),
            ));
        }
        Ok(Value::String(text))
    }

    fn eval(&self, location: &str, expression: &str) -> Result<minijinja::Value, TemplateError> {
        let compiled = compiled(expression).map_err(|e| Self::fail(location, describe(&e)))?;
        let value = compiled
            .eval(&self.context)
            .map_err(|e| Self::fail(location, describe(&e)))?;
        // Strict mode refuses to print or test an undefined value, but an expression may still
        // evaluate to one: that is an unknown name too.
        if value.is_undefined() {
            return Err(Self::fail(
                location,
                format!("`{expression}` names something that does not exist"),
            ));
        }
        Ok(value)
    }

    /// Renders every string inside a JSON value, keeping its shape.
    pub fn render_value(&self, location: &str, value: &Value) -> Result<Value, TemplateError> {
        match value {
            Value::String(s) => self.render_str(location, s),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| self.render_value(&format!("{location}[{i}]"), v))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| {
                    let at = if location.is_empty() {
                        k.clone()
                    } else {
                        format!("{location}.{k}")
                    };
                    self.render_value(&at, v).map(|v| (k.clone(), v))
                })
                .collect::<Result<serde_json::Map<_, _>, _>>()
                .map(Value::Object),
            other => Ok(other.clone()),
        }
    }

    /// Whether an edge condition holds: `{{ expr }}` or a bare expression, judged by truthiness.
    pub fn condition(&self, condition: &str) -> Result<bool, TemplateError> {
        let expression = whole_expression(condition).unwrap_or(condition.trim());
        if expression.len() > MAX_TEMPLATE_BYTES {
            return Err(Self::fail("condition", "the condition is too long"));
        }
        Ok(self.eval("condition", expression)?.is_true())
    }
}

/// What a walk asks of a run's context: whether an edge condition holds.
pub trait Conditions {
    /// Whether `condition` holds (see [`Renderer::condition`]).
    fn condition(&self, condition: &str) -> Result<bool, TemplateError>;
}

impl Conditions for Renderer {
    fn condition(&self, condition: &str) -> Result<bool, TemplateError> {
        Renderer::condition(self, condition)
    }
}

/// A renderer built when the first condition is judged: most steps are followed by the next
/// action of their node, and their walk judges no condition at all.
pub struct Deferred<F: Fn() -> Renderer> {
    build: F,
    renderer: std::cell::OnceCell<Renderer>,
}

impl<F: Fn() -> Renderer> Deferred<F> {
    /// The renderer `build` returns, called at most once.
    pub fn new(build: F) -> Self {
        Self {
            build,
            renderer: std::cell::OnceCell::new(),
        }
    }
}

impl<F: Fn() -> Renderer> Conditions for Deferred<F> {
    fn condition(&self, condition: &str) -> Result<bool, TemplateError> {
        self.renderer.get_or_init(&self.build).condition(condition)
    }
}

/// minijinja's message with its detail (which names the undefined variable).
fn describe(error: &minijinja::Error) -> String {
    match error.detail() {
        Some(detail) => format!("{error}: {detail}"),
        None => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn renderer() -> Renderer {
        Renderer::new(
            &json!({"vars": {"count": 2, "name": "Ada", "tags": ["a", "b"]}, "trigger": {"plan": "pro"}}),
        )
    }

    #[test]
    fn whole_expressions_keep_their_type_and_mixed_text_is_text() {
        let r = renderer();
        assert_eq!(r.render_str("v", "{{ vars.count + 1 }}").unwrap(), json!(3));
        assert_eq!(
            r.render_str("v", " {{ vars.tags }} ").unwrap(),
            json!(["a", "b"])
        );
        assert_eq!(
            r.render_str("v", "{{ vars.count > 1 }}").unwrap(),
            json!(true)
        );
        assert_eq!(
            r.render_str("v", "Hi {{ vars.name }}!").unwrap(),
            json!("Hi Ada!")
        );
        assert_eq!(
            r.render_str("v", "{{ vars.name }} and {{ trigger.plan }}")
                .unwrap(),
            json!("Ada and pro")
        );
        assert_eq!(r.render_str("v", "plain").unwrap(), json!("plain"));
    }

    #[test]
    fn unknown_names_are_errors_not_empty_strings() {
        let r = renderer();
        let e = r.render_str("value", "{{ vars.missing }}").unwrap_err();
        assert_eq!(e.location, "value");
        assert!(r.render_str("v", "Hi {{ nobody }}").is_err());
        assert!(r.condition("secrets.x == 1").is_err());
        assert!(r.condition("vars.missing").is_err());
        assert!(r.condition("vars.missing == 1").is_err());
        assert!(r.render_str("v", "{{ vars.missing ~ 'x' }}").is_err());
    }

    #[test]
    fn runaway_templates_run_out_of_fuel_or_size() {
        let r = renderer();
        assert!(
            r.render_str(
                "v",
                "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
            )
            .is_err()
        );
        assert!(
            r.render_str(
                "v",
                &format!("{{{{ '{}' }}}}", "x".repeat(MAX_TEMPLATE_BYTES))
            )
            .is_err()
        );
    }

    #[test]
    fn rendered_text_and_values_are_capped() {
        let r = Renderer::new(&json!({"trigger": {
            "kb": "x".repeat(1024),
            "big": "y".repeat(MAX_OUTPUT_BYTES + 1),
        }}));
        // Text grown past the cap by a loop over small pieces.
        let grown = r
            .render_str(
                "body",
                "{% for i in range(1100) %}{{ trigger.kb }}{% endfor %}",
            )
            .unwrap_err();
        assert_eq!(grown.location, "body");
        assert!(grown.message.contains("rendered text is over"), "{grown:?}");
        // Just under it is fine.
        let under = r
            .render_str(
                "body",
                "{% for i in range(1000) %}{{ trigger.kb }}{% endfor %}",
            )
            .unwrap();
        assert_eq!(under.as_str().unwrap().len(), 1000 * 1024);
        // A whole expression whose value is over it.
        let value = r.render_str("value", "{{ trigger.big }}").unwrap_err();
        assert!(value.message.contains("value is over"), "{value:?}");
    }

    #[test]
    fn conditions_are_judged_by_truthiness() {
        let r = renderer();
        assert!(r.condition("{{ trigger.plan == 'pro' }}").unwrap());
        assert!(r.condition("vars.count >= 2").unwrap());
        assert!(!r.condition("vars.count > 5").unwrap());
    }

    /// The cache's entry for `expression`, if it has one.
    fn kept(expression: &str) -> Option<Compiled> {
        EXPRESSIONS.lock().unwrap().get(expression).cloned()
    }

    #[test]
    fn expressions_are_compiled_once_and_evaluated_against_each_context() {
        let expression = "vars.count * 10 + 7";
        let first = renderer();
        assert_eq!(
            first
                .render_str("v", &format!("{{{{ {expression} }}}}"))
                .unwrap(),
            json!(27)
        );
        let cached = kept(expression).unwrap();
        let second = Renderer::new(&json!({"vars": {"count": 5}}));
        assert_eq!(
            second
                .render_str("v", &format!("{{{{ {expression} }}}}"))
                .unwrap(),
            json!(57)
        );
        let again = kept(expression).unwrap();
        assert!(std::sync::Arc::ptr_eq(&cached, &again));
        // A broken expression is an error every time, and is not kept.
        for _ in 0..2 {
            assert!(first.condition("vars.count >").is_err());
        }
        assert!(kept("vars.count >").is_none());
        // A long expression is evaluated all the same, and not kept.
        let long = format!("vars.count{}", " + 0".repeat(MAX_CACHED_EXPRESSION_BYTES));
        assert_eq!(
            first.render_str("v", &format!("{{{{ {long} }}}}")).unwrap(),
            json!(2)
        );
        assert!(kept(&long).is_none());
    }

    #[test]
    fn a_json_size_is_the_length_of_its_text() {
        for value in [
            json!(null),
            json!(12.5),
            json!("a \"quoted\" ünïcode\n line"),
            json!({"b": [1, 2, {"c": "d"}], "a": true}),
        ] {
            assert_eq!(json_size(&value), value.to_string().len());
        }
    }

    #[test]
    fn a_deferred_renderer_builds_its_context_once_and_only_when_asked() {
        let built = std::cell::Cell::new(0);
        let deferred = Deferred::new(|| {
            built.set(built.get() + 1);
            Renderer::new(&json!({"vars": {"count": 2}}))
        });
        assert_eq!(built.get(), 0);
        assert!(Conditions::condition(&deferred, "vars.count == 2").unwrap());
        assert!(!Conditions::condition(&deferred, "vars.count > 2").unwrap());
        assert!(Conditions::condition(&deferred, "vars.nope").is_err());
        assert_eq!(built.get(), 1);
    }

    #[test]
    fn nested_values_are_rendered_with_their_paths() {
        let r = renderer();
        let out = r
            .render_value(
                "",
                &json!({"a": ["{{ vars.count }}", {"b": "x{{ vars.name }}"}], "n": 1}),
            )
            .unwrap();
        assert_eq!(out, json!({"a": [2, {"b": "xAda"}], "n": 1}));
        let e = r
            .render_value("", &json!({"a": [{"b": "{{ nope }}"}]}))
            .unwrap_err();
        assert_eq!(e.location, "a[0].b");
    }
}
