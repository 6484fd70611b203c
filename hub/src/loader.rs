//! loader (work in progress)
