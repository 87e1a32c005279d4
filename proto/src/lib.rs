//! The moq-lite wire codec and session state machines, sans-IO. Filled in by the proto issue.
