package admin

// The admin API's handlers.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/config"
	"github.com/incs-relay/incs-relay/cmd/incs-relay/internal/relay"
	"github.com/incs-relay/incs-relay/diff"
	"github.com/incs-relay/incs-relay/docs"
)

// page serves the admin page.
func (a *Server) page(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(adminPage)
}

// readyz is 200 once the store is open and the last poll succeeded, and 503
// with the reason while polls keep failing or a sink is paused or failing.
func (a *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if reason := a.r.NotReady(time.Now()); reason != "" {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready:", reason)
		return
	}
	fmt.Fprintln(w, "ready")
}

// pollStatus serves GET /v1/poll.
func (a *Server) pollStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, a.r.PollView())
}

// sinks serves GET /v1/sinks, without dead letters.
func (a *Server) sinks(w http.ResponseWriter, _ *http.Request) {
	st := a.r.AllSinkStatuses()
	for i := range st {
		st[i].Dead = nil // the list stays small; GET /v1/sinks/{name} has them
	}
	writeJSON(w, http.StatusOK, map[string]any{"sinks": st})
}

// sink serves GET /v1/sinks/{name}, with its dead letters.
func (a *Server) sink(w http.ResponseWriter, req *http.Request) {
	name := req.PathValue("name")
	for _, s := range a.r.AllSinkStatuses() {
		if s.Name == name {
			writeJSON(w, http.StatusOK, s)
			return
		}
	}
	httpError(w, http.StatusNotFound, fmt.Sprintf("no sink %q", name))
}

// events lists stored events: ?from=N&limit=K&type=T, or ?latest=K for the
// newest K.
func (a *Server) events(w http.ResponseWriter, req *http.Request) {
	q := req.URL.Query()
	eq, err := ParseEventQuery(q.Get("from"), q.Get("limit"), q.Get("type"), a.r.Config().KnownEventType)
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	if l := q.Get("latest"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > 1000 {
			httpError(w, http.StatusBadRequest, "latest: want 1 to 1000")
			return
		}
		head, err := a.r.Store().Head()
		if err != nil {
			httpError(w, http.StatusInternalServerError, err.Error())
			return
		}
		eq.From, eq.Limit = uint64(max(int64(head)-int64(n)+1, 1)), n
	}
	evs, err := a.r.Store().Events(req.Context(), eq)
	if err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	head, _ := a.r.Store().Head()
	body := struct {
		Events []json.RawMessage `json:"events"`
		Next   uint64            `json:"next"`
		Head   uint64            `json:"head"`
	}{Events: make([]json.RawMessage, 0, len(evs)), Next: eq.From, Head: head}
	redact := a.set.Load().redact
	for i := range evs {
		body.Events = append(body.Events, RedactedBody(&evs[i], redact))
		body.Next = evs[i].Offset + 1
	}
	writeEventsJSON(w, body)
}

// replay rewinds a sink: ?from=OFFSET or ?since=RFC3339.
func (a *Server) replay(w http.ResponseWriter, req *http.Request) {
	name := req.PathValue("name")
	if !slices.Contains(a.r.SinkNames(), name) {
		httpError(w, http.StatusNotFound, fmt.Sprintf("no sink %q", name))
		return
	}
	q := req.URL.Query()
	from, err := ReplayFrom(a.r.Store(), q.Get("from"), q.Get("since"))
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(req.Context(), 30*time.Second)
	defer cancel()
	if err := a.r.Rewind(ctx, name, from); err != nil {
		httpError(w, http.StatusInternalServerError, err.Error())
		return
	}
	head, _ := a.r.Store().Head()
	writeJSON(w, http.StatusOK, map[string]any{"sink": name, "from": from, "head": head})
}

// resume clears a sink's pause.
func (a *Server) resume(w http.ResponseWriter, req *http.Request) {
	name := req.PathValue("name")
	if err := a.r.Resume(name); err != nil {
		httpError(w, http.StatusNotFound, fmt.Sprintf("no sink %q", name))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"sink": name, "resumed": true})
}

// reloadStatus serves GET /v1/reload: the last reload's outcome.
func (a *Server) reloadStatus(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, a.r.ReloadStatus())
}

// reload serves POST /v1/reload: the config file is read again and what
// changed is applied, as on SIGHUP. A bad file changes nothing and is
// answered 400 with the error (its file, line and key); 503 while the
// relay stops; 500 when a new sink could not be built (a NATS server not
// reached). The answer is the reload's status, with "error" on failure.
func (a *Server) reload(w http.ResponseWriter, req *http.Request) {
	ctx, cancel := context.WithTimeout(req.Context(), time.Minute)
	defer cancel()
	st, err := a.r.Reload(ctx, "api")
	var ce *config.Error
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, st)
	case errors.As(err, &ce):
		writeJSON(w, http.StatusBadRequest, st)
	case errors.Is(err, relay.ErrStopping):
		writeJSON(w, http.StatusServiceUnavailable, st)
	default:
		writeJSON(w, http.StatusInternalServerError, st)
	}
}

// writeJSON writes v indented, with the status code.
func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// writeEventsJSON writes without indenting, so each event in the answer
// is byte for byte the stored body (compact, as json.Marshal writes it).
func writeEventsJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(v)
}

// httpError writes {"error": msg} with the status code.
func httpError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// cluster serves GET /v1/cluster: the jetstream store's replicas, who
// leads and who delivers which partitions; 404 with a bbolt store.
func (a *Server) cluster(w http.ResponseWriter, _ *http.Request) {
	v := a.r.ClusterView()
	if v == nil {
		httpError(w, http.StatusNotFound, "no cluster: the store is a bbolt file (store.type: bbolt)")
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// schema serves the JSON Schema of an event type the relay emits: a log
// type's, or for a configured rule's type the derived-event schema with
// that type.
func (a *Server) schema(w http.ResponseWriter, req *http.Request) {
	typ, ok := strings.CutSuffix(req.PathValue("file"), ".json")
	var body []byte
	switch {
	case !ok:
	case slices.Contains(diff.Types, typ):
		body, ok = docs.Schema(typ, false)
	case a.r.Config().IsRuleType(typ):
		body, ok = docs.Schema(typ, true)
	default:
		ok = false
	}
	if !ok {
		httpError(w, http.StatusNotFound, fmt.Sprintf("no schema %q: want /v1/schemas/<type>.json for one of %s", req.PathValue("file"), strings.Join(a.r.Config().EventTypes(), ", ")))
		return
	}
	w.Header().Set("Content-Type", "application/schema+json")
	_, _ = w.Write(body)
}

// asyncAPI serves docs/asyncapi.yaml.
func (a *Server) asyncAPI(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/yaml")
	_, _ = w.Write(docs.AsyncAPI())
}
