//go:build !linux

package store

// Releasing mapped pages: a no-op where madvise is not available.

const canRelease = false

func releasePages(addr uintptr, n int64) {}
