//! envelope (work in progress)
