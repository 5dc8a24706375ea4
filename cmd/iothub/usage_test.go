package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

// "iothub help" lists every command with an example; no arguments print
// the same text as an error.
func TestUsage(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"help"}, &stdout, &stderr); code != 0 {
		t.Fatalf("help: exit %d", code)
	}
	help := stdout.String()
	for _, cmd := range []string{"hub", "device", "invoke", "bench"} {
		if !strings.Contains(help, "\n  "+cmd+" ") {
			t.Errorf("help does not list %q:\n%s", cmd, help)
		}
		if !strings.Contains(help, "\n  iothub "+cmd) {
			t.Errorf("help has no example of %q:\n%s", cmd, help)
		}
	}
	if !strings.Contains(help, "measure latency, throughput and scale (see BENCHMARKS.md)") {
		t.Error("help lacks the bench line")
	}
	if code := run(nil, io.Discard, &stderr); code != 2 || !strings.Contains(stderr.String(), "usage: iothub") {
		t.Errorf("no arguments: exit %d, stderr %q", code, stderr.String())
	}
}
