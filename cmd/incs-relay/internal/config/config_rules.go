package config

// The rules section: calendars and derived-event rules, checked and
// built by diff/rules.

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/diff/rules"
)

// CalendarConfig is a business-hours calendar rules can count in.
type CalendarConfig struct {
	Timezone string              `yaml:"timezone"`
	Hours    map[string][]string `yaml:"hours"`
	Holidays []string            `yaml:"holidays"`
}

// RuleConfig is one derived event (see package diff/rules).
type RuleConfig struct {
	Name     string        `yaml:"name"`
	Event    string        `yaml:"event"`
	When     RuleWhen      `yaml:"when"`
	Since    string        `yaml:"since"`
	After    Duration      `yaml:"after"`
	Calendar string        `yaml:"calendar"`
	Repeat   *RepeatConfig `yaml:"repeat"`
	Resolve  bool          `yaml:"resolve"`
}

// RuleWhen is a rule's condition on the task.
type RuleWhen struct {
	Status    []int          `yaml:"status"`
	TaskTypes []int          `yaml:"task_types"`
	Assignee  AssigneeFilter `yaml:"assignee"`
}

// AssigneeFilter is "present", "absent" or a list of user names.
type AssigneeFilter struct {
	Word  string   // the scalar form
	Names []string // the list form
}

// UnmarshalYAML reads the scalar or the list form; Validate checks the word.
func (a *AssigneeFilter) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		a.Word = n.Value
		if a.Word == "" {
			a.Word = " " // explicitly empty: rejected by Validate
		}
		return nil
	}
	return n.Decode(&a.Names)
}

// RepeatConfig makes a rule fire again.
type RepeatConfig struct {
	Every Duration `yaml:"every"`
	Max   int      `yaml:"max"`
}

// ValidRules returns the rules built by Validate.
func (c *Config) ValidRules() []*rules.Rule { return c.rules }

// IsRuleType reports whether typ is an event type a configured rule emits.
func (c *Config) IsRuleType(typ string) bool {
	return slices.ContainsFunc(c.rules, func(r *rules.Rule) bool { return slices.Contains(r.Types(), typ) })
}

// KnownEventType reports whether typ is a log or a configured rule's
// event type.
func (c *Config) KnownEventType(typ string) bool {
	return slices.Contains(diff.Types, typ) || c.IsRuleType(typ)
}

// EventTypes lists every event type the relay emits with this config.
func (c *Config) EventTypes() []string {
	out := slices.Clone(diff.Types)
	for _, r := range c.rules {
		out = append(out, r.Types()...)
	}
	return out
}

// validateRules checks calendars and rules and builds c.rules.
func (c *Config) validateRules(bad func(key, format string, args ...any) error) error {
	cals := map[string]*rules.Calendar{}
	names := slices.Sorted(maps.Keys(c.Calendars))
	for _, name := range names {
		cc := c.Calendars[name]
		cal, err := rules.NewCalendar(name, cc.Timezone, cc.Hours, cc.Holidays)
		if err != nil {
			return fieldError(bad, "calendars."+name, err)
		}
		cals[name] = cal
	}
	c.rules = nil
	for i, rc := range c.Rules {
		key := fmt.Sprintf("rules[%d]", i)
		r := &rules.Rule{
			Name: rc.Name, Event: rc.Event, Since: rc.Since, After: rc.After.D(), Resolve: rc.Resolve,
			When: rules.When{Status: rc.When.Status, TaskTypes: rc.When.TaskTypes, Assignee: rules.Assignee{Names: rc.When.Assignee.Names}},
		}
		switch rc.When.Assignee.Word {
		case "":
		case "present":
			r.When.Assignee.Present = true
		case "absent":
			r.When.Assignee.Absent = true
		default:
			return bad(key+".when.assignee", "want present, absent or a list of names, got %q", strings.TrimSpace(rc.When.Assignee.Word))
		}
		if rc.Repeat != nil {
			r.Repeat = rules.Repeat{Every: rc.Repeat.Every.D(), Max: rc.Repeat.Max}
			if r.Repeat == (rules.Repeat{}) {
				return bad(key+".repeat", "needs every and max")
			}
		}
		if rc.Calendar != "" {
			if r.Calendar = cals[rc.Calendar]; r.Calendar == nil {
				return bad(key+".calendar", "no calendar %q under calendars (have: %s)", rc.Calendar, strings.Join(names, ", "))
			}
		}
		c.rules = append(c.rules, r)
	}
	if err := rules.CheckSet(c.rules); err != nil {
		return fieldError(bad, "rules", err)
	}
	return nil
}

// fieldError turns a rules.FieldError into a Error under prefix.
func fieldError(bad func(key, format string, args ...any) error, prefix string, err error) error {
	var fe *rules.FieldError
	if !errors.As(err, &fe) {
		return bad(prefix, "%v", err)
	}
	key := prefix
	switch {
	case strings.HasPrefix(fe.Key, "["):
		key += fe.Key
	case fe.Key != "":
		key += "." + fe.Key
	}
	return bad(key, "%s", fe.Msg)
}
