// Package examples_test keeps the examples honest: every example is a
// command whose work is done by a run function that its own main_test.go
// exercises, and the README tells how to run it.
package examples_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEveryExampleIsTestedAndListed(t *testing.T) {
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if !e.IsDir() || e.Name() == "internal" || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		n++
		name := e.Name()
		src, err := os.ReadFile(filepath.Join(name, "main.go"))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !strings.Contains(string(src), "\npackage main\n") || !strings.Contains(string(src), "\nfunc run(") {
			t.Errorf("%s/main.go: want package main with a run function for its test to call", name)
		}
		if !strings.HasPrefix(string(src), "// Command "+name+" ") {
			t.Errorf("%s/main.go: want a doc comment starting %q", name, "// Command "+name+" ")
		}
		if _, err := os.Stat(filepath.Join(name, "main_test.go")); err != nil {
			t.Errorf("%s has no main_test.go", name)
		}
		if !strings.Contains(string(readme), "go run ./examples/"+name) {
			t.Errorf("README.md does not mention `go run ./examples/%s`", name)
		}
	}
	if n < 8 {
		t.Errorf("found %d examples, want at least 8", n)
	}
}
