//go:build race

package poller_test

// raceEnabled is set when the tests run under the race detector, which
// makes the large simulations too slow to run in full.
const raceEnabled = true
