package poller

// Saving Tiered's state to its StateStore and loading it after a restart:
// the bands and their schedule, the newest window, the open tasks and the
// pending fetches, in a compact varint format.

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"
)

// StateKey is the StateStore key under which Tiered saves its state.
const StateKey = "poller/tiers"

// stateMagic starts a saved state; the last byte is the format version.
const stateMagic = "incs-tiers\x01"

// save writes the bands, their schedule, the newest window, the open
// tasks and the pending fetches to the StateStore. Finished tasks are not
// saved: after a restart the finished tier learns them again. A failure is
// logged; polling goes on.
func (t *Tiered) save() {
	b := []byte(stateMagic)
	b = appendString(b, t.cfg.Location.String())
	b = binary.AppendUvarint(b, t.cycle)
	b = binary.AppendVarint(b, int64(t.newest.from))
	b = appendTime(b, t.newest.lastFull)
	b = binary.AppendUvarint(b, uint64(len(t.bands)))
	for _, s := range t.bands {
		b = binary.AppendVarint(b, int64(s.from))
		b = binary.AppendVarint(b, int64(s.to))
		b = binary.AppendUvarint(b, uint64(s.weight()))
		b = appendTime(b, s.lastFull)
		b = binary.AppendUvarint(b, s.lastOpen)
		b = appendTime(b, s.lastOpenAt)
	}
	var open []*rec
	for _, r := range t.recs {
		if isOpen(r.status) && r.created != 0 {
			open = append(open, r)
		}
	}
	slices.SortFunc(open, func(a, b *rec) int { return cmp.Compare(a.id, b.id) })
	b = binary.AppendUvarint(b, uint64(len(open)))
	prev := int64(0)
	for _, r := range open {
		b = binary.AppendVarint(b, r.id-prev)
		b = binary.AppendVarint(b, int64(r.created))
		b = binary.AppendUvarint(b, uint64(r.status))
		prev = r.id
	}
	pending := make([]int64, 0, len(t.pending))
	for id := range t.pending {
		pending = append(pending, id)
	}
	slices.Sort(pending)
	b = binary.AppendUvarint(b, uint64(len(pending)))
	prev = 0
	for _, id := range pending {
		b = binary.AppendVarint(b, id-prev)
		prev = id
	}
	if err := t.state.SetMeta(StateKey, b); err != nil {
		t.log.Warn().Err(err).Msg("save tier state")
	}
}

// load reads a saved state. Without one, or with one it cannot use, the
// first cycle sweeps in full.
func (t *Tiered) load() {
	b, err := t.state.Meta(StateKey)
	if err != nil || len(b) == 0 {
		t.log.Debug().AnErr("reason", err).Msg("no tier state: the first cycle sweeps in full")
		return
	}
	if err := t.decodeState(b); err != nil {
		t.log.Warn().Err(err).Msg("tier state ignored: the first cycle sweeps in full")
		t.recs = make(map[int64]*rec)
		t.pending = make(map[int64]struct{})
		t.bands, t.newest, t.cycle, t.ready = nil, band{}, 0, false
		return
	}
	t.log.Info().Int("slices", len(t.bands)).Int("open_tasks", len(t.recs)).Msg("tier state loaded")
}

var errState = errors.New("truncated or malformed")

func (t *Tiered) decodeState(b []byte) error {
	d := stateDecoder{b: b}
	if !d.prefix(stateMagic) {
		return fmt.Errorf("tier state: %w: unknown format", errState)
	}
	if loc := d.string(); loc != t.cfg.Location.String() {
		return fmt.Errorf("tier state: made for zone %q, not %q", loc, t.cfg.Location.String())
	}
	t.cycle = d.uvarint()
	t.newest = band{from: WallTime(d.varint()), lastFull: d.time(), lastOpen: t.cycle}
	t.newest.lastOpenAt = t.newest.lastFull
	n := d.count(6)
	t.bands = make([]*band, 0, n)
	for range n {
		s := &band{from: WallTime(d.varint()), to: WallTime(d.varint()), size: int(d.uvarint()),
			lastFull: d.time(), lastOpen: d.uvarint(), lastOpenAt: d.time()}
		if s.to < s.from || (len(t.bands) > 0 && t.bands[len(t.bands)-1].to+1 != s.from) {
			d.err = errState
		}
		t.bands = append(t.bands, s)
	}
	if len(t.bands) > 0 && t.bands[len(t.bands)-1].to+1 != t.newest.from {
		d.err = errState
	}
	n = d.count(3)
	id := int64(0)
	for range n {
		id += d.varint()
		r := &rec{id: id, created: WallTime(d.varint()), status: status8(int(min(d.uvarint(), 9)))}
		if !isOpen(r.status) || r.created == 0 {
			d.err = errState
			break
		}
		t.recs[id] = r
	}
	n = d.count(1)
	id = 0
	for range n {
		id += d.varint()
		t.pending[id] = struct{}{}
	}
	if d.err != nil || len(d.b) != 0 {
		return fmt.Errorf("tier state: %w", errState)
	}
	t.ready = true
	for _, r := range t.recs {
		t.place(r)
		if r.band == nil {
			delete(t.recs, r.id)
		}
	}
	return nil
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return binary.AppendVarint(b, 0)
	}
	return binary.AppendVarint(b, t.UnixNano())
}

// stateDecoder reads a saved state; the first error sticks.
type stateDecoder struct {
	b   []byte
	err error
}

func (d *stateDecoder) prefix(p string) bool {
	if len(d.b) < len(p) || string(d.b[:len(p)]) != p {
		return false
	}
	d.b = d.b[len(p):]
	return true
}

func (d *stateDecoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err, d.b = errState, nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *stateDecoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err, d.b = errState, nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a count of items of at least minBytes each, refusing counts
// the rest of the state cannot hold.
func (d *stateDecoder) count(minBytes int) int {
	n := d.uvarint()
	if n > uint64(len(d.b)/minBytes) {
		d.err, d.b = errState, nil
		return 0
	}
	return int(n)
}

func (d *stateDecoder) string() string {
	n := d.count(1)
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *stateDecoder) time() time.Time {
	v := d.varint()
	if v == 0 {
		return time.Time{}
	}
	return time.Unix(0, v)
}
