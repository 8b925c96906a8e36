//go:build race

package partition

// raceEnabled is set under the race detector, which slows an in-process
// three-node cluster and three replicas past what the handoff test's
// timings allow: it runs a shortened version.
const raceEnabled = true
