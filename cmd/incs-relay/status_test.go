package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/relay"
)

func TestRulesView_Line(t *testing.T) {
	next := time.Date(2026, 4, 8, 13, 0, 0, 0, time.UTC)
	v := relay.RulesView{Rules: 2, Tracked: 40, Overdue: 3, Waiting: 120, NextDue: &next}
	line := rulesLine(&v)
	assert.Contains(t, line, "rules: 2, 40 tasks tracked, 3 due and waiting for their confirming read")
	assert.Contains(t, line, "120 task_id reads wait for the follow-up cap")
	assert.Contains(t, line, "next due 2026-04-08T13:00:00Z")
	v.Waiting, v.NextDue = 0, nil
	assert.NotContains(t, rulesLine(&v), "cap")
}
