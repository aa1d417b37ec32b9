//! Parsers for every alias source, from bytes to entries plus diagnostics.
//!
//! Each parser takes a file's bytes and never fails as a whole: a line it cannot use is reported
//! as a [`Diagnostic`](crate::snapshot::Diagnostic) with file and line and left out (or, inside a
//! list whose owner must then punt, kept as an `invalid` item). Where the MTAs disagree the parsers
//! read as Postfix does (`reference/alias-semantics.md`). No input can make them panic or loop.
//! Reading files is the agent's job; this module only sees bytes.

mod lines;
mod rhs;

pub use lines::{
    AliasesFile, ParsedAlias, ParsedList, ParsedVirtual, PasswdEntry, Splice, parse_aliases,
    parse_list, parse_passwd, parse_recipients, parse_virtual,
};
pub use rhs::parse_value;

#[cfg(test)]
mod tests;
