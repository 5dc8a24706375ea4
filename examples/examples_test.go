// Package examples_test keeps the examples honest: every example is a
// command whose work is done by a run function that its own main_test.go
// exercises, and the README tells how to run it.
package examples_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEveryExampleIsTestedAndListed(t *testing.T) {
	entries, err := os.ReadDir(".")
	require.NoError(t, err)
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	require.NoError(t, err)
	n := 0
	for _, e := range entries {
		if !e.IsDir() || e.Name() == "internal" || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		n++
		name := e.Name()
		src, err := os.ReadFile(filepath.Join(name, "main.go"))
		if !assert.NoError(t, err, name) {
			continue
		}
		assert.Contains(t, string(src), "\npackage main\n", "%s/main.go: want package main with a run function for its test to call", name)
		assert.Contains(t, string(src), "\nfunc run(", "%s/main.go: want package main with a run function for its test to call", name)
		assert.True(t, strings.HasPrefix(string(src), "// Command "+name+" "), "%s/main.go: want a doc comment starting %q", name, "// Command "+name+" ")
		_, err = os.Stat(filepath.Join(name, "main_test.go"))
		assert.NoError(t, err, "%s has no main_test.go", name)
		// Not assert.Contains: its message would print the whole README.
		assert.True(t, strings.Contains(string(readme), "go run ./examples/"+name), "README.md does not mention `go run ./examples/%s`", name)
	}
	assert.GreaterOrEqual(t, n, 8, "examples found")
}
