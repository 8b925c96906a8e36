package jsstore

// This file gives a delivery that may not import this package (the
// partitioned delivery in sink/partition, which satisfies its Assignment
// interface with *Store) what it needs of Role and the sink state as plain
// values.

// Ownership returns Role's Self and Owned: this replica's id and the
// partitions it delivers now. The slice is the caller's.
func (s *Store) Ownership() (self string, owned []int) {
	r := s.Role()
	return r.Self, r.Owned
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
