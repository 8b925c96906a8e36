package diff

import (
	"encoding/json"
	"slices"
	"strings"
	"time"
)

// Sample events: realistic events of every type, for previews, template
// checks and tests, built the way the relay builds events.

// sampleTask is the task behind SampleEvents, as the API sends it.
const sampleTask = `{"id":237,"creation_id":104,"auth_id":30058,"name":"Callback 4.8","description":"Customer asked for a callback about order 4.8","type":3,"user_name":"Erin","user_phone":"6281519140316","assignee_username":"incs_1","status":1,"created_at":"2026-04-08 17:22:01","updated_at":"2026-04-08 17:25:01","logs":[` +
	`{"id":531,"type":1,"status":0,"pre_status":0,"assignee_username":"","comment":"","created_at":"2026-04-08 17:22:01","updated_at":"2026-04-08 17:22:01"},` +
	`{"id":532,"type":2,"status":0,"pre_status":0,"assignee_username":"incs_2","comment":"","created_at":"2026-04-08 17:22:04","updated_at":"2026-04-08 17:22:04"},` +
	`{"id":533,"type":2,"status":0,"pre_status":0,"assignee_username":"incs_1","comment":"","created_at":"2026-04-08 17:22:06","updated_at":"2026-04-08 17:22:06"},` +
	`{"id":534,"type":3,"status":1,"pre_status":0,"assignee_username":"incs_1","comment":"","created_at":"2026-04-08 17:25:00","updated_at":"2026-04-08 17:25:00"},` +
	`{"id":535,"type":4,"status":1,"pre_status":1,"assignee_username":"incs_1","comment":"已经跟进 — customer will call back <tomorrow> & confirm","created_at":"2026-04-08 17:25:01","updated_at":"2026-04-08 17:25:01"},` +
	`{"id":536,"type":9,"status":1,"pre_status":1,"assignee_username":"incs_1","comment":"","created_at":"2026-04-08 17:26:30","updated_at":"2026-04-08 17:26:30","extra":"sla_warning"}]}`

// SampleEvents returns one realistic event per event type, in the order of
// Types: created, assigned (a reassignment), status_changed (not
// started → in progress), commented, logged (an unknown log type 9), and
// the changes that leave no log: updated (renamed, the phone number
// corrected), log_updated (the comment edited) and deleted.
// They come from one task decoded and diffed as the relay does, with times
// in UTC+8, offsets from 1 and Body set. Each call returns fresh copies.
func SampleEvents() []Event {
	var t Task
	if err := json.Unmarshal([]byte(sampleTask), &t); err != nil {
		panic("diff: sample task: " + err.Error())
	}
	all, err := Diff(&t, nil, time.FixedZone("UTC+8", 8*3600))
	if err != nil {
		panic("diff: sample task: " + err.Error())
	}
	all = append(all, sampleEdits(&t)...)
	var out []Event
	for _, typ := range Types {
		var pick *Event
		for i := range all {
			if all[i].Type == typ {
				pick = &all[i] // the last of its type
			}
		}
		if pick != nil {
			out = append(out, *pick)
		}
	}
	for i := range out {
		out[i].Offset = uint64(i + 1)
		b, err := json.Marshal(&out[i])
		if err != nil {
			panic("diff: sample event: " + err.Error())
		}
		out[i].Body = b
	}
	return out
}

// sampleEdits returns the sample task's edits, as Edits finds them the
// next time the task is read: renamed with its phone number corrected
// and its comment edited; then its deletion, confirmed a minute later.
func sampleEdits(t *Task) []Event {
	loc := time.FixedZone("UTC+8", 8*3600)
	all := func(int64) bool { return true }
	before := Observe(t, nil, all)
	var e Task
	raw := strings.Replace(sampleTask, `"name":"Callback 4.8"`, `"name":"Callback 4.8 (VIP)"`, 1)
	raw = strings.Replace(raw, `"user_phone":"6281519140316"`, `"user_phone":"6281519140361"`, 1)
	raw = strings.Replace(raw, `"updated_at":"2026-04-08 17:25:01","logs"`, `"updated_at":"2026-04-08 17:31:12","logs"`, 1)
	raw = strings.Replace(raw, `"comment":"已经跟进 — customer will call back <tomorrow> & confirm","created_at":"2026-04-08 17:25:01","updated_at":"2026-04-08 17:25:01"`,
		`"comment":"已经跟进 — customer will call back <Thursday> & confirm","created_at":"2026-04-08 17:25:01","updated_at":"2026-04-08 17:30:40"`, 1)
	if err := json.Unmarshal([]byte(raw), &e); err != nil {
		panic("diff: sample edit: " + err.Error())
	}
	evs, after, err := Edits(&e, &before, all, func(int64) bool { return false }, loc)
	if err != nil {
		panic("diff: sample edit: " + err.Error())
	}
	confirmed, _ := ParseTime("2026-04-08 17:32:15", loc)
	return append(evs, Deleted(t.ID, &after, confirmed))
}

// SampleDerivedEvent returns a realistic event of a rule that fired on the
// sample task (step 0, after after since its last log), or its resolving
// event: for previews and tests.
func SampleDerivedEvent(rule, eventType, since string, after time.Duration, resolved bool) Event {
	samples := SampleEvents()
	last := samples[slices.Index(Types, TypeTaskLogged)]
	var l Log
	_ = json.Unmarshal(last.Data.Log, &l)
	anchor := last.Time
	due := anchor.Add(after)
	ev := Event{
		SpecVersion: SpecVersion, ID: RuleEventID(rule, last.Data.TaskID, l.ID, 0), Source: Source,
		Type: eventType, Subject: last.Subject, Time: due, DataContentType: DataContentType, Offset: uint64(len(samples) + 1),
		Data: Data{TaskID: last.Data.TaskID, Task: last.Data.Task, Status: StatusInProgress, StatusName: StatusName(StatusInProgress),
			AssigneeUsername: last.Data.AssigneeUsername,
			Derived:          &Derived{Rule: rule, Since: since, AnchorLogID: l.ID, AnchorAt: anchor, DueAt: due, FiredAt: due.Add(7 * time.Second)}},
	}
	if resolved {
		ev.ID = RuleEventID(rule, last.Data.TaskID, l.ID, -1)
		ev.Type = ResolvedType(eventType)
		ev.Offset++
		ev.Data.Resolved = true
		ev.Data.FiredAt = due.Add(2 * time.Hour)
		ev.Time = ev.Data.FiredAt
		ev.Data.Status, ev.Data.StatusName = StatusCompleted, StatusName(StatusCompleted)
	}
	ev.Body, _ = json.Marshal(&ev)
	return ev
}

// SampleStatusChanges returns the sample status change turned into a change
// to each status in turn (from the previous one): element i is the change
// to status i. Each call returns fresh copies.
func SampleStatusChanges() []Event {
	samples := SampleEvents()
	var base *Event
	for i := range samples {
		if samples[i].Type == TypeTaskStatusChanged {
			base = &samples[i]
		}
	}
	if base == nil {
		return nil
	}
	var out []Event
	for s := StatusNotStarted; s <= StatusTerminated; s++ {
		ev := *base
		prev := s - 1
		if prev < 0 {
			prev = StatusInProgress
		}
		ev.Data.Status, ev.Data.StatusName = s, StatusName(s)
		ev.Data.PreviousStatus, ev.Data.PreviousStatusName = prev, StatusName(prev)
		var lg map[string]any
		if json.Unmarshal(ev.Data.Log, &lg) == nil {
			lg["status"], lg["pre_status"] = s, prev
			ev.Data.Log, _ = json.Marshal(lg)
		}
		ev.Body, _ = json.Marshal(&ev)
		out = append(out, ev)
	}
	return out
}
