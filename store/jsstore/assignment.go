package jsstore

// This file gives a delivery that may not import this package (the
// partitioned delivery in sink/partition, which satisfies its Assignment
// interface with *Store) what it needs of Role and the sink state as plain
// values.

// Ownership returns Role's Self, Owned and Assignments: this replica's id,
// the partitions it delivers now, and the partitions of each replica
// (replica id -> partitions) as this replica knows them. The slices and
// the map are the caller's.
func (s *Store) Ownership() (self string, owned []int, assigned map[string][]int) {
	r := s.Role()
	return r.Self, r.Owned, r.Assignments
}

// SinkPaused reports whether the sink's persisted state (SinkState, shared
// by every replica) says paused, and the reason stored with the pause.
func (s *Store) SinkPaused(sink string) (paused bool, reason string, err error) {
	ss, err := s.SinkState(sink)
	if err != nil {
		return false, "", err
	}
	return ss.Paused, ss.PauseReason, nil
}
