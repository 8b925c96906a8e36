package relay

// The pprof labels of the relay's stages: a CPU profile's samples carry
// "stage" (poll, store, deliver; the store labels its diffing "diff"), so
// `incs-relay bench` can tell each stage's share. They are set once per
// goroutine or per page, never per event.

import (
	"context"
	"runtime/pprof"
)

// StageLabel is the pprof label key of the relay's stages.
const StageLabel = "stage"

// The stages' labels.
var (
	stagePoll    = pprof.Labels(StageLabel, "poll")
	stageStore   = pprof.Labels(StageLabel, "store")
	stageDeliver = pprof.Labels(StageLabel, "deliver")
)

// withStage runs fn with the goroutine labelled stage (goroutines it
// starts inherit the label), then restores the labels of ctx.
func withStage(ctx context.Context, stage pprof.LabelSet, fn func(context.Context)) {
	pprof.Do(ctx, stage, fn)
}
