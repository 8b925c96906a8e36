// Package docs holds the published contract files of incs-relay: one JSON
// Schema per event type (schemas/, derived events sharing
// task.derived.json) and the AsyncAPI 3.0 document (asyncapi.yaml). The
// admin API serves them from here.
package docs

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"io/fs"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

//go:embed schemas/*.json asyncapi.yaml
var files embed.FS

// AsyncAPI returns the AsyncAPI 3.0 document.
func AsyncAPI() []byte {
	b, _ := files.ReadFile("asyncapi.yaml") // embedded: cannot fail
	return b
}

// DerivedSchema is the file name of the schema every derived event shares.
const DerivedSchema = "task.derived.json"

// Schema returns the JSON Schema of a log event type ("task.assigned"),
// or, with derived set, the derived-event schema with its type fixed to
// eventType. It reports false for a log type it has no schema for.
func Schema(eventType string, derived bool) ([]byte, bool) {
	if !derived {
		b, err := files.ReadFile("schemas/" + eventType + ".json")
		return b, err == nil
	}
	b, _ := files.ReadFile("schemas/" + DerivedSchema)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, false
	}
	m["$id"] = strings.Replace(m["$id"].(string), DerivedSchema, eventType+".json", 1)
	m["title"] = eventType
	m["properties"].(map[string]any)["type"] = map[string]any{"const": eventType}
	out, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, false
	}
	return append(out, '\n'), true
}

// Schemas returns every schema file by name.
func Schemas() map[string][]byte {
	out := map[string][]byte{}
	_ = fs.WalkDir(files, "schemas", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := files.ReadFile(path)
		if err != nil {
			return fmt.Errorf("docs: %w", err)
		}
		out[strings.TrimPrefix(path, "schemas/")] = b
		return nil
	})
	return out
}

// Validator checks event bodies against the published schemas.
type Validator struct {
	schemas map[string]*jsonschema.Schema // by file name
}

// NewValidator compiles every schema.
func NewValidator() (*Validator, error) {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	all := Schemas()
	for name, b := range all {
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("docs: schema %s: %w", name, err)
		}
		if err := c.AddResource(name, doc); err != nil {
			return nil, fmt.Errorf("docs: schema %s: %w", name, err)
		}
	}
	v := &Validator{schemas: map[string]*jsonschema.Schema{}}
	for name := range all {
		s, err := c.Compile(name)
		if err != nil {
			return nil, fmt.Errorf("docs: schema %s: %w", name, err)
		}
		v.schemas[name] = s
	}
	return v, nil
}

// Validate checks one event body against the schema of its type: the log
// type's own, or task.derived.json for any other.
func (v *Validator) Validate(body []byte) error {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("docs: event: %w", err)
	}
	obj, _ := doc.(map[string]any)
	typ, _ := obj["type"].(string)
	s := v.schemas[typ+".json"]
	if s == nil || typ+".json" == DerivedSchema {
		s = v.schemas[DerivedSchema]
	}
	if err := s.Validate(doc); err != nil {
		return fmt.Errorf("docs: event of type %q: %w", typ, err)
	}
	return nil
}
