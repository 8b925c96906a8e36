package config

// Reading the YAML: decoding over the defaults, ${VAR} and ${file:PATH}
// expansion, the file's digest, and placing every error on the file's line
// and dotted key.

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
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
// (os.LookupEnv for the process environment) and ${file:PATH} (relative to
// path's directory), and validates it (see Parse). Its errors are *Error
// values.
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

// Parse decodes YAML laid over Default, expands ${VAR} (with lookup) and
// ${file:PATH} (a file's content; a relative PATH is relative to the
// directory of file) inside string values, and validates the result.
// Unknown keys are errors. The file name is used in messages and to
// resolve relative ${file:} paths. The config keeps data's Digest.
func Parse(file string, data []byte, lookup func(string) (string, bool)) (*Config, error) {
	cfg := Default()
	cfg.path = file
	cfg.digest = digestOf(data)
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, yamlError(file, &root, err)
	}
	cfg.root = &root
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, yamlError(file, &root, err)
	}
	x := expander{lookup: lookup, dir: filepath.Dir(file), files: &cfg.files}
	if err := x.expand(reflect.ValueOf(&cfg).Elem(), ""); err != nil {
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

// digestOf is Digest's hash of a file's bytes.
func digestOf(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}

// Digest is a short hash (16 hex digits) of the config file's bytes as
// read, before ${...} expansion, so no value read from the environment or
// a file is in it: two replicas, or a config before and after a reload,
// show the same digest when they read the same file. For a config Parse
// was given YAML for without a file, it is that YAML's; for one built in
// code without Parse, "".
func (c *Config) Digest() string { return c.digest }

// FileRefs are the files the config's ${file:} references read, each
// once, in the order first read, as paths the process can open (a
// relative one joined to the config's directory): what a watch for
// changes needs to watch besides the config file, since a rotated secret
// changes the file and not the config.
func (c *Config) FileRefs() []string { return slices.Clone(c.files) }

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

// ref is a reference expanded in a string value: ${VAR}, or ${file:PATH}.
var ref = regexp.MustCompile(`\$\{(?:file:([^}]*)|([A-Za-z_][A-Za-z0-9_]*))\}`)

// maxRefFile is the most a ${file:} reference reads: a token or a
// secret, not a data file.
const maxRefFile = 1 << 20

// expander replaces the references in a config's string values.
type expander struct {
	lookup func(string) (string, bool) // ${VAR}
	dir    string                      // a relative ${file:} path's directory
	files  *[]string                   // the ${file:} files read, each once
}

// expand replaces ${VAR} and ${file:PATH} in every string value below v,
// in one pass: what a variable or a file holds is not expanded again. A
// reference to an unset variable, or to a file that cannot be read, is an
// error naming the key and the variable or the file's path; what the
// variable or the file holds is never quoted back.
func (x expander) expand(v reflect.Value, path string) *Error {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			return nil
		}
		return x.expand(v.Elem(), path)
	case reflect.Struct:
		for _, f := range yamlFields(v.Type()) {
			p := f.name
			switch {
			case f.inline:
				p = path
			case path != "":
				p = path + "." + f.name
			}
			if err := x.expand(v.Field(f.index), p); err != nil {
				return err
			}
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			if err := x.expand(v.Index(i), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	case reflect.String:
		s := v.String()
		if !strings.Contains(s, "${") {
			return nil
		}
		var failed *Error
		out := ref.ReplaceAllStringFunc(s, func(r string) string {
			if failed != nil {
				return ""
			}
			m := ref.FindStringSubmatch(r)
			if m[2] != "" {
				val, ok := x.lookup(m[2])
				if !ok {
					failed = &Error{Key: path, Msg: fmt.Sprintf("environment variable %s is not set", m[2])}
				}
				return val
			}
			val, err := x.readFile(m[1])
			if err != nil {
				failed = &Error{Key: path, Msg: err.Error()}
			}
			return val
		})
		if failed != nil {
			return failed
		}
		v.SetString(out)
	}
	return nil
}

// yamlField is a field of a struct that YAML decodes: its key, or inline
// for an embedded struct whose keys are its parent's.
type yamlField struct {
	index  int
	name   string
	inline bool
}

// yamlFields lists the fields of struct type t that YAML decodes, in
// order: exported, with a key or inline.
func yamlFields(t reflect.Type) []yamlField {
	var fields []yamlField
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := strings.Split(f.Tag.Get("yaml"), ",")
		switch inline := slices.Contains(tag[1:], "inline"); {
		case tag[0] == "" && inline:
			fields = append(fields, yamlField{index: i, inline: true})
		case tag[0] != "":
			fields = append(fields, yamlField{index: i, name: tag[0]})
		}
	}
	return fields
}

// readFile returns the content of a ${file:} reference's file, without
// its trailing newlines. Its errors name the file, never its content.
func (x expander) readFile(name string) (string, error) {
	if strings.TrimSpace(name) == "" {
		return "", errors.New("${file:} names no file (want ${file:/path/to/secret})")
	}
	p := name
	if !filepath.IsAbs(p) {
		p = filepath.Join(x.dir, p)
	}
	if x.files != nil && !slices.Contains(*x.files, p) {
		*x.files = append(*x.files, p)
	}
	f, err := os.Open(p)
	if err != nil {
		return "", refFileError(p, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxRefFile+1))
	if err != nil {
		return "", refFileError(p, err)
	}
	if len(b) > maxRefFile {
		return "", fmt.Errorf("file %s (${file:}) is larger than %d MiB: it should hold one value", p, maxRefFile>>20)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// refFileError says why a ${file:} reference's file could not be read.
func refFileError(path string, err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Errorf("file %s (${file:}) cannot be read: %v", path, err)
}
