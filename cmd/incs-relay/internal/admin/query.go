package admin

// What the admin API and the commands share of reading the store: the
// events query, the first offset of a replay, the redaction of shown
// events.

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/sink"
	"github.com/incs-relay/incs-relay/store"
)

// RedactedBody returns ev's stored body with the fields masked as a chat
// sink's redact masks them (envelope fields never are), or the body as
// stored when fields is empty.
func RedactedBody(ev *diff.Event, fields []string) json.RawMessage {
	if len(fields) == 0 {
		return ev.Body
	}
	return sink.Redact(ev, fields).Body
}

// ParseEventQuery validates the events filters shared by the CLI and API.
func ParseEventQuery(from, limit, typ string, known func(eventType string) bool) (store.EventQuery, error) {
	q := store.EventQuery{From: 1, Limit: 100}
	if from != "" {
		n, err := strconv.ParseUint(from, 10, 64)
		if err != nil || n < 1 {
			return q, fmt.Errorf("from: want an offset from 1, got %q", from)
		}
		q.From = n
	}
	if limit != "" {
		n, err := strconv.Atoi(limit)
		if err != nil || n < 1 || n > 100000 {
			return q, fmt.Errorf("limit: want 1 to 100000, got %q", limit)
		}
		q.Limit = n
	}
	if typ != "" {
		if !known(typ) {
			return q, fmt.Errorf("type: unknown event type %q (want one of %s, or a configured rule's type)", typ, strings.Join(diff.Types, ", "))
		}
		q.Type = typ
	}
	return q, nil
}

// ReplayFrom turns a replay's from (an offset) or since (an RFC 3339
// time) into the first offset to deliver again; exactly one is given.
func ReplayFrom(db store.Store, from, since string) (uint64, error) {
	switch {
	case from != "" && since != "":
		return 0, errors.New("give from or since, not both")
	case from != "":
		n, err := strconv.ParseUint(from, 10, 64)
		if err != nil || n < 1 {
			return 0, fmt.Errorf("from: want an offset from 1, got %q", from)
		}
		head, err := db.Head()
		if err != nil {
			return 0, err
		}
		if n > head+1 {
			return 0, fmt.Errorf("from: offset %d is beyond the newest event (%d)", n, head)
		}
		return n, nil
	case since != "":
		t, err := time.Parse(time.RFC3339, since)
		if err != nil {
			return 0, fmt.Errorf("since: want an RFC 3339 time such as 2026-04-08T17:00:00+08:00, got %q", since)
		}
		return db.OffsetSince(t)
	}
	return 0, errors.New("give from=OFFSET or since=RFC3339")
}
