package partition

import (
	"sync"

	"github.com/incs-relay/incs-relay/sink"
)

// guardedOutbox is a partition's outbox for one dispatcher that never
// undoes a rewind made elsewhere: a cursor write is dropped when the
// stored cursor went below the one this dispatcher last read or wrote
// (another replica, or the CLI, rewound the sink), and the dispatcher is
// told to reread it. Without it, the dispatcher's next flush would put
// its old position back over the rewind before the notice arrived.
type guardedOutbox struct {
	sink.Outbox
	rewound func()
	mu      sync.Mutex
	last    map[string]uint64
}

func newGuardedOutbox(out sink.Outbox, rewound func()) *guardedOutbox {
	return &guardedOutbox{Outbox: out, rewound: rewound, last: map[string]uint64{}}
}

// Cursor reads the stored cursor and remembers it.
func (g *guardedOutbox) Cursor(sink string) (uint64, error) {
	c, err := g.Outbox.Cursor(sink)
	if err == nil {
		g.mu.Lock()
		g.last[sink] = c
		g.mu.Unlock()
	}
	return c, err
}

// SetCursor writes the cursor unless a rewind lowered the stored one.
func (g *guardedOutbox) SetCursor(sink string, offset uint64) error {
	g.mu.Lock()
	last, known := g.last[sink]
	g.mu.Unlock()
	if known {
		if cur, err := g.Outbox.Cursor(sink); err == nil && cur < last {
			g.rewound()
			return nil
		}
	}
	if err := g.Outbox.SetCursor(sink, offset); err != nil {
		return err
	}
	g.mu.Lock()
	g.last[sink] = offset
	g.mu.Unlock()
	return nil
}
