//! The sandbox child: limits itself, then runs one script per request, each in a fresh QuickJS
//! runtime, until its input ends.

use std::cell::RefCell;
use std::io::{self, BufReader, BufWriter};
use std::rc::Rc;
use std::time::{Duration, Instant};

use rquickjs::context::EvalOptions;
use rquickjs::function::Rest;
use rquickjs::promise::PromiseState;
use rquickjs::{Context, Ctx, Exception, Function, Object, Persistent, Runtime, Value};
use serde_json::Value as Json;

use crate::protocol::{ErrorKind, Hello, Request, Response, ScriptError, read_frame, write_frame};

/// The most lines `console.log` keeps.
pub const MAX_LOG_LINES: usize = 100;
/// The most bytes `console.log` keeps, all lines together.
pub const MAX_LOG_BYTES: usize = 16 * 1024;
/// The largest return value, as JSON.
pub const MAX_OUTPUT_BYTES: usize = 256 * 1024;
/// The most variables one script may set.
pub const MAX_VARIABLES: usize = 100;
/// QuickJS's stack limit.
const STACK_BYTES: usize = 1024 * 1024;
/// The child's address space: QuickJS's own limit is far below it; this catches what escapes it.
const ADDRESS_SPACE_BYTES: u64 = 1024 * 1024 * 1024;
/// CPU seconds a child may use in its whole life; the pool retires children long before (see
/// `pool`), so this only ends a child that spins outside any script.
pub const CPU_SECONDS: u64 = 3_600;

/// Runs the child until its input ends; returns the process's exit code.
pub fn serve() -> i32 {
    let hello = confine();
    let stdin = io::stdin();
    let stdout = io::stdout();
    let mut input = BufReader::new(stdin.lock());
    let mut output = BufWriter::new(stdout.lock());
    if write_frame(&mut output, &hello).is_err() {
        return 1;
    }
    loop {
        let request: Request = match read_frame(&mut input) {
            Ok(Some(request)) => request,
            Ok(None) => return 0,
            Err(_) => return 2,
        };
        let response = run(&request);
        if write_frame(&mut output, &response).is_err() {
            return 1;
        }
    }
}

/// Resource limits, then the seccomp filter.
fn confine() -> Hello {
    limit(libc::RLIMIT_CORE, 0);
    limit(libc::RLIMIT_AS, ADDRESS_SPACE_BYTES);
    limit(libc::RLIMIT_CPU, CPU_SECONDS);
    limit(libc::RLIMIT_NOFILE, 8);
    limit(libc::RLIMIT_FSIZE, 0);
    let installed = seccomp::install();
    Hello {
        seccomp: installed.is_ok(),
        seccomp_error: installed.err(),
        network_blocked: !can_open_socket(),
    }
}

/// Tries what a script must never manage: opening a network socket.
#[allow(unsafe_code)]
fn can_open_socket() -> bool {
    // SAFETY: socket takes integers and returns a descriptor, closed at once when it is one.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        if fd >= 0 {
            libc::close(fd);
            return true;
        }
    }
    false
}

#[allow(unsafe_code)]
fn limit(resource: libc::__rlimit_resource_t, value: u64) {
    let rlimit = libc::rlimit {
        rlim_cur: value as libc::rlim_t,
        rlim_max: value as libc::rlim_t,
    };
    // SAFETY: setrlimit reads a valid rlimit struct; failure leaves the old limit.
    unsafe {
        libc::setrlimit(resource, &rlimit);
    }
}

/// What a script's host functions collect.
#[derive(Default)]
struct Collected {
    logs: Vec<String>,
    log_bytes: usize,
    logs_truncated: bool,
    variables: Vec<(String, Json)>,
}

fn failure(kind: ErrorKind, message: impl Into<String>, line: Option<u32>) -> ScriptError {
    ScriptError {
        kind,
        message: message.into(),
        line,
    }
}

/// Runs one script in a runtime of its own.
pub fn run(request: &Request) -> Response {
    let collected = Rc::new(RefCell::new(Collected::default()));
    let outcome = evaluate(request, &collected);
    let collected = collected.take();
    let (value, error) = match outcome {
        Ok(value) => (Some(value), None),
        Err(error) => (None, Some(error)),
    };
    Response {
        value,
        error,
        logs: collected.logs,
        logs_truncated: collected.logs_truncated,
        variables: collected.variables,
    }
}

fn evaluate(request: &Request, collected: &Rc<RefCell<Collected>>) -> Result<Json, ScriptError> {
    let deadline = Instant::now() + Duration::from_millis(request.timeout_ms);
    let past_deadline = move || Instant::now() >= deadline;
    let internal = |e: rquickjs::Error| failure(ErrorKind::Script, e.to_string(), None);
    let runtime = Runtime::new().map_err(internal)?;
    runtime.set_memory_limit(request.memory_limit_mb as usize * 1024 * 1024);
    runtime.set_max_stack_size(STACK_BYTES);
    runtime.set_interrupt_handler(Some(Box::new(past_deadline)));
    let context = Context::full(&runtime).map_err(internal)?;

    // Compile and run the body; keep its result across the job loop.
    let result: Persistent<Value<'static>> = context.with(|ctx| {
        install(&ctx, request, collected).map_err(|e| caught(&ctx, e, past_deadline))?;
        let mut options = EvalOptions::default();
        options.global = true;
        options.strict = false;
        options.backtrace_barrier = true;
        options.promise = false;
        options.filename = Some("script".into());
        // The body starts on the wrapper's first line, so line numbers are the script's own.
        let source = format!("(function () {{{}\n}}).call(undefined)", request.code);
        let value: Value = ctx
            .eval_with_options(source, options)
            .map_err(|e| caught(&ctx, e, past_deadline))?;
        Ok::<_, ScriptError>(Persistent::save(&ctx, value))
    })?;

    // Promise jobs (async functions, `then`) run until none is left or the deadline passes.
    while runtime.is_job_pending() {
        if past_deadline() {
            return Err(timeout(request));
        }
        if runtime.execute_pending_job().is_err() {
            return Err(context.with(|ctx| caught(&ctx, rquickjs::Error::Exception, past_deadline)));
        }
    }

    context.with(|ctx| {
        let mut value = result
            .restore(&ctx)
            .map_err(|e| failure(ErrorKind::Script, e.to_string(), None))?;
        if let Some(promise) = value.as_promise().cloned() {
            value = match promise.state() {
                PromiseState::Resolved => promise
                    .result::<Value>()
                    .and_then(Result::ok)
                    .unwrap_or_else(|| Value::new_undefined(ctx.clone())),
                PromiseState::Rejected => {
                    let reason = promise
                        .result::<Value>()
                        .and_then(Result::err)
                        .map(|_| ctx.catch())
                        .unwrap_or_else(|| Value::new_undefined(ctx.clone()));
                    return Err(describe(reason, None));
                }
                PromiseState::Pending => {
                    return Err(failure(
                        ErrorKind::Script,
                        "the script's promise never settled",
                        None,
                    ));
                }
            };
        }
        to_json(&ctx, value, MAX_OUTPUT_BYTES, past_deadline)
    })
}

fn timeout(request: &Request) -> ScriptError {
    failure(
        ErrorKind::Timeout,
        format!("the script ran past its {} ms deadline", request.timeout_ms),
        None,
    )
}

/// A value as JSON within `cap` bytes; `undefined` is `null`.
fn to_json<'js>(
    ctx: &Ctx<'js>,
    value: Value<'js>,
    cap: usize,
    past_deadline: impl Fn() -> bool,
) -> Result<Json, ScriptError> {
    let text = match ctx.json_stringify(value) {
        Ok(Some(text)) => text
            .to_string()
            .map_err(|e| failure(ErrorKind::Output, e.to_string(), None))?,
        Ok(None) => return Ok(Json::Null),
        Err(e) => {
            let error = caught(ctx, e, past_deadline);
            return Err(match error.kind {
                ErrorKind::Script => failure(
                    ErrorKind::Output,
                    format!("the value is not JSON: {}", error.message),
                    None,
                ),
                _ => error,
            });
        }
    };
    if text.len() > cap {
        return Err(failure(
            ErrorKind::Output,
            format!(
                "the value is {} bytes as JSON; the limit is {cap}",
                text.len()
            ),
            None,
        ));
    }
    serde_json::from_str(&text).map_err(|e| failure(ErrorKind::Output, e.to_string(), None))
}

/// The pending exception as a script error, told apart by what it says.
fn caught(ctx: &Ctx<'_>, error: rquickjs::Error, past_deadline: impl Fn() -> bool) -> ScriptError {
    match error {
        rquickjs::Error::Exception => describe(ctx.catch(), Some(&past_deadline)),
        other => {
            let message = other.to_string();
            if message.contains("out of memory") || message.contains("Allocation") {
                failure(ErrorKind::Memory, "the script ran out of memory", None)
            } else {
                failure(ErrorKind::Script, message, None)
            }
        }
    }
}

fn describe(reason: Value<'_>, past_deadline: Option<&dyn Fn() -> bool>) -> ScriptError {
    let (message, line) = match reason.as_object().cloned().and_then(Exception::from_object) {
        Some(exception) => {
            let message = exception.message().unwrap_or_default();
            let name: String = exception
                .get::<_, rquickjs::Coerced<String>>("name")
                .map(|c| c.0)
                .unwrap_or_else(|_| "Error".into());
            let line = exception.stack().as_deref().and_then(script_line);
            (format!("{name}: {message}"), line)
        }
        None if reason.is_null() => ("out of memory".to_owned(), None),
        None => (
            reason
                .as_string()
                .and_then(|s| s.to_string().ok())
                .map(|s| format!("uncaught {s:?}"))
                .unwrap_or_else(|| "the script threw a value that is not an Error".to_owned()),
            None,
        ),
    };
    if message.contains("interrupted") || past_deadline.is_some_and(|p| p()) {
        return failure(ErrorKind::Timeout, "the script ran past its deadline", None);
    }
    if message.contains("out of memory") {
        return failure(ErrorKind::Memory, "the script ran out of memory", line);
    }
    if message.contains("stack overflow") || message.contains("call stack size") {
        return failure(
            ErrorKind::Stack,
            "the script overflowed its stack (unbounded recursion?)",
            line,
        );
    }
    failure(ErrorKind::Script, message, line)
}

/// The script's line in a QuickJS stack trace (`at <anonymous> (script:3:5)`).
fn script_line(stack: &str) -> Option<u32> {
    let at = stack.find("script:")? + "script:".len();
    let digits: String = stack[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Gives the script its data and host functions, and takes away what it must not have.
fn install<'js>(
    ctx: &Ctx<'js>,
    request: &Request,
    collected: &Rc<RefCell<Collected>>,
) -> rquickjs::Result<()> {
    let globals = ctx.globals();
    for (name, value) in [
        ("contact", &request.contact),
        ("vars", &request.vars),
        ("trigger", &request.trigger),
    ] {
        let parsed = ctx.json_parse(value.to_string())?;
        globals.set(name, parsed)?;
    }
    // No way to compile more code from strings at run time, no shared state between scripts.
    for name in ["eval", "WebAssembly"] {
        globals.remove(name)?;
    }

    let sink = collected.clone();
    let log = Function::new(
        ctx.clone(),
        move |ctx: Ctx<'js>, args: Rest<Value<'js>>| -> rquickjs::Result<()> {
            let mut line = String::new();
            for (i, arg) in args.0.into_iter().enumerate() {
                if i > 0 {
                    line.push(' ');
                }
                match arg.as_string() {
                    Some(s) => line.push_str(&s.to_string()?),
                    None => match ctx.json_stringify(arg.clone()) {
                        Ok(Some(s)) => line.push_str(&s.to_string()?),
                        _ => line.push_str("[unprintable]"),
                    },
                }
                if line.len() > MAX_LOG_BYTES {
                    break;
                }
            }
            let mut collected = sink.borrow_mut();
            if collected.logs.len() >= MAX_LOG_LINES
                || collected.log_bytes + line.len() > MAX_LOG_BYTES
            {
                collected.logs_truncated = true;
                return Ok(());
            }
            collected.log_bytes += line.len();
            collected.logs.push(line);
            Ok(())
        },
    )?;
    let console = Object::new(ctx.clone())?;
    for level in ["log", "info", "warn", "error", "debug"] {
        console.set(level, log.clone())?;
    }
    globals.set("console", console)?;

    let sink = collected.clone();
    let set_variable = Function::new(
        ctx.clone(),
        move |ctx: Ctx<'js>, name: Value<'js>, value: Value<'js>| -> rquickjs::Result<()> {
            let name = name
                .as_string()
                .map(|s| s.to_string())
                .transpose()?
                .filter(|n| is_identifier(n))
                .ok_or_else(|| {
                    Exception::throw_type(
                        &ctx,
                        "setVariable: the name must be letters, digits and _, not starting with a digit",
                    )
                })?;
            if value.is_undefined() || value.is_null() {
                return Err(Exception::throw_type(
                    &ctx,
                    "setVariable: the value must not be null or undefined",
                ));
            }
            let json = match ctx.json_stringify(value)? {
                Some(text) => text.to_string()?,
                None => {
                    return Err(Exception::throw_type(
                        &ctx,
                        "setVariable: the value must be JSON",
                    ));
                }
            };
            if json.len() > MAX_OUTPUT_BYTES {
                return Err(Exception::throw_range(
                    &ctx,
                    "setVariable: the value is over 256 KiB as JSON",
                ));
            }
            let parsed: Json = serde_json::from_str(&json)
                .map_err(|_| Exception::throw_type(&ctx, "setVariable: the value must be JSON"))?;
            let mut collected = sink.borrow_mut();
            collected.variables.retain(|(n, _)| n != &name);
            if collected.variables.len() >= MAX_VARIABLES {
                return Err(Exception::throw_range(
                    &ctx,
                    "setVariable: at most 100 variables per script",
                ));
            }
            collected.variables.push((name, parsed));
            Ok(())
        },
    )?;
    globals.set("setVariable", set_variable)?;
    Ok(())
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 64
}

/// The seccomp filter: a list of refused system calls, answered `EPERM`.
mod seccomp {
    /// System calls a script's process never needs: networking, new processes and programs,
    /// opening or changing files, tracing and namespaces.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn refused() -> Vec<libc::c_long> {
        let mut calls = vec![
            libc::SYS_socket,
            libc::SYS_socketpair,
            libc::SYS_connect,
            libc::SYS_bind,
            libc::SYS_listen,
            libc::SYS_accept,
            libc::SYS_accept4,
            libc::SYS_sendto,
            libc::SYS_sendmsg,
            libc::SYS_recvfrom,
            libc::SYS_recvmsg,
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_kill,
            libc::SYS_ptrace,
            libc::SYS_openat,
            libc::SYS_openat2,
            libc::SYS_unlinkat,
            libc::SYS_renameat,
            libc::SYS_mkdirat,
            libc::SYS_fchmodat,
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_memfd_create,
            libc::SYS_io_uring_setup,
            libc::SYS_process_vm_readv,
            libc::SYS_process_vm_writev,
        ];
        #[cfg(target_arch = "x86_64")]
        calls.extend([
            libc::SYS_fork,
            libc::SYS_vfork,
            libc::SYS_open,
            libc::SYS_creat,
            libc::SYS_unlink,
            libc::SYS_rename,
            libc::SYS_mkdir,
            libc::SYS_chmod,
        ]);
        calls
    }

    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = 0xc000_003e; // AUDIT_ARCH_X86_64
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = 0xc000_00b7; // AUDIT_ARCH_AARCH64

    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    #[allow(unsafe_code)]
    pub fn install() -> Result<(), String> {
        const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
        const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
        const RET_K: u16 = 0x06; // BPF_RET | BPF_K
        const RET_ALLOW: u32 = 0x7fff_0000;
        const RET_KILL: u32 = 0x8000_0000;
        const RET_EPERM: u32 = 0x0005_0000 | libc::EPERM as u32;
        let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
        let calls = refused();
        let mut program = vec![
            // A foreign architecture's calls cannot be told apart: the process dies.
            op(LD_W_ABS, 0, 0, 4),
            op(JEQ_K, 1, 0, ARCH),
            op(RET_K, 0, 0, RET_KILL),
            op(LD_W_ABS, 0, 0, 0),
        ];
        for call in &calls {
            program.push(op(JEQ_K, 0, 1, *call as u32));
            program.push(op(RET_K, 0, 0, RET_EPERM));
        }
        program.push(op(RET_K, 0, 0, RET_ALLOW));
        let filter = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_mut_ptr(),
        };
        // SAFETY: prctl with PR_SET_NO_NEW_PRIVS takes integers; PR_SET_SECCOMP reads the
        // filter program, which outlives the call (the kernel copies it).
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(format!("no_new_privs: {}", std::io::Error::last_os_error()));
            }
            if libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &filter as *const libc::sock_fprog,
            ) != 0
            {
                return Err(format!("seccomp: {}", std::io::Error::last_os_error()));
            }
        }
        Ok(())
    }

    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    pub fn install() -> Result<(), String> {
        Err("no seccomp filter for this architecture".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn script(code: &str) -> Response {
        run(&Request {
            code: code.into(),
            contact: serde_json::json!({"name": "Ada"}),
            vars: serde_json::json!({"n": 2}),
            trigger: serde_json::json!({}),
            timeout_ms: 500,
            memory_limit_mb: 16,
        })
    }

    #[test]
    fn scripts_see_their_data_log_set_variables_and_return_json() {
        let r = script(
            "console.log('hi', {a: 1}); setVariable('twice', vars.n * 2);\nreturn {name: contact.name};",
        );
        assert_eq!(r.error, None);
        assert_eq!(r.value, Some(serde_json::json!({"name": "Ada"})));
        assert_eq!(r.logs, vec!["hi {\"a\":1}"]);
        assert_eq!(
            r.variables,
            vec![("twice".to_owned(), serde_json::json!(4))]
        );
        let r = script("return (async () => { await null; return 7; })();");
        assert_eq!(r.value, Some(serde_json::json!(7)));
    }

    #[test]
    fn errors_carry_their_kind_and_line() {
        let r = script("let a = 1;\nlet b = 2;\nnull.x;");
        let e = r.error.unwrap();
        assert_eq!(e.kind, ErrorKind::Script);
        assert_eq!(e.line, Some(3), "{e:?}");
        assert!(e.message.starts_with("TypeError"), "{e:?}");
        assert_eq!(
            script("while (true) {}").error.unwrap().kind,
            ErrorKind::Timeout
        );
        assert_eq!(
            script("return 'x'.repeat(2 ** 29);").error.unwrap().kind,
            ErrorKind::Memory
        );
        assert_eq!(
            script("function f() { return f() + 1; } return f();")
                .error
                .unwrap()
                .kind,
            ErrorKind::Stack
        );
        let cyclic = script("const a = {}; a.a = a; return a;").error.unwrap();
        assert_eq!(cyclic.kind, ErrorKind::Output);
        assert_eq!(
            script("return eval('1')").error.unwrap().kind,
            ErrorKind::Script
        );
    }
}
