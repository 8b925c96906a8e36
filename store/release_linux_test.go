package store

import (
	"bufio"
	"context"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestReleaseMapped: reading a 20 MB outbox back does not leave the store
// file resident in the process: the pages read are released as it goes.
func TestReleaseMapped(t *testing.T) {
	db := mustOpen(t, noSync)
	for p := range 50 {
		_, err := db.Ingest(context.Background(), decodePage(t, pageJSON(int64(1+p*100), 100, 4, int64(1+p*400))), shanghai, true)
		require.NoError(t, err)
	}
	var read int
	for from := uint64(1); ; {
		evs, err := db.Read(context.Background(), from, 1000)
		require.NoError(t, err)
		if len(evs) == 0 {
			break
		}
		for _, ev := range evs {
			read += len(ev.Body)
		}
		from = evs[len(evs)-1].Offset + 1
	}
	require.Greater(t, read, 3*releaseEvery, "the outbox is larger than what may stay resident")
	rss := mappedRSS(t, db.Path())
	t.Logf("read %d MB of events; %d KB of the store file resident", read>>20, rss>>10)
	assert.Less(t, rss, int64(2*releaseEvery))
}

// mappedRSS returns the resident bytes of this process's mappings of path.
func mappedRSS(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	require.NoError(t, err)
	defer f.Close()
	var rss int64
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":"):
			in = len(fields) >= 6 && fields[5] == path
		case in && len(fields) == 3 && fields[0] == "Rss:":
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			require.NoError(t, err)
			rss += kb << 10
		}
	}
	require.NoError(t, sc.Err())
	return rss
}
