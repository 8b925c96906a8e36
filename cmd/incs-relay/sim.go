package main

// The sim command: serve a simulated incsapp task API.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/incs-relay/incs-relay/poller"
	"github.com/incs-relay/incs-relay/poller/sim"
)

// SimCommand serves a simulated, evolving incsapp task API.
type SimCommand struct{ m *Main }

// Run serves until ctx ends.
func (c *SimCommand) Run(ctx context.Context, args []string) error {
	fs := c.m.newFlagSet("sim")
	addr := fs.String("addr", "127.0.0.1:8089", "listen address")
	token := fs.String("token", "demo-token", "bearer token the API accepts")
	tasks := fs.Int("tasks", 200, "tasks in the world at start")
	seed := fs.Int64("seed", 0, "random seed (0: from the clock)")
	tick := fs.Duration("tick", time.Second, "the world changes every tick")
	changes := fs.Int("changes", 0, "changes per tick (0: scaled to the world)")
	faults := fs.Float64("fault-rate", 0, "fraction of requests answered with an injected fault (0..1)")
	order := fs.String("order", "id_desc", "list order: id_desc, id_asc or updated_desc")
	edits := fs.Float64("edits", 0.05, "share of changes that edit a field and of those that edit a comment, without a log (0..0.3)")
	deletions := fs.Float64("deletions", 0.01, "share of changes that delete a task (0..0.3)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *tasks < 0 {
		return &usageError{msg: "sim: --tasks must not be negative"}
	}
	if *faults < 0 || *faults > 1 {
		return &usageError{msg: "sim: --fault-rate must be between 0 and 1"}
	}
	if *seed == 0 {
		*seed = time.Now().UnixNano()
	}
	o, err := parseOrder(*order)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"edits", *edits}, {"deletions", *deletions}} {
		if f.v < 0 || f.v > 0.3 {
			return &usageError{msg: fmt.Sprintf("sim: --%s: %g: want 0 to 0.3", f.name, f.v)}
		}
	}
	s := sim.New(sim.Options{
		Token:          *token,
		Tasks:          *tasks,
		Seed:           *seed,
		Tick:           *tick,
		ChangesPerTick: *changes,
		Order:          o,
		Faults:         sim.Faults{Rate: *faults},
		CommentEdits:   *edits,
		FieldEdits:     *edits,
		Deletions:      *deletions,
	})
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("sim: listen: %w", err)
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(c.m.Stderr, "incs-relay sim: serving %d tasks on http://%s%s (token %q, seed %d, tick %s)\n",
		*tasks, ln.Addr(), poller.TasksPath, *token, *seed, *tick)
	go s.Run(ctx)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("sim: serve: %w", err)
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("sim: shutdown: %w", err)
	}
	return nil
}

func parseOrder(s string) (sim.Order, error) {
	switch s {
	case "id_desc", "":
		return sim.IDDesc, nil
	case "id_asc":
		return sim.IDAsc, nil
	case "updated_desc":
		return sim.UpdatedDesc, nil
	}
	return 0, &usageError{msg: fmt.Sprintf("sim: --order: want id_desc, id_asc or updated_desc, got %q", s)}
}
