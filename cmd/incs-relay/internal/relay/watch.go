package relay

// run --watch: reloading the config when its file changes.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watchSettle is how long the watcher waits after a change of the
// config's directory before it reads the file: an editor or a ConfigMap
// update writes in several steps.
const watchSettle = 200 * time.Millisecond

// watchPoll is how often the watcher also reads the file without being
// told, for file systems that send no notifications (NFS, some volume
// plugins).
const watchPoll = 10 * time.Second

// WatchConfig reloads the config (trigger "watch") each time the content
// of the file at path, or of a file it reads with ${file:} (a mounted
// secret), changes, until ctx ends or stop is called. It watches each
// file's directory, and the directory of the file a symlink points at, so both an edit in place and a symlink swap (how Kubernetes
// updates a mounted ConfigMap: the ..data link is replaced) are seen; it
// also reads the file every watchPoll. A content it already tried is not
// reloaded again, so a bad file is reported once, not at each event.
func (r *Relay) WatchConfig(ctx context.Context, path string) (stop func(), err error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, err
	}
	files := func() []string { return append([]string{path}, r.Config().FileRefs()...) }
	last, _ := filesSum(files())
	dirs := map[string]bool{}
	watchDirs := func() {
		for _, d := range configDirs(files()) {
			if dirs[d] {
				continue
			}
			if err := w.Add(d); err != nil {
				r.log.Warn().Err(err).Str("dir", d).Msg("run --watch: cannot watch the directory; the file is read every 10s instead")
				continue
			}
			dirs[d] = true
		}
	}
	watchDirs()
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer w.Close()
		settle := time.NewTimer(time.Hour)
		settle.Stop()
		poll := time.NewTicker(watchPoll)
		defer poll.Stop()
		check := func() {
			watchDirs() // a swapped symlink may point into a new directory
			sum, err := filesSum(files())
			if err != nil || bytes.Equal(sum, last) {
				return // a file being replaced is read at the next event
			}
			last = sum
			_, _ = r.Reload(ctx, "watch") // logged and reported by Reload
		}
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-w.Events:
				if !ok {
					return
				}
				settle.Reset(watchSettle)
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				r.log.Warn().Err(err).Msg("run --watch")
			case <-settle.C:
				check()
			case <-poll.C:
				check()
			}
		}
	}()
	r.log.Info().Str("config", path).Msg("watching the config file: a change is reloaded")
	return func() { cancel(); <-done }, nil
}

// configDirs are the directories whose changes may change the files:
// each one's own, and that of the file it resolves to through symlinks.
func configDirs(files []string) []string {
	var dirs []string
	for _, f := range files {
		dirs = append(dirs, filepath.Dir(f))
		if real, err := filepath.EvalSymlinks(f); err == nil {
			dirs = append(dirs, filepath.Dir(real))
		}
	}
	slices.Sort(dirs)
	return slices.Compact(dirs)
}

// filesSum is the SHA-256 of the files' contents, in order.
func filesSum(files []string) ([]byte, error) {
	h := sha256.New()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", f, err)
		}
		fmt.Fprintf(h, "%s\x00%d\x00", f, len(b))
		h.Write(b)
	}
	return h.Sum(nil), nil
}
