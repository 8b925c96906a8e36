package sink

// The stream a JetStream NATS sink makes sure of: StreamConfig, and
// ensureStream, which uses a stream that covers the subjects, creates the
// named one, or reports a conflict.

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// StreamConfig asks a JetStream NATS sink to make sure a stream stores its
// subjects. At start, a stream (of any name) whose subjects already cover
// Subjects is used as it is; otherwise the stream Name is created. A
// stream Name that exists without covering Subjects, or another stream
// whose subjects overlap them, is a conflict and an error.
type StreamConfig struct {
	Name string
	// Subjects default to the subject template with each token holding a
	// placeholder replaced by "*": "incs.tasks.*.*".
	Subjects []string
	MaxAge   time.Duration // 0: unlimited
	Replicas int           // 0: 1
}

// ensureStream checks or creates the configured stream (see StreamConfig).
func (n *NATS) ensureStream(ctx context.Context) error {
	n.streamMu.Lock()
	defer n.streamMu.Unlock()
	if n.streamOK.Load() {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, n.timeout)
	defer cancel()
	sc := n.stream
	prefix := fmt.Sprintf("nats %s: stream %s", n.name, sc.Name)
	var (
		named    *jetstream.StreamInfo
		covering *jetstream.StreamInfo
		overlap  *jetstream.StreamInfo
	)
	lister := n.js.ListStreams(ctx)
	for info := range lister.Info() {
		if info.Config.Name == sc.Name {
			named = info
		}
		if covering == nil && natsSubjectsCover(info.Config.Subjects, sc.Subjects) {
			covering = info
		}
		if overlap == nil && natsSubjectsOverlap(info.Config.Subjects, sc.Subjects) {
			overlap = info
		}
	}
	if err := lister.Err(); err != nil {
		return fmt.Errorf("%s: list streams: %w", prefix, err)
	}
	switch {
	case covering != nil:
		if covering.Config.Name != sc.Name {
			n.log.Info().Str("stream", covering.Config.Name).Strs("subjects", covering.Config.Subjects).
				Msg("an existing stream covers the subjects; using it as it is")
		}
	case named != nil:
		return fmt.Errorf("%s: exists with subjects %v, which do not cover %v", prefix, named.Config.Subjects, sc.Subjects)
	case overlap != nil:
		return fmt.Errorf("%s: subjects %v overlap stream %s (subjects %v)", prefix, sc.Subjects, overlap.Config.Name, overlap.Config.Subjects)
	default:
		_, err := n.js.CreateStream(ctx, jetstream.StreamConfig{
			Name:     sc.Name,
			Subjects: sc.Subjects,
			MaxAge:   sc.MaxAge,
			Replicas: max(sc.Replicas, 1),
			Storage:  jetstream.FileStorage,
		})
		if err != nil {
			return fmt.Errorf("%s: create: %w", prefix, err)
		}
		n.log.Info().Str("stream", sc.Name).Strs("subjects", sc.Subjects).Msg("stream created")
	}
	n.streamOK.Store(true)
	return nil
}

// natsSubjectsCover reports whether every subject of want is matched by
// some subject of have, wildcards on both sides included.
func natsSubjectsCover(have, want []string) bool {
	for _, w := range want {
		if !slices.ContainsFunc(have, func(h string) bool { return server.SubjectMatchesFilter(w, h) }) {
			return false
		}
	}
	return true
}

func natsSubjectsOverlap(a, b []string) bool {
	for _, x := range a {
		for _, y := range b {
			if server.SubjectsCollide(x, y) {
				return true
			}
		}
	}
	return false
}
