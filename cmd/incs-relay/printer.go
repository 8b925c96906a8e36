package main

// The demo's event printer: one readable line per event.

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/sink/chat"
)

// eventPrinter writes one readable line per event, for the demo.
type eventPrinter struct {
	mu    sync.Mutex
	w     io.Writer
	color bool
}

const (
	ansiReset  = "\x1b[0m"
	ansiDim    = "\x1b[2m"
	ansiBold   = "\x1b[1m"
	ansiGreen  = "\x1b[32m"
	ansiYellow = "\x1b[33m"
	ansiBlue   = "\x1b[34m"
	ansiRed    = "\x1b[31m"
	ansiCyan   = "\x1b[36m"
)

func (p *eventPrinter) paint(code, s string) string {
	if !p.color {
		return s
	}
	return code + s + ansiReset
}

// Print writes ev as one line: time, offset, type, task and the change.
func (p *eventPrinter) Print(ev *diff.Event) {
	var task struct {
		Name string `json:"name"`
	}
	_ = json.Unmarshal(ev.Data.Task, &task)
	var change string
	d := ev.Data
	switch ev.Type {
	case diff.TypeTaskCreated:
		change = "created"
	case diff.TypeTaskAssigned:
		change = "assigned to " + p.paint(ansiBold, d.AssigneeUsername)
		if d.PreviousAssignee != "" {
			change += " (was " + d.PreviousAssignee + ")"
		}
	case diff.TypeTaskStatusChanged:
		change = d.PreviousStatusName + " → " + p.paint(statusColor(d.Status), d.StatusName)
	case diff.TypeTaskCommented:
		change = "“" + oneLine(d.Comment, 60) + "”"
		if d.AssigneeUsername != "" {
			change += " — " + d.AssigneeUsername
		}
	case diff.TypeTaskUpdated, diff.TypeTaskLogUpdated:
		var l struct {
			ID      int64  `json:"id"`
			Comment string `json:"comment"`
		}
		_ = json.Unmarshal(d.Log, &l)
		var changes []diff.Change
		if d.Edit != nil {
			changes = d.Changes
		}
		switch {
		case ev.Type == diff.TypeTaskUpdated:
			change = strings.Join(chat.ChangeLines("en", changes, 30), "; ")
		case slices.ContainsFunc(changes, func(c diff.Change) bool { return c.Field == "comment" }):
			change = "comment edited: “" + oneLine(l.Comment, 60) + "”"
		default:
			change = fmt.Sprintf("log %d updated", l.ID)
		}
	case diff.TypeTaskDeleted:
		change = "deleted"
	default:
		var l struct {
			Type int `json:"type"`
		}
		_ = json.Unmarshal(d.Log, &l)
		change = fmt.Sprintf("log of unknown type %d (kept raw)", l.Type)
	}
	line := fmt.Sprintf("%s  %s  %-20s %s  %s\n",
		p.paint(ansiDim, ev.Time.Format("15:04:05")),
		p.paint(ansiDim, fmt.Sprintf("#%-5d", ev.Offset)),
		p.paint(typeColor(ev.Type), ev.Type),
		p.paint(ansiBold, fmt.Sprintf("task %d %q", d.TaskID, oneLine(task.Name, 30))),
		change)
	p.mu.Lock()
	defer p.mu.Unlock()
	io.WriteString(p.w, line)
}

// Line writes a plain informational line.
func (p *eventPrinter) Line(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format+"\n", args...)
}

func statusColor(s int) string {
	switch s {
	case diff.StatusInProgress:
		return ansiBlue
	case diff.StatusCompleted:
		return ansiGreen
	case diff.StatusTerminated:
		return ansiRed
	}
	return ansiYellow
}

func typeColor(t string) string {
	switch t {
	case diff.TypeTaskCreated:
		return ansiGreen
	case diff.TypeTaskAssigned:
		return ansiCyan
	case diff.TypeTaskStatusChanged:
		return ansiYellow
	case diff.TypeTaskCommented, diff.TypeTaskLogUpdated:
		return ansiBlue
	case diff.TypeTaskUpdated:
		return ansiCyan
	}
	return ansiRed
}

func oneLine(s string, max int) string {
	s = strings.Join(strings.Fields(s), " ")
	r := []rune(s)
	if len(r) > max {
		return string(r[:max-1]) + "…"
	}
	return s
}
