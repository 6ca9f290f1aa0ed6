//! placeholder, replaced by the partitioner work
