//! One module per command.

mod demo;
mod pair;
mod phone;
mod watch;

pub(crate) use demo::*;
pub(crate) use pair::*;
pub(crate) use phone::*;
pub(crate) use watch::*;
