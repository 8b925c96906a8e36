// Package config is the relay's configuration: the schema YAML decodes
// into and its defaults (config.go), reading the YAML with ${VAR} and
// ${file:PATH} expansion, the file's Digest, and every error placed on its
// line and key (config_yaml.go), validation (config_validate.go,
// config_rules.go, config_store.go), which asks the package that owns each
// rule (sink, poller, diff/rules, store/jsstore), the NATS connection
// options, the hash replicas of one store must agree on, and what a reload
// changes (config_reload.go: Compare).
//
// It imports the pipeline's stages only to ask them for rules and
// defaults, and no other package of cmd/incs-relay.
package config
