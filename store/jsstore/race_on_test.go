// raceEnabled for builds with the race detector.

//go:build race

package jsstore

// raceEnabled is set when the tests run under the race detector, which
// slows an in-process three-node cluster past the timings a lease of 2s
// allows.
const raceEnabled = true
