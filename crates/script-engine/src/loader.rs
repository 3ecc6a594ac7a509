//! YAML → typed [`heartrule_domain::ScriptDocument`].
