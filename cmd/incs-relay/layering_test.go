package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const module = "github.com/incs-relay/incs-relay"

// stages are the top-level folders the data flows through, in order.
var stages = []string{"poller", "diff", "store", "sink"}

// stageOf returns the stage a package of this module belongs to (a
// stage's subpackages belong to it), or "" for cmd, docs and the leaves.
func stageOf(pkg string) string {
	rel := strings.TrimPrefix(pkg, module+"/")
	top, _, _ := strings.Cut(rel, "/")
	if slices.Contains(stages, top) {
		return top
	}
	return ""
}

// modulePackages lists every package of the module (not tests) with the
// module packages it imports directly.
func modulePackages(t *testing.T) map[string][]string {
	t.Helper()
	cmd := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, module+"/...")
	cmd.Dir = repoRoot(t)
	out, err := cmd.Output()
	require.NoError(t, err, "go list")
	pkgs := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		var own []string
		for _, imp := range f[1:] {
			if strings.HasPrefix(imp, module+"/") {
				own = append(own, imp)
			}
		}
		pkgs[f[0]] = own
	}
	return pkgs
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	require.NoError(t, err)
	return root
}

// TestLayering keeps the rule of docs/architecture.md: only packages under
// cmd/ import more than one stage besides their own (a stage importing
// diff, the domain, imports one), the runtime packages under
// cmd/incs-relay/internal import one another in one direction only, and
// every package is in the architecture's table.
func TestLayering(t *testing.T) {
	pkgs := modulePackages(t)
	require.Contains(t, pkgs, module+"/diff")
	for pkg, imports := range pkgs {
		if strings.HasPrefix(pkg, module+"/cmd/") {
			continue
		}
		own := stageOf(pkg)
		other := map[string]bool{}
		for _, imp := range imports {
			if s := stageOf(imp); s != "" && s != own {
				other[s] = true
			}
		}
		assert.LessOrEqual(t, len(other), 1, "%s imports stages %v: only cmd/… may import more than one", pkg, other)
	}

	// The binary's own packages: a package may import only those before it.
	order := []string{"config", "relay", "admin", "bench"}
	rank := func(pkg string) int {
		rel, ok := strings.CutPrefix(pkg, module+"/cmd/incs-relay/internal/")
		if !ok {
			return -1
		}
		top, _, _ := strings.Cut(rel, "/")
		return slices.Index(order, top)
	}
	for pkg, imports := range pkgs {
		r := rank(pkg)
		if r < 0 {
			continue
		}
		for _, imp := range imports {
			if ri := rank(imp); ri >= 0 && ri != r {
				assert.Less(t, ri, r, "%s imports %s: cmd/incs-relay/internal packages import only those before them (%v)", pkg, imp, order)
			}
		}
	}

	doc, err := os.ReadFile(filepath.Join(repoRoot(t), "docs", "architecture.md"))
	require.NoError(t, err)
	listed := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z0-9/_.-]+)` \\|").FindAllStringSubmatch(string(doc), -1) {
		listed[m[1]] = true
	}
	for pkg := range pkgs {
		rel := strings.TrimPrefix(pkg, module+"/")
		assert.True(t, listed[rel], "docs/architecture.md's package table has no row for `%s`", rel)
	}
}
