package config

// Reading the YAML: decoding over the defaults, ${VAR} expansion, and
// placing every error on the file's line and dotted key.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// UnmarshalYAML accepts only Go duration strings; a bare number is an error
// because its unit would be a guess.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &durationError{line: n.Line, value: "", msg: "want a duration string such as 10s"}
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return &durationError{line: n.Line, value: n.Value, msg: "want a Go duration such as 10s, 5m or 72h"}
	}
	if v < 0 {
		return &durationError{line: n.Line, value: n.Value, msg: "must not be negative"}
	}
	*d = Duration(v)
	return nil
}

type durationError struct {
	line  int
	value string
	msg   string
}

func (e *durationError) Error() string {
	return fmt.Sprintf("line %d: bad duration %q: %s", e.line, e.value, e.msg)
}

// ReadFile reads the config at path, expands ${VAR} with lookup
// (os.LookupEnv for the process environment) and validates it. Its errors
// are *Error values.
func ReadFile(path string, lookup func(string) (string, bool)) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		msg := err.Error()
		var pe *os.PathError
		if errors.As(err, &pe) {
			msg = "cannot read: " + pe.Err.Error()
		}
		return nil, &Error{File: path, Msg: msg}
	}
	return Parse(path, b, lookup)
}

var yamlFieldErr = regexp.MustCompile(`line (\d+): field (\S+) not found in type config\.(\w+)`)
var yamlLineErr = regexp.MustCompile(`line (\d+): (.*)`)

// Parse decodes YAML laid over Default, expands ${VAR} inside
// string values with lookup, and validates the result. Unknown keys are
// errors. The file name is only used in messages.
func Parse(file string, data []byte, lookup func(string) (string, bool)) (*Config, error) {
	cfg := Default()
	cfg.path = file
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlError(file, &root, err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, yamlError(file, &root, err)
	}
	if err := expandEnv(reflect.ValueOf(&cfg).Elem(), "", lookup); err != nil {
		err.File = file
		err.Line = lineOfKey(&root, err.Key)
		return nil, err
	}
	cfg.Store.pathSet = lineOfKey(&root, "store.path") != 0
	if err := cfg.Validate(); err != nil {
		var ce *Error
		if errors.As(err, &ce) {
			ce.File = file
			if ce.Line == 0 {
				ce.Line = lineOfKey(&root, ce.Key)
			}
		}
		return nil, err
	}
	return &cfg, nil
}

// yamlError turns a yaml.v3 error into a one-line Error.
func yamlError(file string, root *yaml.Node, err error) error {
	var de *durationError
	if errors.As(err, &de) {
		return &Error{File: file, Line: de.line, Key: keyAtLine(root, de.line), Msg: fmt.Sprintf("bad duration %q: %s", de.value, de.msg)}
	}
	msg := err.Error()
	if m := yamlFieldErr.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		key := keyAtLine(root, line)
		return &Error{File: file, Line: line, Key: key, Msg: fmt.Sprintf("unknown key %q", m[2])}
	}
	msg = strings.TrimPrefix(msg, "yaml: unmarshal errors:\n")
	msg = strings.TrimSpace(strings.SplitN(msg, "\n", 2)[0])
	msg = strings.TrimPrefix(msg, "yaml: ")
	if m := yamlLineErr.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		inner := m[2]
		inner = strings.Replace(inner, "cannot unmarshal !!", "wrong type: got a YAML ", 1)
		inner = strings.ReplaceAll(inner, "`", "")
		return &Error{File: file, Line: line, Key: keyAtLine(root, line), Msg: inner}
	}
	return &Error{File: file, Msg: msg}
}

// walkYAML calls visit for every mapping value and sequence entry below n
// with its dotted path ("sinks[1].url"); key is the mapping key node, nil
// for a sequence entry. The walk stops when visit returns false.
func walkYAML(n *yaml.Node, path string, visit func(path string, key, val *yaml.Node) bool) bool {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if !walkYAML(c, path, visit) {
				return false
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			if !visit(p, k, v) || !walkYAML(v, p, visit) {
				return false
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			if !visit(p, nil, c) || !walkYAML(c, p, visit) {
				return false
			}
		}
	}
	return true
}

// keyAtLine returns the dotted path of the mapping key or value on line:
// the innermost one when several share it.
func keyAtLine(root *yaml.Node, line int) string {
	var best string
	walkYAML(root, "", func(path string, key, val *yaml.Node) bool {
		if key != nil && key.Line == line || key == nil && val.Line == line && val.Kind == yaml.ScalarNode {
			best = path
		}
		return true
	})
	return best
}

// lineOfKey returns the line of the dotted key path in root, or 0.
func lineOfKey(root *yaml.Node, key string) int {
	if key == "" {
		return 0
	}
	found := 0
	walkYAML(root, "", func(path string, k, val *yaml.Node) bool {
		if path != key {
			return true
		}
		if found = val.Line; k != nil {
			found = k.Line
		}
		return false
	})
	return found
}

var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// expandEnv replaces ${VAR} in every string value below v. A reference to
// an unset variable is an error naming the key and the variable; the
// variable's value is never quoted back.
func expandEnv(v reflect.Value, path string, lookup func(string) (string, bool)) *Error {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return nil
		}
		return expandEnv(v.Elem(), path, lookup)
	case reflect.Struct:
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			tag := strings.Split(f.Tag.Get("yaml"), ",")
			name := tag[0]
			p := name
			switch {
			case name == "" && slices.Contains(tag[1:], "inline"):
				p = path
			case name == "":
				continue
			case path != "":
				p = path + "." + name
			}
			if err := expandEnv(v.Field(i), p, lookup); err != nil {
				return err
			}
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			if err := expandEnv(v.Index(i), fmt.Sprintf("%s[%d]", path, i), lookup); err != nil {
				return err
			}
		}
	case reflect.String:
		s := v.String()
		if !strings.Contains(s, "${") {
			return nil
		}
		var missing string
		out := envRef.ReplaceAllStringFunc(s, func(ref string) string {
			name := ref[2 : len(ref)-1]
			val, ok := lookup(name)
			if !ok && missing == "" {
				missing = name
			}
			return val
		})
		if missing != "" {
			return &Error{Key: path, Msg: fmt.Sprintf("environment variable %s is not set", missing)}
		}
		v.SetString(out)
	}
	return nil
}
