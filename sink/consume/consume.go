// Package consume is for downstream services that receive incs-relay
// events: it verifies a Standard Webhooks delivery (signature and timestamp
// tolerance), decodes the CloudEvents envelope into typed Go values, and
// dedupes deliveries by event id. It reads every webhook format the relay
// sends (json, cloudevents, binary) and NATS messages. It imports nothing
// of the relay but the event types in diff.
//
//	v, _ := consume.NewVerifier([]string{os.Getenv("WEBHOOK_SECRET")})
//	http.HandleFunc("/incs", func(w http.ResponseWriter, r *http.Request) {
//		ev, err := v.Verify(r)            // 401 on error
//		if err != nil { http.Error(w, err.Error(), http.StatusUnauthorized); return }
//		if !seen.Add(ev.ID) { w.WriteHeader(http.StatusNoContent); return } // a redelivery
//		... handle ev.Type, ev.Data ...
//	})
//
// Besides one event per upstream log (id "log-<log id>"), a relay with
// rules emits derived events (id "rule-<rule>-<task>-<anchor log>-<step>"
// or "...-resolved", type "task.<name>" or "task.<name>_resolved"): their
// data has no log, and [Derived] returns what the rule adds.
//
// Changes that leave no log have their own events: task.updated (id
// "upd-<task>-<updated_at>[-<n>]": a task's own fields changed),
// task.log_updated (id "logupd-<log>-<updated_at>[-<n>]": a seen log's
// comment edited) and task.deleted (id "del-<task>"). Their data is
// task_id, task (for task.deleted the last values the relay saw), log
// (task.log_updated only) and changes; [IsEdit] tells them, [Changes]
// returns their changes, each a field with its JSON values from and to.
package consume

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/incs-relay/incs-relay/diff"
)

// Event is an incs-relay event: a CloudEvents 1.0 envelope whose data holds
// the task, the log and the change; or, for a derived event, the task and
// what the rule adds (Data.Derived).
type Event = diff.Event

// DerivedData is what a rule adds to a derived event's data: rule, since,
// anchor_log_id, anchor_at, due_at, fired_at, step and resolved.
type DerivedData = diff.Derived

// Derived returns the rule data of a derived event, or nil for an event of
// an upstream log.
func Derived(ev *Event) *DerivedData { return ev.Data.Derived }

// IsDerived reports whether an event type is a rule's rather than a log's
// (a derived type is "task." plus the rule's event name, or that plus
// "_resolved").
func IsDerived(eventType string) bool { return diff.IsDerived(eventType) }

// Change is one field's change in a task.updated or task.log_updated
// event: Field ("name", "user_phone", "status", "comment" …) and its JSON
// values From and To (a string, or a number for auth_id, creation_id,
// status and type), cut to 4 KiB when Truncated.
type Change = diff.Change

// The event types of changes that leave no log.
const (
	TypeTaskUpdated    = diff.TypeTaskUpdated
	TypeTaskLogUpdated = diff.TypeTaskLogUpdated
	TypeTaskDeleted    = diff.TypeTaskDeleted
)

// IsEdit reports whether an event type is that of a change that leaves
// no log: task.updated, task.log_updated or task.deleted.
func IsEdit(eventType string) bool { return diff.IsEdit(eventType) }

// Changes returns the changes of a task.updated or task.log_updated
// event, sorted by field; none for any other event.
func Changes(ev *Event) []Change {
	if ev.Data.Edit == nil {
		return nil
	}
	return ev.Data.Changes
}

// editIDPrefix is the id prefix of each type of a change that leaves no
// log.
var editIDPrefix = map[string]string{
	diff.TypeTaskUpdated:    "upd-",
	diff.TypeTaskLogUpdated: "logupd-",
	diff.TypeTaskDeleted:    "del-",
}

// Errors returned by Verify. Match them with errors.Is.
var (
	// ErrMissingHeaders: webhook-id, webhook-timestamp or webhook-signature
	// is absent.
	ErrMissingHeaders = errors.New("missing webhook headers")
	// ErrTimestamp: the timestamp is outside the tolerance (a replayed or
	// delayed request), or not a number.
	ErrTimestamp = errors.New("webhook timestamp outside tolerance")
	// ErrSignature: no signature matches any secret.
	ErrSignature = errors.New("no matching webhook signature")
	// ErrBody: the body is not an incs-relay event.
	ErrBody = errors.New("body is not an incs-relay event")
)

// DefaultTolerance is how far a webhook-timestamp may be from now, as the
// Standard Webhooks specification recommends.
const DefaultTolerance = 5 * time.Minute

// MaxBody is the largest body Verify reads.
const MaxBody = 4 << 20

// Verifier checks Standard Webhooks deliveries against one or more secrets
// (several while rotating). It is safe for concurrent use.
type Verifier struct {
	keys      [][]byte
	Tolerance time.Duration    // default DefaultTolerance
	Now       func() time.Time // default time.Now
}

// NewVerifier returns a Verifier for secrets of the form "whsec_<base64>".
// Its error never contains a secret.
func NewVerifier(secrets []string) (*Verifier, error) {
	v := &Verifier{}
	for i, s := range secrets {
		k, err := ParseSecret(s)
		if err != nil {
			return nil, fmt.Errorf("consume: secret %d: %w", i, err)
		}
		v.keys = append(v.keys, k)
	}
	if len(v.keys) == 0 {
		return nil, errors.New("consume: no secret")
	}
	return v, nil
}

// ParseSecret returns the HMAC key of a "whsec_<base64>" secret (padded or
// unpadded base64). The relay's webhook sink parses its secrets with it
// too, so both sides accept the same secrets. Its errors never contain the
// secret.
func ParseSecret(s string) ([]byte, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), "whsec_")
	if !ok {
		return nil, errors.New(`webhook secret must start with "whsec_" followed by a base64 key`)
	}
	if rest == "" {
		return nil, errors.New(`webhook secret has no key after "whsec_"`)
	}
	key, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		key, err = base64.RawStdEncoding.DecodeString(rest)
	}
	if err != nil || len(key) == 0 {
		return nil, errors.New(`webhook secret is not valid base64 after "whsec_"`)
	}
	return key, nil
}

// Verify reads r's body and checks its headers; on success it returns the
// decoded event. It never acts on a request that fails a check.
func (v *Verifier) Verify(r *http.Request) (*Event, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBody+1))
	if err != nil {
		return nil, fmt.Errorf("consume: read body: %w", err)
	}
	if len(body) > MaxBody {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrBody, MaxBody)
	}
	return v.VerifyBody(r.Header, body)
}

// VerifyBody checks the headers against body, the request body as received,
// and decodes the event with DecodeHTTP.
func (v *Verifier) VerifyBody(h http.Header, body []byte) (*Event, error) {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return nil, ErrMissingHeaders
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("%w: %q is not Unix seconds", ErrTimestamp, ts)
	}
	tol := v.Tolerance
	if tol <= 0 {
		tol = DefaultTolerance
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	if d := now().Sub(time.Unix(sec, 0)); d > tol || d < -tol {
		return nil, fmt.Errorf("%w: %s off", ErrTimestamp, d.Round(time.Second))
	}
	if !Signed(v.keys, id, ts, body, sigs) {
		return nil, ErrSignature
	}
	ev, err := DecodeHTTP(h, body)
	if err != nil {
		return nil, err
	}
	if ev.ID != id {
		return nil, fmt.Errorf("%w: webhook-id %q differs from the event id %q", ErrBody, id, ev.ID)
	}
	return ev, nil
}

// Signed reports whether any "v1,<base64>" entry of the space-separated
// signature header is the HMAC-SHA256 of "id.timestamp.body" under any
// key. It compares in constant time.
func Signed(keys [][]byte, id, timestamp string, body []byte, header string) bool {
	for _, k := range keys {
		mac := hmac.New(sha256.New, k)
		mac.Write([]byte(id))
		mac.Write([]byte{'.'})
		mac.Write([]byte(timestamp))
		mac.Write([]byte{'.'})
		mac.Write(body)
		want := mac.Sum(nil)
		for _, entry := range strings.Fields(header) {
			b64, ok := strings.CutPrefix(entry, "v1,")
			if !ok {
				continue
			}
			got, err := base64.StdEncoding.DecodeString(b64)
			if err == nil && hmac.Equal(got, want) {
				return true
			}
		}
	}
	return false
}

// Decode parses an event body (a webhook body or a NATS message).
func Decode(body []byte) (*Event, error) {
	var ev Event
	if err := json.Unmarshal(body, &ev); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBody, err)
	}
	if !relayEvent(&ev) {
		return nil, fmt.Errorf("%w: not a CloudEvents 1.0 incs-relay event", ErrBody)
	}
	ev.Body = append(json.RawMessage(nil), body...)
	return &ev, nil
}

// relayEvent reports whether ev is an event the relay emits: a log's
// (id log-…), a change's that left no log (upd-…, logupd-…, del-…) or a
// rule's derived event (id rule-…, with the rule's data). An edit event
// gets its Data.Edit, which a task.deleted's JSON has no member to set,
// so that its data encodes back to the same shape.
func relayEvent(ev *Event) bool {
	if ev.SpecVersion != diff.SpecVersion || ev.Type == "" {
		return false
	}
	if prefix, ok := editIDPrefix[ev.Type]; ok {
		if ev.Data.Edit == nil {
			ev.Data.Edit = &diff.Edit{}
		}
		return strings.HasPrefix(ev.ID, prefix)
	}
	logEvent := strings.HasPrefix(ev.ID, "log-") && !diff.IsDerived(ev.Type)
	ruleEvent := strings.HasPrefix(ev.ID, "rule-") && diff.IsDerived(ev.Type) && ev.Data.Derived != nil
	return logEvent || ruleEvent
}

// knownID reports whether id has the prefix of some relay event's id.
func knownID(id string) bool {
	for _, p := range [...]string{"log-", "rule-", "upd-", "logupd-", "del-"} {
		if strings.HasPrefix(id, p) {
			return true
		}
	}
	return false
}

// DecodeHTTP decodes a webhook delivery in any of the relay's formats,
// without verifying it: a body that is the event (Content-Type
// application/json, or application/cloudevents+json: CloudEvents structured
// mode), or, when the headers carry ce-specversion and the Content-Type is
// not application/cloudevents+json, CloudEvents binary mode: the
// attributes in ce-* headers and the event's data as the body. In binary
// mode the returned event's Body is rebuilt from the headers and the data:
// byte for byte the relay's stored event.
func DecodeHTTP(h http.Header, body []byte) (*Event, error) {
	mt, _, _ := mime.ParseMediaType(h.Get("Content-Type"))
	if mt == "application/cloudevents+json" || h.Get("Ce-Specversion") == "" {
		return Decode(body)
	}
	return decodeBinary(h, body)
}

// binaryBody encodes an event with its data as received: the outer Data
// shadows the event's own, and comes last, where the event has it.
type binaryBody struct {
	diff.Event
	Data json.RawMessage `json:"data"`
}

// decodeBinary decodes a CloudEvents binary-mode delivery.
func decodeBinary(h http.Header, data []byte) (*Event, error) {
	var bad error
	attr := func(name string) string {
		v := h.Get("Ce-" + name)
		if strings.Contains(v, "%") {
			u, err := url.PathUnescape(v)
			if err != nil && bad == nil {
				bad = fmt.Errorf("%w: ce-%s is not percent-encoded correctly", ErrBody, strings.ToLower(name))
			}
			v = u
		}
		return v
	}
	ev := Event{
		SpecVersion: attr("Specversion"), ID: attr("Id"), Source: attr("Source"),
		Type: attr("Type"), Subject: attr("Subject"),
	}
	ts, off := attr("Time"), attr("Offset")
	if bad != nil {
		return nil, bad
	}
	if ev.SpecVersion != diff.SpecVersion || ev.Type == "" || !knownID(ev.ID) {
		return nil, fmt.Errorf("%w: not a CloudEvents 1.0 incs-relay event", ErrBody)
	}
	var err error
	if ev.Time, err = time.Parse(time.RFC3339Nano, ts); err != nil {
		return nil, fmt.Errorf("%w: ce-time %q is not an RFC 3339 time", ErrBody, ts)
	}
	if ev.Offset, err = strconv.ParseUint(off, 10, 64); err != nil {
		return nil, fmt.Errorf("%w: ce-offset %q is not an offset", ErrBody, off)
	}
	if ev.DataContentType, _, err = mime.ParseMediaType(h.Get("Content-Type")); err != nil {
		return nil, fmt.Errorf("%w: Content-Type: %v", ErrBody, err)
	}
	if ev.Body, err = json.Marshal(binaryBody{Event: ev, Data: data}); err != nil {
		return nil, fmt.Errorf("%w: data: %v", ErrBody, err)
	}
	if err := json.Unmarshal(data, &ev.Data); err != nil {
		return nil, fmt.Errorf("%w: data: %v", ErrBody, err)
	}
	if !relayEvent(&ev) {
		return nil, fmt.Errorf("%w: not a CloudEvents 1.0 incs-relay event", ErrBody)
	}
	return &ev, nil
}

// Task decodes the task carried in an event (without its logs). For
// task.deleted it is the last values the relay saw: id, the fields
// task.updated reports and updated_at, or only the id.
func Task(ev *Event) (diff.Task, error) {
	var t diff.Task
	err := json.Unmarshal(ev.Data.Task, &t)
	return t, err
}

// Log decodes the log carried in an event; a derived event carries none,
// nor do task.updated and task.deleted.
func Log(ev *Event) (diff.Log, error) {
	var l diff.Log
	if ev.Data.Derived != nil {
		return l, fmt.Errorf("%w: event %s is derived by a rule: it carries no log", ErrBody, ev.ID)
	}
	if IsEdit(ev.Type) && len(ev.Data.Log) == 0 {
		return l, fmt.Errorf("%w: event %s (%s) carries no log", ErrBody, ev.ID, ev.Type)
	}
	err := json.Unmarshal(ev.Data.Log, &l)
	return l, err
}

// Dedupe remembers the most recent event ids, to drop redeliveries: the
// relay delivers at least once, so the same id can arrive again (always
// with the same offset and body). It keeps at most Size ids (default
// 100,000), forgetting the oldest. Safe for concurrent use. Services that
// must dedupe across restarts keep the id in their own database instead,
// or track the highest offset per task.
type Dedupe struct {
	Size int

	mu   sync.Mutex
	seen map[string]struct{}
	ring []string
	next int
}

// Add records id and reports whether it was new.
func (d *Dedupe) Add(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.seen == nil {
		if d.Size <= 0 {
			d.Size = 100_000
		}
		d.seen = make(map[string]struct{}, d.Size)
		d.ring = make([]string, d.Size)
	}
	if _, ok := d.seen[id]; ok {
		return false
	}
	if old := d.ring[d.next]; old != "" {
		delete(d.seen, old)
	}
	d.ring[d.next] = id
	d.next = (d.next + 1) % d.Size
	d.seen[id] = struct{}{}
	return true
}
