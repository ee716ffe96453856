//! Flowline's JavaScript sandbox.
//!
//! Scripts run in QuickJS inside child processes of the `flowline` binary (its hidden `sandbox`
//! subcommand), never in the server: an interpreter bug or a runaway script can take down only a
//! child, which the [`pool::SandboxPool`] replaces. Parent and child speak length-prefixed JSON
//! frames over the child's stdin and stdout ([`protocol`]).
//!
//! Each script gets a fresh QuickJS runtime and context with a memory limit, a stack limit and an
//! interrupt handler for its deadline; the parent kills the child when the deadline plus a margin
//! passes (some built-ins never poll the interrupt handler). The child starts with an empty
//! environment, resource limits (address space, CPU time, open files, no core dumps) and, on
//! Linux x86-64 and AArch64, a seccomp filter that refuses sockets, new processes, program
//! execution and opening files ([`child`]).

pub mod child;
pub mod pool;
pub mod protocol;
