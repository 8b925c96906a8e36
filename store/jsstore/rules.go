// ApplyRules: the leader writes rule states and appends the events rules
// derive, each write's in one atomic batch.

package jsstore

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/incs-relay/incs-relay/store"
)

// ApplyRules writes rule states and appends derived events, each write's
// in one atomic batch. Only the leader applies rules.
func (s *Store) ApplyRules(ctx context.Context, writes []store.RuleWrite) (store.RuleResult, error) {
	var res store.RuleResult
	if len(writes) == 0 {
		return res, nil
	}
	lead, unlock, err := s.beginAppend(ctx, "apply rules")
	if err != nil {
		return res, err
	}
	defer unlock()
	b := s.newBatcher(lead)
	for _, w := range writes {
		task := w.Task
		if len(task) == 0 {
			s.v.mu.RLock()
			task = bytes.Clone(s.v.ruleTasks[w.TaskID])
			s.v.mu.RUnlock()
		}
		if len(task) == 0 {
			task = json.RawMessage(fmt.Sprintf(`{"id":%d}`, w.TaskID))
		}
		var (
			evs         []evOut
			msgs        []outMsg
			first, last uint64
		)
		head := b.head
		for i := range w.Events {
			ev := w.Events[i]
			if len(ev.Type) > 255 {
				return res, fmt.Errorf("jsstore: apply rules: task %d: event %s: type too long", w.TaskID, ev.ID)
			}
			if len(ev.Data.Task) == 0 {
				ev.Data.Task = task
			}
			off := b.next()
			body, err := store.EncodeEvent(&ev, off)
			if err != nil {
				b.head = head
				return res, fmt.Errorf("jsstore: apply rules: task %d: encode %s: %w", w.TaskID, ev.ID, err)
			}
			evs = append(evs, b.event(w.TaskID, off, ev.Type, body, b.at))
			if first == 0 {
				first = off
			}
			last = off
		}
		msgs = append(msgs, b.rollupMsg("rule", w.TaskID, w.Record))
		if w.Record == nil {
			msgs = append(msgs, b.rollupMsg("rtask", w.TaskID, nil))
		} else if len(w.Task) > 0 {
			msgs = append(msgs, b.rollupMsg("rtask", w.TaskID, w.Task))
		}
		n := len(w.Events)
		if err := b.add(ctx, evs, msgs, func() {
			res.Events += n
			res.Types = countTypes(res.Types, evs)
			if first > 0 && res.FirstOffset == 0 {
				res.FirstOffset = first
			}
			if last > 0 {
				res.LastOffset = last
			}
		}); err != nil {
			return res, err
		}
	}
	if err := b.flush(ctx); err != nil {
		return res, err
	}
	return res, nil
}
